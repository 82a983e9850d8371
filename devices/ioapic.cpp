#include "devices/ioapic.h"

#include "base/check.h"

namespace btvm {
namespace {

// MMIO offsets (82093AA data sheet §3.1; EOI: I/O xAPIC version 0x20).
constexpr uint64_t kIoRegSel = 0x00;
constexpr uint64_t kIoWin = 0x10;
constexpr uint64_t kEoi = 0x40;

// Indirect register indices (§3.2).
constexpr uint8_t kRegId = 0x00;
constexpr uint8_t kRegVersion = 0x01;
constexpr uint8_t kRegArbitration = 0x02;
constexpr uint8_t kRegRedirection = 0x10;  // two dwords per pin

constexpr uint32_t kIdMask = 0x0f000000;
constexpr uint32_t kVersionValue = (IoApic::kPinCount - 1) << 16 | IoApic::kVersion;
// §3.2.4: vector, delivery mode, destination mode, polarity, trigger mode,
// mask; destination. Delivery status and Remote IRR are read-only.
constexpr uint64_t kEntryWritable = 0xff00000000000000 | 0x1afff;
constexpr uint64_t kEntryReset = 1u << 16;  // masked

}  // namespace

IoApic::IoApic(ApicSink& apic) : apic_(apic) {
  Reset();
}

Status IoApic::RegisterOn(MmioBus& bus) {
  return bus.Register(GuestPhys(kDefaultBase), kMmioSize, this, "ioapic");
}

void IoApic::Reset() {
  ioregsel_ = 0;
  id_ = 0;
  redirection_.fill(kEntryReset);
}

bool IoApic::Asserted(unsigned pin) const {
  const bool high = lines_ >> pin & 1;
  return (redirection_[pin] & kPolarityLow) ? !high : high;
}

bool IoApic::Send(unsigned pin) {
  const uint64_t entry = redirection_[pin];
  ApicMessage message;
  message.vector = uint8_t(entry);
  message.delivery_mode = ApicDeliveryMode(entry >> 8 & 7);
  message.destination_mode = ApicDestinationMode(entry >> 11 & 1);
  message.trigger_mode =
      (entry & kLevelTriggered) ? ApicTriggerMode::kLevel : ApicTriggerMode::kEdge;
  message.destination = uint8_t(entry >> 56);
  ++messages_;
  const bool accepted = apic_.Deliver(message);
  if (!accepted) ++refused_messages_;
  return accepted;
}

void IoApic::ServiceLevel(unsigned pin) {
  const uint64_t entry = redirection_[pin];
  if (!(entry & kLevelTriggered) || (entry & (kMasked | kRemoteIrr)) || !Asserted(pin)) return;
  // Remote IRR is set before the message goes out: an EOI that arrives
  // while it is being delivered (the local APIC's listener runs
  // synchronously) must find it set.
  redirection_[pin] |= kRemoteIrr;
  if (!Send(pin)) redirection_[pin] &= ~kRemoteIrr;  // nobody accepted it
}

void IoApic::SetIrqLevel(unsigned line, bool level) {
  BTVM_CHECK(line < kPinCount);
  const bool was = Asserted(line);
  lines_ = level ? lines_ | 1u << line : lines_ & ~(1u << line);
  const uint64_t entry = redirection_[line];
  if (entry & kLevelTriggered) {
    ServiceLevel(line);
  } else if (!was && Asserted(line) && !(entry & kMasked)) {
    Send(line);
  }
}

// The local APIC's EOI message (SDM Vol. 3A §11.8.5) or a write of the EOI
// register: every level-triggered entry with this vector and Remote IRR set
// is released and looked at again.
void IoApic::EndOfInterrupt(uint8_t vector) {
  for (unsigned pin = 0; pin < kPinCount; ++pin) {
    uint64_t& entry = redirection_[pin];
    if (uint8_t(entry) != vector || !(entry & kRemoteIrr)) continue;
    entry &= ~kRemoteIrr;
    ServiceLevel(pin);
  }
}

uint32_t IoApic::ReadIndirect(uint8_t index) const {
  switch (index) {
    case kRegId:
    case kRegArbitration:  // §3.2.3: loaded from the ID
      return uint32_t{id_} << 24;
    case kRegVersion:
      return kVersionValue;
    default:
      break;
  }
  if (index < kRegRedirection || index >= kRegRedirection + 2 * kPinCount) return 0;
  const uint64_t entry = redirection_[(index - kRegRedirection) / 2];
  return uint32_t(index & 1 ? entry >> 32 : entry);
}

void IoApic::WriteIndirect(uint8_t index, uint32_t value) {
  if (index == kRegId) {
    id_ = uint8_t((value & kIdMask) >> 24);
    return;
  }
  if (index < kRegRedirection || index >= kRegRedirection + 2 * kPinCount) return;
  const unsigned pin = (index - kRegRedirection) / 2;
  uint64_t& entry = redirection_[pin];
  const uint64_t written = index & 1 ? (entry & 0xffffffff) | uint64_t{value} << 32
                                     : (entry & ~uint64_t{0xffffffff}) | value;
  entry = (written & kEntryWritable) | (entry & kRemoteIrr);
  if (!(entry & kLevelTriggered)) entry &= ~kRemoteIrr;  // QEMU: edge has no Remote IRR
  ServiceLevel(pin);
}

uint64_t IoApic::MmioRead(uint64_t offset, unsigned size) {
  if (offset == kIoRegSel && size <= 4) return ioregsel_;
  if (offset == kIoWin && size == 4) return ReadIndirect(ioregsel_);
  return 0;
}

void IoApic::MmioWrite(uint64_t offset, unsigned size, uint64_t value) {
  if (offset == kIoRegSel && size <= 4) {
    ioregsel_ = uint8_t(value);
  } else if (offset == kIoWin && size == 4) {
    WriteIndirect(ioregsel_, uint32_t(value));
  } else if (offset == kEoi && size == 4) {
    EndOfInterrupt(uint8_t(value));
  }
}

}  // namespace btvm
