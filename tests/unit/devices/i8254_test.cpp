// The i8254 PIT at 0x40-0x43 and port B at 0x61, driven through the bus the
// way Linux programs it (periodic and one-shot clock events on channel 0,
// TSC calibration on channel 2), with time from a ManualClock.

#include "devices/i8254.h"

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

constexpr uint16_t kCounter0 = 0x40, kCounter2 = 0x42, kControl = 0x43, kPortB = 0x61;
constexpr uint8_t kPortBGate = 0x01, kPortBSpeaker = 0x02, kPortBOut2 = 0x20;
// Start away from zero, at a whole second, so that ticks and nanoseconds
// line up exactly at the origin.
constexpr uint64_t kOriginNs = 1'000'000'000'000;

// The first nanosecond (from the origin) at which `ticks` PIT clocks have passed.
uint64_t TicksNs(uint64_t ticks) {
  return (ticks * 1'000'000'000 + I8254::kFrequencyHz - 1) / I8254::kFrequencyHz;
}

class I8254Test : public ::testing::Test {
 protected:
  I8254Test() : clock_(kOriginNs), pit_(IrqLine(&pic_, I8254::kIrq), clock_) {
    BTVM_CHECK(pit_.RegisterOn(bus_).ok());
    pic_.changes.clear();
  }

  uint8_t In(uint16_t port) { return static_cast<uint8_t>(bus_.Read(port, 1)); }
  void Out(uint16_t port, uint8_t value) { bus_.Write(port, 1, value); }

  // Time since the origin.
  void At(uint64_t ns) { clock_.Set(kOriginNs + ns); }
  void AtTicks(uint64_t ticks) { At(TicksNs(ticks)); }
  uint64_t NextEvent() const {
    const uint64_t next = pit_.NextEventNs();
    return next == ClockedDevice::kNever ? next : next - kOriginNs;
  }

  // Control word then a two-byte count, LSB first.
  void Program(unsigned channel, uint8_t mode_bits, uint16_t count) {
    Out(kControl, static_cast<uint8_t>(channel << 6 | 0x30 | mode_bits << 1));
    Out(static_cast<uint16_t>(kCounter0 + channel), static_cast<uint8_t>(count));
    Out(static_cast<uint16_t>(kCounter0 + channel), static_cast<uint8_t>(count >> 8));
  }
  uint16_t Latch(unsigned channel) {
    Out(kControl, static_cast<uint8_t>(channel << 6));
    const uint8_t lo = In(static_cast<uint16_t>(kCounter0 + channel));
    return static_cast<uint16_t>(lo | In(static_cast<uint16_t>(kCounter0 + channel)) << 8);
  }
  uint8_t Status(unsigned channel) {
    Out(kControl, static_cast<uint8_t>(0xe0 | 2 << channel));  // read-back, status only
    return In(static_cast<uint16_t>(kCounter0 + channel));
  }
  int Pulses() const {
    int n = 0;
    for (const Change& c : pic_.changes) n += c.level;
    return n;
  }
  void EnableGate2() { Out(kPortB, (In(kPortB) & ~kPortBSpeaker) | kPortBGate); }

  ManualClock clock_;
  RecordingIrqSink pic_;
  I8254 pit_;
  PioBus bus_;
};

TEST_F(I8254Test, PowerOnChannel0RunsAt18Hz) {
  EXPECT_EQ(NextEvent(), TicksNs(65536));
  EXPECT_EQ(NextEvent(), 54'925'402u);  // 65536 / 1.193182 MHz
  At(NextEvent() - 1);
  pit_.Update();
  EXPECT_EQ(Pulses(), 0);
  At(NextEvent());
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), TicksNs(2 * 65536));
}

TEST_F(I8254Test, Mode2PeriodOnIrq0) {
  // Linux's periodic clock event: mode 2, LATCH = 1193 for HZ=1000.
  Out(kControl, 0x34);
  Out(kCounter0, 0xa9);
  Out(kCounter0, 0x04);
  EXPECT_EQ(NextEvent(), 999'848u);
  for (uint64_t period = 1; period <= 5; ++period) {
    At(TicksNs(period * 1193) - 1);
    pit_.Update();
    EXPECT_EQ(Pulses(), static_cast<int>(period - 1));
    At(TicksNs(period * 1193));
    pit_.Update();
    EXPECT_EQ(Pulses(), static_cast<int>(period));
    EXPECT_EQ(NextEvent(), TicksNs((period + 1) * 1193));
  }
  EXPECT_EQ(pit_.missed_irqs(), 0u);
}

TEST_F(I8254Test, UpdatePulsesTheLine) {
  Program(0, 2, 100);
  AtTicks(100);
  pit_.Update();
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{0, true}, {0, false}}));
  pit_.Update();  // nothing new
  EXPECT_EQ(pic_.changes.size(), 2u);
}

