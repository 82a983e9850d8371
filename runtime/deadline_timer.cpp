#include "runtime/deadline_timer.h"

#include <algorithm>
#include <chrono>

#include "devices/clock.h"

namespace btvm {

bool HaltUntilInterrupt(bool interrupts_on, InterruptSource* irq, const std::atomic<bool>& stop,
                        EngineExit* exit) {
  if (!interrupts_on) {
    exit->kind = EngineExit::kHalt;
    exit->message = "guest halted with interrupts disabled";
    return false;
  }
  if (!irq) {
    exit->kind = EngineExit::kHalt;
    exit->message = "guest halted; this machine has no interrupt sources";
    return false;
  }
  while (!stop.load(std::memory_order_relaxed) && !irq->InterruptPending()) {
    // Input may arrive without a deadline: look again every 10 ms.
    const uint64_t now = HostClock().NowNs();
    irq->WaitUntil(std::min(irq->NextDeadlineNs(), now + 10'000'000));
  }
  return true;
}

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
