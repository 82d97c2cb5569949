// vit/io/inflate.hpp - DEFLATE (RFC 1951) and gzip (RFC 1952) decompression.
//
//   std::vector<std::uint8_t> raw = vit::io::gunzip(bytes.data(), bytes.size(), "a.gz");
//
// A small, self-contained decoder so that data readers can open the .gz files
// datasets ship as, without a zlib dependency. It decodes all three block types
// (stored, fixed Huffman, dynamic Huffman), every gzip header field (FEXTRA,
// FNAME, FCOMMENT, FHCRC) and concatenated gzip members, and checks each
// member's CRC-32 and length. It trusts nothing in its input: malformed data
// (bad codes, distances reaching before the start, truncation, over-subscribed
// Huffman tables, CRC mismatch, trailing garbage) is reported as a vit::io_error
// whose message starts with the source name; it never reads out of bounds.
// Header-only; decoding is single-threaded but all functions are reentrant.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "vit/error.hpp"

namespace vit {
namespace io {

/// Default limit on the decompressed size (guards against "zip bombs"): 4 GiB
/// (1 GiB where size_t has 32 bits).
inline constexpr std::size_t kMaxInflatedSize = std::size_t{1}
                                                << (sizeof(std::size_t) >= 8 ? 32 : 30);

namespace detail {

/// CRC-32 table for the reflected polynomial 0xEDB88320 (ISO 3309, as gzip uses).
inline constexpr std::array<std::uint32_t, 256> make_crc32_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[n] = c;
  }
  return t;
}

inline constexpr std::array<std::uint32_t, 256> kCrc32Table = make_crc32_table();

// RFC 1951 section 3.2.5: base values and extra bits of the length symbols
// 257..285 and of the distance symbols 0..29.
inline constexpr std::uint16_t kLengthBase[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                                  15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                                  67, 83, 99, 115, 131, 163, 195, 227, 258};
inline constexpr std::uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
inline constexpr std::uint16_t kDistBase[30] = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
inline constexpr std::uint8_t kDistExtra[30] = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/// Order in which a dynamic block lists the code lengths of the code-length alphabet.
inline constexpr std::uint8_t kCodeLengthOrder[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                      11, 4,  12, 3, 13, 2, 14, 1, 15};

inline constexpr int kMaxCodeBits = 15;
inline constexpr int kFastBits = 10;  // codes up to this long decode with one table look-up

/// Reads a byte buffer as the little-endian bit stream DEFLATE defines
/// (first bit = least significant bit of the first byte).
class BitReader {
 public:
  BitReader(const std::uint8_t* data, std::size_t size, const std::string& source)
      : data_(data), size_(size), source_(source) {}

  /// Tops the bit buffer up to at least 57 bits, or until the input ends.
  void refill() {
    while (count_ <= 56 && pos_ < size_) {
      buf_ |= std::uint64_t(data_[pos_++]) << count_;
      count_ += 8;
    }
  }

  /// The next n <= 32 bits as an unsigned number; io_error if the input ends first.
  std::uint32_t bits(int n) {
    if (n == 0) return 0;
    if (count_ < n) {
      refill();
      if (count_ < n) fail("unexpected end of compressed data");
    }
    const std::uint32_t v = std::uint32_t(buf_ & ((std::uint64_t{1} << n) - 1));
    buf_ >>= n;
    count_ -= n;
    return v;
  }

  /// Up to 64 buffered bits (fewer near the end of the input), without consuming them.
  std::uint64_t peek() const { return buf_; }
  int available() const { return count_; }
  void consume(int n) {
    buf_ >>= n;
    count_ -= n;
  }

  /// Drops the bits left in the current byte (stored blocks start on a byte boundary).
  void align_to_byte() { consume(count_ & 7); }

  /// Bytes of input consumed so far, counting whole bytes still buffered as unread.
  std::size_t byte_position() const { return pos_ - std::size_t(count_ / 8); }

