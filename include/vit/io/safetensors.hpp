// vit/io/safetensors.hpp - reader and writer of the safetensors checkpoint format.
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON, then the data section.
// The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) plus an optional "__metadata__" object of strings.
//
// The reader trusts nothing in the file: every inconsistency (bad lengths, malformed or
// ambiguous JSON, overflowing shapes, overlapping tensors, holes, truncation) is reported as a
// vit::checkpoint_error whose message starts with the file name, so a corrupt or hostile
// checkpoint can never cause an out-of-bounds read. Values are stored little-endian; this
// header only supports little-endian hosts.
//
// On POSIX systems SafeTensors::open memory-maps a regular file read-only instead of copying
// it, and release() hands a tensor's pages back once it has been copied out, so a loader does
// not hold a second copy of the weights.
// The file must then not be truncated or rewritten in place while it is open: a page past the
// new end raises SIGBUS when touched, and no check can catch that. Replacing the file by
// rename (as SafeTensorsWriter::write does) is safe; the mapping keeps the old contents.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>     // open
#include <sys/mman.h>  // mmap, madvise
#include <sys/stat.h>  // fstat
#include <unistd.h>    // fsync, fileno, close, sysconf
#define VIT_SAFETENSORS_MMAP 1
#else
#define VIT_SAFETENSORS_MMAP 0
#endif

#include "vit/error.hpp"

// Raw bytes are copied to and from host values with memcpy, which is only right on
// little-endian hosts (every platform this library targets).
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "vit/io/safetensors.hpp supports little-endian hosts only");
#endif

namespace vit::io {

/// Element types of the safetensors format.
enum class DType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64 };

/// Bytes per element of `dtype`.
inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::BOOL:
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::U16:
    case DType::I16:
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::U32:
    case DType::I32:
    case DType::F32:
      return 4;
    case DType::U64:
    case DType::I64:
    case DType::F64:
      return 8;
  }
  throw argument_error("dtype_size: invalid DType value");
}

/// The format's spelling of `dtype` ("F32", "BF16", ...).
inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::BOOL:
      return "BOOL";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
    case DType::U16:
      return "U16";
    case DType::I16:
      return "I16";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::U32:
      return "U32";
    case DType::I32:
      return "I32";
    case DType::F32:
      return "F32";
    case DType::U64:
      return "U64";
    case DType::I64:
      return "I64";
    case DType::F64:
      return "F64";
  }
  throw argument_error("dtype_name: invalid DType value");
}

/// Parses a dtype string exactly as the format spells it; nullopt if unknown.
inline std::optional<DType> parse_dtype(std::string_view name) {
  static constexpr DType all[] = {DType::BOOL, DType::U8,   DType::I8,  DType::U16, DType::I16,
                                  DType::F16,  DType::BF16, DType::U32, DType::I32, DType::F32,
                                  DType::U64,  DType::I64,  DType::F64};
  for (DType d : all)
    if (name == dtype_name(d)) return d;
  return std::nullopt;
}

/// True for the dtypes read() can convert to float/double (F16, BF16, F32, F64).
inline bool is_floating(DType dtype) {
  return dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64;
}

/// One tensor's header entry. begin/end are byte offsets relative to the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  /// Product of the dims (1 for a scalar). Never overflows for entries a SafeTensors validated.
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (std::int64_t d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
  std::uint64_t nbytes() const { return end - begin; }
};

namespace detail {

/// Largest header accepted; bounds the memory a hostile file can make the JSON parser use.
inline constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t{100} << 20;
/// Most tensors one file may list (a ViT has a few hundred; sharded language
/// models stay far below this per file).
inline constexpr std::size_t kMaxTensors = 100000;

/// a * b, or false if it does not fit in 64 bits.
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

inline std::string range_string(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

inline std::string quoted(const std::string& name) { return "'" + name + "'"; }

inline std::uint16_t load_u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// IEEE binary16 -> float; exact for every value (subnormals are renormalised, inf/nan kept).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    if (man == 0) return bits_float(sign);  // signed zero
    // Subnormal: shift the leading 1 up to the implicit-bit position, lowering the exponent.
    std::uint32_t e = 113;  // float bias 127 - half bias 15 + 1
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --e;
    }
    return bits_float(sign | (e << 23) | ((man & 0x3ffu) << 13));
  }
  return bits_float(sign | ((exp + 112) << 23) | (man << 13));
}

