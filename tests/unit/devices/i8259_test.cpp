// The i8259 pair at 0x20/0x21, 0xa0/0xa1 and its ELCR at 0x4d0/0x4d1,
// programmed through the bus the way Linux's i8259.c and firmware program
// it; the engine's side is InterruptPending()/Acknowledge().

#include "devices/i8259.h"

#include <cstdint>

#include <gtest/gtest.h>

#include "devices/bus.h"

namespace btvm {
namespace {

constexpr uint16_t kMasterCmd = 0x20, kMasterData = 0x21;
constexpr uint16_t kSlaveCmd = 0xa0, kSlaveData = 0xa1;
constexpr uint16_t kElcrMaster = 0x4d0, kElcrSlave = 0x4d1;

// OCW2 and OCW3 bytes.
constexpr uint8_t kNonSpecificEoi = 0x20;
constexpr uint8_t kSpecificEoi = 0x60;  // | input
constexpr uint8_t kRotateNonSpecificEoi = 0xa0;
constexpr uint8_t kRotateSpecificEoi = 0xe0;  // | input
constexpr uint8_t kSetPriority = 0xc0;        // | lowest-priority input
constexpr uint8_t kSetRotateAeoi = 0x80;
constexpr uint8_t kReadIrr = 0x0a, kReadIsr = 0x0b, kPoll = 0x0c;
constexpr uint8_t kSetSpecialMask = 0x68, kClearSpecialMask = 0x48;

class I8259Test : public ::testing::Test {
 protected:
  I8259Test() { BTVM_CHECK(pic_.RegisterOn(bus_).ok()); }

  uint8_t In(uint16_t port) { return static_cast<uint8_t>(bus_.Read(port, 1)); }
  void Out(uint16_t port, uint8_t value) { bus_.Write(port, 1, value); }

  // Linux's init_8259A(): mask everything, ICW1-4 on both chips (edge,
  // cascade, 8086 mode), then unmask what is wanted.
  void Init(uint8_t master_base = 0x20, uint8_t slave_base = 0x28, uint8_t master_icw4 = 0x01,
            uint8_t slave_icw4 = 0x01) {
    Out(kMasterData, 0xff);
    Out(kSlaveData, 0xff);
    Out(kMasterCmd, 0x11);
    Out(kMasterData, master_base);
    Out(kMasterData, 0x04);  // slave on input 2
    Out(kMasterData, master_icw4);
    Out(kSlaveCmd, 0x11);
    Out(kSlaveData, slave_base);
    Out(kSlaveData, 0x02);  // cascade identity 2
    Out(kSlaveData, slave_icw4);
    Out(kMasterData, 0x00);
    Out(kSlaveData, 0x00);
  }

  void Pulse(unsigned line) {
    pic_.SetIrqLevel(line, true);
    pic_.SetIrqLevel(line, false);
  }
  uint8_t MasterIsr() {
    Out(kMasterCmd, kReadIsr);
    return In(kMasterCmd);
  }
  uint8_t MasterIrr() {
    Out(kMasterCmd, kReadIrr);
    return In(kMasterCmd);
  }
  uint8_t SlaveIsr() {
    Out(kSlaveCmd, kReadIsr);
    return In(kSlaveCmd);
  }

