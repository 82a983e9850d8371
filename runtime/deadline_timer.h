#pragma once
// Waiting for the machine's time, for every engine: a thread that calls
// `kick` once the armed deadline (host monotonic ns, HostClock) has passed,
// which is how an engine running guest code learns that the next timer
// event is due (the bt engine raises exit_request, the kvm engine
// interrupts KVM_RUN); and the vCPU's wait in hlt.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "runtime/engine.h"

namespace btvm {

// hlt, with RFLAGS.IF `interrupts_on`: sleeps until `irq` has an interrupt
// for the vCPU or `stop` is raised (true), or says in *exit (kHalt) why
// nothing can end the halt (false).
bool HaltUntilInterrupt(bool interrupts_on, InterruptSource* irq, const std::atomic<bool>& stop,
                        EngineExit* exit);

class DeadlineTimer {
 public:
  explicit DeadlineTimer(std::function<void()> kick);
  ~DeadlineTimer();  // stops and joins the thread
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  // The next kick at `deadline_ns` (UINT64_MAX: none); a kick is one-shot.
  void Arm(uint64_t deadline_ns);

 private:
  void Loop();

  std::function<void()> kick_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t deadline_ = UINT64_MAX;
  bool quit_ = false;
  std::thread thread_;  // last: started once the rest is built
};

}  // namespace btvm
