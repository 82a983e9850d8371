// The local APIC at 0xfee00000, driven through the MMIO bus the way Linux's
// arch/x86/kernel/apic/ programs it, with time from a ManualClock. Section
// numbers are the Intel SDM Vol. 3A's, chapter 11.

#include "devices/local_apic.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "devices/clock.h"

namespace btvm {
namespace {

constexpr uint64_t kApicBase = 0xfee00000;
// Register offsets (§11.4.1, Table 11-1).
constexpr uint64_t kId = 0x20, kVersion = 0x30, kTpr = 0x80, kApr = 0x90, kPpr = 0xa0, kEoi = 0xb0,
                   kRrd = 0xc0, kLdr = 0xd0, kDfr = 0xe0, kSvr = 0xf0, kIsr = 0x100, kTmr = 0x180,
                   kIrr = 0x200, kEsr = 0x280, kCmci = 0x2f0, kIcrLow = 0x300, kIcrHigh = 0x310,
                   kLvtTimer = 0x320, kLvtThermal = 0x330, kLvtPerf = 0x340, kLvtLint0 = 0x350,
                   kLvtLint1 = 0x360, kLvtError = 0x370, kInitialCount = 0x380,
                   kCurrentCount = 0x390, kDivideConfig = 0x3e0;

constexpr uint32_t kSvrEnable = 0x100;
constexpr uint32_t kMasked = 0x10000;
constexpr uint32_t kPeriodic = 1u << 17, kTscDeadline = 2u << 17;  // LVT timer bits 18:17
// ICR low: destination shorthand (bits 19:18) and delivery modes (10:8).
constexpr uint32_t kSelf = 1u << 18, kAllIncludingSelf = 2u << 18, kAllExcludingSelf = 3u << 18;
constexpr uint32_t kDmNmi = 4u << 8, kDmInit = 5u << 8, kDmStartup = 6u << 8;
constexpr uint32_t kDestLogical = 1u << 11;

constexpr uint64_t kOriginNs = 1'000'000'000'000;
constexpr uint64_t kTscHz = 2'000'000'000;  // the guest TSC counts 2 per nanosecond

class LocalApicTest : public ::testing::Test {
 protected:
  LocalApicTest() : clock_(kOriginNs), tsc_(kTscHz, kOriginNs), apic_(clock_, tsc_) {
    BTVM_CHECK(apic_.RegisterOn(bus_).ok());
  }

  uint32_t Read(uint64_t reg) {
    return static_cast<uint32_t>(bus_.Read(GuestPhys(kApicBase + reg), 4));
  }
  void Write(uint64_t reg, uint32_t value) { bus_.Write(GuestPhys(kApicBase + reg), 4, value); }

  // Linux's setup_local_APIC(): software enable with a spurious vector.
  void Enable(uint8_t spurious = 0xff) { Write(kSvr, kSvrEnable | spurious); }
  bool Bit(uint64_t reg, uint8_t vector) {
    return Read(reg + 0x10 * (vector / 32)) >> (vector % 32) & 1;
  }
  bool Irr(uint8_t vector) { return Bit(kIrr, vector); }
  bool Isr(uint8_t vector) { return Bit(kIsr, vector); }
  bool Tmr(uint8_t vector) { return Bit(kTmr, vector); }
  // §11.5.3: write, then read.
  uint32_t Esr() {
    Write(kEsr, 0);
    return Read(kEsr);
  }
  // A fixed interrupt message for APIC ID 0, as the IOAPIC sends it.
  bool Raise(uint8_t vector, ApicTriggerMode trigger = ApicTriggerMode::kEdge) {
    ApicMessage message;
    message.vector = vector;
    message.trigger_mode = trigger;
    return apic_.Deliver(message);
  }

  // Time since the origin.
  void At(uint64_t ns) { clock_.Set(kOriginNs + ns); }
  uint64_t NextEvent() const {
    const uint64_t next = apic_.NextEventNs();
    return next == ClockedDevice::kNever ? next : next - kOriginNs;
  }
  // The engine looks for interrupts.
  bool TimerFired(uint8_t vector) {
    apic_.Update();
    if (!apic_.InterruptPending() || apic_.irr(vector) == false) return false;
    EXPECT_EQ(apic_.Acknowledge(), vector);
    Write(kEoi, 0);
    return true;
  }

