// The ACPI PM registers at 0x600-0x60b and the reset control register at
// 0xcf9, driven through the bus the way ACPICA and Linux drive them: the PM
// timer clocksource, fixed-event status and enables, the S5 power-off
// sequence of acpi_hw_legacy_sleep(), and the ACPI/cf9 reboot.

#include "devices/acpi_pm.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "devices/clock.h"
#include "tests/unit/devices/fakes.h"

namespace btvm {
namespace {

using testing::RecordingIrqSink;
using Change = RecordingIrqSink::Change;

constexpr uint16_t kPm1Sts = 0x600, kPm1En = 0x602, kPm1Cnt = 0x604, kPmTmr = 0x608;
constexpr uint16_t kCf9 = 0xcf9;
constexpr uint64_t kOriginNs = 1'000'000'000'000;
constexpr uint64_t kHz = 3'579'545;
constexpr uint64_t kMsbPeriod = uint64_t{1} << 23;  // ticks between TMR_STS events

// The first nanosecond (from the origin) at which `ticks` timer clocks have passed.
uint64_t TicksNs(uint64_t ticks) {
  return (ticks * 1'000'000'000 + kHz - 1) / kHz;
}

// What ACPICA writes to enter S5: SLP_TYP, then SLP_TYP | SLP_EN.
constexpr uint16_t kSlpEn = 1u << 13;
uint16_t SlpTyp(unsigned type) {
  return static_cast<uint16_t>(type << 10);
}

class AcpiPmTest : public ::testing::Test {
 protected:
  AcpiPmTest()
      : clock_(kOriginNs),
        pm_(IrqLine(&pic_, AcpiPm::kSciIrq), clock_, &system_),
        reset_(&system_) {
    BTVM_CHECK(pm_.RegisterOn(bus_).ok());
    BTVM_CHECK(reset_.RegisterOn(bus_).ok());
  }

  uint16_t In16(uint16_t port) { return static_cast<uint16_t>(bus_.Read(port, 2)); }
  void Out16(uint16_t port, uint16_t value) { bus_.Write(port, 2, value); }
  uint32_t Timer() { return bus_.Read(kPmTmr, 4); }

  void At(uint64_t ns) { clock_.Set(kOriginNs + ns); }
  void AtTicks(uint64_t ticks) { At(TicksNs(ticks)); }
  uint64_t NextEvent() const {
    const uint64_t next = pm_.NextEventNs();
    return next == ClockedDevice::kNever ? next : next - kOriginNs;
  }

  ManualClock clock_;
  RecordingIrqSink pic_;
  testing::RecordingSystem system_;
  AcpiPm pm_;
  ResetControl reset_;
  PioBus bus_;
};

// --- Registers at power-on ---------------------------------------------------

TEST_F(AcpiPmTest, PowerOnState) {
  EXPECT_EQ(In16(kPm1Sts), 0);
  EXPECT_EQ(In16(kPm1En), 0);
  EXPECT_EQ(In16(kPm1Cnt), 1);  // SCI_EN: always in ACPI mode
  EXPECT_EQ(Timer(), 0u);
  EXPECT_FALSE(pm_.sci_level());
  EXPECT_EQ(pm_.NextEventNs(), ClockedDevice::kNever);
}

TEST_F(AcpiPmTest, BlockLayoutMatchesTheConstantsTheFadtUses) {
  EXPECT_EQ(AcpiPm::kPm1EventBlock, kPm1Sts);
  EXPECT_EQ(AcpiPm::kPm1ControlBlock, kPm1Cnt);
  EXPECT_EQ(AcpiPm::kPmTimerBlock, kPmTmr);
  EXPECT_EQ(AcpiPm::kPm1EventBlock + AcpiPm::kPm1EventLength, AcpiPm::kPm1ControlBlock);
  EXPECT_EQ(AcpiPm::kPmTimerBlock + AcpiPm::kPmTimerLength, AcpiPm::kBase + AcpiPm::kPortCount);
  // The ports around the block and the gap inside it float.
  EXPECT_EQ(bus_.Read(0x5ff, 1), 0xffu);
  EXPECT_EQ(bus_.Read(0x606, 2), 0xffffu);
  EXPECT_EQ(bus_.Read(0x60c, 4), 0xffffffffu);
}

TEST_F(AcpiPmTest, RegisteringTwiceIsRefused) {
  AcpiPm second(IrqLine(&pic_, AcpiPm::kSciIrq), clock_, &system_);
  EXPECT_FALSE(second.RegisterOn(bus_));
  ResetControl second_reset(&system_);
  EXPECT_FALSE(second_reset.RegisterOn(bus_));
}

// --- PM timer ----------------------------------------------------------------

TEST_F(AcpiPmTest, TimerCountsAt3579545Hz) {
  At(1'000'000);  // one millisecond: 3579.545 ticks, floored
  EXPECT_EQ(Timer(), 3'579u);
  At(1'000'000'000);  // one second
  EXPECT_EQ(Timer(), 3'579'545u);
  AtTicks(4'000'000);
  EXPECT_EQ(Timer(), 4'000'000u);
  At(TicksNs(4'000'001) - 1);  // not yet a whole tick more
  EXPECT_EQ(Timer(), 4'000'000u);
  At(TicksNs(4'000'001));
  EXPECT_EQ(Timer(), 4'000'001u);
}

TEST_F(AcpiPmTest, TimerWrapsAt24Bits) {
  AtTicks(0xffffff);
  EXPECT_EQ(Timer(), 0xffffffu);
  AtTicks(0x1000000);
  EXPECT_EQ(Timer(), 0u);
  AtTicks(0x1000000 + 5);
  EXPECT_EQ(Timer(), 5u);
  // Long after: still 24 bits, still exact (10 hours = 128,863,620,000 ticks).
  At(uint64_t{36'000} * 1'000'000'000);
  EXPECT_EQ(Timer(), static_cast<uint32_t>(uint64_t{36'000} * kHz) & 0xffffff);
}

TEST_F(AcpiPmTest, TimerBytesAndWordsComeFromOneInstant) {
  AtTicks(0x123456);
  EXPECT_EQ(bus_.Read(kPmTmr, 1), 0x56u);
  EXPECT_EQ(bus_.Read(kPmTmr + 1, 1), 0x34u);
  EXPECT_EQ(bus_.Read(kPmTmr + 2, 1), 0x12u);
  EXPECT_EQ(bus_.Read(kPmTmr + 3, 1), 0x00u);
  EXPECT_EQ(bus_.Read(kPmTmr, 2), 0x3456u);
  EXPECT_EQ(bus_.Read(kPmTmr + 2, 2), 0x0012u);
  EXPECT_EQ(pm_.TimerValue(), 0x123456u);
}

TEST_F(AcpiPmTest, TimerIgnoresWrites) {
  AtTicks(1000);
  bus_.Write(kPmTmr, 4, 0);
  EXPECT_EQ(Timer(), 1000u);
}

TEST_F(AcpiPmTest, TimerKeepsCountingThroughReset) {
  AtTicks(5000);
  pm_.Reset();
  EXPECT_EQ(Timer(), 5000u);
}

// --- PM1 status, enable and the SCI -----------------------------------------

TEST_F(AcpiPmTest, TmrStsSetsWhenBit23Toggles) {
  AtTicks(kMsbPeriod - 1);
  EXPECT_EQ(In16(kPm1Sts), 0);
  AtTicks(kMsbPeriod);  // bit 23 goes 0 -> 1
  EXPECT_EQ(In16(kPm1Sts), AcpiPm::kTmrSts);
  Out16(kPm1Sts, AcpiPm::kTmrSts);  // write 1 to clear
  EXPECT_EQ(In16(kPm1Sts), 0);
  AtTicks(2 * kMsbPeriod - 1);
  EXPECT_EQ(In16(kPm1Sts), 0);
  AtTicks(2 * kMsbPeriod);  // bit 23 goes 1 -> 0 (the counter wraps)
  EXPECT_EQ(In16(kPm1Sts), AcpiPm::kTmrSts);
  EXPECT_EQ(Timer(), 0u);
}

TEST_F(AcpiPmTest, Pm1StsIsWriteOneToClear) {
  AtTicks(kMsbPeriod);
  EXPECT_EQ(In16(kPm1Sts), AcpiPm::kTmrSts);
  Out16(kPm1Sts, 0);  // writing 0 changes nothing
  EXPECT_EQ(In16(kPm1Sts), AcpiPm::kTmrSts);
  Out16(kPm1Sts, static_cast<uint16_t>(~AcpiPm::kTmrSts));  // other bits only
  EXPECT_EQ(In16(kPm1Sts), AcpiPm::kTmrSts);
  // ACPICA's acpi_hw_clear_acpi_status() writes all the fixed status bits.
  Out16(kPm1Sts, 0x8731);
  EXPECT_EQ(In16(kPm1Sts), 0);
}

TEST_F(AcpiPmTest, Pm1EnReadsBackAndBytesAreIndependent) {
  Out16(kPm1En, 0x0521);
  EXPECT_EQ(In16(kPm1En), 0x0521);
  bus_.Write(kPm1En + 1, 1, 0x01);  // the high byte alone
  EXPECT_EQ(In16(kPm1En), 0x0121);
  EXPECT_EQ(pm_.pm1_enable(), 0x0121);
  // A dword at 0x600 writes PM1_STS and PM1_EN together.
  bus_.Write(kPm1Sts, 4, 0x00000000);
  EXPECT_EQ(In16(kPm1En), 0);
}

TEST_F(AcpiPmTest, SciFollowsTmrStsAndTmrEn) {
  Out16(kPm1En, AcpiPm::kTmrEn);
  EXPECT_EQ(NextEvent(), TicksNs(kMsbPeriod));
  AtTicks(kMsbPeriod - 1);
  pm_.Update();
  EXPECT_TRUE(pic_.changes.empty());
  AtTicks(kMsbPeriod);
  EXPECT_EQ(NextEvent(), TicksNs(kMsbPeriod));  // due now
  pm_.Update();
  EXPECT_TRUE(pm_.sci_level());
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{9, true}}));
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);  // set until the guest clears it
  // Level-triggered: it stays high until TMR_STS is cleared.
  pm_.Update();
  EXPECT_EQ(pic_.changes.size(), 1u);
  Out16(kPm1Sts, AcpiPm::kTmrSts);
  EXPECT_FALSE(pm_.sci_level());
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{9, true}, {9, false}}));
  EXPECT_EQ(NextEvent(), TicksNs(2 * kMsbPeriod));
}

TEST_F(AcpiPmTest, SciWaitsForTheEnable) {
  AtTicks(kMsbPeriod + 10);
  pm_.Update();
  EXPECT_EQ(pm_.pm1_status(), AcpiPm::kTmrSts);
  EXPECT_FALSE(pm_.sci_level());  // TMR_EN clear
  Out16(kPm1En, AcpiPm::kTmrEn);
  EXPECT_TRUE(pm_.sci_level());
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  Out16(kPm1En, 0);
  EXPECT_FALSE(pm_.sci_level());
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{9, true}, {9, false}}));
}

