# cmake -DSOURCE=<file.cpp> -DREADME=<README.md> -P check_snippet.cmake
# Fails unless every line between "// [snippet]" and "// [/snippet]" in SOURCE
# appears in README.md, in order (leading indentation ignored).
file(READ "${SOURCE}" src)
file(READ "${README}" readme)
string(REGEX MATCH "// \\[snippet\\]\n(.*)\n[ ]*// \\[/snippet\\]" _ "${src}")
if(NOT CMAKE_MATCH_1)
  message(FATAL_ERROR "${SOURCE}: no // [snippet] ... // [/snippet] block")
endif()
string(REGEX REPLACE "\n[ ]+" "\n" body "\n${CMAKE_MATCH_1}")
string(REGEX REPLACE "\n[ ]+" "\n" readme_flat "\n${readme}")
string(FIND "${readme_flat}" "${body}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "README.md does not contain the snippet of ${SOURCE} verbatim:\n${body}")
endif()
message(STATUS "README snippet matches ${SOURCE}")
