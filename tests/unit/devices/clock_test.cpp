// Clocks: the manual clock tests drive time with, and the host clocks.

#include "devices/clock.h"

#include <cstdint>

#include <gtest/gtest.h>

namespace btvm {
namespace {

TEST(ManualClockTest, StartsWhereToldAndMovesOnlyWhenTold) {
  ManualClock clock(1000);
  EXPECT_EQ(clock.NowNs(), 1000u);
  EXPECT_EQ(clock.NowNs(), 1000u);
  clock.Advance(500);
  EXPECT_EQ(clock.NowNs(), 1500u);
  clock.Set(1'000'000'000);
  EXPECT_EQ(clock.NowNs(), 1'000'000'000u);
  clock.Set(1'000'000'000);  // setting the same time is fine
  EXPECT_EQ(clock.NowNs(), 1'000'000'000u);
}

TEST(HostClockTest, MonotonicAndAdvancing) {
  HostClock clock;
  const Clock& as_clock = clock;
  const uint64_t a = as_clock.NowNs();
  uint64_t b = a;
  for (int i = 0; i < 1000 && b == a; ++i) b = as_clock.NowNs();
  EXPECT_GT(b, a);
}

TEST(HostClockTest, WallTimeIsAfter2020) {
  constexpr int64_t k2020 = 1'577'836'800;  // 2020-01-01T00:00:00Z
  EXPECT_GT(HostUnixTimeNs() / 1'000'000'000, k2020);
}

}  // namespace
}  // namespace btvm
