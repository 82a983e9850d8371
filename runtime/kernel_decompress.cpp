#include "runtime/kernel_decompress.h"

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/format.h"

namespace btvm {
namespace {

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

bool StartsWith(std::span<const uint8_t> bytes, std::initializer_list<uint8_t> magic) {
  return bytes.size() >= magic.size() && std::equal(magic.begin(), magic.end(), bytes.begin());
}

std::string What(PayloadFormat format) {
  return std::string(PayloadFormatName(format)) + " kernel payload";
}

Error Corrupt(PayloadFormat format, const std::string& why) {
  return MakeError(What(format) + " is corrupt: " + why);
}

Error SizeMismatch(PayloadFormat format, uint64_t produced, uint64_t expected) {
  return MakeError(What(format) + " decompresses to " + (produced > expected ? "more than " : "") +
                   Hex(produced) + " bytes, not the " + Hex(expected) + " its size field gives");
}

// gzip through zlib: one member, whose ISIZE trailer is the size field.
Status Gunzip(std::span<const uint8_t> in, std::span<uint8_t> out) {
  constexpr PayloadFormat kFormat = PayloadFormat::kGzip;
  if (in.size() > UINT_MAX || out.size() > UINT_MAX) return MakeError(What(kFormat) + " too large");
  z_stream zs{};
  // 16 + MAX_WBITS: a gzip wrapper (header and CRC-32/ISIZE trailer), no zlib one.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return MakeError("cannot initialize zlib: out of memory");
  }
  // zlib's API is not const-correct; inflate only reads next_in.
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&zs, Z_FINISH);
  const uint64_t produced = zs.total_out;
  const std::string msg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  if (rc == Z_STREAM_END) {
    if (produced != out.size()) return SizeMismatch(kFormat, produced, out.size());
    return Ok{};
  }
  if (rc == Z_BUF_ERROR && zs.avail_out == 0) {
    return SizeMismatch(kFormat, produced + 1, out.size());
  }
  if (rc == Z_BUF_ERROR) return Corrupt(kFormat, "the stream ends early");
  return Corrupt(kFormat, msg.empty() ? "zlib error " + std::to_string(rc) : msg);
}

std::string LzmaMessage(lzma_ret rc) {
  switch (rc) {
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_FORMAT_ERROR:
      return "not in the format its magic names";
    case LZMA_OPTIONS_ERROR:
      return "unsupported options";
    case LZMA_DATA_ERROR:
      return "bad compressed data";
    case LZMA_BUF_ERROR:
      return "the stream ends early";
    case LZMA_UNSUPPORTED_CHECK:
      return "unsupported integrity check";
    default:
      return "liblzma error " + std::to_string(static_cast<int>(rc));
  }
}

// xz (one stream: without LZMA_CONCATENATED the decoder stops at the end of
// the first, leaving the size field unread) and legacy .lzma.
Status Unlzma(PayloadFormat format, std::span<const uint8_t> in, std::span<uint8_t> out) {
  lzma_stream strm = LZMA_STREAM_INIT;
  const lzma_ret init = format == PayloadFormat::kXz ? lzma_stream_decoder(&strm, UINT64_MAX, 0)
                                                     : lzma_alone_decoder(&strm, UINT64_MAX);
  if (init != LZMA_OK) return MakeError("cannot initialize liblzma: " + LzmaMessage(init));
  strm.next_in = in.data();
  strm.avail_in = in.size();
  strm.next_out = out.data();
  strm.avail_out = out.size();
  lzma_ret rc = lzma_code(&strm, LZMA_FINISH);
  // A full output buffer returns LZMA_OK; one more call tells whether the
  // stream ends exactly there.
  if (rc == LZMA_OK && strm.avail_out == 0) {
    uint8_t extra;
    strm.next_out = &extra;
    strm.avail_out = 1;
    rc = lzma_code(&strm, LZMA_FINISH);
    if (rc == LZMA_OK || (rc == LZMA_STREAM_END && strm.avail_out == 0)) {
      lzma_end(&strm);
      return SizeMismatch(format, out.size() + 1, out.size());
    }
  }
  const uint64_t produced = strm.total_out;
  lzma_end(&strm);
  if (rc != LZMA_STREAM_END) return Corrupt(format, LzmaMessage(rc));
  if (produced != out.size()) return SizeMismatch(format, produced, out.size());
  return Ok{};
}

// LZ4's legacy frame (`lz4 -l`, as the kernel's build writes it): the magic,
// then blocks, each a 32-bit little-endian compressed size and that many
// bytes, decompressing to at most 8 MiB. The frame has no end marker: it
// ends where the input does (here: where the size field says the output is
// complete). A block size equal to the magic starts another frame.
Status Unlz4(std::span<const uint8_t> in, std::span<uint8_t> out) {
  constexpr PayloadFormat kFormat = PayloadFormat::kLz4;
  constexpr uint32_t kLegacyMagic = 0x184c2102;
  constexpr uint64_t kLegacyBlock = uint64_t{8} << 20;
  const uint64_t max_block = static_cast<uint64_t>(LZ4_compressBound(kLegacyBlock));
  uint64_t pos = 4, produced = 0;
  auto ends_early = [&] {
    return Corrupt(kFormat, "the stream ends after " + Hex(produced) + " of the " +
                                Hex(out.size()) + " bytes its size field gives");
  };
  while (produced < out.size()) {
    if (in.size() - pos < 4) return ends_early();
    const uint32_t block = Le32(in.data() + pos);
    pos += 4;
    if (block == kLegacyMagic) continue;
    if (block > max_block) {
      return Corrupt(kFormat, "a block at offset " + Hex(pos - 4) + " claims " + Hex(block) +
                                  " bytes, more than an 8 MiB block compresses to");
    }
    if (block > in.size() - pos) return ends_early();
    const uint64_t room = std::min(out.size() - produced, kLegacyBlock);
    // Both sizes fit an int: block <= LZ4_compressBound(8 MiB), room <= 8 MiB.
    const int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data() + pos),
                                      reinterpret_cast<char*>(out.data() + produced),
                                      static_cast<int>(block), static_cast<int>(room));
    if (n < 0) {
      // A block that would overrun the output reports an error too.
      return room < kLegacyBlock
                 ? MakeError(What(kFormat) + " is corrupt or decompresses to more than the " +
                             Hex(out.size()) + " bytes its size field gives")
                 : Corrupt(kFormat, "bad block at offset " + Hex(pos - 4));
    }
    produced += static_cast<uint64_t>(n);
    pos += block;
  }
  return Ok{};
}

