#include <span>

#include "runtime/machine.h"

extern "C" const uint8_t btvm_default_guest_start[];
extern "C" const uint8_t btvm_default_guest_end[];

namespace btvm {

std::span<const uint8_t> DefaultGuestImage() {
  return {btvm_default_guest_start, btvm_default_guest_end};
}

}  // namespace btvm
