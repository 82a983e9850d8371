#pragma once
// Emulation of sensitive instructions against CpuState and the virtual
// hardware (DESIGN.md, Translator: "call into the runtime"). Translated
// blocks end before such an instruction; the bt engine decodes it here,
// emulates it, and continues after it.

#include <string>

#include "base/counters.h"
#include "base/cpu_state.h"
#include "base/exception.h"
#include "devices/bus.h"
#include "mmu/mmu.h"
#include "translator/decoder.h"

namespace btvm {

struct EmulateOutcome {
  enum Kind {
    kDone,         // RIP advanced (or set by the instruction)
    kFault,        // deliver `exception` with RIP at the instruction
    kSoftwareInt,  // deliver `exception` as int n: RIP already past it
    kHalt,         // hlt: RIP past it
    kUnsupported,  // btvm cannot emulate it yet: `message`
  } kind = kDone;
  GuestException exception;
  std::string message;
};

class Emulator {
 public:
  Emulator(Mmu& mmu, PioBus& pio, Counters& counters)
      : mmu_(mmu), pio_(pio), counters_(counters) {}

  EmulateOutcome Emulate(CpuState& cpu, const DecodedInsn& d);

 private:
  // Operand access. Registers follow x86 write rules (32-bit writes
  // zero-extend, 8/16-bit writes merge); memory goes through the MMU.
  uint64_t EffectiveAddress(const CpuState& cpu, const DecodedInsn& d,
                            const ZydisDecodedOperand& op) const;
  bool ReadOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                   uint64_t* value, GuestException* fault);
  bool WriteOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                    uint64_t value, GuestException* fault);
  bool Push(CpuState& cpu, uint64_t value, unsigned size, GuestException* fault);
  bool Pop(CpuState& cpu, uint64_t* value, unsigned size, GuestException* fault);

  EmulateOutcome PortIo(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome StringOp(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome MovCr(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome LoadSegment(CpuState& cpu, int seg, uint16_t selector);
  EmulateOutcome FarReturn(CpuState& cpu, const DecodedInsn& d, bool iret);
  EmulateOutcome Msr(CpuState& cpu, bool write);
  EmulateOutcome Divide(CpuState& cpu, const DecodedInsn& d);
  void Cpuid(CpuState& cpu);

  Mmu& mmu_;
  PioBus& pio_;
  Counters& counters_;
};

// The guest TSC: the host's, as the virtual CPU reports no other frequency yet.
uint64_t GuestTsc(const CpuState& cpu);

}  // namespace btvm