  ManualClock clock_;
  FixedRateTsc tsc_;
  LocalApic apic_;
  MmioBus bus_;
};

// --- Registers -------------------------------------------------------------------

TEST_F(LocalApicTest, PowerOnState) {
  // §11.4.7.1.
  EXPECT_EQ(Read(kId), 0u);
  EXPECT_EQ(Read(kVersion), 0x00050014u);  // version 0x14, max LVT entry 5
  EXPECT_EQ(Read(kTpr), 0u);
  EXPECT_EQ(Read(kApr), 0u);
  EXPECT_EQ(Read(kPpr), 0u);
  EXPECT_EQ(Read(kLdr), 0u);
  EXPECT_EQ(Read(kDfr), 0xffffffffu);
  EXPECT_EQ(Read(kSvr), 0xffu);  // software-disabled
  for (uint64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(Read(kIsr + 0x10 * i), 0u);
    EXPECT_EQ(Read(kTmr + 0x10 * i), 0u);
    EXPECT_EQ(Read(kIrr + 0x10 * i), 0u);
  }
  EXPECT_EQ(Read(kEsr), 0u);
  EXPECT_EQ(Read(kIcrLow), 0u);
  EXPECT_EQ(Read(kIcrHigh), 0u);
  for (uint64_t lvt = kLvtTimer; lvt <= kLvtError; lvt += 0x10) EXPECT_EQ(Read(lvt), kMasked);
  EXPECT_EQ(Read(kInitialCount), 0u);
  EXPECT_EQ(Read(kCurrentCount), 0u);
  EXPECT_EQ(Read(kDivideConfig), 0u);
  EXPECT_EQ(apic_.ReadBaseMsr(), 0xfee00900u);  // §11.4.4: BSP, enabled
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());  // LINT0 masked
  EXPECT_EQ(apic_.NextEventNs(), ClockedDevice::kNever);
}

TEST_F(LocalApicTest, WritableBitsOnly) {
  Enable();
  Write(kLdr, 0xffffffff);
  EXPECT_EQ(Read(kLdr), 0xff000000u);
  Write(kDfr, 0);
  EXPECT_EQ(Read(kDfr), 0x0fffffffu);  // cluster model; bits 27:0 read as ones
  Write(kSvr, 0xffffffff);
  EXPECT_EQ(Read(kSvr), 0x1ffu);  // no focus checking, no EOI-broadcast suppression
  Write(kTpr, 0xffffffff);
  EXPECT_EQ(Read(kTpr), 0xffu);
  Write(kTpr, 0);
  Write(kDivideConfig, 0xffffffff);
  EXPECT_EQ(Read(kDivideConfig), 0xbu);  // bits 0, 1, 3
  Write(kIcrHigh, 0xffffffff);
  EXPECT_EQ(Read(kIcrHigh), 0xff000000u);
  // §11.5.1, Figure 11-8.
  Write(kLvtTimer, 0xffffffff);
  EXPECT_EQ(Read(kLvtTimer), 0x000700ffu);
  Write(kLvtThermal, 0xffffffff);
  EXPECT_EQ(Read(kLvtThermal), 0x000107ffu);
  Write(kLvtPerf, 0xffffffff);
  EXPECT_EQ(Read(kLvtPerf), 0x000107ffu);
  Write(kLvtLint0, 0xffffffff);
  EXPECT_EQ(Read(kLvtLint0), 0x0001a7ffu);  // delivery status and remote IRR read-only
  Write(kLvtLint1, 0xffffffff);
  EXPECT_EQ(Read(kLvtLint1), 0x0001a7ffu);
  Write(kLvtError, 0xffffffff);
  EXPECT_EQ(Read(kLvtError), 0x000100ffu);
  Write(kId, 0x05000000);  // writable, as in QEMU
  EXPECT_EQ(Read(kId), 0x05000000u);
  EXPECT_EQ(Esr(), 0u);
}

TEST_F(LocalApicTest, ReadOnlyRegistersIgnoreWrites) {
  Enable();
  Raise(0x40);
  Write(kVersion, 0);
  Write(kPpr, 0xff);
  Write(kApr, 0xff);
  Write(kRrd, 0xff);
  Write(kIrr + 0x20, 0);
  Write(kIsr + 0x20, 0xffffffff);
  Write(kCurrentCount, 1000);
  EXPECT_EQ(Read(kVersion), 0x00050014u);
  EXPECT_EQ(Read(kPpr), 0u);
  EXPECT_EQ(Read(kRrd), 0u);
  EXPECT_TRUE(Irr(0x40));
  EXPECT_EQ(Read(kIsr + 0x20), 0u);
  EXPECT_EQ(Read(kCurrentCount), 0u);
  EXPECT_EQ(Read(kEoi), 0u);  // write-only
  EXPECT_EQ(Esr(), 0u);
}

TEST_F(LocalApicTest, ReservedRegistersSetIllegalRegisterAddress) {
  // §11.5.3, bit 7. With max LVT entry 5 there is no CMCI register.
  Enable();
  EXPECT_EQ(Read(kCmci), 0u);
  EXPECT_EQ(Esr(), LocalApic::kEsrIllegalRegister);
  EXPECT_EQ(Esr(), 0u);  // the next write clears it
  Write(0x3f0, 1);
  Write(0x040, 1);
  EXPECT_EQ(Esr(), LocalApic::kEsrIllegalRegister);
}

TEST_F(LocalApicTest, OnlyAligned32BitAccessesReachRegisters) {
  // §11.4.1: registers are 32 bits wide at 16-byte boundaries.
  Enable();
  Write(kTpr, 0x20);
  EXPECT_EQ(bus_.Read(GuestPhys(kApicBase + kTpr), 1), 0u);
  EXPECT_EQ(bus_.Read(GuestPhys(kApicBase + kTpr), 8), 0u);
  EXPECT_EQ(bus_.Read(GuestPhys(kApicBase + kTpr + 4), 4), 0u);
  bus_.Write(GuestPhys(kApicBase + kTpr), 1, 0x55);
  bus_.Write(GuestPhys(kApicBase + kTpr + 4), 4, 0x55);
  EXPECT_EQ(Read(kTpr), 0x20u);
  EXPECT_EQ(Esr(), 0u);
}

// --- Priorities, acceptance, EOI ---------------------------------------------------

TEST_F(LocalApicTest, HighestVectorIsDeliveredFirst) {
  Enable();
  Raise(0x31);
  Raise(0x92);
  Raise(0x60);
  EXPECT_TRUE(Irr(0x31) && Irr(0x92) && Irr(0x60));
  EXPECT_TRUE(apic_.InterruptPending());
  EXPECT_EQ(apic_.Acknowledge(), 0x92);
  EXPECT_TRUE(Isr(0x92));
  EXPECT_FALSE(Irr(0x92));
  EXPECT_FALSE(apic_.InterruptPending());  // lower classes wait for the EOI
  Write(kEoi, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0x60);
  Write(kEoi, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0x31);
  Write(kEoi, 0);
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(Read(kIsr + 0x10), 0u);
}

TEST_F(LocalApicTest, PprFollowsTprAndTheHighestVectorInService) {
  // §11.8.3.1.
  Enable();
  Write(kTpr, 0x35);
  EXPECT_EQ(Read(kPpr), 0x35u);  // nothing in service
  Raise(0x61);
  EXPECT_EQ(apic_.Acknowledge(), 0x61);
  EXPECT_EQ(Read(kPpr), 0x60u);  // ISR class above TPR class: sub-class 0
  Write(kTpr, 0x7a);
  EXPECT_EQ(Read(kPpr), 0x7au);
  Write(kTpr, 0x65);
  EXPECT_EQ(Read(kPpr), 0x65u);  // equal classes: TPR
  Write(kTpr, 0x55);
  EXPECT_EQ(Read(kPpr), 0x60u);
  Write(kEoi, 0);
  EXPECT_EQ(Read(kPpr), 0x55u);
}

TEST_F(LocalApicTest, TprHoldsBackItsClassAndBelow) {
  // §11.8.3.1: deliverable only if the class is above PPR's class.
  Enable();
  Write(kTpr, 0x40);
  Raise(0x45);
  Raise(0x4f);
  EXPECT_FALSE(apic_.InterruptPending());
  Raise(0x50);
  EXPECT_TRUE(apic_.InterruptPending());
  EXPECT_EQ(apic_.Acknowledge(), 0x50);
  Write(kEoi, 0);
  EXPECT_FALSE(apic_.InterruptPending());
  Write(kTpr, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0x4f);
  // 0x45 is of the class in service now: it waits for the EOI.
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(Read(kPpr), 0x40u);
  Write(kEoi, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0x45);
}

TEST_F(LocalApicTest, NestedInterruptsEndInPriorityOrder) {
  // §11.8.3: a higher class interrupts a handler; §11.8.5: the EOI ends
  // the highest vector in service.
  Enable();
  Raise(0x40);
  EXPECT_EQ(apic_.Acknowledge(), 0x40);
  Raise(0x80);
  EXPECT_TRUE(apic_.InterruptPending());
  EXPECT_EQ(apic_.Acknowledge(), 0x80);
  EXPECT_TRUE(Isr(0x40) && Isr(0x80));
  Raise(0x41);
  EXPECT_FALSE(apic_.InterruptPending());
  Write(kEoi, 0);
  EXPECT_FALSE(Isr(0x80));
  EXPECT_TRUE(Isr(0x40));
  EXPECT_FALSE(apic_.InterruptPending());  // 0x41 is of 0x40's class
  Write(kEoi, 0);
  EXPECT_FALSE(Isr(0x40));
  EXPECT_EQ(apic_.Acknowledge(), 0x41);
}

TEST_F(LocalApicTest, AprFollowsTheLowestPriorityFormula) {
  // §11.6.2.4.
  Enable();
  Write(kTpr, 0x52);
  EXPECT_EQ(Read(kApr), 0x52u);  // TPR's class above the others
  Raise(0x71);
  EXPECT_EQ(Read(kApr), 0x70u);  // IRR class above TPR's
  EXPECT_EQ(apic_.Acknowledge(), 0x71);
  EXPECT_EQ(Read(kApr), 0x70u);  // ISR class above TPR's
  Write(kTpr, 0x73);
  EXPECT_EQ(Read(kApr), 0x70u);  // TPR's class must be above ISR's
  Write(kTpr, 0x83);
  EXPECT_EQ(Read(kApr), 0x83u);
}

TEST_F(LocalApicTest, OneMoreOfAVectorInServiceWaitsInIrr) {
  // §11.8.4: IRR and ISR queue one interrupt each per vector; more merge.
  Enable();
  Raise(0x50);
  Raise(0x50);
  EXPECT_EQ(apic_.coalesced_interrupts(), 1u);
  EXPECT_EQ(apic_.Acknowledge(), 0x50);
  Raise(0x50);
  EXPECT_TRUE(Irr(0x50) && Isr(0x50));
  EXPECT_FALSE(apic_.InterruptPending());
  Write(kEoi, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0x50);
  Write(kEoi, 0);
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(Read(kIsr + 0x20), 0u);
}

TEST_F(LocalApicTest, LevelTriggeredInterruptsSetTmrAndBroadcastTheirEoi) {
  // §11.8.4: TMR set for level, cleared for edge; §11.8.5: the EOI of a
  // vector with TMR set goes to the IOAPICs.
  std::vector<uint8_t> eois;
  apic_.SetEoiListener([&](uint8_t vector) { eois.push_back(vector); });
  Enable();
  Raise(0x61, ApicTriggerMode::kLevel);
  EXPECT_TRUE(Tmr(0x61));
  Raise(0x62);
  EXPECT_FALSE(Tmr(0x62));
  EXPECT_EQ(apic_.Acknowledge(), 0x62);
  Write(kEoi, 0);
  EXPECT_TRUE(eois.empty());
  EXPECT_EQ(apic_.Acknowledge(), 0x61);
  Write(kEoi, 0);
  EXPECT_EQ(eois, std::vector<uint8_t>{0x61});
  EXPECT_EQ(apic_.eoi_broadcasts(), 1u);
  // The same vector edge-triggered clears TMR again.
  Raise(0x61);
  EXPECT_FALSE(Tmr(0x61));
}

TEST_F(LocalApicTest, EoiWithNothingInServiceDoesNothing) {
  std::vector<uint8_t> eois;
  apic_.SetEoiListener([&](uint8_t vector) { eois.push_back(vector); });
  Enable();
  Raise(0x61, ApicTriggerMode::kLevel);
  Write(kEoi, 0);  // 0x61 is requested, not in service
  EXPECT_TRUE(Irr(0x61));
  EXPECT_TRUE(eois.empty());
}

TEST_F(LocalApicTest, NothingDeliverableGivesTheSpuriousVector) {
  // §11.9: the spurious vector sets no ISR bit.
  Enable(0xef);
  EXPECT_EQ(apic_.Acknowledge(), 0xef);
  EXPECT_EQ(Read(kIsr + 0x70), 0u);
  // An interrupt masked by a TPR raise between INTR and INTA.
  Raise(0x50);
  EXPECT_TRUE(apic_.InterruptPending());
  Write(kTpr, 0x60);
  EXPECT_EQ(apic_.Acknowledge(), 0xef);
  EXPECT_TRUE(Irr(0x50));
  EXPECT_FALSE(Isr(0x50));
}

TEST_F(LocalApicTest, IllegalVectorsAreRefusedWithAnError) {
  // §11.5.2: vectors 0-15 are never set in IRR; ESR bit 6.
  Enable();
  EXPECT_FALSE(Raise(0x05));
  EXPECT_EQ(Read(kIrr), 0u);
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(Read(kEsr), 0u);  // §11.5.3: not visible until the ESR is written
  EXPECT_EQ(Esr(), LocalApic::kEsrReceiveIllegalVector);
  EXPECT_EQ(Read(kEsr), LocalApic::kEsrReceiveIllegalVector);  // reads repeat
  EXPECT_EQ(Esr(), 0u);
}

TEST_F(LocalApicTest, ErrorLvtSignalsErrors) {
  // §11.5.3: an error raises the LVT error interrupt (Linux: vector 0xfe).
  Enable();
  Write(kLvtError, 0xfe);
  Raise(0x0a);
  EXPECT_TRUE(Irr(0xfe));
  EXPECT_EQ(apic_.Acknowledge(), 0xfe);
  // An illegal vector in the error LVT itself: one more error, no loop.
  Write(kEoi, 0);
  Write(kLvtError, 0x03);
  Raise(0x0a);
  EXPECT_EQ(Read(kIrr), 0u);
  EXPECT_EQ(Esr(), LocalApic::kEsrReceiveIllegalVector);
}

TEST_F(LocalApicTest, SoftwareDisabledApicRefusesFixedInterrupts) {
  // §11.4.7.1: power-on software-disabled. Fixed messages are refused;
  // NMI is still accepted (§11.4.7.2).
  EXPECT_FALSE(Raise(0x50));
  EXPECT_FALSE(Irr(0x50));
  ApicMessage nmi;
  nmi.delivery_mode = ApicDeliveryMode::kNmi;
  EXPECT_TRUE(apic_.Deliver(nmi));
  EXPECT_TRUE(apic_.NmiPending());
  apic_.AcknowledgeNmi();
  EXPECT_FALSE(apic_.NmiPending());
}

TEST_F(LocalApicTest, SoftwareDisableMasksEveryLvt) {
  // §11.4.7.2: the mask bits are set and cannot be cleared while disabled.
  Write(kLvtTimer, 0x30);
  EXPECT_EQ(Read(kLvtTimer), 0x30u | kMasked);
  Enable();
  Write(kLvtTimer, 0x30);
  Write(kLvtLint0, 0x700);
  Write(kLvtError, 0xfe);
  EXPECT_EQ(Read(kLvtTimer), 0x30u);
  EXPECT_EQ(Read(kLvtLint0), 0x700u);
  Write(kSvr, 0xff);
  EXPECT_EQ(Read(kLvtTimer), 0x30u | kMasked);
  EXPECT_EQ(Read(kLvtLint0), 0x700u | kMasked);
  EXPECT_EQ(Read(kLvtError), 0xfeu | kMasked);
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());
  Enable();  // re-enabling does not unmask
  EXPECT_EQ(Read(kLvtTimer), 0x30u | kMasked);
}