// zstd: the first frame (ZSTD_findFrameCompressedSize stops before the size
// field, which ZSTD_decompress would take for the start of another frame).
Status Unzstd(std::span<const uint8_t> in, std::span<uint8_t> out) {
  constexpr PayloadFormat kFormat = PayloadFormat::kZstd;
  const size_t frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame)) return Corrupt(kFormat, ZSTD_getErrorName(frame));
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (dctx == nullptr) return MakeError("cannot initialize libzstd: out of memory");
  // The kernel's build compresses with `zstd -22 --ultra`, whose window can
  // exceed the default decoder limit (2^27): allow any window (the
  // 64-bit ZSTD_WINDOWLOG_MAX, 31).
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 31);
  const size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), in.data(), frame);
  ZSTD_freeDCtx(dctx);
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
      return SizeMismatch(kFormat, out.size() + 1, out.size());
    }
    return Corrupt(kFormat, ZSTD_getErrorName(n));
  }
  if (n != out.size()) return SizeMismatch(kFormat, n, out.size());
  return Ok{};
}

}  // namespace

PayloadFormat DetectPayloadFormat(std::span<const uint8_t> payload) {
  if (StartsWith(payload, {0x1f, 0x8b})) return PayloadFormat::kGzip;
  if (StartsWith(payload, {0x42, 0x5a, 0x68})) return PayloadFormat::kBzip2;
  if (StartsWith(payload, {0x5d, 0x00, 0x00})) return PayloadFormat::kLzma;
  if (StartsWith(payload, {0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00})) return PayloadFormat::kXz;
  if (StartsWith(payload, {0x89, 0x4c, 0x5a, 0x4f})) return PayloadFormat::kLzo;
  if (StartsWith(payload, {0x02, 0x21, 0x4c, 0x18})) return PayloadFormat::kLz4;
  if (StartsWith(payload, {0x28, 0xb5, 0x2f, 0xfd})) return PayloadFormat::kZstd;
  return PayloadFormat::kUnknown;
}

std::string_view PayloadFormatName(PayloadFormat format) {
  switch (format) {
    case PayloadFormat::kGzip:
      return "gzip";
    case PayloadFormat::kBzip2:
      return "bzip2";
    case PayloadFormat::kLzma:
      return "lzma";
    case PayloadFormat::kXz:
      return "xz";
    case PayloadFormat::kLzo:
      return "lzo";
    case PayloadFormat::kLz4:
      return "lz4";
    case PayloadFormat::kZstd:
      return "zstd";
    case PayloadFormat::kUnknown:
      break;
  }
  return "unknown";
}

bool CanDecompress(PayloadFormat format) {
  switch (format) {
    case PayloadFormat::kGzip:
    case PayloadFormat::kLzma:
    case PayloadFormat::kXz:
    case PayloadFormat::kLz4:
    case PayloadFormat::kZstd:
      return true;
    case PayloadFormat::kBzip2:
    case PayloadFormat::kLzo:
    case PayloadFormat::kUnknown:
      break;
  }
  return false;
}

Result<std::vector<uint8_t>> DecompressKernelPayload(std::span<const uint8_t> payload) {
  const PayloadFormat format = DetectPayloadFormat(payload);
  if (format == PayloadFormat::kUnknown) {
    std::string magic;
    for (size_t i = 0; i < std::min<size_t>(payload.size(), 4); ++i) {
      char byte[4];
      std::snprintf(byte, sizeof byte, "%02x", payload[i]);
      magic += (i ? " " : "") + std::string(byte);
    }
    return MakeError("kernel payload has an unknown compression format (magic " +
                     (payload.empty() ? "none: the payload is empty" : magic) + ")");
  }
  if (!CanDecompress(format)) {
    return MakeError("kernel payload is " + std::string(PayloadFormatName(format)) +
                     "-compressed, which btvm cannot decompress on the host (it can gzip, xz, "
                     "lzma, lz4 and zstd); boot the bzImage through its own decompressor");
  }
  if (payload.size() < 8)
    return Corrupt(format, "only " + std::to_string(payload.size()) + " bytes");
  const uint64_t size = Le32(payload.data() + payload.size() - 4);
  if (size == 0 || size > kMaxDecompressedKernel) {
    return Corrupt(format, "its size field says " + Hex(size) + " bytes");
  }

  std::vector<uint8_t> out(size);
  Status s = Ok{};
  switch (format) {
    case PayloadFormat::kGzip:
      s = Gunzip(payload, out);
      break;
    case PayloadFormat::kLzma:
    case PayloadFormat::kXz:
      s = Unlzma(format, payload, out);
      break;
    case PayloadFormat::kLz4:
      s = Unlz4(payload, out);
      break;
    case PayloadFormat::kZstd:
      s = Unzstd(payload, out);
      break;
    default:
      BTVM_CHECK(false && "CanDecompress admits only the formats above");
  }
  if (!s) return s.error();
  return out;
}

}  // namespace btvm
