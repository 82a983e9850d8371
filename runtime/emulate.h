#pragma once
// Emulation of sensitive instructions against CpuState and the virtual
// hardware (DESIGN.md, Translator: "call into the runtime"). Translated
// blocks end before such an instruction; the bt engine decodes it here,
// emulates it, and continues after it.
//
// Privilege, IOPL and reserved-bit checks raise the exceptions hardware
// raises (#GP, #UD, #NM, #NP, #SS, #PF), as values: an emulated instruction
// either completes or leaves CpuState and guest memory as they were, apart
// from what the architecture lets a faulting instruction leave behind
// (accessed bits of descriptors and page tables, elements a faulting rep
// string instruction already did).
//
// Compatibility mode (a 32-bit code segment in IA-32e mode) is modelled:
// iret, far ret, far jmp/call, sysret and sysexit reach it; the stack is
// 32-bit there and every segment base counts (no limit checks: flat
// segments); pusha/popa, lds/les, bound, arpl, into, salc and the BCD
// adjustments are emulated.
//
// Not modelled yet: debug-register breakpoints and DR7.GD, single-step
// traps after an emulated instruction (RFLAGS.TF), task switches (#GP, as
// IA-32e mode has none), 16-bit code segments, 16-bit addressing and
// 16-bit near branches in compatibility mode (kUnsupported).

#include <cstdint>
#include <string>

#include "base/counters.h"
#include "base/cpu_state.h"
#include "base/exception.h"
#include "devices/bus.h"
#include "mmu/mmu.h"
#include "translator/decoder.h"

namespace btvm {

// The interrupt shadow an instruction opens (SDM Vol. 3 §6.8.3; the VMX
// "blocking by STI" / "blocking by MOV SS" bits of Vol. 3 Table 25-3).
enum class InterruptShadow : uint8_t {
  kNone,
  kSti,    // sti with IF clear before it: no external interrupt (INTR)
           // until the next instruction has completed
  kMovSs,  // mov ss (pop ss does not exist in 64-bit mode): no external
           // interrupt, NMI or #DB until the next instruction has completed
};

// What the engine does after Emulate():
//
//   kDone         continue at cpu.rip.
//   kFault        deliver `exception` as a hardware exception (no gate DPL
//                 check). cpu.rip is the RIP to push: the instruction itself
//                 for faults, the next instruction for the one trap emulated
//                 here, int1 (icebp, #DB).
//   kSoftwareInt  deliver `exception` as a software interrupt (int n,
//                 int3: the gate DPL is checked); cpu.rip is past it.
//   kHalt         hlt: cpu.rip is past it.
//   kUnsupported  btvm cannot emulate it: `message` says what.
//
// The interrupt-shadow contract. Emulate() starts by clearing
// cpu.pending.interrupt_shadow (the instruction it emulates is the one a
// previous shadow covered), and an instruction that opens a shadow sets it
// to 1 again and reports which kind in `shadow`. While it is set the engine
// must not inject an external interrupt (nor, for kMovSs, an NMI or a
// debug trap); it must clear it once the next guest instruction has
// completed (translated code: after the block that runs next, which only
// delays a pending interrupt by a few instructions) and whenever it
// delivers an event.
struct EmulateOutcome {
  enum Kind {
    kDone,
    kFault,
    kSoftwareInt,
    kHalt,
    kUnsupported,
  } kind = kDone;
  InterruptShadow shadow = InterruptShadow::kNone;
  GuestException exception;
  std::string message;
};

// CPU state that lives in devices (the local APIC's registers): the
// machine answers for it. Without one, the emulator keeps what it can in
// CpuState (an APIC base MSR and CR8 with no APIC behind them).
class CpuPlatform {
 public:
  enum class MsrResult { kNotMine, kDone, kFault };
  virtual ~CpuPlatform() = default;
  virtual MsrResult ReadMsr(uint32_t index, uint64_t* value) = 0;
  virtual MsrResult WriteMsr(uint32_t index, uint64_t value) = 0;
  // CR8 is the local APIC's TPR[7:4] (SDM Vol. 3 §11.8.6.5).
  virtual uint64_t ReadCr8() = 0;
  virtual void WriteCr8(uint64_t value) = 0;  // bits 63:4 checked (#GP) by the caller
};

class Emulator {
 public:
  Emulator(Mmu& mmu, PioBus& pio, Counters& counters)
      : mmu_(mmu), pio_(pio), counters_(counters) {}