TEST_F(LocalApicTest, RequestsHeldWhileSoftwareDisabledAreStillDelivered) {
  // §11.4.7.2: "held and require masking or handling by the CPU".
  Enable();
  Raise(0x50);
  Write(kSvr, 0xff);
  EXPECT_TRUE(apic_.InterruptPending());
  EXPECT_EQ(apic_.Acknowledge(), 0x50);
}

TEST_F(LocalApicTest, InterruptListenerHearsNewWork) {
  int calls = 0;
  apic_.SetInterruptListener([&] { ++calls; });
  Enable();
  Raise(0x50);
  EXPECT_EQ(calls, 1);
  Raise(0x60);  // already pending
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(apic_.Acknowledge(), 0x60);  // 0x50 waits
  EXPECT_EQ(calls, 1);
  Write(kEoi, 0);  // 0x50 deliverable again
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(apic_.Acknowledge(), 0x50);
  apic_.SetLint1(true);  // masked LINT1: nothing
  EXPECT_EQ(calls, 2);
}

// --- Destinations and IPIs -------------------------------------------------------

TEST_F(LocalApicTest, SelfIpis) {
  // §11.6.1: destination shorthands; delivery status reads idle.
  Enable();
  Write(kIcrLow, kSelf | 0x55);
  EXPECT_TRUE(Irr(0x55));
  EXPECT_EQ(Read(kIcrLow), kSelf | 0x55);
  Write(kIcrHigh, 0x00000000);  // physical destination: APIC ID 0
  Write(kIcrLow, 0x56);
  EXPECT_TRUE(Irr(0x56));
  Write(kIcrLow, kAllIncludingSelf | 0x57);
  EXPECT_TRUE(Irr(0x57));
  Write(kIcrLow, kAllExcludingSelf | 0x58);
  EXPECT_FALSE(Irr(0x58));
  Write(kIcrHigh, 0x01000000);  // APIC ID 1 does not exist
  Write(kIcrLow, 0x59);
  EXPECT_FALSE(Irr(0x59));
  EXPECT_EQ(apic_.self_ipis(), 3u);
  // IPIs are edge-triggered (the trigger mode bit only serves INIT de-assert).
  Write(kIcrHigh, 0);
  Write(kIcrLow, 0xc000 | 0x5a);
  EXPECT_TRUE(Irr(0x5a));
  EXPECT_FALSE(Tmr(0x5a));
  EXPECT_EQ(apic_.Acknowledge(), 0x5a);
  EXPECT_EQ(Esr(), 0u);
}