  I8259Pair pic_;
  PioBus bus_;
};

TEST_F(I8259Test, PowerOnState) {
  EXPECT_FALSE(pic_.InterruptPending());
  EXPECT_EQ(In(kMasterData), 0x00);  // QEMU resets IMR to 0
  EXPECT_EQ(In(kSlaveData), 0x00);
  EXPECT_EQ(In(kMasterCmd), 0x00);  // IRR
  EXPECT_EQ(In(kElcrMaster), 0x00);
  EXPECT_EQ(In(kElcrSlave), 0x00);
  EXPECT_EQ(pic_.vector_base(PicChip::kMaster), 0);
}

TEST_F(I8259Test, LinuxProbeReadsBackTheMask) {
  // Linux's probe_8259A(): write 0xff to the master IMR and read it back.
  Out(kMasterData, 0xff);
  EXPECT_EQ(In(kMasterData), 0xff);
  Out(kMasterData, 0xfb);
  EXPECT_EQ(In(kMasterData), 0xfb);
}

TEST_F(I8259Test, InitSequenceSetsVectorBases) {
  Init(0x30, 0x38);
  EXPECT_EQ(pic_.vector_base(PicChip::kMaster), 0x30);
  EXPECT_EQ(pic_.vector_base(PicChip::kSlave), 0x38);
  EXPECT_EQ(In(kMasterData), 0x00);
  // ICW2's low three bits are not part of the base.
  Out(kMasterCmd, 0x11);
  Out(kMasterData, 0x47);
  Out(kMasterData, 0x04);
  Out(kMasterData, 0x01);
  EXPECT_EQ(pic_.vector_base(PicChip::kMaster), 0x40);
  // After the sequence the data port is the mask again.
  Out(kMasterData, 0x5a);
  EXPECT_EQ(In(kMasterData), 0x5a);
}

TEST_F(I8259Test, Irq0DeliversVector0x20) {
  Init();
  Pulse(0);
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x20);
  EXPECT_FALSE(pic_.InterruptPending());
  EXPECT_EQ(MasterIsr(), 0x01);
  EXPECT_EQ(MasterIrr(), 0x00);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(MasterIsr(), 0x00);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, EveryInputMapsToItsVector) {
  Init(0x30, 0x38);
  for (unsigned line = 0; line < 16; ++line) {
    if (line == 2) continue;
    Pulse(line);
    ASSERT_TRUE(pic_.InterruptPending()) << line;
    EXPECT_EQ(pic_.Acknowledge(), 0x30 + line);
    if (line >= 8) Out(kSlaveCmd, kNonSpecificEoi);
    Out(kMasterCmd, kNonSpecificEoi);
  }
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, MaskedRequestWaitsInIrr) {
  Init();
  Out(kMasterData, 0x01);
  Pulse(0);
  EXPECT_FALSE(pic_.InterruptPending());
  EXPECT_EQ(MasterIrr(), 0x01);
  Out(kMasterData, 0x00);
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x20);
}

TEST_F(I8259Test, LowestNumberWinsAndOthersWaitForEoi) {
  Init();
  Pulse(5);
  Pulse(3);
  Pulse(7);
  EXPECT_EQ(MasterIrr(), 0xa8);
  EXPECT_EQ(pic_.Acknowledge(), 0x23);
  // IRQ 5 and 7 are lower priority than IRQ 3 in service.
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x27);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, HigherPriorityNestsAndEoiEndsTheHighest) {
  Init();
  Pulse(4);
  EXPECT_EQ(pic_.Acknowledge(), 0x24);
  Pulse(1);  // higher priority than 4: interrupts the handler
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
  EXPECT_EQ(MasterIsr(), 0x12);
  Out(kMasterCmd, kNonSpecificEoi);  // ends IRQ 1, the highest in service
  EXPECT_EQ(MasterIsr(), 0x10);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(MasterIsr(), 0x00);
}

TEST_F(I8259Test, SpecificEoiEndsTheNamedInput) {
  Init();
  Pulse(4);
  EXPECT_EQ(pic_.Acknowledge(), 0x24);
  Pulse(1);
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
  Out(kMasterCmd, kSpecificEoi | 4);
  EXPECT_EQ(MasterIsr(), 0x02);
  Out(kMasterCmd, kSpecificEoi | 1);
  EXPECT_EQ(MasterIsr(), 0x00);
}