  EmulateOutcome Emulate(CpuState& cpu, const DecodedInsn& d);
  void set_platform(CpuPlatform* platform) { platform_ = platform; }

 private:
  // Operand access. Registers follow x86 write rules (32-bit writes
  // zero-extend, 8/16-bit writes merge); memory goes through the MMU.
  uint64_t EffectiveAddress(const CpuState& cpu, const DecodedInsn& d,
                            const ZydisDecodedOperand& op) const;
  bool ReadOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                   uint64_t* value, GuestException* fault);
  // A far pointer at `op`: a `size`-byte offset, then a selector.
  bool ReadFarPointer(const CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                      unsigned size, uint64_t* offset, uint16_t* sel, GuestException* fault);
  bool WriteOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                    uint64_t value, GuestException* fault);
  bool Push(CpuState& cpu, uint64_t value, unsigned size, GuestException* fault);
  bool Pop(CpuState& cpu, uint64_t* value, unsigned size, GuestException* fault);
  // IOPL, then the TSS I/O permission bitmap (SDM Vol. 1 §19.5).
  bool IoPermitted(const CpuState& cpu, uint16_t port, unsigned size, GuestException* fault);
  bool SoftwareGateOk(const CpuState& cpu, uint8_t vector, GuestException* fault);

  EmulateOutcome Dispatch(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome PortIo(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome StringOp(CpuState& cpu, const DecodedInsn& d);
  unsigned RepOverPage(CpuState& cpu, ZydisMnemonic m, unsigned size, uint64_t src_base,
                       MmuIndex index, unsigned limit);
  EmulateOutcome MovCr(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome MovDr(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome MovSreg(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome LoadSegment(CpuState& cpu, int seg, uint16_t selector);
  EmulateOutcome LoadTaskOrLdt(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome QuerySegment(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome FarReturn(CpuState& cpu, const DecodedInsn& d, bool iret);
  EmulateOutcome FarJumpOrCall(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome Sysenter(CpuState& cpu);
  EmulateOutcome Sysexit(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome Msr(CpuState& cpu, bool write);
  EmulateOutcome FxSave(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome XSave(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome Xcr(CpuState& cpu, bool write);
  EmulateOutcome Enter(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome PushPopAll(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome Bcd(CpuState& cpu, const DecodedInsn& d);
  EmulateOutcome Divide(CpuState& cpu, const DecodedInsn& d);

  Mmu& mmu_;
  PioBus& pio_;
  Counters& counters_;
  CpuPlatform* platform_ = nullptr;
};

// The guest TSC: the host's plus the guest's offset (IA32_TSC writes).
uint64_t GuestTsc(const CpuState& cpu);

// The host TSC frequency in kHz (host CPUID leaf 0x15 or a hypervisor's
// frequency leaf when they give it, else measured once against
// CLOCK_MONOTONIC_RAW); the guest's TSC runs at this rate.
uint64_t HostTscKhz();

// The virtual CPU model (CPUID), one for every engine: emulate.cpp opens
// with the decisions it makes. Dynamic bits (OSXSAVE, the XSAVE size for
// the current XCR0) come from `cpu`.
struct CpuidResult {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};
CpuidResult VirtualCpuid(const CpuState& cpu, uint32_t leaf, uint32_t subleaf);

// XCR0 bits the virtual CPU supports: x87 and SSE (CPUID 0xd.0 EAX).
inline constexpr uint64_t kSupportedXcr0 = 0x3;
// The XSAVE area size for those: the legacy region and the header.
inline constexpr uint32_t kXsaveAreaSize = 576;

}  // namespace btvm