TEST_F(LocalApicTest, InitAndStartupIpisDoNothing) {
  // Linux's wakeup sequence for an AP that does not exist.
  Enable();
  Write(kIcrHigh, 0x01000000);
  Write(kIcrLow, 0xc500 | kDmInit);
  Write(kIcrLow, 0x8500 | kDmInit);
  Write(kIcrLow, kDmStartup | 0x9f);
  Write(kIcrLow, kAllExcludingSelf | kDmInit);
  Write(kIcrHigh, 0);
  Write(kIcrLow, kDmStartup | 0x9f);  // even to itself
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_FALSE(apic_.NmiPending());
  EXPECT_EQ(Read(kIcrLow) & 0x1000, 0u);  // idle
}

TEST_F(LocalApicTest, NmiIpiToSelf) {
  // Linux's NMI backtrace: NMI delivery mode to its own APIC ID.
  Enable();
  Write(kIcrHigh, 0);
  Write(kIcrLow, kDmNmi | 0x02);
  EXPECT_TRUE(apic_.NmiPending());
  EXPECT_FALSE(apic_.InterruptPending());
}

TEST_F(LocalApicTest, IllegalVectorIpi) {
  // §11.5.3: send illegal vector (bit 5); delivered to itself, also
  // received illegal vector (bit 6).
  Enable();
  Write(kIcrLow, kSelf | 0x03);
  EXPECT_EQ(Read(kIrr), 0u);
  EXPECT_EQ(Esr(), LocalApic::kEsrSendIllegalVector | LocalApic::kEsrReceiveIllegalVector);
  Write(kIcrLow, kAllExcludingSelf | 0x03);
  EXPECT_EQ(Esr(), LocalApic::kEsrSendIllegalVector);
}

