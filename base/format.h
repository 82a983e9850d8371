#pragma once
// Numbers as messages print them.

#include <cstdint>
#include <cstdio>
#include <string>

namespace btvm {

// "0x1f" (and "0x0" for zero).
inline std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// "[0x1000, 0x2000)".
inline std::string HexRange(uint64_t begin, uint64_t end) {
  return "[" + Hex(begin) + ", " + Hex(end) + ")";
}

}  // namespace btvm