TEST_F(I8254Test, MissedPeriodsAreCountedNotPiledUp) {
  Program(0, 2, 1193);
  At(TicksNs(10 * 1193 + 600));
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(pit_.missed_irqs(), 9u);
  EXPECT_EQ(NextEvent(), TicksNs(11 * 1193));  // still in phase
}

TEST_F(I8254Test, Mode0OneShotOnIrq0) {
  // Linux's one-shot clock event: mode 0, then LSB, MSB.
  Out(kControl, 0x30);
  EXPECT_FALSE(pit_.Out(0));
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);  // stopped until a count is written
  Out(kCounter0, 0xe8);
  Out(kCounter0, 0x03);  // 1000
  EXPECT_EQ(NextEvent(), TicksNs(1000));
  AtTicks(999);
  EXPECT_FALSE(pit_.Out(0));
  AtTicks(1000);
  EXPECT_TRUE(pit_.Out(0));
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  AtTicks(70'000);  // the counter wraps, OUT stays high, no more interrupts
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_TRUE(pit_.Out(0));
}

TEST_F(I8254Test, AWriteFirstDeliversAnEdgeThatWasDue) {
  Program(0, 0, 100);
  AtTicks(150);  // the engine has not called Update() yet
  Program(0, 0, 100);
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), TicksNs(250));
}

TEST_F(I8254Test, ControlWordStopsTheCounter) {
  Program(0, 2, 1000);
  AtTicks(300);
  Out(kControl, 0x34);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  AtTicks(5000);
  pit_.Update();
  EXPECT_EQ(Pulses(), 0);
  EXPECT_EQ(Latch(0), 700);  // holds what it had
}

TEST_F(I8254Test, CounterLatchReadsDecreasingValues) {
  Program(0, 2, 1000);
  EXPECT_EQ(Latch(0), 1000);
  AtTicks(100);
  EXPECT_EQ(Latch(0), 900);
  AtTicks(999);
  EXPECT_EQ(Latch(0), 1);
  AtTicks(1000);
  EXPECT_EQ(Latch(0), 1000);  // reloaded
  AtTicks(1250);
  EXPECT_EQ(Latch(0), 750);
}

TEST_F(I8254Test, LatchedCountIsHeldUntilRead) {
  Program(2, 0, 5000);
  EnableGate2();
  Out(kControl, 0x80);  // latch channel 2
  AtTicks(100);
  Out(kControl, 0x80);  // ignored: the first latch is not read yet
  AtTicks(200);
  EXPECT_EQ(In(kCounter2), 0x88);  // 5000 = 0x1388
  EXPECT_EQ(In(kCounter2), 0x13);
  EXPECT_EQ(Latch(2), 4800);
}

TEST_F(I8254Test, UnlatchedReadsAlternateLsbAndMsbOfTheLiveCount) {
  Program(2, 0, 0x1234);
  EnableGate2();
  AtTicks(0x34);
  EXPECT_EQ(In(kCounter2), 0x00);
  EXPECT_EQ(In(kCounter2), 0x12);
  AtTicks(0x35);
  EXPECT_EQ(In(kCounter2), 0xff);
  EXPECT_EQ(In(kCounter2), 0x11);
}

TEST_F(I8254Test, LsbOnlyAndMsbOnlyAccess) {
  Out(kControl, 0x90);  // channel 2, LSB only, mode 0
  Out(kCounter2, 0x20);
  EnableGate2();
  AtTicks(0x10);
  EXPECT_EQ(In(kCounter2), 0x10);
  EXPECT_EQ(In(kCounter2), 0x10);  // no flip-flop
  Out(kControl, 0xa0);             // channel 2, MSB only, mode 0
  Out(kCounter2, 0x02);            // 0x200
  AtTicks(0x10 + 0x100);
  EXPECT_EQ(In(kCounter2), 0x01);
  Out(kControl, 0x80);
  EXPECT_EQ(In(kCounter2), 0x01);  // a latched MSB-only count reads one byte
  EXPECT_EQ(In(kCounter2), 0x01);
}