TEST_F(LocalApicTest, LogicalDestinations) {
  // §11.6.2.2. Flat model, as Linux's apic_flat sets it up for CPU 0.
  Enable();
  Write(kDfr, 0xffffffff);
  Write(kLdr, 0x01000000);
  auto deliver = [&](uint8_t destination, ApicDestinationMode mode) {
    ApicMessage message;
    message.vector = 0x40;
    message.destination_mode = mode;
    message.destination = destination;
    return apic_.Deliver(message);
  };
  EXPECT_TRUE(deliver(0x01, ApicDestinationMode::kLogical));
  EXPECT_TRUE(deliver(0x03, ApicDestinationMode::kLogical));
  EXPECT_FALSE(deliver(0x02, ApicDestinationMode::kLogical));
  EXPECT_TRUE(deliver(0xff, ApicDestinationMode::kLogical));
  // Cluster model: cluster 2, member bit 0.
  Write(kDfr, 0x0fffffff);
  Write(kLdr, 0x21000000);
  EXPECT_TRUE(deliver(0x21, ApicDestinationMode::kLogical));
  EXPECT_TRUE(deliver(0x23, ApicDestinationMode::kLogical));
  EXPECT_FALSE(deliver(0x31, ApicDestinationMode::kLogical));
  EXPECT_FALSE(deliver(0x22, ApicDestinationMode::kLogical));
  EXPECT_TRUE(deliver(0xf1, ApicDestinationMode::kLogical));  // all clusters
  // Physical: the APIC ID, or the broadcast 0xff.
  EXPECT_TRUE(deliver(0x00, ApicDestinationMode::kPhysical));
  EXPECT_FALSE(deliver(0x01, ApicDestinationMode::kPhysical));
  EXPECT_TRUE(deliver(0xff, ApicDestinationMode::kPhysical));
  Write(kId, 0x03000000);
  EXPECT_TRUE(deliver(0x03, ApicDestinationMode::kPhysical));
  EXPECT_FALSE(deliver(0x00, ApicDestinationMode::kPhysical));
  // IPIs in logical mode go through the same match.
  Write(kDfr, 0xffffffff);
  Write(kLdr, 0x01000000);
  Write(kIcrHigh, 0x01000000);
  Write(kIcrLow, kDestLogical | 0x77);
  EXPECT_TRUE(Irr(0x77));
  EXPECT_EQ(apic_.refused_messages(), 5u);
}

TEST_F(LocalApicTest, OtherDeliveryModesAreRefused) {
  Enable();
  for (ApicDeliveryMode mode : {ApicDeliveryMode::kSmi, ApicDeliveryMode::kInit,
                                ApicDeliveryMode::kStartup, ApicDeliveryMode::kExtInt}) {
    ApicMessage message;
    message.vector = 0x40;
    message.delivery_mode = mode;
    EXPECT_FALSE(apic_.Deliver(message));
  }
  ApicMessage lowest;
  lowest.vector = 0x41;
  lowest.delivery_mode = ApicDeliveryMode::kLowestPriority;
  EXPECT_TRUE(apic_.Deliver(lowest));  // the only candidate
  EXPECT_TRUE(Irr(0x41));
  EXPECT_FALSE(Irr(0x40));
}

// --- CPU state: CR8 and MSRs ---------------------------------------------------------

TEST_F(LocalApicTest, Cr8IsTprBits7To4) {
  // §11.8.6.1.
  Enable();
  apic_.SetCr8(5);
  EXPECT_EQ(Read(kTpr), 0x50u);
  Write(kTpr, 0x9c);
  EXPECT_EQ(apic_.GetCr8(), 9u);
  Raise(0x95);
  EXPECT_FALSE(apic_.InterruptPending());
  apic_.SetCr8(8);
  EXPECT_TRUE(apic_.InterruptPending());
}

TEST_F(LocalApicTest, BaseMsrRefusesReservedBits) {
  // §11.4.4, Figure 11-5.
  EXPECT_FALSE(apic_.WriteBaseMsr(0xfee00900 | 1u << 10));  // x2APIC not exposed
  EXPECT_FALSE(apic_.WriteBaseMsr(0xfee00900 | 1u << 9));
  EXPECT_FALSE(apic_.WriteBaseMsr(0xfee00900 | 0x01));
  EXPECT_FALSE(apic_.WriteBaseMsr(0xfee00900 | uint64_t{1} << LocalApic::kDefaultPhysAddrBits));
  EXPECT_EQ(apic_.ReadBaseMsr(), 0xfee00900u);
  // A new base is stored; moving the registration is the machine's job.
  EXPECT_TRUE(apic_.WriteBaseMsr(0xfed00900));
  EXPECT_EQ(apic_.ReadBaseMsr(), 0xfed00900u);
  EXPECT_EQ(apic_.base(), GuestPhys(0xfed00000));
}

