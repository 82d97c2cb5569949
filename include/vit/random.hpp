// vit/random.hpp - random numbers that are the same on every platform.
//
// Every draw is made here from the raw 64-bit outputs of std::mt19937_64, whose
// sequence the C++ standard fixes; the standard distributions
// (std::uniform_int_distribution, std::normal_distribution, std::shuffle, ...)
// are left to each library to implement and would give different numbers with
// different standard libraries. So a seed gives the same weights, shuffles,
// crops and mixes everywhere (up to the last-ulp behaviour of std::log,
// std::exp, std::cos and std::pow).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "vit/error.hpp"

namespace vit {

/// Uniform double in [0, 1): the top 53 bits of one output, times 2^-53.
inline double random_unit(std::mt19937_64& rng) {
  return double(rng() >> 11) * (1.0 / 9007199254740992.0);
}

/// Uniform double in [lo, hi): lo + (hi - lo) * random_unit(rng).
inline double random_uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * random_unit(rng);
}

/// Uniform integer in [0, n), n >= 1, without bias: outputs below 2^64 mod n
/// are rejected and drawn again, the rest reduced mod n.
inline std::uint64_t random_below(std::mt19937_64& rng, std::uint64_t n) {
  if (n == 0) throw argument_error("random_below: n must be at least 1");
  const std::uint64_t reject_below = (0 - n) % n;  // 2^64 mod n
  for (;;) {
    const std::uint64_t r = rng();
    if (r >= reject_below) return r % n;
  }
}

/// Standard normal (Box-Muller, cosine branch; two outputs per draw):
/// sqrt(-2 log u1) cos(2 pi u2) with u1 = (k + 1) / (2^53 + 1) in (0, 1)
/// and u2 = random_unit in [0, 1).
inline double random_normal(std::mt19937_64& rng) {
  const double two_pi = 6.283185307179586;
  const double u1 = (double(rng() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
  const double u2 = random_unit(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
}

/// Gamma(shape, 1) for shape > 0 (Marsaglia and Tsang's method; for shape < 1
/// a Gamma(shape + 1) draw times u^(1 / shape)).
inline double random_gamma(std::mt19937_64& rng, double shape) {
  if (!(shape > 0.0) || !std::isfinite(shape))
    throw argument_error("random_gamma: shape must be positive and finite, got " +
                         std::to_string(shape));
  if (shape < 1.0) {
    const double g = random_gamma(rng, shape + 1.0);
    const double u = (double(rng() >> 11) + 1.0) * (1.0 / 9007199254740992.0);  // (0, 1]
    return g * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0.0, v = 0.0;
    do {
      x = random_normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = random_unit(rng);
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

/// Beta(a, b) for a, b > 0, as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b).
inline double random_beta(std::mt19937_64& rng, double a, double b) {
  const double x = random_gamma(rng, a), y = random_gamma(rng, b);
  return x + y > 0.0 ? x / (x + y) : 0.5;
}

namespace detail {

/// splitmix64's finaliser: a bijective mix of 64 bits.
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace detail

/// A generator for stream `stream` (e.g. an epoch number) of run `seed`:
/// std::mt19937_64 seeded with mix64(seed ^ mix64(stream + 0x9E3779B97F4A7C15)),
/// mix64 being splitmix64's finaliser. Different (seed, stream) pairs give
/// unrelated sequences.
inline std::mt19937_64 make_rng(std::uint64_t seed, std::uint64_t stream = 0) {
  return std::mt19937_64(detail::mix64(seed ^ detail::mix64(stream + 0x9E3779B97F4A7C15ull)));
}

}  // namespace vit
