// vit/nn/gemm_lowp_common.hpp - pieces shared by the bf16 and int8 GEMMs
// (gemm_bf16.hpp, gemm_int8.hpp): an aligned byte buffer for packed weights,
// unaligned 32-bit loads and stores into scratch, argument checks and the
// empty-depth case. Internal; include the GEMM headers instead.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "vit/error.hpp"
#include "vit/nn/gemm_avx512.hpp"
#include "vit/tensor.hpp"

namespace vit::nn::detail::lowp {

// Scratch arrives as float* but holds packed bf16 pairs or u8 quads: the
// scalar code moves 32-bit words with memcpy, so it never reads or writes a
// float object through another type (the intrinsics' vector types may alias).
inline std::uint32_t load_u32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store_u32(unsigned char* p, std::uint32_t v) { std::memcpy(p, &v, sizeof v); }

/// A 64-byte aligned byte array (packed weights), copyable; resize() reuses
/// the allocation when it is large enough and leaves the contents unspecified.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  AlignedBytes(const AlignedBytes& other) { *this = other; }
  AlignedBytes(AlignedBytes&& other) noexcept { swap(other); }
  AlignedBytes& operator=(const AlignedBytes& other) {
    if (this != &other) {
      resize(other.size_);
      if (size_ != 0) std::memcpy(data_, other.data_, size_);
    }
    return *this;
  }
  AlignedBytes& operator=(AlignedBytes&& other) noexcept {
    AlignedBytes moved(std::move(other));
    swap(moved);
    return *this;
  }
  ~AlignedBytes() { release(); }

  void resize(std::size_t bytes) {
    if (bytes > capacity_) {
      release();
      data_ = static_cast<unsigned char*>(::operator new(bytes, kAlign));
      capacity_ = bytes;
    }
    size_ = bytes;
  }

  unsigned char* data() { return data_; }
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

  void swap(AlignedBytes& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  static constexpr std::align_val_t kAlign{64};

  void release() noexcept {
    if (data_) ::operator delete(data_, kAlign);
    data_ = nullptr;
    size_ = capacity_ = 0;
  }

  unsigned char* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

// The checks gemm_packed makes, for a packed weight of shape [n, k]: a [m, k],
// c [m, n], 0 <= n0 <= n1 <= n, scratch present when there is work, and c's
// address span apart from a's (c is written while a is still read).
inline void check_args(const char* fn, const MatrixCRef<float>& a, Index n, Index k,
                       const MatrixRef<float>& c, Index n0, Index n1, const float* scratch) {
  const Index m = a.rows();
  if (a.cols() != k)
    throw argument_error(std::string(fn) + ": a has " + std::to_string(a.cols()) +
                         " columns, the packed weight " + std::to_string(k));
  if (c.rows() != m || c.cols() != n)  // (no string is built unless it fails)
    throw argument_error(std::string(fn) + ": c: expected shape " +
                         vit::detail::shape_string(m, n) + ", got " +
                         vit::detail::shape_string(c.rows(), c.cols()));
  if (n0 < 0 || n0 > n1 || n1 > n)
    throw argument_error(std::string(fn) + ": column range [" + std::to_string(n0) + ", " +
                         std::to_string(n1) + ") outside [0, " + std::to_string(n) + ")");
  if (!scratch && m > 0 && k > 0 && n0 < n1)
    throw argument_error(std::string(fn) + ": scratch is null");
  if (m > 0 && k > 0 && n > 0) {
    const auto a_lo = reinterpret_cast<std::uintptr_t>(a.data());
    const auto a_hi = reinterpret_cast<std::uintptr_t>(a.data() + (m - 1) * a.outerStride() + k);
    const auto c_lo = reinterpret_cast<std::uintptr_t>(c.data());
    const auto c_hi = reinterpret_cast<std::uintptr_t>(c.data() + (m - 1) * c.outerStride() + n);
    if (a_lo < c_hi && c_lo < a_hi) throw argument_error(std::string(fn) + ": c overlaps a");
  }
}

// k == 0: the product is empty, only the bias (and GELU) remain.
inline void bias_only(Index m, float* c, Index ldc, const float* bias, Epilogue ep, Index n0,
                      Index n1) {
  for (Index i = 0; i < m; ++i)
    for (Index j = n0; j < n1; ++j) {
      const float p = bias ? bias[j] : 0.0f;
      float& out = c[i * ldc + j];
      out = ep == Epilogue::accumulate ? out + p : ep == Epilogue::gelu ? pgemm::gelu_scalar(p) : p;
    }
}

// Where the micro-tile after the one at rows [ir, ir + r) of the row block
// [0, mc) and panel columns [j0, j0 + nr) writes, for prefetching: the rows
// below, else the next panel's top, else nothing.
inline std::pair<const float*, int> next_tile(const float* c, Index ldc, Index ic, Index ir, int r,
                                              Index mc, Index j0, Index nr, Index n1, int mr) {
  if (ir + r < mc) return {c + (ic + ir + r) * ldc + j0, pgemm::panel_rows(ir + r, mc, mr)};
  if (j0 + nr < n1) return {c + ic * ldc + j0 + nr, pgemm::panel_rows(0, mc, mr)};
  return {nullptr, 0};
}

}  // namespace vit::nn::detail::lowp