TEST_F(LocalApicTest, HardwareDisabledApicPassesThePicAndResets) {
  // §11.4.3: with IA32_APIC_BASE[11] clear the CPU has no APIC: the 8259
  // reaches it directly, LINT1 is its NMI pin, and the APIC may return to
  // its power-up state.
  apic_.ProgramVirtualWire();
  Write(kTpr, 0x20);
  Raise(0x50);
  EXPECT_TRUE(apic_.WriteBaseMsr(0xfee00100));
  EXPECT_FALSE(apic_.hardware_enabled());
  EXPECT_TRUE(apic_.AcceptsPicInterrupts());
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_FALSE(Raise(0x51));
  EXPECT_EQ(Read(kVersion), 0xffffffffu);  // not decoded
  Write(kSvr, 0x1ff);                      // dropped
  apic_.SetLint1(true);
  EXPECT_TRUE(apic_.NmiPending());
  apic_.AcknowledgeNmi();
  EXPECT_TRUE(apic_.WriteBaseMsr(0xfee00900));
  EXPECT_EQ(Read(kSvr), 0xffu);
  EXPECT_EQ(Read(kTpr), 0u);
  EXPECT_EQ(Read(kLvtLint0), kMasked);
  EXPECT_FALSE(Irr(0x50));
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());
}

// --- LINT0 and LINT1 -----------------------------------------------------------------

TEST_F(LocalApicTest, VirtualWireRoutesThePicThroughLint0) {
  // §11.5.1: LINT0 ExtINT; what SeaBIOS leaves (SVR enabled, LINT0 0x8700,
  // LINT1 0x8400).
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());
  apic_.ProgramVirtualWire();
  EXPECT_EQ(Read(kSvr), 0x1ffu);
  EXPECT_EQ(Read(kLvtLint0), 0x8700u);
  EXPECT_EQ(Read(kLvtLint1), 0x8400u);
  EXPECT_TRUE(apic_.AcceptsPicInterrupts());
  // Linux's check_timer() masks the virtual wire once the IOAPIC works.
  Write(kLvtLint0, kMasked | 0x700);
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());
  Write(kLvtLint0, 0x700);
  EXPECT_TRUE(apic_.AcceptsPicInterrupts());
  Write(kLvtLint0, 0x30);  // fixed: not the 8259's INTA
  EXPECT_FALSE(apic_.AcceptsPicInterrupts());
}

TEST_F(LocalApicTest, Lint1RisingEdgeIsAnNmi) {
  apic_.ProgramVirtualWire();
  apic_.SetLint1(true);
  EXPECT_TRUE(apic_.NmiPending());
  apic_.AcknowledgeNmi();
  apic_.SetLint1(true);  // no new edge
  EXPECT_FALSE(apic_.NmiPending());
  apic_.SetLint1(false);
  apic_.SetLint1(true);
  EXPECT_TRUE(apic_.NmiPending());
  apic_.AcknowledgeNmi();
  Write(kLvtLint1, kMasked | 0x400);
  apic_.SetLint1(false);
  apic_.SetLint1(true);
  EXPECT_FALSE(apic_.NmiPending());
  Write(kLvtLint1, 0x42);  // fixed mode: its vector
  apic_.SetLint1(false);
  apic_.SetLint1(true);
  EXPECT_FALSE(apic_.NmiPending());
  EXPECT_TRUE(Irr(0x42));
}

// --- Timer ---------------------------------------------------------------------------

// Nanoseconds per timer count before the divider: the bus clock is
// LocalApic::kBusFrequencyHz (1 MHz, CPUID 0x15's crystal: 1000 ns).
constexpr uint64_t kCountNs = 1'000'000'000 / LocalApic::kBusFrequencyHz;
static_assert(kCountNs * LocalApic::kBusFrequencyHz == 1'000'000'000,
              "a count lasts a whole number of nanoseconds");

struct Divider {
  uint32_t config;
  uint64_t divisor;
};
// §11.5.4, Figure 11-10.
constexpr Divider kDividers[] = {{0x0, 2},  {0x1, 4},  {0x2, 8},   {0x3, 16},
                                 {0x8, 32}, {0x9, 64}, {0xa, 128}, {0xb, 1}};

TEST_F(LocalApicTest, OneShotTimerWithEachDivider) {
  // The bus clock is the 1 MHz crystal CPUID 0x15 reports (Linux takes
  // the APIC timer's period from it): one count every `divisor` * 1000 ns.
  EXPECT_EQ(LocalApic::kBusFrequencyHz, 1'000'000u);
  EXPECT_EQ(kCountNs, 1000u);
  Enable();
  Write(kLvtTimer, 0x40);
  uint64_t t = 0;
  for (const Divider& d : kDividers) {
    SCOPED_TRACE(d.divisor);
    const uint64_t tick = d.divisor * kCountNs;  // nanoseconds per count
    Write(kDivideConfig, d.config);
    Write(kInitialCount, 1000);
    EXPECT_EQ(Read(kInitialCount), 1000u);
    EXPECT_EQ(Read(kCurrentCount), 1000u);
    EXPECT_EQ(NextEvent(), t + 1000 * tick);
    At(t + 500 * tick);
    EXPECT_EQ(Read(kCurrentCount), 500u);
    EXPECT_FALSE(TimerFired(0x40));
    At(t + 1000 * tick - 1);
    EXPECT_EQ(Read(kCurrentCount), 1u);
    EXPECT_FALSE(TimerFired(0x40));
    At(t + 1000 * tick);
    EXPECT_EQ(Read(kCurrentCount), 0u);
    EXPECT_TRUE(TimerFired(0x40));
    EXPECT_EQ(NextEvent(), ClockedDevice::kNever);  // one-shot: done
    t += 3000 * tick;
    At(t);
    EXPECT_FALSE(TimerFired(0x40));
    EXPECT_EQ(Read(kCurrentCount), 0u);
  }
  EXPECT_EQ(apic_.timer_interrupts(), 8u);
}