TEST_F(I8254Test, LsbThenMsbWriteNeedsBothBytes) {
  Out(kControl, 0x34);
  Out(kCounter0, 0x00);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  Out(kCounter0, 0x01);  // 256
  EXPECT_EQ(NextEvent(), TicksNs(256));
}

TEST_F(I8254Test, ZeroCountMeans65536) {
  Program(2, 0, 0);
  EnableGate2();
  EXPECT_EQ(Latch(2), 0);
  AtTicks(1);
  EXPECT_EQ(Latch(2), 0xffff);
  AtTicks(65535);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(65536);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, ReadBackStatus) {
  Out(kControl, 0x34);
  EXPECT_EQ(Status(0), 0xf4);  // OUT high, null count, LSB-MSB, mode 2
  Out(kCounter0, 0x10);
  Out(kCounter0, 0x00);
  EXPECT_EQ(Status(0), 0xb4);  // count loaded
  Out(kControl, 0x30);
  EXPECT_EQ(Status(0), 0x70);  // mode 0: OUT low after the control word
  Out(kControl, 0x10);         // LSB only, mode 0
  EXPECT_EQ(Status(0), 0x50);
}

TEST_F(I8254Test, ReadBackCountAndStatusReadsStatusFirst) {
  Program(0, 2, 0x0400);
  AtTicks(0x100);
  Out(kControl, 0xc2);  // read-back count and status of channel 0
  AtTicks(0x200);
  EXPECT_EQ(In(kCounter0), 0xb4);
  EXPECT_EQ(In(kCounter0), 0x00);
  EXPECT_EQ(In(kCounter0), 0x03);
  EXPECT_EQ(Latch(0), 0x0200);
}

TEST_F(I8254Test, ReadBackLatchesSeveralCounters) {
  Program(0, 2, 1000);
  Program(1, 2, 2000);
  Program(2, 0, 3000);
  EnableGate2();
  AtTicks(10);
  Out(kControl, 0xde);  // counts of 0, 1 and 2
  AtTicks(500);
  for (unsigned ch = 0; ch < 3; ++ch) {
    const auto port = static_cast<uint16_t>(kCounter0 + ch);
    const uint8_t lo = In(port);
    EXPECT_EQ(lo | In(port) << 8, (ch + 1) * 1000 - 10) << ch;
  }
}

TEST_F(I8254Test, PitCalibrateTscPollsOut2InPortB) {
  // Linux's pit_calibrate_tsc(): gate on, speaker off, channel 2 mode 0,
  // 50 ms count, then poll port B bit 5.
  EnableGate2();
  Out(kControl, 0xb0);
  Out(kCounter2, 59659 & 0xff);
  Out(kCounter2, 59659 >> 8);
  EXPECT_EQ(In(kPortB) & kPortBOut2, 0);
  At(49'999'000);
  EXPECT_EQ(In(kPortB) & kPortBOut2, 0);
  At(TicksNs(59659));
  EXPECT_EQ(In(kPortB) & kPortBOut2, kPortBOut2);
  At(60'000'000);
  EXPECT_EQ(In(kPortB) & kPortBOut2, kPortBOut2);
  EXPECT_EQ(Pulses(), 0);  // channel 2 raises no interrupt
}

TEST_F(I8254Test, QuickPitCalibrateSeesTheMsbCountDown) {
  // Linux's quick_pit_calibrate(): mode 0 from 0xffff, then unlatched
  // LSB/MSB pairs, expecting the MSB to drop by one every 256 clocks.
  EnableGate2();
  Out(kControl, 0xb0);
  Out(kCounter2, 0xff);
  Out(kCounter2, 0xff);
  for (uint64_t ticks : {0u, 1u, 255u, 256u, 300u, 5000u, 65000u}) {
    AtTicks(ticks);
    In(kCounter2);  // LSB
    EXPECT_EQ(In(kCounter2), (0xffff - ticks) >> 8) << ticks;
  }
}

