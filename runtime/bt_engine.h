#pragma once
// The bt engine (`--engine bt`): every guest instruction, kernel and user,
// runs as translated code inside the monitor process (DESIGN.md, The three
// engines). Its loop: find or translate the block at RIP, run it, and handle
// what it exits for — a sensitive instruction to emulate, or a guest
// exception to deliver through the guest IDT.

#include <atomic>
#include <memory>

#include "base/counters.h"
#include "devices/bus.h"
#include "mmu/mmu.h"
#include "runtime/emulate.h"
#include "runtime/engine.h"
#include "runtime/interrupts.h"
#include "translator/bt_context.h"
#include "translator/code_cache.h"

namespace btvm {

class BtEngine final : public Engine {
 public:
  // `stop` is raised by the machine (a device asked to stop); the engine
  // checks it after every exit to the runtime.
  BtEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio, const std::atomic<bool>& stop,
           Counters& counters);
  ~BtEngine() override;

  const char* name() const override { return "bt"; }
  EngineExit Run(CpuState& cpu) override;

 private:
  // Returns false with *exit set when the run must end.
  bool Deliver(const GuestException& e, EventSource source, EngineExit* exit);

  std::unique_ptr<BtContext> ctx_;
  Mmu mmu_;
  PioBus& pio_;
  const std::atomic<bool>& stop_;
  Counters& counters_;
  CodeCache cache_;
  Emulator emulator_;
  Decoder decoder_;
};

}  // namespace btvm
