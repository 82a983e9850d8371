#pragma once
// Host-side decompression of a bzImage's payload (the compressed vmlinux that
// the setup header's payload_offset and payload_length locate), so that the
// Linux loader can enter the kernel proper directly instead of translating
// the kernel's own decompressor (KernelEntry::kDecompressed in
// runtime/linux_boot.h). The format is told by its magic number, as
// Documentation/arch/x86/boot.rst ("payload_offset") says it must be.
//
// Every payload the kernel's build writes ends with the uncompressed size as
// a 32-bit little-endian number: gzip's own trailer (ISIZE) holds it, and
// scripts/Makefile.lib's size_append adds it after every other format. The
// kernel's decompressor sizes its output from those 4 bytes (mkpiggy reads
// them as z_output_len); so does this one, and it checks that the stream
// produces exactly that many bytes. Bytes after the end of the compressed
// stream (the appended size) are ignored.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace btvm {

enum class PayloadFormat : uint8_t {
  kGzip,   // 1f 8b                       zlib
  kBzip2,  // 42 5a 68 ("BZh")            not supported
  kLzma,   // 5d 00 00 (legacy .lzma)     liblzma's lzma_alone decoder
  kXz,     // fd 37 7a 58 5a 00           liblzma
  kLzo,    // 89 4c 5a 4f ("\x89LZO")     not supported
  kLz4,    // 02 21 4c 18 (legacy frame)  liblz4, block by block
  kZstd,   // 28 b5 2f fd                 libzstd
  kUnknown,
};

// The format named by the payload's first bytes.
PayloadFormat DetectPayloadFormat(std::span<const uint8_t> payload);

// "gzip", "bzip2", "lzma", "xz", "lzo", "lz4", "zstd", or "unknown".
std::string_view PayloadFormatName(PayloadFormat format);

// True for the formats DecompressKernelPayload can decompress.
bool CanDecompress(PayloadFormat format);

// No kernel btvm loads decompresses to more than this; a size field above it
// is a corrupt payload, not a reason to allocate gigabytes.
inline constexpr uint64_t kMaxDecompressedKernel = uint64_t{1} << 30;

// Decompresses a whole payload. Errors are one line: an unsupported or
// unknown format (naming it), a size field of zero or above
// kMaxDecompressedKernel, a corrupt or truncated stream, or a stream whose
// output differs from its size field.
Result<std::vector<uint8_t>> DecompressKernelPayload(std::span<const uint8_t> payload);

}  // namespace btvm
