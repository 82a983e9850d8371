#pragma once
// Exception and interrupt delivery through the guest IDT in long mode
// (SDM Vol. 3 §6.14): 64-bit gates, IST, the stack switch from the TSS on a
// privilege change, error codes, #DF for a fault while delivering, and the
// triple fault after that.

#include <cstdint>

#include "base/cpu_state.h"
#include "base/exception.h"
#include "mmu/mmu.h"

namespace btvm {

enum class EventSource : uint8_t {
  kException,  // a fault or trap raised by an instruction
  kSoftware,   // int n / int3 / into: gate DPL is checked, RIP is the next instruction
  kExternal,   // an external interrupt
};

enum class DeliveryResult : uint8_t { kDelivered, kTripleFault };

// Delivers `event`; cpu.rip must already be the RIP to push (the faulting
// instruction for faults, the next one for traps and software interrupts).
// For a software interrupt, `insn_rip` is the RIP of the int instruction
// (a fault while delivering it is reported there).
DeliveryResult DeliverEvent(Mmu& mmu, CpuState& cpu, const GuestException& event,
                            EventSource source, uint64_t insn_rip = 0);

}  // namespace btvm
