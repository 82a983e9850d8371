#pragma once
// The PC's I/O APIC at 0xfec00000, as the Intel 82093AA I/O APIC data sheet
// describes it (with the EOI register of the later I/O xAPICs, version 0x20)
// and as QEMU's hw/intc/ioapic.c models it.
//
// MMIO (data sheet §3.1): IOREGSEL at 0x00 (bits 7:0 select a register; any
// access size), IOWIN at 0x10 (32-bit accesses), EOI at 0x40 (32-bit
// writes: bits 7:0 a vector, handled as the local APIC's EOI message).
// Other offsets and sizes read 0 and drop writes.
//
// Indirect registers (§3.2): 0x00 ID (bits 27:24, read/write), 0x01 version
// 0x00170020 (version 0x20 as QEMU reports it, so Linux may use the EOI
// register; max redirection entry 23 in bits 23:16), 0x02 arbitration ID
// (the ID, read-only), 0x10-0x3f the 24 redirection entries, low dword at
// 0x10 + 2n, high at 0x11 + 2n. Other indices read 0 and drop writes.
//
// Redirection entry (§3.2.4): vector 7:0, delivery mode 10:8, destination
// mode 11, delivery status 12 (read-only, always 0: delivery is immediate),
// polarity 13 (1 = active low), Remote IRR 14 (read-only), trigger mode 15
// (1 = level), mask 16, destination 63:56. Reserved bits read 0. Reset:
// every entry masked, all else 0.
//
// Inputs: SetIrqLevel(pin, level) with the electrical level of the pin; the
// entry's polarity bit inverts it (an active-low pin is asserted while
// low). So the machine must describe each pin's polarity truthfully in the
// ACPI MADT (ISA interrupts: active high), or the guest programs the wrong
// polarity and sees the line inverted. (QEMU and KVM ignore the bit and take
// the level as "asserted".)
//   Edge-triggered: an unmasked pin sends one message on each assertion
//   (a rising edge of the asserted level); an edge on a masked pin is
//   ignored, not held (data sheet, mask bit). Remote IRR stays 0 (QEMU
//   clears it when an entry is made edge-triggered).
//   Level-triggered: while the pin is asserted, unmasked and Remote IRR is
//   clear, the IOAPIC sends a message and, if a local APIC accepted it,
//   sets Remote IRR. An EOI for the entry's vector (EndOfInterrupt(), from
//   the local APIC's EOI listener or the EOI register) clears Remote IRR,
//   and the pin is looked at again: still asserted, it sends again.
//   Unmasking, or rewriting an entry, looks at a level-triggered pin again.
// Edges are seen only on input changes: reprogramming an edge-triggered
// entry's polarity does not send.
//
// Delivery (to an ApicSink, the local APIC): fixed and lowest-priority
// messages carry the vector, trigger mode, destination mode and
// destination; the local APIC decides whether the destination is its own
// (physical ID, 0xff broadcast, or its logical ID under the DFR model). NMI
// entries send an NMI. ExtINT entries send an ExtINT message that the local
// APIC refuses (as KVM's in-kernel APIC does; QEMU's IOAPIC instead reads a
// vector from the 8259 itself): the 8259 reaches the CPU through LINT0
// (LocalApic::AcceptsPicInterrupts()), and Linux uses an ExtINT pin only when
// the timer does not work through its own pin. SMI and INIT entries are
// refused too.
//
// Wiring is the machine's: the IOAPIC does not know ISA. On a PC the PIT's
// IRQ 0 arrives at GSI 2 (the MADT carries the interrupt source override
// 0 -> 2) and ISA IRQ n otherwise at GSI n, each ISA line also going to the
// 8259.
//
// Not thread-safe: devices raise lines, and the engine runs the guest, on
// one thread.

#include <array>
#include <cstdint>

#include "devices/bus.h"
#include "devices/local_apic.h"

namespace btvm {

class IoApic final : public MmioDevice, public IrqSink {
 public:
  static constexpr uint64_t kDefaultBase = 0xfec00000;
  static constexpr uint64_t kMmioSize = 0x1000;
  static constexpr unsigned kPinCount = 24;
  static constexpr uint8_t kVersion = 0x20;

  explicit IoApic(ApicSink& apic);
  IoApic(const IoApic&) = delete;
  IoApic& operator=(const IoApic&) = delete;

  // Registers the window at kDefaultBase.
  Status RegisterOn(MmioBus& bus);

  // MmioDevice: offsets from the base.
  uint64_t MmioRead(uint64_t offset, unsigned size) override;
  void MmioWrite(uint64_t offset, unsigned size, uint64_t value) override;

  // IrqSink: pin (GSI) 0-23, electrical level.
  void SetIrqLevel(unsigned line, bool level) override;

  // The EOI message for `vector` (the local APIC's EOI listener).
  void EndOfInterrupt(uint8_t vector);

  // Power-on state. Pin levels are kept: they belong to the devices.
  void Reset();

  // For the machine's status output and for tests.
  uint8_t id() const { return id_; }
  uint64_t redirection(unsigned pin) const { return redirection_[pin]; }
  bool remote_irr(unsigned pin) const { return redirection_[pin] & kRemoteIrr; }
  // Messages sent, and those no local APIC accepted.
  uint64_t messages() const { return messages_; }
  uint64_t refused_messages() const { return refused_messages_; }

 private:
  static constexpr uint64_t kPolarityLow = 1u << 13;
  static constexpr uint64_t kRemoteIrr = 1u << 14;
  static constexpr uint64_t kLevelTriggered = 1u << 15;
  static constexpr uint64_t kMasked = 1u << 16;

  bool Asserted(unsigned pin) const;
  // Sends a level-triggered pin's message if it is due.
  void ServiceLevel(unsigned pin);
  bool Send(unsigned pin);
  uint32_t ReadIndirect(uint8_t index) const;
  void WriteIndirect(uint8_t index, uint32_t value);

  ApicSink& apic_;
  uint8_t ioregsel_ = 0;
  uint8_t id_ = 0;
  std::array<uint64_t, kPinCount> redirection_{};
  uint32_t lines_ = 0;  // electrical pin levels, bit per pin

  uint64_t messages_ = 0;
  uint64_t refused_messages_ = 0;
};

}  // namespace btvm
