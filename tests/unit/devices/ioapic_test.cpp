// The IOAPIC at 0xfec00000, programmed through IOREGSEL/IOWIN the way
// Linux's arch/x86/kernel/apic/io_apic.c programs it: alone against a
// recording local APIC, then with the real LocalApic for the EOI path.
// Section numbers are the 82093AA data sheet's unless they say SDM.

#include "devices/ioapic.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "devices/clock.h"
#include "devices/local_apic.h"

namespace btvm {
namespace {

constexpr uint64_t kIoApicBase = 0xfec00000;
constexpr uint64_t kIoRegSel = 0x00, kIoWin = 0x10, kEoiRegister = 0x40;
constexpr uint8_t kRegId = 0x00, kRegVersion = 0x01, kRegArbitration = 0x02;

// Redirection entry bits (§3.2.4).
constexpr uint32_t kLowestPriority = 1u << 8, kNmi = 4u << 8, kExtInt = 7u << 8;
constexpr uint32_t kLogical = 1u << 11;
constexpr uint32_t kActiveLow = 1u << 13;
constexpr uint32_t kRemoteIrr = 1u << 14;
constexpr uint32_t kLevel = 1u << 15;
constexpr uint32_t kMasked = 1u << 16;

// A local APIC that records the messages it is sent.
class RecordingApic final : public ApicSink {
 public:
  bool Deliver(const ApicMessage& message) override {
    messages.push_back(message);
    return accept;
  }
  std::vector<ApicMessage> messages;
  bool accept = true;
};

ApicMessage Fixed(uint8_t vector, ApicTriggerMode trigger = ApicTriggerMode::kEdge) {
  ApicMessage message;
  message.vector = vector;
  message.trigger_mode = trigger;
  return message;
}

// IOREGSEL/IOWIN access, shared by both fixtures.
class IoApicRegisters {
 protected:
  uint32_t ReadReg(uint8_t index) {
    bus_.Write(GuestPhys(kIoApicBase + kIoRegSel), 4, index);
    return static_cast<uint32_t>(bus_.Read(GuestPhys(kIoApicBase + kIoWin), 4));
  }
  void WriteReg(uint8_t index, uint32_t value) {
    bus_.Write(GuestPhys(kIoApicBase + kIoRegSel), 4, index);
    bus_.Write(GuestPhys(kIoApicBase + kIoWin), 4, value);
  }
  // Linux's ioapic_write_entry(): the high dword first, then the low one.
  void WriteEntry(unsigned pin, uint32_t low, uint32_t high = 0) {
    WriteReg(static_cast<uint8_t>(0x11 + 2 * pin), high);
    WriteReg(static_cast<uint8_t>(0x10 + 2 * pin), low);
  }
  uint64_t ReadEntry(unsigned pin) {
    const uint32_t low = ReadReg(static_cast<uint8_t>(0x10 + 2 * pin));
    return uint64_t{ReadReg(static_cast<uint8_t>(0x11 + 2 * pin))} << 32 | low;
  }
  void EoiRegister(uint8_t vector) { bus_.Write(GuestPhys(kIoApicBase + kEoiRegister), 4, vector); }

  MmioBus bus_;
};

class IoApicTest : public ::testing::Test, protected IoApicRegisters {
 protected:
  IoApicTest() { BTVM_CHECK(ioapic_.RegisterOn(bus_).ok()); }

  void Pulse(unsigned pin) {
    ioapic_.SetIrqLevel(pin, true);
    ioapic_.SetIrqLevel(pin, false);
  }
  bool RemoteIrr(unsigned pin) { return ReadEntry(pin) & kRemoteIrr; }