TEST_F(LocalApicTest, CurrentCountDecreasesWithTime) {
  // Linux's calibrate_APIC_clock() reads the count of a masked one-shot.
  Enable();
  Write(kLvtTimer, kMasked | 0xec);
  Write(kDivideConfig, 0x3);  // 16
  Write(kInitialCount, 0xffffffff);
  uint32_t last = Read(kCurrentCount);
  EXPECT_EQ(last, 0xffffffffu);
  for (uint64_t counts = 1; counts <= 10'000; counts *= 10) {
    At(counts * 16 * kCountNs);
    const uint32_t now = Read(kCurrentCount);
    EXPECT_LT(now, last);
    EXPECT_EQ(now, 0xffffffffu - counts);
    last = now;
  }
}

TEST_F(LocalApicTest, PeriodicTimerKeepsItsPhase) {
  Enable();
  Write(kDivideConfig, 0xb);  // 1: one count per bus clock
  Write(kLvtTimer, kPeriodic | 0xef);
  Write(kInitialCount, 100);
  for (uint64_t period = 1; period <= 3; ++period) {
    At(100 * period * kCountNs - 1);
    EXPECT_FALSE(TimerFired(0xef));
    EXPECT_EQ(Read(kCurrentCount), 1u);
    At(100 * period * kCountNs);
    EXPECT_EQ(Read(kCurrentCount), 100u);  // reloaded
    EXPECT_TRUE(TimerFired(0xef));
    EXPECT_EQ(NextEvent(), 100 * (period + 1) * kCountNs);
  }
  // Late by 20 counts: the next expiry stays on the 100-count grid.
  At(420 * kCountNs);
  EXPECT_TRUE(TimerFired(0xef));
  EXPECT_EQ(NextEvent(), 500 * kCountNs);
  EXPECT_EQ(Read(kCurrentCount), 80u);
  EXPECT_EQ(apic_.missed_timer_interrupts(), 0u);
}

TEST_F(LocalApicTest, PeriodicTimerCatchesUpWithOneInterrupt) {
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, kPeriodic | 0xef);
  Write(kInitialCount, 100);
  At(100 * kCountNs);
  EXPECT_TRUE(TimerFired(0xef));
  At(550 * kCountNs);  // expiries at counts 200, 300, 400 and 500 passed
  EXPECT_EQ(Read(kCurrentCount), 50u);
  apic_.Update();
  EXPECT_EQ(apic_.Acknowledge(), 0xef);
  EXPECT_FALSE(apic_.irr(0xef));  // one interrupt for the four
  Write(kEoi, 0);
  EXPECT_EQ(apic_.missed_timer_interrupts(), 3u);
  EXPECT_EQ(apic_.timer_interrupts(), 2u);
  EXPECT_EQ(NextEvent(), 600 * kCountNs);
}

TEST_F(LocalApicTest, RewritingTheInitialCountRestarts) {
  // §11.5.4: a write restarts the count; 0 stops it.
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, kPeriodic | 0xef);
  Write(kInitialCount, 100);
  At(60 * kCountNs);
  Write(kInitialCount, 200);
  EXPECT_EQ(Read(kCurrentCount), 200u);
  EXPECT_EQ(NextEvent(), 260 * kCountNs);
  At(100 * kCountNs);
  EXPECT_FALSE(TimerFired(0xef));
  Write(kInitialCount, 0);
  EXPECT_EQ(Read(kCurrentCount), 0u);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(1000 * kCountNs);
  EXPECT_FALSE(TimerFired(0xef));
}

TEST_F(LocalApicTest, ChangingTheDividerKeepsTheCurrentCount) {
  Enable();
  Write(kDivideConfig, 0x0);  // 2
  Write(kLvtTimer, kPeriodic | 0xef);
  Write(kInitialCount, 1000);
  const uint64_t change = 500 * 2 * kCountNs;  // 500 counts at 2
  At(change);
  EXPECT_EQ(Read(kCurrentCount), 500u);
  Write(kDivideConfig, 0x3);  // 16
  EXPECT_EQ(Read(kCurrentCount), 500u);
  EXPECT_EQ(NextEvent(), change + 500 * 16 * kCountNs);
  At(change + 500 * 16 * kCountNs);
  EXPECT_TRUE(TimerFired(0xef));
  // Whole periods at the new rate.
  EXPECT_EQ(NextEvent(), change + 1500 * 16 * kCountNs);
}

TEST_F(LocalApicTest, MaskedTimerCountsButRaisesNothing) {
  // §11.5.4: the mask inhibits the interrupt, not the count.
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, kMasked | kPeriodic | 0xef);
  Write(kInitialCount, 100);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);  // nothing to wake up for
  At(250 * kCountNs);
  EXPECT_EQ(Read(kCurrentCount), 50u);
  apic_.Update();
  EXPECT_FALSE(apic_.InterruptPending());
  Write(kLvtTimer, kPeriodic | 0xef);  // unmasked: the next expiry counts
  EXPECT_EQ(NextEvent(), 300 * kCountNs);
  At(300 * kCountNs);
  EXPECT_TRUE(TimerFired(0xef));
  EXPECT_EQ(apic_.timer_interrupts(), 1u);
  EXPECT_EQ(apic_.missed_timer_interrupts(), 0u);
}

TEST_F(LocalApicTest, TprHoldsTheTimerInterruptInIrr) {
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, 0xef);
  Write(kInitialCount, 10);
  Write(kTpr, 0xf0);
  At(10 * kCountNs);
  apic_.Update();
  EXPECT_TRUE(Irr(0xef));
  EXPECT_FALSE(apic_.InterruptPending());
  Write(kTpr, 0);
  EXPECT_EQ(apic_.Acknowledge(), 0xef);
}