TEST_F(AcpiPmTest, StatusIsCaughtUpAfterALongGap) {
  // Many toggles passed unseen: one TMR_STS, no replay.
  Out16(kPm1En, AcpiPm::kTmrEn);
  AtTicks(10 * kMsbPeriod + 3);
  pm_.Update();
  EXPECT_TRUE(pm_.sci_level());
  Out16(kPm1Sts, AcpiPm::kTmrSts);
  EXPECT_FALSE(pm_.sci_level());
  EXPECT_EQ(NextEvent(), TicksNs(11 * kMsbPeriod));
}

TEST_F(AcpiPmTest, ResetClearsStatusEnablesAndTheSci) {
  Out16(kPm1En, AcpiPm::kTmrEn);
  AtTicks(kMsbPeriod);
  pm_.Update();
  ASSERT_TRUE(pm_.sci_level());
  Out16(kPm1Cnt, SlpTyp(5));
  pm_.Reset();
  EXPECT_FALSE(pm_.sci_level());
  EXPECT_EQ(In16(kPm1Sts), 0);
  EXPECT_EQ(In16(kPm1En), 0);
  EXPECT_EQ(In16(kPm1Cnt), 1);
}

// --- PM1 control and sleep ---------------------------------------------------

TEST_F(AcpiPmTest, Pm1CntKeepsSlpTypAndHidesWriteOnlyBits) {
  // SCI_EN is hardware's: writing 0 does not leave ACPI mode.
  Out16(kPm1Cnt, 0);
  EXPECT_EQ(In16(kPm1Cnt), 1);
  Out16(kPm1Cnt, SlpTyp(5) | 0x0200 | 0x0002);  // SLP_TYP 5, bit 9, BM_RLD
  EXPECT_EQ(In16(kPm1Cnt), SlpTyp(5) | 0x0203);
  Out16(kPm1Cnt, 0x0004);  // GBL_RLS is write-only
  EXPECT_EQ(In16(kPm1Cnt), 1);
  EXPECT_EQ(system_.power_offs, 0);
}