TEST_F(I8259Test, CascadeIrq8GivesTheSlaveVector) {
  Init(0x20, 0x28);
  Pulse(8);
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x28);
  EXPECT_EQ(MasterIsr(), 0x04);  // the cascade input is in service on the master
  EXPECT_EQ(SlaveIsr(), 0x01);
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(MasterIsr(), 0x00);
  EXPECT_EQ(SlaveIsr(), 0x00);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, SlaveRequestsNeedTheCascadeUnmasked) {
  Init();
  Out(kMasterData, 0x04);  // mask IRQ 2
  Pulse(12);
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kMasterData, 0x00);
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x2c);
}

TEST_F(I8259Test, SlaveMaskHoldsTheRequest) {
  Init();
  Out(kSlaveData, 0x10);  // mask IRQ 12
  Pulse(12);
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kSlaveCmd, kReadIrr);
  EXPECT_EQ(In(kSlaveCmd), 0x10);
  Out(kSlaveData, 0x00);
  EXPECT_EQ(pic_.Acknowledge(), 0x2c);
}

TEST_F(I8259Test, SlaveInputsRankBetweenIrq1AndIrq3) {
  Init();
  Pulse(3);
  Pulse(10);
  Pulse(1);
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x2a);  // through IRQ 2, ahead of IRQ 3
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x23);
}

TEST_F(I8259Test, SlavePrioritiesResolveOnTheSlave) {
  Init();
  Pulse(14);
  Pulse(9);
  EXPECT_EQ(pic_.Acknowledge(), 0x29);
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x2e);
}

TEST_F(I8259Test, AcknowledgeWithNothingPendingIsSpuriousIrq7) {
  Init();
  EXPECT_EQ(pic_.Acknowledge(), 0x27);
  EXPECT_EQ(MasterIsr(), 0x00);  // a spurious interrupt sets no ISR bit
}

TEST_F(I8259Test, RequestMaskedBeforeAcknowledgeIsSpuriousIrq7) {
  Init();
  Pulse(4);
  EXPECT_TRUE(pic_.InterruptPending());
  Out(kMasterData, 0x10);
  EXPECT_FALSE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x27);
  EXPECT_EQ(MasterIsr(), 0x00);
  EXPECT_EQ(MasterIrr(), 0x10);  // still requested, masked
}

TEST_F(I8259Test, VanishedLevelRequestIsSpuriousIrq7) {
  Init();
  Out(kElcrMaster, 0x20);  // IRQ 5 level-triggered
  pic_.SetIrqLevel(5, true);
  EXPECT_TRUE(pic_.InterruptPending());
  pic_.SetIrqLevel(5, false);
  EXPECT_FALSE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x27);
  EXPECT_EQ(MasterIsr(), 0x00);
}

TEST_F(I8259Test, VanishedSlaveLevelRequestIsSpuriousIrq15) {
  Init();
  Out(kElcrSlave, 0x08);  // IRQ 11 level-triggered
  pic_.SetIrqLevel(11, true);
  EXPECT_TRUE(pic_.InterruptPending());
  pic_.SetIrqLevel(11, false);
  // The master latched the cascade's edge; the slave no longer requests.
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x2f);
  EXPECT_EQ(SlaveIsr(), 0x00);
  EXPECT_EQ(MasterIsr(), 0x04);  // the guest must still EOI the master
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(MasterIsr(), 0x00);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, EdgeRequestLatchesAPulseOnce) {
  Init();
  Pulse(6);
  EXPECT_EQ(pic_.Acknowledge(), 0x26);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, EdgeRequestNeedsANewRisingEdge) {
  Init();
  pic_.SetIrqLevel(4, true);
  EXPECT_EQ(pic_.Acknowledge(), 0x24);
  Out(kMasterCmd, kNonSpecificEoi);
  pic_.SetIrqLevel(4, true);  // still high: no new edge
  EXPECT_FALSE(pic_.InterruptPending());
  pic_.SetIrqLevel(4, false);
  pic_.SetIrqLevel(4, true);
  EXPECT_TRUE(pic_.InterruptPending());
}

