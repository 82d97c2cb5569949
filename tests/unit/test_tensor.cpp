// Unit tests for include/vit/tensor.hpp: vit::detail::check_shape.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "vit/error.hpp"
#include "vit/tensor.hpp"

namespace {

// Runs check_shape, which must throw vit::argument_error, and returns its message.
template <class M>
std::string shape_error(const M& m, vit::Index rows, vit::Index cols, const char* what) {
  try {
    vit::detail::check_shape(m, rows, cols, what);
  } catch (const vit::argument_error& e) {
    return e.what();
  }
  FAIL("check_shape did not throw for ", what);
  return {};
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("check_shape accepts a matrix of the expected shape") {
  const vit::Matrix<float> m(2, 3);
  CHECK_NOTHROW(vit::detail::check_shape(m, 2, 3, "m"));

  const vit::Matrix<double> d = vit::Matrix<double>::Zero(4, 1);
  CHECK_NOTHROW(vit::detail::check_shape(d, 4, 1, "d"));

  const vit::RowVector<float> bias = vit::RowVector<float>::Ones(5);
  CHECK_NOTHROW(vit::detail::check_shape(bias, 1, 5, "bias"));

  const vit::Matrix<float> empty(0, 7);
  CHECK_NOTHROW(vit::detail::check_shape(empty, 0, 7, "empty"));
}

TEST_CASE("check_shape accepts expressions, blocks and Ref views") {
  const vit::Matrix<float> m = vit::Matrix<float>::Random(6, 8);
  CHECK_NOTHROW(vit::detail::check_shape(m.block(1, 2, 3, 4), 3, 4, "block"));
  CHECK_NOTHROW(vit::detail::check_shape(m.transpose(), 8, 6, "transpose"));
  const vit::MatrixCRef<float> view = m.topRows(2);
  CHECK_NOTHROW(vit::detail::check_shape(view, 2, 8, "view"));
}

TEST_CASE("check_shape throws argument_error naming the argument and both shapes") {
  const vit::Matrix<float> weight(2, 3);

  SUBCASE("both dimensions wrong") {
    CHECK_THROWS_AS(vit::detail::check_shape(weight, 4, 5, "weight"), vit::argument_error);
    const std::string msg = shape_error(weight, 4, 5, "weight");
    CHECK(contains(msg, "weight"));
    CHECK(contains(msg, "[4, 5]"));  // expected
    CHECK(contains(msg, "[2, 3]"));  // actual
  }
  SUBCASE("rows wrong") {
    const std::string msg = shape_error(weight, 3, 3, "qkv.weight");
    CHECK(contains(msg, "qkv.weight"));
    CHECK(contains(msg, "[3, 3]"));
    CHECK(contains(msg, "[2, 3]"));
  }
  SUBCASE("cols wrong") {
    const std::string msg = shape_error(weight, 2, 4, "x");
    CHECK(contains(msg, "x"));
    CHECK(contains(msg, "[2, 4]"));
    CHECK(contains(msg, "[2, 3]"));
  }
  SUBCASE("transposed shape") {
    const std::string msg = shape_error(weight, 3, 2, "proj");
    CHECK(contains(msg, "proj"));
    CHECK(contains(msg, "[3, 2]"));
    CHECK(contains(msg, "[2, 3]"));
  }
}

TEST_CASE("argument_error from check_shape is a vit::error") {
  const vit::RowVector<double> gamma(3);
  CHECK_THROWS_AS(vit::detail::check_shape(gamma, 1, 4, "gamma"), vit::error);
  CHECK_THROWS_AS(vit::detail::check_shape(gamma, 1, 4, "gamma"), std::runtime_error);
  CHECK_THROWS_WITH(vit::detail::check_shape(gamma, 1, 4, "gamma"), doctest::Contains("gamma"));
}