TEST_F(AcpiPmTest, SlpEnWithS5PowersOff) {
  // acpi_hw_legacy_sleep(): SLP_TYP first, then SLP_TYP with SLP_EN.
  Out16(kPm1Cnt, static_cast<uint16_t>(In16(kPm1Cnt) | SlpTyp(AcpiPm::kS5SleepType)));
  EXPECT_EQ(system_.power_offs, 0);
  Out16(kPm1Cnt, static_cast<uint16_t>(In16(kPm1Cnt) | SlpTyp(AcpiPm::kS5SleepType) | kSlpEn));
  EXPECT_EQ(system_.power_offs, 1);
  EXPECT_EQ(system_.resets, 0);
  EXPECT_TRUE(system_.exits.empty());
  EXPECT_EQ(In16(kPm1Cnt) & kSlpEn, 0);  // SLP_EN reads 0
}

TEST_F(AcpiPmTest, SlpEnWithOtherSleepTypesIsIgnored) {
  for (unsigned type = 1; type < 8; ++type) {
    Out16(kPm1Cnt, static_cast<uint16_t>(SlpTyp(type) | kSlpEn));
  }
  EXPECT_EQ(system_.power_offs, 0);
  EXPECT_EQ(system_.resets, 0);
}

TEST_F(AcpiPmTest, SlpEnInTheHighByteAloneUsesThatByteSlpTyp) {
  Out16(kPm1Cnt, SlpTyp(3));
  // A byte write of SLP_EN | SLP_TYP=0 at 0x605.
  bus_.Write(kPm1Cnt + 1, 1, kSlpEn >> 8);
  EXPECT_EQ(system_.power_offs, 1);
  // A low-byte write cannot set SLP_EN.
  bus_.Write(kPm1Cnt, 1, 0xff);
  EXPECT_EQ(system_.power_offs, 1);
}

