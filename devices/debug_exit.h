#pragma once
// QEMU's isa-debug-exit (hw/misc/debugexit.c): a write of value v to the port
// stops the machine with exit status (v << 1) | 1, so a guest can never fake
// a clean exit 0. kvm-unit-tests and most hobby-kernel test harnesses exit
// through it. Reads return 0, as in QEMU (a guest may use that to detect the
// device, since an unclaimed port reads as all ones).
//
// Wiring: PioBus::Register(kIoBase, kIoSize, &debug_exit, "isa-debug-exit").
// Every port of the range behaves the same, whatever the access size.

#include <cstdint>

#include "devices/bus.h"

namespace btvm {

class DebugExit final : public PioDevice {
 public:
  static constexpr uint16_t kIoBase = 0xf4;
  static constexpr uint16_t kIoSize = 4;

  explicit DebugExit(SystemControl* system);

  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // The status QEMU exits with for a written value (already zero-extended
  // from the access size). Truncated to int as QEMU's exit code is.
  static int StatusFor(uint32_t value);

 private:
  SystemControl* system_;
};

}  // namespace btvm