  /// Moves the read position to `pos` (byte-aligned), discarding the bit buffer.
  void seek(std::size_t pos) {
    pos_ = pos;
    buf_ = 0;
    count_ = 0;
  }

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(source_ + ": corrupt compressed data: " + what + " (near byte " +
                   std::to_string(byte_position()) + ")");
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  const std::string& source_;
  std::size_t pos_ = 0;
  std::uint64_t buf_ = 0;
  int count_ = 0;
};

/// A canonical Huffman code (RFC 1951 section 3.2.2) built from its code
/// lengths. Codes of at most kFastBits bits are decoded through a table
/// indexed by the next kFastBits stream bits; longer ones bit by bit from the
/// canonical structure (per length: first code, number of codes, and where
/// its symbols start in the code-ordered symbol list).
class Huffman {
 public:
  /// `lengths[s]` is the code length of symbol s (0 = unused). Throws (through
  /// `in`) if the lengths over-subscribe the code space. An incomplete code is
  /// accepted; reading one of its unassigned bit patterns is an error.
  void build(const std::uint8_t* lengths, int n, const BitReader& in) {
    count_.fill(0);
    for (int s = 0; s < n; ++s) ++count_[lengths[s]];
    count_[0] = 0;
    int left = 1;  // code space still free, in units of the current length
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      left = left * 2 - count_[std::size_t(len)];
      if (left < 0) in.fail("over-subscribed Huffman code lengths");
    }
    // First code and first symbol slot of each length.
    std::array<std::uint16_t, kMaxCodeBits + 2> next_code{};
    std::uint32_t code = 0, slot = 0;
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      code = (code + count_[std::size_t(len - 1)]) << 1;  // count_[0] is 0
      first_code_[std::size_t(len)] = std::uint16_t(code);
      first_slot_[std::size_t(len)] = std::uint16_t(slot);
      next_code[std::size_t(len)] = std::uint16_t(code);
      slot += count_[std::size_t(len)];
    }
    symbols_.assign(slot, 0);
    fast_.fill(0);
    for (int s = 0; s < n; ++s) {
      const int len = lengths[s];
      if (len == 0) continue;
      const std::uint32_t c = next_code[std::size_t(len)]++;
      symbols_[first_slot_[std::size_t(len)] + (c - first_code_[std::size_t(len)])] =
          std::uint16_t(s);
      if (len <= kFastBits) {
        // Codes are sent most significant bit first, so in the LSB-first bit
        // buffer they appear reversed; every continuation of the reversed code
        // up to kFastBits bits maps to this symbol.
        std::uint32_t r = 0;
        for (int b = 0; b < len; ++b) r |= ((c >> b) & 1u) << (len - 1 - b);
        for (std::uint32_t i = r; i < (1u << kFastBits); i += 1u << len)
          fast_[i] = std::uint16_t((s << 4) | len);
      }
    }
  }

  /// Reads one symbol from `in`.
  int decode(BitReader& in) const {
    in.refill();
    const std::uint16_t e = fast_[std::size_t(in.peek() & ((1u << kFastBits) - 1))];
    if (e != 0 && (e & 15) <= in.available()) {
      in.consume(e & 15);
      return e >> 4;
    }
    // Slow path: codes longer than kFastBits, or the last bits of the input.
    std::uint32_t code = 0;
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      code = (code << 1) | in.bits(1);
      const std::uint32_t offset = code - first_code_[std::size_t(len)];
      if (code >= first_code_[std::size_t(len)] && offset < count_[std::size_t(len)])
        return symbols_[first_slot_[std::size_t(len)] + offset];
    }
    in.fail("invalid Huffman code");
  }

 private:
  std::array<std::uint16_t, kMaxCodeBits + 1> count_{};
  std::array<std::uint16_t, kMaxCodeBits + 2> first_code_{};
  std::array<std::uint16_t, kMaxCodeBits + 2> first_slot_{};
  std::vector<std::uint16_t> symbols_;
  std::array<std::uint16_t, 1u << kFastBits> fast_{};  // (symbol << 4) | length, 0 = none
};

[[noreturn]] inline void too_large(const std::string& source, std::size_t limit) {
  throw io_error(source + ": decompressed data exceeds the limit of " + std::to_string(limit) +
                 " bytes");
}