/// bfloat16 -> float; exact (bfloat16 is the top half of a float).
inline float bf16_to_float(std::uint16_t b) {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}

/// Rounds a double to the nearest (ties to even) value of a binary format with `exp_bits`
/// exponent and `man_bits` mantissa bits (<= 16 bits total), returning its bit pattern.
/// Rounding straight from double avoids the double-rounding error of going through float.
inline std::uint16_t round_to_small_float(double v, int exp_bits, int man_bits) {
  std::uint64_t d;
  std::memcpy(&d, &v, sizeof d);
  const std::uint64_t sign = (d >> 63) << (exp_bits + man_bits);
  const int dexp = static_cast<int>((d >> 52) & 0x7ffu);
  const std::uint64_t dman = d & ((std::uint64_t{1} << 52) - 1);
  const std::uint64_t inf = ((std::uint64_t{1} << exp_bits) - 1) << man_bits;
  if (dexp == 0x7ff) {
    const std::uint64_t quiet = std::uint64_t{1} << (man_bits - 1);
    return static_cast<std::uint16_t>(sign | inf | (dman ? quiet : 0));
  }
  // Double subnormals are far below half the smallest F16/BF16 subnormal: they round to zero.
  if (dexp == 0) return static_cast<std::uint16_t>(sign);

  const int bias = (1 << (exp_bits - 1)) - 1;
  const int exp = dexp - 1023;
  const int min_exp = 1 - bias;  // exponent of the smallest normal
  const std::uint64_t sig = (std::uint64_t{1} << 52) | dman;
  // Bits of `sig` below the kept mantissa; more for subnormal results.
  const int shift = 52 - man_bits + (exp < min_exp ? min_exp - exp : 0);
  if (shift > 54) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
  std::uint64_t kept = sig >> shift;
  const std::uint64_t rest = sig & ((std::uint64_t{1} << shift) - 1);
  const std::uint64_t half = std::uint64_t{1} << (shift - 1);
  if (rest > half || (rest == half && (kept & 1))) ++kept;
  // For normals the implicit bit of `kept` lands in the exponent field, so a rounding carry
  // (mantissa overflow, or subnormal -> smallest normal) bumps the exponent by itself.
  std::uint64_t bits =
      exp < min_exp ? kept : (static_cast<std::uint64_t>(exp + bias - 1) << man_bits) + kept;
  if (bits >= inf) bits = inf;  // overflow rounds to infinity
  return static_cast<std::uint16_t>(sign | bits);
}

inline std::uint16_t double_to_half(double v) { return round_to_small_float(v, 5, 10); }
inline std::uint16_t double_to_bf16(double v) { return round_to_small_float(v, 8, 7); }

/// double -> float without the undefined behaviour of casting an out-of-range value:
/// finite values beyond float's range round to +-max or +-inf as IEEE round-to-nearest would.
inline float narrow_to_float(double v) {
  constexpr double max = std::numeric_limits<float>::max();
  if (std::isfinite(v) && std::fabs(v) > max) {
    // Halfway between FLT_MAX and 2^128; ties go to the even neighbour, which is 2^128 = inf.
    constexpr double limit = max + 0x1p103;
    const float r = std::fabs(v) >= limit ? std::numeric_limits<float>::infinity()
                                          : std::numeric_limits<float>::max();
    return std::signbit(v) ? -r : r;
  }
  return static_cast<float>(v);
}

template <class S>
S from_double(double v) {
  if constexpr (std::is_same_v<S, float>)
    return narrow_to_float(v);
  else
    return v;
}

inline std::string errno_message(int err) { return std::generic_category().message(err); }

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

/// Reads `f` to its end. `size_hint` (what the file system reports, 0 if unknown) lets a big
/// file be read with one allocation. io_error naming `path` on a read error.
inline std::vector<std::uint8_t> read_stream(std::FILE* f, const std::string& path,
                                             std::uint64_t size_hint) {
  // Read the reported size in one go, then anything beyond it, since the size may be unknown
  // (pipes) or change meanwhile.
  std::vector<std::uint8_t> bytes;
  std::size_t expected = 0;
  if (size_hint < std::numeric_limits<std::size_t>::max() / 2)
    expected = static_cast<std::size_t>(size_hint);
  if (expected) {
    bytes.resize(expected);
    bytes.resize(std::fread(bytes.data(), 1, expected, f));
  }
  if (bytes.size() == expected) {
    std::uint8_t buf[8192];
    std::size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  }
  if (std::ferror(f)) throw io_error(path + ": read error: " + errno_message(errno));
  return bytes;
}

