#pragma once
// The one engine interface (STYLE.md habit 5): run the vCPU until something
// the machine must handle. bt, direct and kvm all implement it, so every
// exit handler, test and benchmark serves all three.

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

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;
  // Runs from `cpu` and stores the final state back into it.
  virtual EngineExit Run(CpuState& cpu) = 0;
};

}  // namespace btvm
