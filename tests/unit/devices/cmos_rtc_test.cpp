// The MC146818 RTC and CMOS at 0x70/0x71, read and written through the bus
// the way firmware and Linux's mc146818 code do, with a fixed wall time and
// a ManualClock.

#include "devices/cmos_rtc.h"

#include <cstdint>
#include <memory>

#include <gtest/gtest.h>

#include "base/types.h"
#include "devices/bus.h"
#include "devices/clock.h"
#include "tests/unit/devices/fakes.h"

namespace btvm {
namespace {

using testing::RecordingIrqSink;

constexpr uint16_t kIndex = 0x70, kData = 0x71;
constexpr int64_t kNs = 1'000'000'000;
constexpr uint64_t kOriginNs = 1'000'000'000'000;
// 2024-02-29 13:45:30 UTC, a Thursday.
constexpr int64_t kLeapDay = 1'709'214'330;

enum : uint8_t {
  kSec = 0x00,
  kSecAlarm = 0x01,
  kMin = 0x02,
  kMinAlarm = 0x03,
  kHour = 0x04,
  kHourAlarm = 0x05,
  kDow = 0x06,
  kDay = 0x07,
  kMonth = 0x08,
  kYear = 0x09,
  kA = 0x0a,
  kB = 0x0b,
  kC = 0x0c,
  kD = 0x0d,
  kCentury = 0x32,
};
constexpr uint8_t kUip = 0x80;

class CmosRtcTest : public ::testing::Test {
 protected:
  CmosRtcTest() : clock_(kOriginNs) { Boot(kLeapDay); }

  // A fresh RTC showing `unix_seconds` at the current clock time.
  void Boot(int64_t unix_seconds) {
    bus_ = PioBus();
    rtc_ = std::make_unique<CmosRtc>(IrqLine(&pic_, CmosRtc::kIrq), clock_, unix_seconds * kNs);
    BTVM_CHECK(rtc_->RegisterOn(bus_).ok());
  }

  uint8_t Read(uint8_t index) {
    bus_.Write(kIndex, 1, index);
    return static_cast<uint8_t>(bus_.Read(kData, 1));
  }
  void Write(uint8_t index, uint8_t value) {
    bus_.Write(kIndex, 1, index);
    bus_.Write(kData, 1, value);
  }
  void At(uint64_t ns) { clock_.Set(kOriginNs + ns); }
  uint64_t NextEvent() const {
    const uint64_t next = rtc_->NextEventNs();
    return next == ClockedDevice::kNever ? next : next - kOriginNs;
  }
  bool Irq() const { return pic_.Level(CmosRtc::kIrq); }