TEST_F(LocalApicTest, DueExpiryIsRaisedBeforeReprogramming) {
  // A register write first raises what is already due (as the PIT does).
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, 0xef);
  Write(kInitialCount, 10);
  At(50 * kCountNs);           // expired, no Update() yet
  Write(kInitialCount, 1000);  // restart
  EXPECT_TRUE(Irr(0xef));
  EXPECT_EQ(NextEvent(), 1050 * kCountNs);
}

TEST_F(LocalApicTest, ChangingTheTimerModeDisarms) {
  // §11.5.4.1: a write to the LVT timer that changes the mode disarms.
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, 0xef);
  Write(kInitialCount, 100);
  At(50 * kCountNs);
  Write(kLvtTimer, 0xee);  // same mode, new vector: keeps counting
  EXPECT_EQ(Read(kCurrentCount), 50u);
  Write(kLvtTimer, kPeriodic | 0xee);
  EXPECT_EQ(Read(kCurrentCount), 0u);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(200 * kCountNs);
  EXPECT_FALSE(TimerFired(0xee));
  Write(kInitialCount, 100);  // Linux writes LVTT, then TMICT
  At(300 * kCountNs);
  EXPECT_TRUE(TimerFired(0xee));
  EXPECT_EQ(NextEvent(), 400 * kCountNs);
}

// --- TSC-deadline timer ---------------------------------------------------------------

TEST_F(LocalApicTest, FixedRateTscRoundsTowardsTheDeadline) {
  const FixedRateTsc tsc(2'400'000'000, 1000);  // 2.4 counts per nanosecond
  EXPECT_EQ(tsc.NsToTsc(0), 0u);
  EXPECT_EQ(tsc.NsToTsc(1000), 0u);
  EXPECT_EQ(tsc.NsToTsc(1002), 4u);
  EXPECT_EQ(tsc.NsToTsc(1003), 7u);
  EXPECT_EQ(tsc.TscToNs(0), 1000u);
  EXPECT_EQ(tsc.TscToNs(5), 1003u);  // the first time the TSC reads >= 5
  EXPECT_EQ(tsc.TscToNs(7), 1003u);
  EXPECT_EQ(tsc.TscToNs(8), 1004u);
  EXPECT_EQ(tsc.TscToNs(UINT64_MAX), 1000u + 7'686'143'364'045'646'507u);
  // A deadline beyond 2^64 ns is never reached.
  const FixedRateTsc slow(100'000'000, 0);
  EXPECT_EQ(slow.TscToNs(UINT64_MAX), ClockedDevice::kNever);
}

TEST_F(LocalApicTest, TscDeadlineArmsFiresAndClears) {
  // §11.5.4.1.
  Enable();
  Write(kLvtTimer, kTscDeadline | 0xec);
  EXPECT_EQ(apic_.ReadTscDeadline(), 0u);
  apic_.WriteTscDeadline(2000);  // the TSC reaches 2000 at 1000 ns
  EXPECT_EQ(apic_.ReadTscDeadline(), 2000u);
  EXPECT_EQ(NextEvent(), 1000u);
  // Initial count writes are ignored; the current count reads 0.
  Write(kInitialCount, 5);
  EXPECT_EQ(Read(kInitialCount), 0u);
  EXPECT_EQ(Read(kCurrentCount), 0u);
  At(999);
  EXPECT_FALSE(TimerFired(0xec));
  At(1000);
  EXPECT_EQ(apic_.ReadTscDeadline(), 0u);  // disarmed as it fires
  EXPECT_TRUE(TimerFired(0xec));
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(5000);
  EXPECT_FALSE(TimerFired(0xec));
}

TEST_F(LocalApicTest, TscDeadlineZeroDisarmsAndThePastFiresAtOnce) {
  Enable();
  Write(kLvtTimer, kTscDeadline | 0xec);
  apic_.WriteTscDeadline(4000);
  apic_.WriteTscDeadline(0);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(3000);
  EXPECT_FALSE(TimerFired(0xec));
  apic_.WriteTscDeadline(1);  // long past
  EXPECT_EQ(NextEvent(), 1u);
  EXPECT_TRUE(TimerFired(0xec));
  // Moving an armed deadline (Linux's lapic_next_deadline).
  apic_.WriteTscDeadline(10000);
  apic_.WriteTscDeadline(8000);
  EXPECT_EQ(NextEvent(), 4000u);
  At(4000);
  EXPECT_TRUE(TimerFired(0xec));
}

TEST_F(LocalApicTest, TscDeadlineOnlyInTscDeadlineMode) {
  Enable();
  Write(kLvtTimer, 0xec);  // one-shot
  apic_.WriteTscDeadline(2000);
  EXPECT_EQ(apic_.ReadTscDeadline(), 0u);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  // Leaving TSC-deadline mode disarms it.
  Write(kLvtTimer, kTscDeadline | 0xec);
  apic_.WriteTscDeadline(2000);
  Write(kLvtTimer, 0xec);
  Write(kLvtTimer, kTscDeadline | 0xec);
  EXPECT_EQ(apic_.ReadTscDeadline(), 0u);
  At(2000);
  EXPECT_FALSE(TimerFired(0xec));
}

TEST_F(LocalApicTest, MaskedTscDeadlineExpiresSilently) {
  Enable();
  Write(kLvtTimer, kMasked | kTscDeadline | 0xec);
  apic_.WriteTscDeadline(2000);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(1000);
  apic_.Update();
  EXPECT_EQ(apic_.ReadTscDeadline(), 0u);
  EXPECT_FALSE(apic_.InterruptPending());
}

TEST_F(LocalApicTest, ResetStopsTheTimer) {
  Enable();
  Write(kDivideConfig, 0xb);
  Write(kLvtTimer, kPeriodic | 0xef);
  Write(kInitialCount, 100);
  Raise(0x50);
  apic_.Reset();
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  EXPECT_EQ(Read(kInitialCount), 0u);
  EXPECT_EQ(Read(kLvtTimer), kMasked);
  EXPECT_FALSE(apic_.InterruptPending());
  EXPECT_EQ(Read(kSvr), 0xffu);
}

}  // namespace
}  // namespace btvm