/// Decodes one DEFLATE stream from `in`, appending to `out` (which may already
/// hold earlier data; back-references never reach before `start`).
inline void inflate_stream(BitReader& in, std::vector<std::uint8_t>& out, std::size_t limit,
                           const std::string& source) {
  const std::size_t start = out.size();
  Huffman lit, dist;
  bool last = false;
  while (!last) {
    last = in.bits(1) != 0;
    const std::uint32_t type = in.bits(2);
    if (type == 0) {
      // Stored: byte-aligned LEN, NLEN (one's complement), then LEN raw bytes.
      in.align_to_byte();
      const std::uint32_t len = in.bits(16);
      const std::uint32_t nlen = in.bits(16);
      if ((len ^ 0xFFFFu) != nlen) in.fail("stored block length does not match its complement");
      const std::size_t pos = in.byte_position();
      if (in.size() - pos < len) in.fail("stored block runs past the end of the data");
      if (out.size() + len > limit) too_large(source, limit);
      out.insert(out.end(), in.data() + pos, in.data() + pos + len);
      in.seek(pos + len);
      continue;
    }
    if (type == 3) in.fail("invalid block type 3");
    if (type == 1) {
      // Fixed codes (RFC 1951 section 3.2.6). Distance symbols 30 and 31 get
      // codes but never occur in valid data.
      std::uint8_t l[288];
      for (int s = 0; s < 288; ++s) l[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
      lit.build(l, 288, in);
      std::uint8_t d[32];
      for (std::uint8_t& v : d) v = 5;
      dist.build(d, 32, in);
    } else {
      // Dynamic codes: their lengths, themselves Huffman-coded.
      const int hlit = int(in.bits(5)) + 257;
      const int hdist = int(in.bits(5)) + 1;
      const int hclen = int(in.bits(4)) + 4;
      if (hlit > 286 || hdist > 30)
        in.fail("dynamic block declares " + std::to_string(hlit) + " literal/length and " +
                std::to_string(hdist) + " distance codes (at most 286 and 30)");
      std::uint8_t cl[19] = {};
      for (int i = 0; i < hclen; ++i) cl[kCodeLengthOrder[i]] = std::uint8_t(in.bits(3));
      Huffman clcode;
      clcode.build(cl, 19, in);
      std::uint8_t lengths[286 + 30] = {};
      int n = 0;
      while (n < hlit + hdist) {
        const int sym = clcode.decode(in);
        if (sym < 16) {
          lengths[n++] = std::uint8_t(sym);
          continue;
        }
        std::uint8_t value = 0;
        int repeat = 0;
        if (sym == 16) {
          if (n == 0) in.fail("code length repeat with no previous length");
          value = lengths[n - 1];
          repeat = 3 + int(in.bits(2));
        } else if (sym == 17) {
          repeat = 3 + int(in.bits(3));
        } else {
          repeat = 11 + int(in.bits(7));
        }
        if (n + repeat > hlit + hdist) in.fail("code lengths overflow the declared count");
        for (int i = 0; i < repeat; ++i) lengths[n++] = value;
      }
      if (lengths[256] == 0) in.fail("dynamic block has no end-of-block code");
      lit.build(lengths, hlit, in);
      dist.build(lengths + hlit, hdist, in);
    }
    // Huffman-coded data: literals, end of block, or (length, distance) copies.
    for (;;) {
      const int sym = lit.decode(in);
      if (sym < 256) {
        if (out.size() >= limit) too_large(source, limit);
        out.push_back(std::uint8_t(sym));
        continue;
      }
      if (sym == 256) break;
      if (sym > 285) in.fail("invalid length symbol " + std::to_string(sym));
      const std::size_t length =
          kLengthBase[sym - 257] + std::size_t(in.bits(kLengthExtra[sym - 257]));
      const int dsym = dist.decode(in);
      if (dsym > 29) in.fail("invalid distance symbol " + std::to_string(dsym));
      const std::size_t distance = kDistBase[dsym] + std::size_t(in.bits(kDistExtra[dsym]));
      if (distance > out.size() - start)
        in.fail("distance " + std::to_string(distance) + " reaches before the start of the data");
      if (out.size() + length > limit) too_large(source, limit);
      // Byte by byte: the source may overlap what is being written (runs).
      std::size_t from = out.size() - distance;
      for (std::size_t i = 0; i < length; ++i) out.push_back(out[from++]);
    }
  }
}

inline std::uint32_t read_le32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
         std::uint32_t(p[3]) << 24;
}

}  // namespace detail

/// CRC-32 of `size` bytes, continuing from `crc` (0 to start), as gzip and zlib compute it.
inline std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0) {
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i)
    crc = detail::kCrc32Table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// True if the data starts with the gzip magic bytes 1f 8b.
inline bool is_gzip(const std::uint8_t* data, std::size_t size) {
  return size >= 2 && data[0] == 0x1F && data[1] == 0x8B;
}

