#include "devices/clock.h"

#include <time.h>

#include "base/check.h"

namespace btvm {

Clock::~Clock() = default;
ClockedDevice::~ClockedDevice() = default;

uint64_t HostClock::NowNs() const {
  timespec ts;
  BTVM_CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

void ManualClock::Set(uint64_t ns) {
  BTVM_CHECK(ns >= now_ns_);
  now_ns_ = ns;
}

void ManualClock::Advance(uint64_t ns) {
  BTVM_CHECK(ns <= UINT64_MAX - now_ns_);
  now_ns_ += ns;
}

int64_t HostUnixTimeNs() {
  timespec ts;
  BTVM_CHECK(clock_gettime(CLOCK_REALTIME, &ts) == 0);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace btvm
