# Configures, builds and runs one packaging consumer; any failing step fails the test.
# Run by ctest as `cmake -D... -P check_consumer.cmake` (see CMakeLists.txt here).
#
#   MODE                 find_package | add_subdirectory
#   VIT_SOURCE_DIR       the vit source tree
#   VIT_BINARY_DIR       the vit build tree (installed from, in find_package mode)
#   CONSUMER_SOURCE_DIR  the consumer project
#   WORK_DIR             scratch directory, wiped first
#   CONFIG               build configuration (may be empty)
#   GENERATOR, GENERATOR_PLATFORM, GENERATOR_TOOLSET, MAKE_PROGRAM, TOOLCHAIN_FILE,
#   CXX_COMPILER, CXX_FLAGS, PREFIX_PATH ('|'-separated), EIGEN3_DIR,
#   NLOHMANN_JSON_DIR    passed on from the vit build
#   CTEST_EXE            ctest, to run the consumer's own test
cmake_minimum_required(VERSION 3.17)

foreach(var MODE VIT_SOURCE_DIR VIT_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR CTEST_EXE)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "check_consumer.cmake: ${var} is not set")
  endif()
endforeach()

# run_step(<description> [IN <dir>] COMMAND <command> <arg>...)
function(run_step what)
  cmake_parse_arguments(PARSE_ARGV 1 STEP "" "IN" "COMMAND")
  if(NOT STEP_IN)
    set(STEP_IN "${WORK_DIR}")
  endif()
  message(STATUS "---- ${what}")
  execute_process(COMMAND ${STEP_COMMAND} WORKING_DIRECTORY "${STEP_IN}"
    RESULT_VARIABLE result COMMAND_ECHO STDOUT)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "packaging check failed: ${what} (exit status: ${result})")
  endif()
endfunction()

unset(ENV{DESTDIR})  # install into the scratch prefix, nowhere else
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(build_dir "${WORK_DIR}/build")
set(prefix "${WORK_DIR}/prefix")

set(config_args "")
if(NOT CONFIG STREQUAL "")
  set(config_args --config "${CONFIG}")
endif()

string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${build_dir}" -G "${GENERATOR}"
  "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF")
if(GENERATOR_PLATFORM)
  list(APPEND configure_args -A "${GENERATOR_PLATFORM}")
endif()
if(GENERATOR_TOOLSET)
  list(APPEND configure_args -T "${GENERATOR_TOOLSET}")
endif()
foreach(pair
    "CMAKE_MAKE_PROGRAM=MAKE_PROGRAM" "CMAKE_TOOLCHAIN_FILE=TOOLCHAIN_FILE"
    "CMAKE_CXX_COMPILER=CXX_COMPILER" "CMAKE_BUILD_TYPE=CONFIG"
    "Eigen3_DIR=EIGEN3_DIR" "nlohmann_json_DIR=NLOHMANN_JSON_DIR")
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 cache_var)
  list(GET pair 1 script_var)
  if(NOT "${${script_var}}" STREQUAL "")
    list(APPEND configure_args "-D${cache_var}=${${script_var}}")
  endif()
endforeach()
list(APPEND configure_args "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}")

if(MODE STREQUAL "find_package")
  run_step("install vit into ${prefix}" COMMAND
    "${CMAKE_COMMAND}" --install "${VIT_BINARY_DIR}" --prefix "${prefix}" ${config_args})
  list(PREPEND prefix_path "${prefix}")
  string(REPLACE ";" "\\;" prefix_path_arg "${prefix_path}")
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${prefix_path_arg}")
elseif(MODE STREQUAL "add_subdirectory")
  string(REPLACE ";" "\\;" prefix_path_arg "${prefix_path}")
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${prefix_path_arg}"
    "-DVIT_SOURCE_DIR=${VIT_SOURCE_DIR}")
else()
  message(FATAL_ERROR "check_consumer.cmake: unknown MODE '${MODE}'")
endif()

run_step("configure consumer" COMMAND "${CMAKE_COMMAND}" ${configure_args})

if(MODE STREQUAL "find_package")
  # Make sure the consumer found the freshly installed package, not another vit.
  file(STRINGS "${build_dir}/CMakeCache.txt" vit_dir_line REGEX "^vit_DIR:")
  string(REGEX REPLACE "^vit_DIR:[A-Z]+=" "" found_dir "${vit_dir_line}")
  get_filename_component(real_prefix "${prefix}" REALPATH)
  get_filename_component(real_found_dir "${found_dir}" REALPATH)
  string(FIND "${real_found_dir}/" "${real_prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "consumer found vit in '${found_dir}', not under '${prefix}'")
  endif()
  message(STATUS "consumer found vit in ${found_dir}")
endif()

run_step("build consumer" COMMAND "${CMAKE_COMMAND}" --build "${build_dir}" ${config_args})

set(ctest_config "")
if(NOT CONFIG STREQUAL "")
  set(ctest_config -C "${CONFIG}")
endif()
run_step("run consumer" IN "${build_dir}" COMMAND
  "${CTEST_EXE}" ${ctest_config} --output-on-failure --no-tests=error)