TEST_F(I8254Test, GateLowSuspendsMode0) {
  EnableGate2();
  Program(2, 0, 1000);
  AtTicks(100);
  Out(kPortB, 0x00);
  AtTicks(600);
  EXPECT_EQ(Latch(2), 900);
  Out(kPortB, kPortBGate);
  AtTicks(700);
  EXPECT_EQ(Latch(2), 800);
  AtTicks(1499);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(1500);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode0CountsOnlyOnceTheGateRises) {
  Program(2, 0, 1000);  // gate 2 is low at power-on
  AtTicks(5000);
  EXPECT_EQ(Latch(2), 1000);
  EXPECT_FALSE(pit_.Out(2));
  EnableGate2();
  AtTicks(5999);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(6000);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode2GateLowForcesOutHighAndRisingGateReloads) {
  EnableGate2();
  Program(2, 2, 100);
  AtTicks(99);
  EXPECT_FALSE(pit_.Out(2));  // the last clock of the period
  Out(kPortB, 0x00);
  EXPECT_TRUE(pit_.Out(2));
  AtTicks(130);
  EXPECT_EQ(Latch(2), 1);
  Out(kPortB, kPortBGate);
  EXPECT_EQ(Latch(2), 100);
  AtTicks(180);
  EXPECT_EQ(Latch(2), 50);
}

TEST_F(I8254Test, Mode3SquareWave) {
  EnableGate2();
  Program(2, 3, 100);
  AtTicks(10);
  EXPECT_TRUE(pit_.Out(2));
  EXPECT_EQ(Latch(2), 80);  // counts by two
  AtTicks(49);
  EXPECT_TRUE(pit_.Out(2));
  AtTicks(50);
  EXPECT_FALSE(pit_.Out(2));
  EXPECT_EQ(Latch(2), 100);
  AtTicks(60);
  EXPECT_EQ(Latch(2), 80);
  AtTicks(99);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(100);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode3OddCountIsHighOneClockLonger) {
  EnableGate2();
  Program(2, 3, 5);
  AtTicks(2);
  EXPECT_TRUE(pit_.Out(2));
  AtTicks(3);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(4);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(5);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode3PeriodOnIrq0) {
  Program(0, 3, 1000);
  for (int i = 1; i <= 3; ++i) {
    EXPECT_EQ(NextEvent(), TicksNs(1000u * i));
    AtTicks(1000u * i);
    pit_.Update();
    EXPECT_EQ(Pulses(), i);
  }
}

TEST_F(I8254Test, Mode2NewCountTakesEffectAtThePeriodEnd) {
  Program(0, 2, 1000);
  AtTicks(300);
  Out(kCounter0, 500 & 0xff);  // no control word: a new count for the next period
  Out(kCounter0, 500 >> 8);
  EXPECT_EQ(NextEvent(), TicksNs(1000));
  EXPECT_EQ(Status(0) & 0x40, 0x40);  // null count until it is loaded
  AtTicks(400);
  EXPECT_EQ(Latch(0), 600);  // the old period runs on
  AtTicks(1000);
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), TicksNs(1500));
  EXPECT_EQ(Status(0) & 0x40, 0);
  AtTicks(1100);
  EXPECT_EQ(Latch(0), 400);
}

TEST_F(I8254Test, Mode0NewCountRestarts) {
  Program(0, 0, 1000);
  AtTicks(300);
  Out(kCounter0, 1000 & 0xff);
  Out(kCounter0, 1000 >> 8);
  EXPECT_EQ(NextEvent(), TicksNs(1300));
}

TEST_F(I8254Test, Mode0FirstByteStopsTheCount) {
  EnableGate2();
  Program(2, 0, 1000);
  AtTicks(100);
  Out(kCounter2, 0x00);  // first byte of a new count
  AtTicks(2000);
  EXPECT_FALSE(pit_.Out(2));
  EXPECT_EQ(Latch(2), 900);
  Out(kCounter2, 0x02);  // 0x200
  AtTicks(2000 + 0x200);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode1OneShotStartsOnARisingGate) {
  Program(2, 1, 100);
  EXPECT_TRUE(pit_.Out(2));
  AtTicks(500);
  EXPECT_TRUE(pit_.Out(2));  // waiting for a trigger
  EnableGate2();
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(599);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(600);
  EXPECT_TRUE(pit_.Out(2));
  Out(kPortB, 0x00);  // retrigger
  Out(kPortB, kPortBGate);
  EXPECT_FALSE(pit_.Out(2));
  EXPECT_EQ(Latch(2), 100);
}

TEST_F(I8254Test, Mode4StrobeOnIrq0) {
  Program(0, 4, 100);
  EXPECT_TRUE(pit_.Out(0));
  AtTicks(100);
  EXPECT_FALSE(pit_.Out(0));  // one clock low at terminal count
  EXPECT_EQ(NextEvent(), TicksNs(101));
  AtTicks(101);
  EXPECT_TRUE(pit_.Out(0));
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
}

