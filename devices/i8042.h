#pragma once
// The i8042 keyboard controller, reduced to what a machine without a PS/2
// keyboard or mouse needs: a status register that says "controller present,
// nothing to read, ready for input", the controller commands firmware and
// Linux's i8042 driver issue while probing, and the reset line. Behaviour
// follows QEMU's hw/input/pckbd.c.
//
// Reset, as QEMU does it: command 0xfe (and any pulse command 0xf0-0xff with
// bit 0 clear, which pulses output-port bit 0, the CPU reset line) and a
// write of the output port (command 0xd1, then the value on port 0x60) with
// bit 0 clear call SystemControl::RequestReset().
//
// No PS/2 device is attached: bytes written to port 0x60 for the keyboard
// (no command pending) or for the mouse (after 0xd4) are dropped, and the
// controller raises no interrupts.
//
// Wiring: the controller answers on two ports that are not adjacent (0x61-
// 0x63 belong to other devices: 0x61 is the PIT/speaker port B), so it
// presents two PioDevices, each registered with length 1:
//   bus.Register(I8042::kDataPort, 1, &kbc.data_port(), "i8042-data");
//   bus.Register(I8042::kCommandPort, 1, &kbc.command_port(), "i8042-cmd");
// RegisterOn(bus) does exactly that. A wider access at either port reads
// the register in its low byte and ones above it; a write uses the low byte.

#include <cstdint>
#include <deque>

#include "devices/bus.h"

namespace btvm {

class I8042 {
 public:
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;  // status on read

  explicit I8042(SystemControl* system);
  I8042(const I8042&) = delete;
  I8042& operator=(const I8042&) = delete;

  PioDevice& data_port() { return data_port_; }
  PioDevice& command_port() { return command_port_; }
  Status RegisterOn(PioBus& bus);

  // Power-on state (QEMU's): empty output buffer, command byte 0x03,
  // output port 0xcf (reset line high, A20 enabled).
  void Reset();

  uint8_t ReadData();
  void WriteData(uint8_t value);
  uint8_t ReadStatus() const;
  void WriteCommand(uint8_t command);

  uint8_t command_byte() const { return command_byte_; }
  uint8_t output_port() const { return output_port_; }

 private:
  class Port final : public PioDevice {
   public:
    enum class Kind { kData, kCommand };
    Port(I8042* owner, Kind kind) : owner_(owner), kind_(kind) {}
    uint32_t PioRead(uint16_t offset, unsigned size) override;
    void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

   private:
    I8042* owner_;
    Kind kind_;
  };

  struct OutputByte {
    uint8_t value;
    bool aux;  // reported as mouse data (status bit 5)
  };

  void Queue(uint8_t value, bool aux);
  void WriteOutputPort(uint8_t value);

  SystemControl* system_;
  Port data_port_{this, Port::Kind::kData};
  Port command_port_{this, Port::Kind::kCommand};

  std::deque<OutputByte> output_;  // bytes waiting for the guest on port 0x60
  uint8_t last_read_ = 0;          // what port 0x60 reads when nothing waits
  uint8_t command_byte_ = 0;       // "CTR", read by 0x20, written by 0x60
  uint8_t output_port_ = 0;        // read by 0xd0, written by 0xd1
  uint8_t pending_command_ = 0;    // a command waiting for its data byte, or 0
};

}  // namespace btvm
