#include "runtime/deadline_timer.h"

#include <chrono>

#include "devices/clock.h"

namespace btvm {

DeadlineTimer::DeadlineTimer(std::function<void()> kick)
    : kick_(std::move(kick)), thread_([this] { Loop(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DeadlineTimer::Arm(uint64_t deadline_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (deadline_ns != deadline_) {
    deadline_ = deadline_ns;
    cv_.notify_all();
  }
}

void DeadlineTimer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!quit_) {
    if (deadline_ == UINT64_MAX) {
      cv_.wait(lock);
      continue;
    }
    const uint64_t now = HostClock().NowNs();
    if (now >= deadline_) {
      deadline_ = UINT64_MAX;
      kick_();
      continue;
    }
    cv_.wait_for(lock, std::chrono::nanoseconds(deadline_ - now));
  }
}

}  // namespace btvm