TEST_F(AcpiPmTest, SlpTypWithoutSlpEnDoesNothing) {
  Out16(kPm1Cnt, SlpTyp(AcpiPm::kS5SleepType));
  Out16(kPm1Cnt, 0);
  EXPECT_EQ(system_.power_offs, 0);
}

// --- Reset control at 0xcf9 --------------------------------------------------

TEST_F(AcpiPmTest, FadtResetValueResets) {
  bus_.Write(kCf9, 1, ResetControl::kResetValue);  // acpi_reset(): 0x06
  EXPECT_EQ(ResetControl::kResetValue, 0x06);
  EXPECT_EQ(system_.resets, 1);
  EXPECT_EQ(system_.power_offs, 0);
}

TEST_F(AcpiPmTest, Cf9ResetSequenceOfLinuxReboot) {
  // native_machine_emergency_restart(), BOOT_CF9_FORCE with a warm reboot:
  // read, set SYS_RST, then set RST_CPU too.
  const uint8_t cf9 = static_cast<uint8_t>(bus_.Read(kCf9, 1) & ~0x06);
  EXPECT_EQ(cf9, 0);
  bus_.Write(kCf9, 1, cf9 | 0x02);
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(bus_.Read(kCf9, 1), 0x02u);
  bus_.Write(kCf9, 1, cf9 | 0x06);
  EXPECT_EQ(system_.resets, 1);
}

TEST_F(AcpiPmTest, Cf9KeepsSysRstAndFullRstOnly) {
  bus_.Write(kCf9, 1, 0xfb);  // everything but RST_CPU
  EXPECT_EQ(bus_.Read(kCf9, 1), 0x0au);
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(bus_.Read(kCf9, 2), 0xff0au);  // wider reads: ones above
  reset_.Reset();
  EXPECT_EQ(bus_.Read(kCf9, 1), 0x00u);
}

TEST_F(AcpiPmTest, Cf9LeavesThePciConfigPortsFree) {
  EXPECT_EQ(bus_.Read(0xcf8, 4), 0xffffffffu);
  bus_.Write(0xcf8, 4, 0x80000000);  // a PCI probe's dword write is not ours
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(bus_.Read(0xcfa, 1), 0xffu);
  EXPECT_EQ(bus_.Read(0xcfc, 4), 0xffffffffu);
}

}  // namespace
}  // namespace btvm
