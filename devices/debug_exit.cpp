#include "devices/debug_exit.h"

#include "base/check.h"

namespace btvm {

DebugExit::DebugExit(SystemControl* system) : system_(system) {
  BTVM_CHECK(system != nullptr);
}

uint32_t DebugExit::PioRead(uint16_t /*offset*/, unsigned /*size*/) {
  return 0;
}

void DebugExit::PioWrite(uint16_t /*offset*/, unsigned /*size*/, uint32_t value) {
  system_->RequestExit(StatusFor(value));
}

int DebugExit::StatusFor(uint32_t value) {
  // QEMU computes (val << 1) | 1 in 64 bits and hands it on as an int; do the
  // same without signed overflow.
  return static_cast<int>(static_cast<uint32_t>((uint64_t{value} << 1) | 1));
}

}  // namespace btvm