  ManualClock clock_;
  RecordingIrqSink pic_;
  PioBus bus_;
  std::unique_ptr<CmosRtc> rtc_;
};

TEST_F(CmosRtcTest, PowerOnControlRegisters) {
  EXPECT_EQ(Read(kA), 0x26);  // 32.768 kHz divider, 1024 Hz rate
  EXPECT_EQ(Read(kB), 0x02);  // 24-hour, BCD
  EXPECT_EQ(Read(kC), 0x00);
  EXPECT_EQ(Read(kD), 0x80);  // valid RAM and time
  EXPECT_FALSE(Irq());
}

TEST_F(CmosRtcTest, TimeAndDateInBcd) {
  EXPECT_EQ(Read(kSec), 0x30);
  EXPECT_EQ(Read(kMin), 0x45);
  EXPECT_EQ(Read(kHour), 0x13);
  EXPECT_EQ(Read(kDow), 0x05);  // Thursday; Sunday is 1
  EXPECT_EQ(Read(kDay), 0x29);
  EXPECT_EQ(Read(kMonth), 0x02);
  EXPECT_EQ(Read(kYear), 0x24);
  EXPECT_EQ(Read(kCentury), 0x20);
}

TEST_F(CmosRtcTest, TimeAndDateInBinary) {
  Write(kB, 0x06);
  EXPECT_EQ(Read(kSec), 30);
  EXPECT_EQ(Read(kMin), 45);
  EXPECT_EQ(Read(kHour), 13);
  EXPECT_EQ(Read(kDow), 5);
  EXPECT_EQ(Read(kDay), 29);
  EXPECT_EQ(Read(kMonth), 2);
  EXPECT_EQ(Read(kYear), 24);
  EXPECT_EQ(Read(kCentury), 20);
}

TEST_F(CmosRtcTest, TwelveHourModeSetsBit7ForPm) {
  Write(kB, 0x00);  // 12-hour BCD
  EXPECT_EQ(Read(kHour), 0x81);
  Write(kB, 0x04);  // 12-hour binary
  EXPECT_EQ(Read(kHour), 0x81);
  Boot(kLeapDay - 13 * 3600 - 15 * 60);  // 00:30
  Write(kB, 0x00);
  EXPECT_EQ(Read(kHour), 0x12);     // 12 AM
  Boot(kLeapDay - 3600 - 15 * 60);  // 12:30
  Write(kB, 0x00);
  EXPECT_EQ(Read(kHour), 0x92);  // 12 PM
  Write(kB, 0x04);
  EXPECT_EQ(Read(kHour), 0x8c);
}

TEST_F(CmosRtcTest, TimeFollowsTheClock) {
  At(29 * kNs + 999'999'999);
  EXPECT_EQ(Read(kSec), 0x59);
  EXPECT_EQ(Read(kMin), 0x45);
  At(30 * kNs);
  EXPECT_EQ(Read(kSec), 0x00);
  EXPECT_EQ(Read(kMin), 0x46);
  At(30 * kNs + 3600 * kNs);
  EXPECT_EQ(Read(kHour), 0x14);
  EXPECT_EQ(rtc_->UnixTimeNs(), (kLeapDay + 3630) * kNs);
}

TEST_F(CmosRtcTest, LeapDayRollsOverToMarch) {
  Boot(kLeapDay + 10 * 3600 + 14 * 60 + 29);  // 23:59:59
  EXPECT_EQ(Read(kHour), 0x23);
  At(kNs);
  EXPECT_EQ(Read(kHour), 0x00);
  EXPECT_EQ(Read(kDay), 0x01);
  EXPECT_EQ(Read(kMonth), 0x03);
  EXPECT_EQ(Read(kDow), 0x06);  // Friday
}

TEST_F(CmosRtcTest, CenturyRollsOver) {
  Boot(4'102'444'799);  // 2099-12-31 23:59:59
  EXPECT_EQ(Read(kYear), 0x99);
  EXPECT_EQ(Read(kCentury), 0x20);
  At(kNs);
  EXPECT_EQ(Read(kYear), 0x00);
  EXPECT_EQ(Read(kCentury), 0x21);
  EXPECT_EQ(Read(kMonth), 0x01);
  EXPECT_EQ(Read(kDay), 0x01);
  EXPECT_EQ(Read(kDow), 0x06);  // 2100-01-01 is a Friday
}

TEST_F(CmosRtcTest, SundayIsDayOne) {
  Boot(1'709'424'000);  // 2024-03-03
  EXPECT_EQ(Read(kDow), 0x01);
}

TEST_F(CmosRtcTest, UipIsSetForTheLast244MicrosecondsOfEachSecond) {
  At(999'755'999);
  EXPECT_EQ(Read(kA) & kUip, 0);
  At(999'756'000);
  EXPECT_EQ(Read(kA), kUip | 0x26);
  EXPECT_EQ(Read(kSec), 0x30);  // the update comes at the boundary
  At(kNs - 1);
  EXPECT_EQ(Read(kA) & kUip, kUip);
  At(kNs);
  EXPECT_EQ(Read(kA) & kUip, 0);
  EXPECT_EQ(Read(kSec), 0x31);
}

TEST_F(CmosRtcTest, RegisterAKeepsUipReadOnly) {
  Write(kA, 0xa5);
  EXPECT_EQ(Read(kA), 0x25);
  EXPECT_EQ(rtc_->cmos(kA), 0x25);
}

TEST_F(CmosRtcTest, RegistersCAndDIgnoreWrites) {
  Write(kC, 0xff);
  Write(kD, 0x00);
  EXPECT_EQ(Read(kC), 0x00);
  EXPECT_EQ(Read(kD), 0x80);
}

TEST_F(CmosRtcTest, IndexBit7IsTheNmiMaskAndIgnored) {
  bus_.Write(kIndex, 1, 0x80 | kMin);
  EXPECT_EQ(bus_.Read(kData, 1), 0x45u);
  bus_.Write(kIndex, 1, 0x80 | 0x40);
  bus_.Write(kData, 1, 0x5a);
  EXPECT_EQ(Read(0x40), 0x5a);
}

TEST_F(CmosRtcTest, IndexPortReadsFloating) {
  bus_.Write(kIndex, 1, kSec);
  EXPECT_EQ(bus_.Read(kIndex, 1), 0xffu);
}

TEST_F(CmosRtcTest, CmosRamReadsBackWhatWasWritten) {
  for (unsigned i = 0x0e; i < CmosRtc::kCmosSize; ++i) {
    if (i == kCentury) continue;
    Write(static_cast<uint8_t>(i), static_cast<uint8_t>(i ^ 0xa5));
  }
  for (unsigned i = 0x0e; i < CmosRtc::kCmosSize; ++i) {
    if (i == kCentury) continue;
    EXPECT_EQ(Read(static_cast<uint8_t>(i)), i ^ 0xa5) << i;
  }
  rtc_->set_cmos(0x10, 0x44);  // the machine fills RAM too
  EXPECT_EQ(Read(0x10), 0x44);
}

TEST_F(CmosRtcTest, WideAccessSplitsIntoIndexAndData) {
  bus_.Write(kIndex, 2, 0x7700 | 0x50);  // index 0x50, then 0x77 to it
  EXPECT_EQ(rtc_->cmos(0x50), 0x77);
  bus_.Write(kIndex, 1, kMin);
  EXPECT_EQ(bus_.Read(kIndex, 2), 0x45ffu);
}

TEST_F(CmosRtcTest, LinuxSetTimeSequence) {
  // mc146818_set_time(): SET, divider reset, the fields, then restore B and A.
  Write(kB, Read(kB) | 0x80);
  Write(kA, Read(kA) | 0x70);
  Write(kYear, 0x25);
  Write(kMonth, 0x01);
  Write(kDay, 0x02);
  Write(kHour, 0x03);
  Write(kMin, 0x04);
  Write(kSec, 0x05);
  Write(kCentury, 0x20);
  At(3 * kNs);  // stopped
  Write(kB, 0x02);
  At(4 * kNs);  // still stopped: the divider is held in reset
  EXPECT_EQ(Read(kSec), 0x05);
  Write(kA, 0x26);
  // The first update comes half a second after the divider restarts.
  At(4 * kNs + 499'999'999);
  EXPECT_EQ(Read(kSec), 0x05);
  At(4 * kNs + kNs / 2);
  EXPECT_EQ(Read(kSec), 0x06);
  EXPECT_EQ(Read(kMin), 0x04);
  EXPECT_EQ(Read(kHour), 0x03);
  EXPECT_EQ(Read(kDow), 0x05);  // 2025-01-02 is a Thursday
  EXPECT_EQ(rtc_->UnixTimeNs(), 1'735'787'046 * kNs);
}

TEST_F(CmosRtcTest, SetBitFreezesTheClockAndKeepsThePhase) {
  At(300'000'000);
  Write(kB, 0x82);
  At(10 * kNs + 300'000'000);
  EXPECT_EQ(Read(kSec), 0x30);
  EXPECT_EQ(Read(kA) & kUip, 0);
  At(10 * kNs + 999'900'000);
  EXPECT_EQ(Read(kA) & kUip, 0);  // no update cycles while SET
  At(11 * kNs + 300'000'000);
  Write(kB, 0x02);
  EXPECT_EQ(Read(kSec), 0x30);
  At(11 * kNs + 999'999'999);
  EXPECT_EQ(Read(kSec), 0x30);
  At(12 * kNs);  // the divider kept running: seconds tick on the old phase
  EXPECT_EQ(Read(kSec), 0x31);
}

TEST_F(CmosRtcTest, DividerResetStopsTheClock) {
  Write(kA, 0x76);
  At(5 * kNs);
  EXPECT_EQ(Read(kSec), 0x30);
  Write(kA, 0x26);
  At(5 * kNs + 499'999'999);
  EXPECT_EQ(Read(kSec), 0x30);
  At(5 * kNs + kNs / 2);
  EXPECT_EQ(Read(kSec), 0x31);
}

TEST_F(CmosRtcTest, WritingOneFieldWhileRunning) {
  At(200'000'000);
  Write(kMin, 0x10);
  EXPECT_EQ(Read(kMin), 0x10);
  EXPECT_EQ(Read(kHour), 0x13);
  EXPECT_EQ(Read(kSec), 0x30);
  At(kNs);
  EXPECT_EQ(Read(kSec), 0x31);
  EXPECT_EQ(rtc_->UnixTimeNs(), (kLeapDay - 35 * 60 + 1) * kNs);
}

TEST_F(CmosRtcTest, GuestSetsTimeInBinaryTwelveHourMode) {
  // Changing DM does not convert the registers: the guest writes them all.
  Write(kB, 0x84);  // SET, binary, 12-hour
  Write(kCentury, 20);
  Write(kYear, 24);
  Write(kMonth, 2);
  Write(kDay, 29);
  Write(kHour, 0x80 | 11);  // 11 PM
  Write(kMin, 59);
  Write(kSec, 58);
  Write(kB, 0x04);  // run, binary, 12-hour
  EXPECT_EQ(Read(kHour), 0x80 | 11);
  Write(kB, 0x06);  // while running, the registers follow a mode change (as in QEMU)
  EXPECT_EQ(Read(kHour), 23);
  EXPECT_EQ(Read(kMin), 59);
  EXPECT_EQ(Read(kDay), 29);
  At(2 * kNs);
  EXPECT_EQ(Read(kHour), 0);
  EXPECT_EQ(Read(kDay), 1);
  EXPECT_EQ(Read(kMonth), 3);
}

TEST_F(CmosRtcTest, SetBitClearsUpdateInterruptEnable) {
  Write(kB, 0x12);
  EXPECT_EQ(Read(kB), 0x12);
  Write(kB, 0x92);
  EXPECT_EQ(Read(kB), 0x82);
}

TEST_F(CmosRtcTest, UpdateEndedInterrupt) {
  Write(kB, 0x12);  // UIE
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>(kNs));
  At(kNs - 1);
  rtc_->Update();
  EXPECT_FALSE(Irq());
  At(kNs);
  rtc_->Update();
  EXPECT_TRUE(Irq());
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);  // until the guest reads C
  At(3 * kNs);
  rtc_->Update();
  EXPECT_EQ(pic_.changes.size(), 1u);  // a level: no second edge
  EXPECT_EQ(Read(kC), 0xd0);           // IRQF, UF, and PF: flags are set even when disabled
  EXPECT_FALSE(Irq());
  EXPECT_EQ(Read(kC), 0x00);  // reading cleared them
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>(4 * kNs));
}

TEST_F(CmosRtcTest, FlagsAreSetWithoutEnables) {
  At(kNs);
  rtc_->Update();
  EXPECT_FALSE(Irq());
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  EXPECT_EQ(Read(kC), 0x50);  // UF and PF (1024 Hz), but not IRQF
  EXPECT_TRUE(pic_.changes.empty());
}

TEST_F(CmosRtcTest, EnablingMeetsAFlagAlreadySet) {
  At(kNs);
  Write(kB, 0x12);
  EXPECT_TRUE(Irq());
  EXPECT_EQ(Read(kC) & 0xb0, 0x90);
}

TEST_F(CmosRtcTest, PeriodicInterruptAt1024Hz) {
  Write(kB, 0x42);  // PIE; A's power-on rate is 1024 Hz
  EXPECT_EQ(NextEvent(), 976'563u);
  At(976'562);
  rtc_->Update();
  EXPECT_FALSE(Irq());
  At(976'563);
  rtc_->Update();
  EXPECT_TRUE(Irq());
  EXPECT_EQ(Read(kC), 0xc0);
  EXPECT_EQ(NextEvent(), 1'953'125u);
}

TEST_F(CmosRtcTest, PeriodicRates) {
  Write(kB, 0x42);
  Write(kA, 0x23);  // 8192 Hz
  EXPECT_EQ(NextEvent(), 122'071u);
  Write(kA, 0x2f);  // 2 Hz
  EXPECT_EQ(NextEvent(), 500'000'000u);
  Write(kA, 0x21);  // 1 and 2 repeat 8 and 9: 256 Hz
  EXPECT_EQ(NextEvent(), 3'906'250u);
  Write(kA, 0x20);  // off
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  Write(kA, 0x66);  // divider in reset: no periodic interrupt either
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
}

TEST_F(CmosRtcTest, AlarmInterrupt) {
  Write(kHourAlarm, 0x13);
  Write(kMinAlarm, 0x45);
  Write(kSecAlarm, 0x35);
  Write(kB, 0x22);  // AIE
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>(5 * kNs));
  At(4 * kNs);
  rtc_->Update();
  EXPECT_FALSE(Irq());
  EXPECT_EQ(Read(kC), 0x50);  // updates and periodic ticks so far, no alarm
  At(5 * kNs);
  rtc_->Update();
  EXPECT_TRUE(Irq());
  EXPECT_EQ(Read(kC), 0xf0);  // IRQF, AF, UF (and PF, disabled)
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>((5 + 86'400) * kNs));  // tomorrow
}

TEST_F(CmosRtcTest, AlarmDontCareBytesMatchAnything) {
  Write(kHourAlarm, 0xff);
  Write(kMinAlarm, 0xc0);
  Write(kSecAlarm, 0x00);  // every minute at :00
  Write(kB, 0x22);
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>(30 * kNs));
  Write(kSecAlarm, 0xff);  // every second
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>(kNs));
}

TEST_F(CmosRtcTest, AlarmSkipsToTheMatchingHour) {
  Write(kHourAlarm, 0x09);
  Write(kMinAlarm, 0xff);
  Write(kSecAlarm, 0xff);
  Write(kB, 0x22);
  // 13:45:30 → 09:00:00 tomorrow.
  EXPECT_EQ(NextEvent(), static_cast<uint64_t>((86'400 - 4 * 3600 - 45 * 60 - 30) * kNs));
}

TEST_F(CmosRtcTest, AlarmThatCannotMatchNeverFires) {
  Write(kHourAlarm, 0xff);
  Write(kMinAlarm, 0xff);
  Write(kSecAlarm, 0x7a);  // not a BCD second
  Write(kB, 0x22);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  At(100'000 * kNs);
  EXPECT_EQ(Read(kC) & 0x20, 0);
}

TEST_F(CmosRtcTest, AlarmFlagSeenAfterALongGap) {
  Write(kHourAlarm, 0x14);
  Write(kMinAlarm, 0x00);
  Write(kSecAlarm, 0x00);
  Write(kA, 0x20);     // no periodic rate
  At(2 * 3600 * kNs);  // 15:45:30: the alarm passed at 14:00:00
  EXPECT_EQ(Read(kC), 0x30);
  At(3 * 3600 * kNs);
  EXPECT_EQ(Read(kC), 0x10);
}

TEST_F(CmosRtcTest, ResetClearsEnablesAndFlagsButKeepsTime) {
  Write(kB, 0x7a);
  At(kNs);
  rtc_->Update();
  EXPECT_TRUE(Irq());
  rtc_->Reset();
  EXPECT_FALSE(Irq());
  EXPECT_EQ(Read(kB), 0x02);
  EXPECT_EQ(Read(kC), 0x00);
  EXPECT_EQ(Read(kSec), 0x31);
}

TEST_F(CmosRtcTest, MemorySizeRegisters) {
  rtc_->SetMemorySize(MiB(32));
  EXPECT_EQ(Read(0x15), 0x80);  // 640 KiB base memory
  EXPECT_EQ(Read(0x16), 0x02);
  EXPECT_EQ(Read(0x17), 0x00);  // 31744 KiB above 1 MiB
  EXPECT_EQ(Read(0x18), 0x7c);
  EXPECT_EQ(Read(0x30), 0x00);
  EXPECT_EQ(Read(0x31), 0x7c);
  EXPECT_EQ(Read(0x34), 0x00);  // 16 MiB above 16 MiB, in 64 KiB
  EXPECT_EQ(Read(0x35), 0x01);
  EXPECT_EQ(Read(0x5b), 0x00);
  EXPECT_EQ(Read(0x5c), 0x00);
  EXPECT_EQ(Read(0x5d), 0x00);
}

TEST_F(CmosRtcTest, MemorySizeRegistersAbove4G) {
  rtc_->SetMemorySize(MiB(3584), GiB(2) + MiB(512));
  EXPECT_EQ(Read(0x17), 0xff);  // capped at 65535 KiB
  EXPECT_EQ(Read(0x18), 0xff);
  EXPECT_EQ(Read(0x34), 0x00);  // (3.5 GiB - 16 MiB) / 64 KiB = 0xdf00
  EXPECT_EQ(Read(0x35), 0xdf);
  EXPECT_EQ(Read(0x5b), 0x00);  // 2.5 GiB / 64 KiB = 0xa000
  EXPECT_EQ(Read(0x5c), 0xa0);
  EXPECT_EQ(Read(0x5d), 0x00);
}

TEST_F(CmosRtcTest, RegisteringTwiceIsRefused) {
  CmosRtc other(IrqLine(), clock_, 0);
  EXPECT_FALSE(other.RegisterOn(bus_));
}

}  // namespace
}  // namespace btvm