/// Whole-file read; io_error (naming the path) if it cannot be opened or read.
inline std::vector<std::uint8_t> read_file(const std::string& path) {
  errno = 0;
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw io_error(path + ": cannot open for reading: " + errno_message(errno));
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return read_stream(f.get(), path, ec ? 0 : static_cast<std::uint64_t>(size));
}

/// The bytes of a safetensors file: a read-only private mapping of it where the platform and
/// the file allow, else a heap copy. Immutable once made, so copies of a SafeTensors share it.
class FileBytes {
 public:
  explicit FileBytes(std::vector<std::uint8_t> bytes)
      : heap_(std::move(bytes)), data_(heap_.data()), size_(heap_.size()) {}
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() {
#if VIT_SAFETENSORS_MMAP
    if (mapped_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
#endif
  }

  /// Maps the regular file at `path`, or reads it (pipes, other devices, no mmap, mmap
  /// failure). io_error naming `path` if it cannot be opened or read.
  static std::shared_ptr<const FileBytes> open(const std::string& path) {
#if VIT_SAFETENSORS_MMAP
    errno = 0;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error(path + ": cannot open for reading: " + errno_message(errno));
    struct stat st {};
    std::uint64_t size = 0;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
      size = static_cast<std::uint64_t>(st.st_size);
      // The size seen here is the size validated against, whatever happens to the file later.
      if (size <= std::numeric_limits<std::size_t>::max()) {
        void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
          ::close(fd);  // the mapping keeps the file open
          return std::shared_ptr<const FileBytes>(
              new FileBytes(static_cast<const std::uint8_t*>(p), static_cast<std::size_t>(size)));
        }
      }
    }
    // Read through the descriptor already open, so both paths see the same file.
    std::FILE* f = ::fdopen(fd, "rb");
    if (!f) {
      const int err = errno;
      ::close(fd);
      throw io_error(path + ": cannot open for reading: " + errno_message(err));
    }
    FilePtr owned(f);
    return std::make_shared<const FileBytes>(read_stream(f, path, size));
#else
    return std::make_shared<const FileBytes>(read_file(path));
#endif
  }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool mapped() const { return mapped_; }

  /// Drops the whole pages inside bytes [begin, end) from this process's memory. Only for a
  /// mapping: its pages are clean copies of the file (the page cache keeps them), so a later
  /// access faults them back in unchanged. Heap bytes are left alone.
  void release(std::size_t begin, std::size_t end) const {
#if VIT_SAFETENSORS_MMAP && defined(MADV_DONTNEED)
    if (!mapped_ || end > size_ || begin >= end) return;
    const long page_size = ::sysconf(_SC_PAGESIZE);
    if (page_size <= 0) return;
    const std::size_t page = static_cast<std::size_t>(page_size);
    // The mapping starts on a page boundary; pages shared with neighbours are kept.
    const std::size_t lo = (begin + page - 1) / page * page;
    const std::size_t hi = end / page * page;
    if (lo < hi)
      (void)::madvise(const_cast<std::uint8_t*>(data_) + lo, hi - lo, MADV_DONTNEED);  // advisory
#else
    (void)begin;
    (void)end;
#endif
  }

 private:
  FileBytes(const std::uint8_t* map, std::size_t size) : data_(map), size_(size), mapped_(true) {}

  std::vector<std::uint8_t> heap_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
};

/// A SAX handler that rejects objects with a repeated key. nlohmann keeps the
/// last value of a duplicate silently; the format forbids duplicates because readers that
/// keep the first would see a different checkpoint.
class DuplicateKeyCheck {
 public:
  // nlohmann's parse callbacks cost O(n^2) in the entries of an object (each
  // object's end scans its parent for discarded values): 185 s for a 100,000
  // tensor header. This SAX pass over the same text is linear.
  explicit DuplicateKeyCheck(const std::string& source) : source_(source) {}
  using json = nlohmann::json;
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) {
    keys_.emplace_back();
    return true;
  }
  bool end_object() {
    keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) { return true; }
  bool end_array() { return true; }
  bool key(json::string_t& key) {
    if (!keys_.back().insert(key).second)
      throw checkpoint_error(source_ + ": header has duplicate key " + detail::quoted(key));
    return true;
  }
  // The text was parsed once already; a failure here cannot happen.
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }

 private:
  const std::string& source_;
  std::vector<std::set<std::string>> keys_;
};

}  // namespace detail