TEST_F(I8259Test, LevelRequestRepeatsUntilTheLineFalls) {
  Init();
  Out(kElcrSlave, 0x08);  // IRQ 11
  pic_.SetIrqLevel(11, true);
  EXPECT_EQ(pic_.Acknowledge(), 0x2b);
  EXPECT_FALSE(pic_.InterruptPending());  // in service
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_TRUE(pic_.InterruptPending());  // line still high
  EXPECT_EQ(pic_.Acknowledge(), 0x2b);
  pic_.SetIrqLevel(11, false);
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, SwitchingToLevelTriggeringSeesAHighLine) {
  Init();
  pic_.SetIrqLevel(10, true);
  EXPECT_EQ(pic_.Acknowledge(), 0x2a);
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kElcrSlave, 0x04);
  EXPECT_TRUE(pic_.InterruptPending());
}

TEST_F(I8259Test, Icw1LtimMakesEveryInputLevelTriggered) {
  Out(kMasterCmd, 0x19);  // ICW1 with LTIM
  Out(kMasterData, 0x20);
  Out(kMasterData, 0x04);
  Out(kMasterData, 0x01);
  Out(kMasterData, 0x00);
  pic_.SetIrqLevel(0, true);
  EXPECT_EQ(pic_.Acknowledge(), 0x20);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_TRUE(pic_.InterruptPending());
  pic_.SetIrqLevel(0, false);
  EXPECT_FALSE(pic_.InterruptPending());
}

TEST_F(I8259Test, ElcrKeepsOnlyTheBitsThatCanBeLevel) {
  Out(kElcrMaster, 0xff);
  Out(kElcrSlave, 0xff);
  EXPECT_EQ(In(kElcrMaster), 0xf8);  // IRQ 0, 1, 2 are always edge
  EXPECT_EQ(In(kElcrSlave), 0xde);   // IRQ 8 and 13 are always edge
  bus_.Write(kElcrMaster, 2, 0x0c20);
  EXPECT_EQ(bus_.Read(kElcrMaster, 2), 0x0c20u);
  EXPECT_EQ(pic_.elcr(PicChip::kMaster), 0x20);
  EXPECT_EQ(pic_.elcr(PicChip::kSlave), 0x0c);
}

TEST_F(I8259Test, Ocw3SelectsIrrOrIsrAndTheChoiceSticks) {
  Init();
  Out(kMasterData, 0x08);  // IRQ 3 masked, stays in IRR
  Pulse(3);
  Pulse(5);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  EXPECT_EQ(In(kMasterCmd), 0x08);  // IRR by default
  Out(kMasterCmd, kReadIsr);
  EXPECT_EQ(In(kMasterCmd), 0x20);
  EXPECT_EQ(In(kMasterCmd), 0x20);  // still ISR
  Out(kMasterCmd, 0x08);            // OCW3 without RR: no change
  EXPECT_EQ(In(kMasterCmd), 0x20);
  Out(kMasterCmd, kReadIrr);
  EXPECT_EQ(In(kMasterCmd), 0x08);
  EXPECT_EQ(In(kMasterData), 0x08);  // the data port reads IMR
}

TEST_F(I8259Test, PollCommandAcknowledgesThroughARead) {
  Init();
  Out(kMasterCmd, kPoll);
  EXPECT_EQ(In(kMasterCmd), 0x00);  // nothing requested
  Pulse(6);
  Pulse(3);
  Out(kMasterCmd, kPoll);
  EXPECT_EQ(In(kMasterCmd), 0x83);
  EXPECT_EQ(MasterIsr(), 0x08);
  EXPECT_EQ(MasterIrr(), 0x40);
  Out(kMasterCmd, kNonSpecificEoi);
  Out(kMasterCmd, kPoll);
  EXPECT_EQ(In(kMasterData), 0x86);  // a poll answers on either port
  EXPECT_EQ(In(kMasterData), 0x00);  // and only once: this is IMR again
}

