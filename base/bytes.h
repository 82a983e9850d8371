#pragma once
// Bounds-checked reads from byte buffers (file images the loaders parse).

#include <cstdint>
#include <cstring>
#include <span>

#include "base/check.h"

namespace btvm {

// True if [offset, offset + size) lies inside a buffer of `total` bytes,
// written to be overflow-free for any 64-bit inputs.
inline bool InBounds(uint64_t offset, uint64_t size, uint64_t total) {
  return offset <= total && size <= total - offset;
}

// Reads a T at `offset` of `bytes`; the caller has checked the bounds, so a
// failing check here is a caller's bug.
template <typename T>
T ReadAt(std::span<const uint8_t> bytes, uint64_t offset) {
  BTVM_CHECK(InBounds(offset, sizeof(T), bytes.size()));
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

}  // namespace btvm