TEST_F(I8254Test, Mode5StrobeStartsOnARisingGate) {
  Program(2, 5, 50);
  AtTicks(100);
  EXPECT_TRUE(pit_.Out(2));
  EnableGate2();
  AtTicks(150);
  EXPECT_FALSE(pit_.Out(2));
  AtTicks(151);
  EXPECT_TRUE(pit_.Out(2));
}

TEST_F(I8254Test, Mode1NeverStartsOnChannel0) {
  Program(0, 1, 100);  // gate tied high: no rising edge ever
  EXPECT_EQ(NextEvent(), ClockedDevice::kNever);
  AtTicks(1000);
  EXPECT_TRUE(pit_.Out(0));
}

TEST_F(I8254Test, BcdCountsInDecimal) {
  EnableGate2();
  Out(kControl, 0xb1);  // channel 2, LSB-MSB, mode 0, BCD
  Out(kCounter2, 0x00);
  Out(kCounter2, 0x10);  // 1000 decimal
  AtTicks(1);
  EXPECT_EQ(Latch(2), 0x0999);
  AtTicks(1000);
  EXPECT_TRUE(pit_.Out(2));
  EXPECT_EQ(Latch(2), 0x0000);
  AtTicks(1001);
  EXPECT_EQ(Latch(2), 0x9999);  // wraps in decimal
  EXPECT_EQ(Status(2), 0xb1);
}

TEST_F(I8254Test, Modes6And7AliasModes2And3) {
  Out(kControl, 0x3c);  // "mode 6"
  Out(kCounter0, 100);
  Out(kCounter0, 0);
  EXPECT_EQ(Status(0) & 0x0e, 0x0c);  // status reports the bits as written
  AtTicks(99);
  EXPECT_FALSE(pit_.Out(0));  // behaves as mode 2
  AtTicks(100);
  pit_.Update();
  EXPECT_EQ(Pulses(), 1);
  EXPECT_EQ(NextEvent(), TicksNs(200));
}

TEST_F(I8254Test, PortBBits) {
  EXPECT_EQ(In(kPortB) & 0xcf, 0x00);
  Out(kPortB, 0xff);
  EXPECT_EQ(In(kPortB) & 0xcf, 0x0f);  // NMI status bits 6-7 read 0
  EXPECT_TRUE(pit_.speaker_enabled());
  Out(kPortB, 0x01);
  EXPECT_FALSE(pit_.speaker_enabled());
  EXPECT_EQ(bus_.Read(kPortB, 2) & 0xff0f, 0xff01u);
}

TEST_F(I8254Test, PortBRefreshBitToggles) {
  At(0);
  const uint8_t a = In(kPortB) & 0x10;
  EXPECT_EQ(In(kPortB) & 0x10, a);  // it follows time, not reads
  At(15'085);
  EXPECT_EQ(In(kPortB) & 0x10, a ^ 0x10);
  At(2 * 15'085);
  EXPECT_EQ(In(kPortB) & 0x10, a);
}

TEST_F(I8254Test, ControlPortReadsZero) {
  EXPECT_EQ(In(kControl), 0x00);
}

TEST_F(I8254Test, WideReadSplitsIntoCounterBytes) {
  Out(kControl, 0x90);  // channel 2, LSB only
  Out(kCounter2, 0x42);
  EXPECT_EQ(bus_.Read(kCounter2, 2), 0x0042u);  // counter 2 LSB, control port 0
  EXPECT_EQ(bus_.Read(kCounter2, 4), 0xffff0042u);
}

TEST_F(I8254Test, RegistersCountersAndPortBOnly) {
  EXPECT_EQ(In(0x44), 0xff);
  EXPECT_EQ(In(0x60), 0xff);  // left to the i8042
  I8254 other(IrqLine(), clock_);
  EXPECT_FALSE(other.RegisterOn(bus_));
}

TEST_F(I8254Test, ResetRestoresPowerOnState) {
  EnableGate2();
  Program(0, 0, 10);
  Program(2, 2, 10);
  AtTicks(1000);
  pit_.Update();
  pit_.Reset();
  EXPECT_EQ(NextEvent(), TicksNs(1000 + 65536));
  EXPECT_EQ(Status(0), 0xb6);  // OUT high, LSB-MSB, mode 3
  EXPECT_EQ(In(kPortB) & 0x0f, 0);
  EXPECT_EQ(pit_.missed_irqs(), 0u);
}

}  // namespace
}  // namespace btvm