TEST_F(I8259Test, AutoEoiLeavesNothingInService) {
  Init(0x20, 0x28, 0x03, 0x01);  // master ICW4 with AEOI
  Pulse(5);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  EXPECT_EQ(MasterIsr(), 0x00);
  Pulse(6);  // lower priority, but nothing is in service
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x26);
}

TEST_F(I8259Test, RotateInAutoEoiMakesTheServedInputLowest) {
  Init(0x20, 0x28, 0x03, 0x01);
  Out(kMasterCmd, kSetRotateAeoi);
  Pulse(1);
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
  Pulse(1);
  Pulse(4);
  EXPECT_EQ(pic_.Acknowledge(), 0x24);  // 1 is now the lowest priority
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
}

TEST_F(I8259Test, RotateOnNonSpecificEoi) {
  Init();
  Pulse(0);
  EXPECT_EQ(pic_.Acknowledge(), 0x20);
  Out(kMasterCmd, kRotateNonSpecificEoi);  // 0 becomes the lowest, 1 the highest
  Pulse(0);
  Pulse(7);
  Pulse(1);
  EXPECT_EQ(pic_.Acknowledge(), 0x21);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x27);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x20);
}

TEST_F(I8259Test, RotateOnSpecificEoi) {
  Init();
  Pulse(5);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  Out(kMasterCmd, kRotateSpecificEoi | 5);  // 6 highest now
  EXPECT_EQ(MasterIsr(), 0x00);
  Pulse(3);
  Pulse(6);
  EXPECT_EQ(pic_.Acknowledge(), 0x26);
}

TEST_F(I8259Test, SetPriorityRotatesWithoutEoi) {
  Init();
  Out(kMasterCmd, kSetPriority | 4);  // 4 lowest, 5 highest
  Pulse(3);
  Pulse(6);
  EXPECT_EQ(pic_.Acknowledge(), 0x26);
  // With 6 in service, 3 (priority below 6 now) waits, 5 would not.
  EXPECT_FALSE(pic_.InterruptPending());
  Pulse(5);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  Out(kMasterCmd, kNonSpecificEoi);  // ends 5, the highest in service
  EXPECT_EQ(MasterIsr(), 0x40);
}

TEST_F(I8259Test, SpecialMaskModeLetsLowerPrioritiesIn) {
  Init();
  Pulse(3);
  EXPECT_EQ(pic_.Acknowledge(), 0x23);
  Pulse(5);
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kMasterData, 0x08);  // the handler masks itself...
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kMasterCmd, kSetSpecialMask);  // ...and enters special mask mode
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
  Out(kMasterCmd, kSpecificEoi | 5);
  Out(kMasterCmd, kClearSpecialMask);
  Out(kMasterData, 0x00);
  Out(kMasterCmd, kSpecificEoi | 3);
  EXPECT_EQ(MasterIsr(), 0x00);
}

TEST_F(I8259Test, SpecialFullyNestedLetsHigherSlaveRequestsThrough) {
  Init(0x20, 0x28, 0x11, 0x01);  // master ICW4 with SFNM
  Pulse(12);
  EXPECT_EQ(pic_.Acknowledge(), 0x2c);
  Pulse(9);  // higher priority on the slave, cascade already in service
  EXPECT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x29);
  EXPECT_EQ(SlaveIsr(), 0x12);
}

TEST_F(I8259Test, WithoutFullyNestedTheCascadeInServiceBlocks) {
  Init();
  Pulse(12);
  EXPECT_EQ(pic_.Acknowledge(), 0x2c);
  Pulse(9);
  EXPECT_FALSE(pic_.InterruptPending());
  Out(kSlaveCmd, kNonSpecificEoi);
  Out(kMasterCmd, kNonSpecificEoi);
  EXPECT_EQ(pic_.Acknowledge(), 0x29);
}

