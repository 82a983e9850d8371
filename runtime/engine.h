#pragma once
// The one engine interface (STYLE.md habit 5): run the vCPU until something
// the machine must handle. bt, direct and kvm all implement it, so every
// exit handler, test and benchmark serves all three.

#include <cstdint>
#include <cstdio>
#include <string>

#include "base/cpu_state.h"

namespace btvm {

struct EngineExit {
  enum Kind {
    kStop,         // a device asked the machine to stop (debug exit, reset, power off)
    kHalt,         // hlt with nothing that could ever wake the vCPU
    kTripleFault,  // the guest could not deliver a double fault: a PC resets
    kError,        // btvm cannot go on (unsupported instruction): message says why
  } kind = kStop;
  std::string message;
};

// What an engine asks of the machine about interrupts and time: the
// interrupt controller's INTR line and the timers behind it.
class InterruptSource {
 public:
  virtual ~InterruptSource() = default;
  // Brings the timers up to now; true if INTR is up (an interrupt waits).
  virtual bool InterruptPending() = 0;
  // The INTA cycle: the vector of the interrupt being taken.
  virtual uint8_t AcknowledgeInterrupt() = 0;
  // When InterruptPending may next change by itself (host monotonic ns;
  // UINT64_MAX: only on guest action or input).
  virtual uint64_t NextDeadlineNs() = 0;
  // hlt with interrupts enabled: sleeps until `deadline_ns` or until input
  // may have arrived, whichever is first.
  virtual void WaitUntil(uint64_t deadline_ns) = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;
  // Runs from `cpu` and stores the final state back into it.
  virtual EngineExit Run(CpuState& cpu) = 0;
  // Engine-specific statistics for --stats (after the shared counters).
  virtual void PrintStats(std::FILE* /*out*/) const {}
  // Engine-specific lines for --stats' summary (before the counters).
  virtual void PrintSummary(std::FILE* /*out*/) const {}
};

}  // namespace btvm