  RecordingApic apic_;
  IoApic ioapic_{apic_};
};

// --- Registers -------------------------------------------------------------------

TEST_F(IoApicTest, IdVersionAndArbitration) {
  // §3.2.1-3.2.3; version 0x20 as QEMU reports it, 24 entries.
  EXPECT_EQ(ReadReg(kRegVersion), 0x00170020u);
  EXPECT_EQ(ReadReg(kRegId), 0u);
  WriteReg(kRegId, 0xffffffff);
  EXPECT_EQ(ReadReg(kRegId), 0x0f000000u);  // bits 27:24
  EXPECT_EQ(ReadReg(kRegArbitration), 0x0f000000u);
  WriteReg(kRegArbitration, 0);  // read-only
  WriteReg(kRegVersion, 0);
  EXPECT_EQ(ReadReg(kRegArbitration), 0x0f000000u);
  EXPECT_EQ(ReadReg(kRegVersion), 0x00170020u);
  EXPECT_EQ(ioapic_.id(), 0x0f);
}

TEST_F(IoApicTest, IoRegSelReadsBack) {
  // §3.1: IOREGSEL bits 7:0.
  bus_.Write(GuestPhys(kIoApicBase + kIoRegSel), 4, 0x1ff);
  EXPECT_EQ(bus_.Read(GuestPhys(kIoApicBase + kIoRegSel), 4), 0xffu);
  bus_.Write(GuestPhys(kIoApicBase + kIoRegSel), 1, kRegVersion);
  EXPECT_EQ(bus_.Read(GuestPhys(kIoApicBase + kIoRegSel), 1), kRegVersion);
  EXPECT_EQ(bus_.Read(GuestPhys(kIoApicBase + kIoWin), 4), 0x00170020u);
  // IOWIN is a 32-bit register; other offsets hold nothing.
  EXPECT_EQ(bus_.Read(GuestPhys(kIoApicBase + kIoWin), 1), 0u);
  EXPECT_EQ(bus_.Read(GuestPhys(kIoApicBase + 0x20), 4), 0u);
}

TEST_F(IoApicTest, PowerOnEntriesAreMasked) {
  // §3.2.4: masked at reset.
  for (unsigned pin = 0; pin < IoApic::kPinCount; ++pin) EXPECT_EQ(ReadEntry(pin), kMasked) << pin;
}

TEST_F(IoApicTest, RedirectionEntriesReadBackBothDwords) {
  WriteEntry(5, kMasked | kLevel | kActiveLow | kLogical | kLowestPriority | 0x31, 0x03000000);
  EXPECT_EQ(ReadEntry(5), 0x03000000'0001a931u);
  EXPECT_EQ(ReadReg(0x1a), 0x0001a931u);
  EXPECT_EQ(ReadReg(0x1b), 0x03000000u);
  // Delivery status, Remote IRR and reserved bits are not writable.
  WriteEntry(6, 0xffffffff, 0xffffffff);
  EXPECT_EQ(ReadEntry(6), 0xff000000'0001afffu);
  // Each dword alone leaves the other.
  WriteReg(0x1b, 0x07000000);
  EXPECT_EQ(ReadEntry(5), 0x07000000'0001a931u);
  WriteReg(0x10 + 2 * 23, kMasked | 0x99);
  EXPECT_EQ(ReadEntry(23), 0x00010099u);
  EXPECT_EQ(ReadEntry(22), kMasked);
}

TEST_F(IoApicTest, UnknownIndicesReadZero) {
  EXPECT_EQ(ReadReg(0x03), 0u);
  EXPECT_EQ(ReadReg(0x0f), 0u);
  EXPECT_EQ(ReadReg(0x40), 0u);  // past entry 23
  WriteReg(0x40, 0xffffffff);
  WriteReg(0x03, 0xffffffff);
  EXPECT_EQ(ReadReg(0x40), 0u);
  EXPECT_EQ(ReadEntry(23), kMasked);
}

// --- Edge-triggered pins ---------------------------------------------------------

TEST_F(IoApicTest, EdgeDeliversOncePerRisingEdge) {
  WriteEntry(1, 0x31);
  EXPECT_TRUE(apic_.messages.empty());
  ioapic_.SetIrqLevel(1, true);
  ASSERT_EQ(apic_.messages.size(), 1u);
  EXPECT_EQ(apic_.messages[0], Fixed(0x31));
  ioapic_.SetIrqLevel(1, true);  // still high: no edge
  ioapic_.SetIrqLevel(1, false);
  EXPECT_EQ(apic_.messages.size(), 1u);
  Pulse(1);
  EXPECT_EQ(apic_.messages.size(), 2u);
  EXPECT_FALSE(RemoteIrr(1));
  ioapic_.EndOfInterrupt(0x31);  // no effect on an edge pin
  EXPECT_EQ(apic_.messages.size(), 2u);
  EXPECT_EQ(ioapic_.messages(), 2u);
}

TEST_F(IoApicTest, EdgeOnAMaskedPinIsLost) {
  // §3.2.4, mask bit: edges on a masked pin are not held.
  WriteEntry(4, kMasked | 0x34);
  Pulse(4);
  WriteEntry(4, 0x34);
  EXPECT_TRUE(apic_.messages.empty());
  Pulse(4);
  EXPECT_EQ(apic_.messages.size(), 1u);
}

TEST_F(IoApicTest, ActiveLowEdgeFiresOnTheFallingLine) {
  // §3.2.4, polarity: the pin is asserted while low.
  ioapic_.SetIrqLevel(3, true);  // idle
  WriteEntry(3, kActiveLow | 0x33);
  EXPECT_TRUE(apic_.messages.empty());  // a new polarity alone is no edge
  ioapic_.SetIrqLevel(3, false);
  EXPECT_EQ(apic_.messages.size(), 1u);
  ioapic_.SetIrqLevel(3, true);
  EXPECT_EQ(apic_.messages.size(), 1u);
}

// --- Level-triggered pins --------------------------------------------------------

TEST_F(IoApicTest, LevelDeliversOnceUntilEoi) {
  // §3.2.4, Remote IRR: set when the local APIC accepts, cleared by the EOI
  // for the entry's vector.
  WriteEntry(9, kLevel | 0x61);
  ioapic_.SetIrqLevel(9, true);
  ASSERT_EQ(apic_.messages.size(), 1u);
  EXPECT_EQ(apic_.messages[0], Fixed(0x61, ApicTriggerMode::kLevel));
  EXPECT_TRUE(RemoteIrr(9));
  ioapic_.SetIrqLevel(9, true);
  EXPECT_EQ(apic_.messages.size(), 1u);
  ioapic_.EndOfInterrupt(0x62);  // another vector
  EXPECT_TRUE(RemoteIrr(9));
  ioapic_.EndOfInterrupt(0x61);  // the line is still high: again
  EXPECT_EQ(apic_.messages.size(), 2u);
  EXPECT_TRUE(RemoteIrr(9));
  ioapic_.SetIrqLevel(9, false);
  ioapic_.EndOfInterrupt(0x61);
  EXPECT_EQ(apic_.messages.size(), 2u);
  EXPECT_FALSE(RemoteIrr(9));
}

TEST_F(IoApicTest, EoiRegisterClearsRemoteIrr) {
  // The version 0x20 EOI register, which Linux's __eoi_ioapic_pin() uses.
  WriteEntry(10, kLevel | 0x70);
  ioapic_.SetIrqLevel(10, true);
  EXPECT_TRUE(RemoteIrr(10));
  EoiRegister(0x70);
  EXPECT_EQ(apic_.messages.size(), 2u);
  ioapic_.SetIrqLevel(10, false);
  EoiRegister(0x70);
  EXPECT_FALSE(RemoteIrr(10));
}

TEST_F(IoApicTest, UnmaskingAnAssertedLevelPinDelivers) {
  WriteEntry(11, kMasked | kLevel | 0x71);
  ioapic_.SetIrqLevel(11, true);
  EXPECT_TRUE(apic_.messages.empty());
  EXPECT_FALSE(RemoteIrr(11));
  WriteEntry(11, kLevel | 0x71);
  EXPECT_EQ(apic_.messages.size(), 1u);
  EXPECT_TRUE(RemoteIrr(11));
}

TEST_F(IoApicTest, MaskedLevelPinKeepsItsRemoteIrrUntilEoi) {
  // Linux masks a level pin while its handler runs (mask_ioapic_irq).
  WriteEntry(12, kLevel | 0x72);
  ioapic_.SetIrqLevel(12, true);
  WriteEntry(12, kMasked | kLevel | 0x72);
  EXPECT_TRUE(RemoteIrr(12));
  ioapic_.EndOfInterrupt(0x72);
  EXPECT_FALSE(RemoteIrr(12));
  EXPECT_EQ(apic_.messages.size(), 1u);  // masked: not again
  WriteEntry(12, kLevel | 0x72);
  EXPECT_EQ(apic_.messages.size(), 2u);
}

TEST_F(IoApicTest, ActiveLowLevelPin) {
  ioapic_.SetIrqLevel(16, true);  // a PCI-style line, idle high
  WriteEntry(16, kActiveLow | kLevel | 0x80);
  EXPECT_TRUE(apic_.messages.empty());
  ioapic_.SetIrqLevel(16, false);  // asserted
  EXPECT_EQ(apic_.messages.size(), 1u);
  ioapic_.SetIrqLevel(16, true);
  ioapic_.EndOfInterrupt(0x80);
  EXPECT_EQ(apic_.messages.size(), 1u);
  EXPECT_FALSE(RemoteIrr(16));
}

TEST_F(IoApicTest, MakingAPinEdgeTriggeredClearsRemoteIrr) {
  // QEMU: an edge-triggered entry has no Remote IRR (Linux's
  // clear_IO_APIC_pin() and the old-IOAPIC EOI trick rely on the switch).
  WriteEntry(13, kLevel | 0x73);
  ioapic_.SetIrqLevel(13, true);
  EXPECT_TRUE(RemoteIrr(13));
  WriteEntry(13, kMasked | 0x73);
  EXPECT_FALSE(RemoteIrr(13));
}

TEST_F(IoApicTest, RefusedMessageLeavesRemoteIrrClear) {
  apic_.accept = false;
  WriteEntry(14, kLevel | 0x74);
  ioapic_.SetIrqLevel(14, true);
  EXPECT_EQ(apic_.messages.size(), 1u);
  EXPECT_FALSE(RemoteIrr(14));
  EXPECT_EQ(ioapic_.refused_messages(), 1u);
  apic_.accept = true;
  WriteEntry(14, kLevel | 0x74);  // rewriting the entry looks again
  EXPECT_EQ(apic_.messages.size(), 2u);
  EXPECT_TRUE(RemoteIrr(14));
}

// --- Messages --------------------------------------------------------------------

TEST_F(IoApicTest, MessagesCarryTheEntry) {
  // Linux's flat logical mode: destination = CPU 0's bit.
  WriteEntry(2, kLogical | kLowestPriority | 0x30, 0x01000000);
  Pulse(2);
  ASSERT_EQ(apic_.messages.size(), 1u);
  ApicMessage expected = Fixed(0x30);
  expected.delivery_mode = ApicDeliveryMode::kLowestPriority;
  expected.destination_mode = ApicDestinationMode::kLogical;
  expected.destination = 0x01;
  EXPECT_EQ(apic_.messages[0], expected);
  WriteEntry(0, kExtInt);
  WriteEntry(7, kNmi, 0xff000000);
  Pulse(0);
  Pulse(7);
  ASSERT_EQ(apic_.messages.size(), 3u);
  EXPECT_EQ(apic_.messages[1].delivery_mode, ApicDeliveryMode::kExtInt);
  EXPECT_EQ(apic_.messages[2].delivery_mode, ApicDeliveryMode::kNmi);
  EXPECT_EQ(apic_.messages[2].destination, 0xff);
}

TEST_F(IoApicTest, ResetMasksEverythingAndKeepsTheLines) {
  WriteEntry(9, kLevel | 0x61);
  WriteReg(kRegId, 0x02000000);
  ioapic_.SetIrqLevel(9, true);
  ioapic_.Reset();
  EXPECT_EQ(ReadEntry(9), kMasked);
  EXPECT_EQ(ReadReg(kRegId), 0u);
  WriteEntry(9, kLevel | 0x61);  // the line is still high
  EXPECT_EQ(apic_.messages.size(), 2u);
}

// --- With the local APIC ------------------------------------------------------------

constexpr uint64_t kApicBase = 0xfee00000;
constexpr uint64_t kApicEoi = 0xb0, kApicSvr = 0xf0, kApicLdr = 0xd0, kApicDfr = 0xe0;

class IoApicWithLocalApicTest : public ::testing::Test, protected IoApicRegisters {
 protected:
  IoApicWithLocalApicTest() : tsc_(2'000'000'000, 0), apic_(clock_, tsc_), ioapic_(apic_) {
    BTVM_CHECK(apic_.RegisterOn(bus_).ok());
    BTVM_CHECK(ioapic_.RegisterOn(bus_).ok());
    apic_.SetEoiListener([this](uint8_t vector) { ioapic_.EndOfInterrupt(vector); });
    // Linux's setup_local_APIC() in flat logical mode, CPU 0.
    ApicWrite(kApicDfr, 0xffffffff);
    ApicWrite(kApicLdr, 0x01000000);
    ApicWrite(kApicSvr, 0x1ff);
  }

  void ApicWrite(uint64_t reg, uint32_t value) { bus_.Write(GuestPhys(kApicBase + reg), 4, value); }
  // The engine takes the interrupt; the handler ends it.
  uint8_t TakeInterrupt() {
    EXPECT_TRUE(apic_.InterruptPending());
    return apic_.Acknowledge();
  }
  void Eoi() { ApicWrite(kApicEoi, 0); }
  bool RemoteIrr(unsigned pin) { return ReadEntry(pin) & kRemoteIrr; }

  ManualClock clock_;
  FixedRateTsc tsc_;
  LocalApic apic_;
  IoApic ioapic_;
};

TEST_F(IoApicWithLocalApicTest, LevelEoiReleasesRemoteIrrAndRedelivers) {
  // SDM §11.8.5: the local APIC's EOI for a level-triggered vector goes to
  // the IOAPIC, which clears Remote IRR and delivers again while the line
  // is still asserted.
  WriteEntry(9, kLevel | kLogical | 0x61, 0x01000000);
  ioapic_.SetIrqLevel(9, true);
  EXPECT_TRUE(apic_.irr(0x61));
  EXPECT_TRUE(apic_.tmr(0x61));
  EXPECT_TRUE(RemoteIrr(9));
  EXPECT_EQ(TakeInterrupt(), 0x61);
  Eoi();  // the handler did not silence the device
  EXPECT_TRUE(RemoteIrr(9));
  EXPECT_TRUE(apic_.irr(0x61));
  EXPECT_EQ(TakeInterrupt(), 0x61);
  ioapic_.SetIrqLevel(9, false);  // now it did
  Eoi();
  EXPECT_FALSE(RemoteIrr(9));
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(apic_.eoi_broadcasts(), 2u);
}

TEST_F(IoApicWithLocalApicTest, EdgeTimerOnGsi2) {
  // The PIT's IRQ 0 arrives at GSI 2 (the MADT's source override).
  WriteEntry(2, kLogical | 0x30, 0x01000000);
  ioapic_.SetIrqLevel(2, true);
  ioapic_.SetIrqLevel(2, false);
  EXPECT_EQ(TakeInterrupt(), 0x30);
  EXPECT_FALSE(apic_.tmr(0x30));
  Eoi();
  EXPECT_EQ(apic_.eoi_broadcasts(), 0u);
  EXPECT_FALSE(apic_.InterruptPending());
}

TEST_F(IoApicWithLocalApicTest, PhysicalDestinationMustMatchTheApicId) {
  WriteEntry(5, 0x41, 0x01000000);  // APIC ID 1: nobody
  WriteEntry(6, 0x42, 0x00000000);  // APIC ID 0
  ioapic_.SetIrqLevel(5, true);
  ioapic_.SetIrqLevel(6, true);
  EXPECT_FALSE(apic_.irr(0x41));
  EXPECT_TRUE(apic_.irr(0x42));
  EXPECT_EQ(ioapic_.refused_messages(), 1u);
}

TEST_F(IoApicWithLocalApicTest, SoftwareDisabledApicLeavesTheLevelPinPending) {
  ApicWrite(kApicSvr, 0xff);
  WriteEntry(9, kLevel | 0x61);
  ioapic_.SetIrqLevel(9, true);
  EXPECT_FALSE(apic_.irr(0x61));
  EXPECT_FALSE(RemoteIrr(9));
  ApicWrite(kApicSvr, 0x1ff);
  WriteEntry(9, kLevel | 0x61);  // the guest unmasks after enabling
  EXPECT_TRUE(apic_.irr(0x61));
  EXPECT_TRUE(RemoteIrr(9));
}

TEST_F(IoApicWithLocalApicTest, NmiEntryLatchesAnNmi) {
  WriteEntry(7, kNmi);
  ioapic_.SetIrqLevel(7, true);
  EXPECT_TRUE(apic_.NmiPending());
  EXPECT_FALSE(apic_.InterruptPending());
}

}  // namespace
}  // namespace btvm
