#include "devices/i8042.h"

#include "base/check.h"

namespace btvm {
namespace {

// Status register (port 0x64, read).
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystem = 0x04;    // self-test passed (set by firmware)
constexpr uint8_t kStatusUnlocked = 0x10;  // keyboard not inhibited
constexpr uint8_t kStatusAuxData = 0x20;   // the waiting byte is mouse data

// Command byte bits.
constexpr uint8_t kCtrKbdInt = 0x01;
constexpr uint8_t kCtrAuxInt = 0x02;
constexpr uint8_t kCtrKbdDisable = 0x10;
constexpr uint8_t kCtrAuxDisable = 0x20;

// Output port bits.
constexpr uint8_t kOutResetLine = 0x01;  // 0 holds the CPU in reset
constexpr uint8_t kOutA20 = 0x02;
// QEMU's default includes the otherwise unused bits so that the usual
// 0xdd/0xdf values read back unchanged.
constexpr uint8_t kOutDefault = kOutResetLine | kOutA20 | 0xcc;

// Controller commands (port 0x64, write).
enum : uint8_t {
  kCmdReadCtr = 0x20,
  kCmdWriteCtr = 0x60,
  kCmdAuxDisable = 0xa7,
  kCmdAuxEnable = 0xa8,
  kCmdAuxTest = 0xa9,
  kCmdSelfTest = 0xaa,
  kCmdKbdTest = 0xab,
  kCmdKbdDisable = 0xad,
  kCmdKbdEnable = 0xae,
  kCmdReadInputPort = 0xc0,
  kCmdReadOutputPort = 0xd0,
  kCmdWriteOutputPort = 0xd1,
  kCmdWriteKbdOutput = 0xd2,
  kCmdWriteAuxOutput = 0xd3,
  kCmdWriteAux = 0xd4,
  kCmdA20Off = 0xdd,
  kCmdA20On = 0xdf,
  kCmdPulseBase = 0xf0,  // 0xf0-0xff: pulse output-port bits 0-3 whose bit is 0
  kCmdReset = 0xfe,
};

constexpr uint8_t kSelfTestOk = 0x55;
constexpr uint8_t kPortTestOk = 0x00;
constexpr uint8_t kInputPortDefault = 0x80;  // keyboard not inhibited (QEMU)

// A real controller buffers one byte; a few more cost nothing and cover a
// guest that issues several commands before reading.
constexpr size_t kMaxQueued = 16;

}  // namespace

I8042::I8042(SystemControl* system) : system_(system) {
  BTVM_CHECK(system != nullptr);
  Reset();
}

Status I8042::RegisterOn(PioBus& bus) {
  Status s = bus.Register(kDataPort, 1, &data_port_, "i8042-data");
  if (!s) return s;
  return bus.Register(kCommandPort, 1, &command_port_, "i8042-cmd");
}

void I8042::Reset() {
  output_.clear();
  last_read_ = 0;
  command_byte_ = kCtrKbdInt | kCtrAuxInt;
  output_port_ = kOutDefault;
  pending_command_ = 0;
}

uint8_t I8042::ReadStatus() const {
  uint8_t status = kStatusSystem | kStatusUnlocked;
  if (!output_.empty()) {
    status |= kStatusOutputFull;
    if (output_.front().aux) status |= kStatusAuxData;
  }
  return status;
}

uint8_t I8042::ReadData() {
  if (!output_.empty()) {
    last_read_ = output_.front().value;
    output_.pop_front();
  }
  return last_read_;
}

void I8042::Queue(uint8_t value, bool aux) {
  if (output_.size() < kMaxQueued) output_.push_back({value, aux});
}

void I8042::WriteOutputPort(uint8_t value) {
  output_port_ = value;
  // A20 (bit 1) is not modelled: the machine's memory never wraps at 1 MiB.
  if (!(value & kOutResetLine)) system_->RequestReset();
}

void I8042::WriteCommand(uint8_t command) {
  pending_command_ = 0;
  // Pulse commands: bits 3-0 select output-port bits to pulse low; only bit
  // 0, the reset line, does anything. 0xfe is the classic "reset the CPU".
  if (command >= kCmdPulseBase) {
    if (!(command & 1)) system_->RequestReset();
    return;
  }
  switch (command) {
    case kCmdReadCtr:
      Queue(command_byte_, false);
      break;
    case kCmdWriteCtr:
    case kCmdWriteOutputPort:
    case kCmdWriteKbdOutput:
    case kCmdWriteAuxOutput:
    case kCmdWriteAux:
      pending_command_ = command;
      break;
    case kCmdAuxDisable:
      command_byte_ |= kCtrAuxDisable;
      break;
    case kCmdAuxEnable:
      command_byte_ &= ~kCtrAuxDisable;
      break;
    case kCmdAuxTest:
    case kCmdKbdTest:
      Queue(kPortTestOk, false);
      break;
    case kCmdSelfTest:
      Queue(kSelfTestOk, false);
      break;
    case kCmdKbdDisable:
      command_byte_ |= kCtrKbdDisable;
      break;
    case kCmdKbdEnable:
      command_byte_ &= ~kCtrKbdDisable;
      break;
    case kCmdReadInputPort:
      Queue(kInputPortDefault, false);
      break;
    case kCmdReadOutputPort:
      Queue(output_port_, false);
      break;
    case kCmdA20Off:  // A20 is not modelled; the bit only reads back
      output_port_ &= ~kOutA20;
      break;
    case kCmdA20On:
      output_port_ |= kOutA20;
      break;
    default:
      break;  // unknown commands are ignored, as QEMU does
  }
}

void I8042::WriteData(uint8_t value) {
  const uint8_t command = pending_command_;
  pending_command_ = 0;
  switch (command) {
    case kCmdWriteCtr:
      command_byte_ = value;
      break;
    case kCmdWriteOutputPort:
      WriteOutputPort(value);
      break;
    case kCmdWriteKbdOutput:
      Queue(value, false);
      break;
    case kCmdWriteAuxOutput:
      Queue(value, true);
      break;
    case kCmdWriteAux:
    default:
      break;  // for the mouse or the keyboard, neither of which is attached
  }
}

uint32_t I8042::Port::PioRead(uint16_t offset, unsigned size) {
  if (offset != 0) return 0xffffffff;  // cannot happen with length-1 ranges
  const uint8_t value = kind_ == Kind::kData ? owner_->ReadData() : owner_->ReadStatus();
  return (size > 1 ? 0xffffff00u : 0u) | value;
}

void I8042::Port::PioWrite(uint16_t offset, unsigned /*size*/, uint32_t value) {
  if (offset != 0) return;
  const auto byte = static_cast<uint8_t>(value);
  if (kind_ == Kind::kData) {
    owner_->WriteData(byte);
  } else {
    owner_->WriteCommand(byte);
  }
}

}  // namespace btvm