/// Decompresses one raw DEFLATE stream (no zlib or gzip wrapper). Bytes after
/// the final block are ignored; `consumed`, if given, receives how many bytes
/// the stream used. Throws io_error naming `source` for malformed or truncated
/// data, or if the output would exceed `limit` bytes.
inline std::vector<std::uint8_t> inflate(const std::uint8_t* data, std::size_t size,
                                         const std::string& source, std::size_t* consumed = nullptr,
                                         std::size_t limit = kMaxInflatedSize) {
  detail::BitReader in(data, size, source);
  std::vector<std::uint8_t> out;
  detail::inflate_stream(in, out, limit, source);
  if (consumed) *consumed = in.byte_position();
  return out;
}

/// Decompresses a gzip file held in memory: one or more members back to back,
/// each checked against its CRC-32 and length. Throws io_error naming `source`
/// if the data is not gzip, is truncated or corrupt, has trailing bytes after
/// the last member, or would decompress to more than `limit` bytes.
inline std::vector<std::uint8_t> gunzip(const std::uint8_t* data, std::size_t size,
                                        const std::string& source,
                                        std::size_t limit = kMaxInflatedSize) {
  std::vector<std::uint8_t> out;
  // Preallocate from the last member's ISIZE (its size mod 2^32): a hint only,
  // capped by DEFLATE's best ratio (about 1032:1) so a forged value costs nothing.
  if (size >= 18)
    out.reserve(std::min({std::size_t(detail::read_le32(data + size - 4)), limit, size * 1032}));
  std::size_t pos = 0;
  int member = 0;
  while (pos < size) {
    const std::string where = source + ": gzip member " + std::to_string(member) + ": ";
    const std::uint8_t* p = data + pos;
    const std::size_t left = size - pos;
    if (!is_gzip(p, left)) {
      if (member == 0) throw io_error(source + ": not a gzip file (no 1f 8b signature)");
      throw io_error(source + ": " + std::to_string(left) +
                     " bytes of trailing data after the last gzip member");
    }
    if (left < 18) throw io_error(where + "truncated header or trailer");
    if (p[2] != 8)
      throw io_error(where + "compression method " + std::to_string(p[2]) + " is not deflate (8)");
    const std::uint8_t flags = p[3];
    if (flags & 0xE0) throw io_error(where + "reserved header flag bits are set");
    std::size_t h = 10;  // ID1 ID2 CM FLG MTIME(4) XFL OS
    auto need = [&](std::size_t n) {
      if (left - h < n) throw io_error(where + "truncated header");
    };
    if (flags & 0x04) {  // FEXTRA: 2-byte length, then that many bytes
      need(2);
      const std::size_t xlen = std::size_t(p[h]) | std::size_t(p[h + 1]) << 8;
      h += 2;
      need(xlen);
      h += xlen;
    }
    for (std::uint8_t bit : {std::uint8_t(0x08), std::uint8_t(0x10)}) {  // FNAME, FCOMMENT
      if (!(flags & bit)) continue;
      while (true) {
        need(1);
        if (p[h++] == 0) break;
      }
    }
    if (flags & 0x02) {  // FHCRC: low 16 bits of the CRC-32 of the header so far
      need(2);
      const std::uint32_t want = std::uint32_t(p[h]) | std::uint32_t(p[h + 1]) << 8;
      if ((crc32(p, h) & 0xFFFFu) != want) throw io_error(where + "header CRC mismatch");
      h += 2;
    }
    const std::size_t begin = out.size();
    detail::BitReader in(p + h, left - h, source);
    detail::inflate_stream(in, out, limit, source);
    const std::size_t end = h + in.byte_position();
    if (left - end < 8) throw io_error(where + "truncated trailer (CRC-32 and length)");
    const std::uint32_t want_crc = detail::read_le32(p + end);
    const std::uint32_t want_size = detail::read_le32(p + end + 4);
    const std::uint32_t got_crc = crc32(out.data() + begin, out.size() - begin);
    if (got_crc != want_crc)
      throw io_error(where + "CRC-32 mismatch (data corrupt): stored " + std::to_string(want_crc) +
                     ", computed " + std::to_string(got_crc));
    if (std::uint32_t(out.size() - begin) != want_size)
      throw io_error(where + "length mismatch: trailer says " + std::to_string(want_size) +
                     " bytes (mod 2^32), decoded " + std::to_string(out.size() - begin));
    pos += end + 8;
    ++member;
  }
  if (member == 0) throw io_error(source + ": empty file, not a gzip file");
  return out;
}

}  // namespace io
}  // namespace vit