/// A parsed, validated safetensors file, memory-mapped or held in memory. Const member
/// functions are safe to call from several threads. Copies share the (immutable) bytes.
class SafeTensors {
 public:
  /// Opens and validates the file at `path`: memory-mapped read-only when it is a regular file
  /// on a POSIX system (see the note at the top of this header), else read whole. Throws
  /// io_error if it cannot be read, checkpoint_error (message starting with `path`) if it is
  /// malformed.
  static SafeTensors open(const std::string& path) {
    return from_storage(detail::FileBytes::open(path), path);
  }

  /// Validates an in-memory file; `source_name` prefixes every error message.
  static SafeTensors from_bytes(std::vector<std::uint8_t> bytes, std::string source_name) {
    return from_storage(std::make_shared<const detail::FileBytes>(std::move(bytes)),
                        std::move(source_name));
  }

  /// The path or source name given when loading.
  const std::string& source() const { return source_; }
  /// The "__metadata__" entries (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// All tensors, in data-section (offset) order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// Byte offset of the data section from the start of the file (8 + header length).
  std::uint64_t data_offset() const { return data_start_; }

  /// True when the bytes are a memory mapping of the file (then release() frees memory).
  bool mapped() const { return bytes_ && bytes_->mapped(); }

  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  /// Throws checkpoint_error "<file>: no tensor 'name'" if absent.
  const TensorInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) throw checkpoint_error(source_ + ": no tensor " + detail::quoted(name));
    return tensors_[it->second];
  }

  /// Throws exactly what read(name, out, count) would for a tensor that cannot be read that
  /// way (absent, not a float dtype, or not `count` elements), without reading anything.
  /// Returns info(name).
  const TensorInfo& check_read(const std::string& name, std::size_t count) const {
    const TensorInfo& t = info(name);
    if (!is_floating(t.dtype))
      throw checkpoint_error(source_ + ": tensor " + detail::quoted(name) + " has dtype " +
                             dtype_name(t.dtype) +
                             ", expected a floating-point dtype (F16, BF16, F32 or F64)");
    const std::uint64_t n = t.numel();
    if (static_cast<std::uint64_t>(count) != n)
      throw checkpoint_error(source_ + ": tensor " + detail::quoted(name) + " has " +
                             std::to_string(n) + " elements (shape " +
                             detail::shape_string(t.shape) + "), but " + std::to_string(count) +
                             " were requested");
    return t;
  }

  /// Copies tensor `name` into out[0, count), converting F16/BF16/F32/F64 to S (float or
  /// double; F64 values beyond float's range become +-inf). Throws checkpoint_error if the
  /// tensor is absent, `count` differs from its element count, or its dtype is not a float.
  template <class S>
  void read(const std::string& name, S* out, std::size_t count) const {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "SafeTensors::read converts to float or double only");
    const TensorInfo& t = check_read(name, count);
    const std::uint8_t* p = bytes_->data() + data_start_ + t.begin;
    switch (t.dtype) {
      case DType::F32:
        if constexpr (std::is_same_v<S, float>) {
          if (count) std::memcpy(out, p, count * sizeof(float));
        } else {
          for (std::size_t i = 0; i < count; ++i) {
            float v;
            std::memcpy(&v, p + i * sizeof v, sizeof v);
            out[i] = v;
          }
        }
        break;
      case DType::F64:
        if constexpr (std::is_same_v<S, double>) {
          if (count) std::memcpy(out, p, count * sizeof(double));
        } else {
          for (std::size_t i = 0; i < count; ++i) {
            double v;
            std::memcpy(&v, p + i * sizeof v, sizeof v);
            out[i] = detail::narrow_to_float(v);
          }
        }
        break;
      case DType::F16:
        for (std::size_t i = 0; i < count; ++i)
          out[i] = static_cast<S>(detail::half_to_float(detail::load_u16(p + 2 * i)));
        break;
      case DType::BF16:
        for (std::size_t i = 0; i < count; ++i)
          out[i] = static_cast<S>(detail::bf16_to_float(detail::load_u16(p + 2 * i)));
        break;
      default:
        break;  // rejected above
    }
  }

  /// As read(name, out, count), into a new vector of numel() elements.
  template <class S>
  std::vector<S> read(const std::string& name) const {
    const TensorInfo& t = info(name);
    // numel() * dtype_size fits in the (already loaded) file, so the allocation is bounded.
    std::vector<S> out(is_floating(t.dtype) ? static_cast<std::size_t>(t.numel()) : 0);
    read(name, out.data(), out.size());
    return out;
  }

  /// The tensor's raw little-endian bytes (info(name).nbytes() of them, possibly unaligned),
  /// valid while this object (or a copy, or the object it was moved to) lives.
  const std::uint8_t* raw(const std::string& name) const {
    const std::uint64_t begin = info(name).begin;
    return bytes_->data() + data_start_ + begin;
  }

  /// Hands the memory of tensor `name` back to the system once it has been copied out, so
  /// that a loader's resident memory does not grow by the file's size. Only affects a mapped
  /// file, whose pages are clean copies of the file: the whole pages inside the tensor leave
  /// this process (the OS page cache keeps them), and a later read()/raw() access faults them
  /// back in unchanged. No-op for in-memory bytes. Throws checkpoint_error if `name` is absent.
  void release(const std::string& name) const {
    const TensorInfo& t = info(name);
    // begin/end lie inside the validated file size, which fits in size_t.
    bytes_->release(static_cast<std::size_t>(data_start_ + t.begin),
                    static_cast<std::size_t>(data_start_ + t.end));
  }

 private:
  SafeTensors() = default;

  static SafeTensors from_storage(std::shared_ptr<const detail::FileBytes> bytes,
                                  std::string source_name) {
    SafeTensors st;
    st.source_ = std::move(source_name);
    st.bytes_ = std::move(bytes);
    st.parse();
    return st;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw checkpoint_error(source_ + ": " + what);
  }
  [[noreturn]] void fail_tensor(const std::string& name, const std::string& what) const {
    fail("tensor " + detail::quoted(name) + ": " + what);
  }

  void parse() {
    const std::uint8_t* bytes = bytes_->data();
    const std::uint64_t size = bytes_->size();
    if (size == 0) fail("empty file (expected an 8-byte header length)");
    if (size < 8)
      fail("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    if (n == 0) fail("header length is 0");
    if (n > detail::kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " +
           std::to_string(detail::kMaxHeaderBytes) + " bytes");
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
           " bytes after the length field (file truncated?)");
    data_start_ = 8 + n;
    const std::uint64_t data_size = size - data_start_;

    const auto* hbegin = bytes + 8;
    const auto* hend = hbegin + n;
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(hbegin, hend);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    {
      detail::DuplicateKeyCheck keys(source_);
      nlohmann::json::sax_parse(hbegin, hend, &keys);
    }
    if (!header.is_object())
      fail(std::string("header is not a JSON object (got ") + header.type_name() + ")");
    // The spec requires '{' first (trailing space padding is allowed, leading is not).
    if (*hbegin != '{') fail("header must start with '{'");
    // The header's byte limit already bounds the parse; this bounds the index.
    const std::size_t count = header.size() - (header.contains("__metadata__") ? 1 : 0);
    if (count > detail::kMaxTensors)
      fail("header lists " + std::to_string(count) + " tensors, more than the limit of " +
           std::to_string(detail::kMaxTensors));

    for (auto it = header.cbegin(); it != header.cend(); ++it) {
      if (it.key() == "__metadata__")
        parse_metadata(it.value());
      else
        tensors_.push_back(parse_entry(it.key(), it.value(), data_size));
    }
    check_layout(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  void parse_metadata(const nlohmann::json& value) {
    if (!value.is_object())
      fail(std::string("'__metadata__' is not an object (got ") + value.type_name() + ")");
    for (auto it = value.cbegin(); it != value.cend(); ++it) {
      if (!it->is_string())
        fail("'__metadata__' value of " + detail::quoted(it.key()) + " is not a string (got " +
             it->type_name() + ")");
      metadata_.emplace(it.key(), it->get<std::string>());
    }
  }

  // A non-negative JSON integer; floats (even 3.0) and negatives are rejected.
  static bool as_u64(const nlohmann::json& v, std::uint64_t& out) {
    if (v.is_number_unsigned()) {
      out = v.get<std::uint64_t>();
      return true;
    }
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
      out = static_cast<std::uint64_t>(v.get<std::int64_t>());
      return true;
    }
    return false;
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& e,
                         std::uint64_t data_size) const {
    if (!e.is_object())
      fail_tensor(name, std::string("entry is not an object (got ") + e.type_name() + ")");
    for (auto it = e.cbegin(); it != e.cend(); ++it) {
      const std::string& field = it.key();
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        fail_tensor(name, "unexpected field " + detail::quoted(field));
    }
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!e.contains(field)) fail_tensor(name, std::string("missing field '") + field + "'");

    TensorInfo t;
    t.name = name;
    const auto& jd = e.at("dtype");
    if (!jd.is_string()) fail_tensor(name, "dtype is not a string");
    const auto dtype = parse_dtype(jd.get_ref<const std::string&>());
    if (!dtype) fail_tensor(name, "unknown dtype " + detail::quoted(jd.get<std::string>()));
    t.dtype = *dtype;

    const auto& js = e.at("shape");
    if (!js.is_array()) fail_tensor(name, "shape is not an array");
    std::uint64_t numel = 1;
    for (std::size_t i = 0; i < js.size(); ++i) {
      std::uint64_t d = 0;
      if (!as_u64(js[i], d))
        fail_tensor(name, "shape[" + std::to_string(i) + "] = " + js[i].dump() +
                              " is not a non-negative integer");
      if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail_tensor(name,
                    "shape[" + std::to_string(i) + "] = " + std::to_string(d) + " is too large");
      t.shape.push_back(static_cast<std::int64_t>(d));
      if (!detail::checked_mul(numel, d, numel))
        fail_tensor(name, "element count of shape " + detail::shape_string(t.shape) +
                              "... overflows 64 bits");
    }
    std::uint64_t nbytes = 0;
    if (!detail::checked_mul(numel, dtype_size(t.dtype), nbytes))
      fail_tensor(name, "byte size of " + std::string(dtype_name(t.dtype)) + " shape " +
                            detail::shape_string(t.shape) + " overflows 64 bits");

    const auto& jo = e.at("data_offsets");
    if (!jo.is_array() || jo.size() != 2 || !as_u64(jo[0], t.begin) || !as_u64(jo[1], t.end))
      fail_tensor(name,
                  "data_offsets " + jo.dump() + " is not an array of two non-negative integers");
    if (t.begin > t.end)
      fail_tensor(name, "data_offsets begin " + std::to_string(t.begin) + " > end " +
                            std::to_string(t.end));
    if (t.end - t.begin != nbytes)
      fail_tensor(name, "data_offsets " + detail::range_string(t.begin, t.end) + " span " +
                            std::to_string(t.end - t.begin) + " bytes, but " + dtype_name(t.dtype) +
                            " shape " + detail::shape_string(t.shape) + " needs " +
                            std::to_string(nbytes) + " bytes");
    if (t.end > data_size)
      fail_tensor(name, "data_offsets " + detail::range_string(t.begin, t.end) +
                            " run past the end of the " + std::to_string(data_size) +
                            "-byte data section (file truncated?)");
    return t;
  }

  // The spec requires the tensors, in offset order, to cover the data section exactly.
  void check_layout(std::uint64_t data_size) {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      if (a.begin != b.begin) return a.begin < b.begin;
      if (a.end != b.end) return a.end < b.end;
      return a.name < b.name;
    });
    std::uint64_t pos = 0;
    const TensorInfo* prev = nullptr;
    for (const TensorInfo& t : tensors_) {
      if (t.begin < pos)
        fail("tensors " + detail::quoted(prev->name) + " " +
             detail::range_string(prev->begin, prev->end) + " and " + detail::quoted(t.name) + " " +
             detail::range_string(t.begin, t.end) + " overlap");
      if (t.begin > pos)
        fail("data bytes " + detail::range_string(pos, t.begin) +
             " are not covered by any tensor (hole " +
             (prev ? "between " + detail::quoted(prev->name) + " and " : std::string("before ")) +
             detail::quoted(t.name) + ")");
      pos = t.end;
      prev = &t;
    }
    if (pos != data_size)
      fail("data bytes " + detail::range_string(pos, data_size) +
           " are not covered by any tensor (hole " +
           (prev ? "after " + detail::quoted(prev->name)
                 : std::string("in a file with no tensors")) +
           ")");
  }

  std::string source_;
  std::shared_ptr<const detail::FileBytes> bytes_;
  std::uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

