#pragma once
// Time as devices see it. Timer devices (PIT, RTC) never count ticks: they
// compute counter values and event times from a Clock, so a guest that is
// descheduled for a while still sees wall time pass, and tests drive time by
// hand with a ManualClock.
//
// A ClockedDevice raises its interrupts only when asked: the engine calls
// Update() whenever it looks for pending interrupts, and when the guest halts
// it sleeps until the earliest NextEventNs() of all clocked devices.

#include <cstdint>

namespace btvm {

class Clock {
 public:
  virtual ~Clock();
  // Nanoseconds since an arbitrary origin; never goes backwards.
  virtual uint64_t NowNs() const = 0;
};

// CLOCK_MONOTONIC.
class HostClock final : public Clock {
 public:
  uint64_t NowNs() const override;
};

// A clock that moves only when told to.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ns = 0) : now_ns_(start_ns) {}
  uint64_t NowNs() const override { return now_ns_; }
  // Time never goes backwards: Set() to an earlier time is a host bug.
  void Set(uint64_t ns);
  void Advance(uint64_t ns);

 private:
  uint64_t now_ns_;
};

// The host's wall-clock time (CLOCK_REALTIME) in nanoseconds since the Unix
// epoch, UTC: what a machine gives its RTC at power-on.
int64_t HostUnixTimeNs();

class ClockedDevice {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;

  virtual ~ClockedDevice();
  // Raises and lowers the device's interrupt lines for everything that has
  // happened up to Clock::NowNs().
  virtual void Update() = 0;
  // The clock time at which Update() next has something to do, or kNever.
  // It may be in the past (Update() is then due at once).
  virtual uint64_t NextEventNs() const = 0;
};

}  // namespace btvm