TEST_F(I8259Test, SingleModeSkipsIcw3) {
  Out(kMasterCmd, 0x13);  // single, ICW4 needed
  Out(kMasterData, 0x40);
  Out(kMasterData, 0x01);  // ICW4 (not ICW3)
  Out(kMasterData, 0xfe);  // OCW1
  EXPECT_EQ(In(kMasterData), 0xfe);
  Pulse(0);
  EXPECT_EQ(pic_.Acknowledge(), 0x40);
}

TEST_F(I8259Test, Icw1WithoutIcw4EndsAfterIcw3) {
  Out(kMasterCmd, 0x10);
  Out(kMasterData, 0x50);
  Out(kMasterData, 0x04);
  Out(kMasterData, 0x3c);  // OCW1
  EXPECT_EQ(In(kMasterData), 0x3c);
  EXPECT_EQ(pic_.vector_base(PicChip::kMaster), 0x50);
}

TEST_F(I8259Test, Icw1ClearsMaskServiceAndEdgeRequests) {
  Init();
  Out(kElcrMaster, 0x20);
  pic_.SetIrqLevel(5, true);  // level, stays requested
  Pulse(4);                   // edge, forgotten
  EXPECT_EQ(pic_.Acknowledge(), 0x24);
  Out(kMasterData, 0xc0);
  Init();
  EXPECT_EQ(MasterIsr(), 0x00);
  EXPECT_EQ(MasterIrr(), 0x20);
  EXPECT_EQ(pic_.Acknowledge(), 0x25);
}

TEST_F(I8259Test, IntrListenerHearsRisingIntr) {
  int calls = 0;
  pic_.SetIntrListener([&] { ++calls; });
  Init();
  EXPECT_EQ(calls, 0);
  Pulse(3);
  EXPECT_EQ(calls, 1);
  Pulse(4);  // INTR already high
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(pic_.Acknowledge(), 0x23);  // 4 waits for the EOI: INTR low
  Out(kMasterCmd, kNonSpecificEoi);     // INTR rises again
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(pic_.Acknowledge(), 0x24);
  Out(kMasterData, 0xff);
  Pulse(1);  // masked: no INTR
  EXPECT_EQ(calls, 2);
  Out(kMasterData, 0x00);  // unmasking raises it
  EXPECT_EQ(calls, 3);
}

TEST_F(I8259Test, WideAccessesSplitIntoBytes) {
  Init();
  Out(kMasterData, 0x5a);
  Pulse(3);
  EXPECT_EQ(bus_.Read(kMasterCmd, 2), 0x5a08u);  // IRR, then IMR
  bus_.Write(kMasterCmd, 2, 0xa50a);             // OCW3 read IRR, then IMR 0xa5
  EXPECT_EQ(In(kMasterData), 0xa5);
  EXPECT_EQ(bus_.Read(kMasterData, 2), 0xffa5u);  // past the chip: floating bus
}

TEST_F(I8259Test, RegisteringTwiceIsRefused) {
  I8259Pair other;
  EXPECT_FALSE(other.RegisterOn(bus_));
}

TEST_F(I8259Test, ResetRestoresPowerOnState) {
  Init(0x30, 0x38);
  Out(kElcrSlave, 0x08);
  Out(kMasterData, 0x12);
  Pulse(3);
  EXPECT_EQ(pic_.Acknowledge(), 0x33);
  pic_.Reset();
  EXPECT_EQ(pic_.vector_base(PicChip::kMaster), 0);
  EXPECT_EQ(pic_.imr(PicChip::kMaster), 0);
  EXPECT_EQ(pic_.isr(PicChip::kMaster), 0);
  EXPECT_EQ(pic_.irr(PicChip::kMaster), 0);
  EXPECT_EQ(pic_.elcr(PicChip::kSlave), 0);
  EXPECT_FALSE(pic_.InterruptPending());
}

}  // namespace
}  // namespace btvm