/// Builds a safetensors file in memory. Tensors are laid out in the order they are added,
/// each starting at the previous one's end; the header is space-padded so the data section
/// starts at an 8-byte-aligned file offset. Misuse (duplicate or reserved names, negative
/// dims, wrong sizes, unsupported conversions) throws argument_error.
class SafeTensorsWriter {
 public:
  void set_metadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  /// Stores numel(shape) values from `data` as `dtype` (F32, F64, F16 or BF16), converting
  /// from S (float or double) with round-to-nearest-even; finite values too large for the
  /// dtype become +-inf. `data` may be null only if the shape has no elements.
  template <class S>
  void add(const std::string& name, const std::vector<std::int64_t>& shape, const S* data,
           DType dtype = DType::F32) {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                  "SafeTensorsWriter::add converts from float or double only");
    if (!is_floating(dtype))
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": dtype " +
                           dtype_name(dtype) + " is not F16, BF16, F32 or F64; use add_raw");
    const std::size_t n = checked_numel(name, shape);
    std::size_t nbytes = 0;
    if (!checked_size_mul(n, dtype_size(dtype), nbytes))
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + " is too large");
    if (n && !data)
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": null data");
    std::vector<std::uint8_t> bytes(nbytes);
    std::uint8_t* p = bytes.data();
    for (std::size_t i = 0; i < n; ++i) {
      const S v = data[i];
      switch (dtype) {
        case DType::F32: {
          const float f = detail::narrow_to_float(static_cast<double>(v));
          std::memcpy(p + 4 * i, &f, 4);
          break;
        }
        case DType::F64: {
          const double d = v;
          std::memcpy(p + 8 * i, &d, 8);
          break;
        }
        case DType::F16: {
          const std::uint16_t h = detail::double_to_half(v);
          std::memcpy(p + 2 * i, &h, 2);
          break;
        }
        case DType::BF16: {
          const std::uint16_t b = detail::double_to_bf16(v);
          std::memcpy(p + 2 * i, &b, 2);
          break;
        }
        default:
          break;  // rejected above
      }
    }
    push(name, dtype, shape, std::move(bytes));
  }

  /// As add(name, shape, data.data(), dtype), checking data.size() against the shape.
  template <class S>
  void add(const std::string& name, const std::vector<std::int64_t>& shape,
           const std::vector<S>& data, DType dtype = DType::F32) {
    const std::size_t n = checked_numel(name, shape);
    if (data.size() != n)
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": shape " +
                           detail::shape_string(shape) + " has " + std::to_string(n) +
                           " elements, got " + std::to_string(data.size()) + " values");
    add(name, shape, data.data(), dtype);
  }

  /// Stores already-encoded little-endian bytes of any dtype; their size must be
  /// numel(shape) * dtype_size(dtype).
  void add_raw(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
               std::vector<std::uint8_t> bytes) {
    const std::size_t n = checked_numel(name, shape);
    std::size_t nbytes = 0;
    if (!checked_size_mul(n, dtype_size(dtype), nbytes))
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + " is too large");
    if (bytes.size() != nbytes)
      throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": " +
                           dtype_name(dtype) + " shape " + detail::shape_string(shape) + " needs " +
                           std::to_string(nbytes) + " bytes, got " + std::to_string(bytes.size()));
    push(name, dtype, shape, std::move(bytes));
  }

  /// The complete file.
  std::vector<std::uint8_t> to_bytes() const {
    const std::string header = header_json();
    std::vector<std::uint8_t> out;
    out.reserve(8 + header.size() + data_size());
    append_length(out, header.size());
    out.insert(out.end(), header.begin(), header.end());
    for (const Entry& e : entries_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    return out;
  }

  /// Writes the file atomically: to "<path>.tmp-XXXXXXXX" in the same folder, then renamed
  /// over `path`. On failure the temporary is removed, `path` is untouched, and io_error
  /// naming `path` is thrown.
  void write(const std::string& path) const {
    const std::string header = header_json();
    std::string tmp;
    detail::FilePtr f = create_temp(path, tmp);
    std::vector<std::uint8_t> len;
    append_length(len, header.size());
    bool ok = std::fwrite(len.data(), 1, len.size(), f.get()) == len.size() &&
              std::fwrite(header.data(), 1, header.size(), f.get()) == header.size();
    for (std::size_t i = 0; ok && i < entries_.size(); ++i) {
      const auto& b = entries_[i].bytes;
      ok = b.empty() || std::fwrite(b.data(), 1, b.size(), f.get()) == b.size();
    }
    ok = ok && std::fflush(f.get()) == 0;
#if defined(__unix__) || defined(__APPLE__)
    // Make the data durable before the rename makes it visible.
    ok = ok && ::fsync(fileno(f.get())) == 0;
#endif
    int err = errno;
    if (std::fclose(f.release()) != 0 && ok) {
      ok = false;
      err = errno;
    }
    std::error_code ec;
    if (!ok) {
      std::filesystem::remove(tmp, ec);
      throw io_error(path + ": cannot write temporary file " + detail::quoted(tmp) + ": " +
                     detail::errno_message(err));
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw io_error(path + ": cannot rename temporary file " + detail::quoted(tmp) +
                     " into place: " + ec.message());
    }
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };

  static bool checked_size_mul(std::size_t a, std::size_t b, std::size_t& out) {
    if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
    out = a * b;
    return true;
  }

  static std::size_t checked_numel(const std::string& name,
                                   const std::vector<std::int64_t>& shape) {
    std::size_t n = 1;
    for (std::int64_t d : shape) {
      if (d < 0)
        throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": shape " +
                             detail::shape_string(shape) + " has a negative dim");
      if (!checked_size_mul(n, static_cast<std::size_t>(d), n))
        throw argument_error("SafeTensorsWriter: tensor " + detail::quoted(name) + ": shape " +
                             detail::shape_string(shape) + " has too many elements");
    }
    return n;
  }

  void push(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
            std::vector<std::uint8_t> bytes) {
    if (name == "__metadata__")
      throw argument_error("SafeTensorsWriter: '__metadata__' is reserved, not a tensor name");
    if (!names_.insert(name).second)
      throw argument_error("SafeTensorsWriter: duplicate tensor " + detail::quoted(name));
    entries_.push_back(Entry{name, dtype, shape, std::move(bytes)});
  }

  std::uint64_t data_size() const {
    std::uint64_t n = 0;
    for (const Entry& e : entries_) n += e.bytes.size();
    return n;
  }

  static void append_length(std::vector<std::uint8_t>& out, std::uint64_t n) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
  }

  // Entries in data order (ordered_json keeps insertion order), padded with spaces.
  std::string header_json() const {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata_.empty()) {
      auto& m = h["__metadata__"] = nlohmann::ordered_json::object();
      for (const auto& [k, v] : metadata_) m[k] = v;
    }
    std::uint64_t offset = 0;
    for (const Entry& e : entries_) {
      h[e.name] = {{"dtype", dtype_name(e.dtype)},
                   {"shape", e.shape},
                   {"data_offsets", {offset, offset + e.bytes.size()}}};
      offset += e.bytes.size();
    }
    std::string s;
    try {
      s = h.dump();
    } catch (const nlohmann::json::exception&) {
      throw argument_error("SafeTensorsWriter: a tensor name or metadata string is not UTF-8");
    }
    s.append((8 - s.size() % 8) % 8, ' ');
    if (s.size() > detail::kMaxHeaderBytes)
      throw argument_error("SafeTensorsWriter: header of " + std::to_string(s.size()) +
                           " bytes exceeds the readers' limit of " +
                           std::to_string(detail::kMaxHeaderBytes));
    return s;
  }

  // Opens a fresh "<path>.tmp-XXXXXXXX" exclusively ("x"), so concurrent writers never share
  // a temporary; fopen (unlike mkstemp) gives the usual umask-based permissions.
  static detail::FilePtr create_temp(const std::string& path, std::string& tmp) {
    static std::atomic<std::uint64_t> counter{0};
    std::uint64_t seed =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    try {
      std::random_device rd;
      seed ^= (static_cast<std::uint64_t>(rd()) << 32) | rd();
    } catch (...) {
      // No entropy source: the clock and counter still make clashes unlikely, and "x" retries.
    }
    std::mt19937_64 rng(seed ^ counter.fetch_add(1));
    int err = 0;
    for (int attempt = 0; attempt < 16; ++attempt) {
      static const char hex[] = "0123456789abcdef";
      std::uint64_t r = rng();
      tmp = path + ".tmp-";
      for (int i = 0; i < 8; ++i, r >>= 4) tmp += hex[r & 15];
      errno = 0;
      detail::FilePtr f(std::fopen(tmp.c_str(), "wbx"));
      if (f) return f;
      err = errno;
      if (err != EEXIST) break;
    }
    throw io_error(path + ": cannot create temporary file " + detail::quoted(tmp) + ": " +
                   detail::errno_message(err));
  }

  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
};

}  // namespace vit::io

#undef VIT_SAFETENSORS_MMAP
