// The PIT and the RTC wired to the real PIC pair, as the machine wires
// them: what the engine sees is vectors from Acknowledge().

#include <algorithm>
#include <cstdint>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "devices/clock.h"
#include "devices/cmos_rtc.h"
#include "devices/i8254.h"
#include "devices/i8259.h"

namespace btvm {
namespace {

constexpr uint64_t kOriginNs = 1'000'000'000'000;
constexpr int64_t kWallNs = 1'709'214'330'000'000'000;  // 2024-02-29 13:45:30 UTC

class TimerInterruptsTest : public ::testing::Test {
 protected:
  TimerInterruptsTest()
      : clock_(kOriginNs),
        pit_(IrqLine(&pic_, I8254::kIrq), clock_),
        rtc_(IrqLine(&pic_, CmosRtc::kIrq), clock_, kWallNs) {
    BTVM_CHECK(pic_.RegisterOn(bus_).ok());
    BTVM_CHECK(pit_.RegisterOn(bus_).ok());
    BTVM_CHECK(rtc_.RegisterOn(bus_).ok());
    pic_.SetIntrListener([this] { ++intr_raised_; });
    // Linux's init_8259A() with vectors 0x30-0x3f.
    Out(0x21, 0xff);
    Out(0xa1, 0xff);
    Out(0x20, 0x11);
    Out(0x21, 0x30);
    Out(0x21, 0x04);
    Out(0x21, 0x01);
    Out(0xa0, 0x11);
    Out(0xa1, 0x38);
    Out(0xa1, 0x02);
    Out(0xa1, 0x01);
    Out(0x21, 0x00);
    Out(0xa1, 0x00);
  }

  uint8_t In(uint16_t port) { return static_cast<uint8_t>(bus_.Read(port, 1)); }
  void Out(uint16_t port, uint8_t value) { bus_.Write(port, 1, value); }
  // What the engine does when it looks for interrupts.
  void Poll() {
    pit_.Update();
    rtc_.Update();
  }
  uint64_t NextEventNs() const { return std::min(pit_.NextEventNs(), rtc_.NextEventNs()); }

  ManualClock clock_;
  I8259Pair pic_;
  I8254 pit_;
  CmosRtc rtc_;
  PioBus bus_;
  int intr_raised_ = 0;
};

TEST_F(TimerInterruptsTest, PitPeriodicTickBecomesVector0x30) {
  Out(0x43, 0x34);
  Out(0x40, 0xa9);
  Out(0x40, 0x04);  // 1193: 1 kHz
  for (int tick = 1; tick <= 3; ++tick) {
    EXPECT_FALSE(pic_.InterruptPending());
    clock_.Set(NextEventNs());  // the guest halted; the engine sleeps until then
    Poll();
    EXPECT_EQ(intr_raised_, tick);
    ASSERT_TRUE(pic_.InterruptPending());
    EXPECT_EQ(pic_.Acknowledge(), 0x30);
    Out(0x20, 0x20);  // EOI
  }
}

TEST_F(TimerInterruptsTest, MaskedPitTicksLeaveOneRequest) {
  Out(0x21, 0x01);
  Out(0x43, 0x34);
  Out(0x40, 0xa9);
  Out(0x40, 0x04);
  for (int i = 0; i < 5; ++i) {
    clock_.Set(pit_.NextEventNs());
    Poll();
  }
  EXPECT_FALSE(pic_.InterruptPending());
  Out(0x21, 0x00);
  EXPECT_EQ(pic_.Acknowledge(), 0x30);
  Out(0x20, 0x20);
  EXPECT_FALSE(pic_.InterruptPending());  // one request, not five
}

TEST_F(TimerInterruptsTest, RtcUpdateInterruptBecomesVector0x38) {
  Out(0x43, 0x30);  // stop the PIT's power-on square wave
  Out(0x70, 0x0b);
  Out(0x71, 0x12);  // UIE
  Out(0x70, 0x0c);
  In(0x71);
  clock_.Set(NextEventNs());
  EXPECT_EQ(clock_.NowNs(), kOriginNs + 1'000'000'000);
  Poll();
  ASSERT_TRUE(pic_.InterruptPending());
  EXPECT_EQ(pic_.Acknowledge(), 0x38);
  // The handler reads C (lowering IRQ 8), then EOIs slave and master.
  Out(0x70, 0x0c);
  EXPECT_EQ(In(0x71) & 0x90, 0x90);
  Out(0xa0, 0x20);
  Out(0x20, 0x20);
  EXPECT_FALSE(pic_.InterruptPending());
  clock_.Set(NextEventNs());
  Poll();
  EXPECT_EQ(pic_.Acknowledge(), 0x38);
}

TEST_F(TimerInterruptsTest, UnreadRegisterCBlocksFurtherRtcInterrupts) {
  Out(0x43, 0x30);
  Out(0x70, 0x0b);
  Out(0x71, 0x12);
  clock_.Set(kOriginNs + 1'000'000'000);
  Poll();
  EXPECT_EQ(pic_.Acknowledge(), 0x38);
  Out(0xa0, 0x20);
  Out(0x20, 0x20);
  clock_.Set(kOriginNs + 5'000'000'000);  // C never read: IRQ 8 stays high
  Poll();
  EXPECT_FALSE(pic_.InterruptPending());
}

}  // namespace
}  // namespace btvm
