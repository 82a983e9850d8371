// cli, sti, pushfq, swapgs, rdtsc, rdtscp and reads of CR0, CR2, CR3 and
// CR4 of 64-bit supervisor code, inline (InsnClass::kSystem). syscall and sysret
// are kSystem too, in emit_syscall.cpp.
// Guest IF is virtual: it lives in CpuState's RFLAGS, which translated code
// can read and write like any memory. Linux saves and restores the
// interrupt flag around every spinlock taken with interrupts off
// (pushf; pop; cli ... sti), so leaving translated code for each of them
// (about a thousand cycles) would dominate a kernel's run time.
//
//   cli    IF := 0 in CpuState. Nothing can be pending because of it.
//   sti    IF := 1, and the block ends. If an interrupt is waiting for IF
//          (the runtime sets BtContext::irq_waiting when it saw one it
//          could not deliver), the block returns to the runtime with
//          kSti, which opens the one-instruction sti shadow (SDM Vol. 2
//          STI) before taking it; otherwise the block chains on.
//   pushfq the arithmetic flags and DF from host RFLAGS, the rest from
//          CpuState, RF and VM cleared in the image (SDM Vol. 2
//          PUSHF/PUSHFD/PUSHFQ), pushed like push reg.
//   swapgs exchanges the GS base and IA32_KERNEL_GS_BASE in CpuState
//          (SDM Vol. 2 SWAPGS), through the host stack: no register, no
//          flags. Translated code adds the GS base from CpuState to every
//          GS-relative address, so the next access sees the new one.
//   rdtsc  EDX:EAX := the host TSC + CpuState's TSC offset, the virtual
//          TSC the runtime's rdtsc gives (runtime/emulate.h, GuestTsc).
//   rdtscp the same, and ECX := IA32_TSC_AUX (Linux's ordered clock
//          reads: a timer tick makes some 18 of them).
//   mov r64, CRn (n = 0, 2, 3, 4): the register from CpuState (SDM Vol. 2
//          MOV—Move to/from Control Registers; the block builder takes
//          only registers other than RSP and R15).
//
// cli and sti are legal at CPL 0 always (and at CPL <= IOPL), swapgs at
// CPL 0 only (and the reads of control registers), rdtsc(p) at CPL 0 always
// (and elsewhere unless CR4.TSD): the
// block checks CS.RPL and, if it is not 0 (a ring 1 or 2 guest), leaves
// with kAlone for the runtime to emulate the instruction with its checks.
// Translated blocks never run with TF set (kBlockSingle), so no trap
// after the instruction is due here.

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

namespace {
constexpr int32_t kRflagsOffset = static_cast<int32_t>(offsetof(CpuState, rflags));
constexpr int32_t kCsSelectorOffset = static_cast<int32_t>(
    offsetof(CpuState, seg) + kCs * sizeof(SegmentReg) + offsetof(SegmentReg, selector));
constexpr int32_t kKernelGsBaseOffset =
    static_cast<int32_t>(offsetof(CpuState, msr) + offsetof(MsrState, kernel_gs_base));
constexpr int32_t kTscOffsetOffset =
    static_cast<int32_t>(offsetof(CpuState, msr) + offsetof(MsrState, tsc_offset));
constexpr int32_t kTscAuxOffset =
    static_cast<int32_t>(offsetof(CpuState, msr) + offsetof(MsrState, tsc_aux));
}  // namespace

bool BlockEmitter::EmitSystem(const DecodedInsn& d, uint32_t live_after) {
  const ZydisMnemonic m = d.insn.mnemonic;
  if (m == ZYDIS_MNEMONIC_PUSHFQ) return EmitPushf(d, live_after);
  if (m == ZYDIS_MNEMONIC_SYSCALL) return EmitSyscall(d);
  if (m == ZYDIS_MNEMONIC_SYSRET) return EmitSysret(d);
  if (m != ZYDIS_MNEMONIC_CLI && m != ZYDIS_MNEMONIC_STI && m != ZYDIS_MNEMONIC_SWAPGS &&
      m != ZYDIS_MNEMONIC_RDTSC && m != ZYDIS_MNEMONIC_RDTSCP && m != ZYDIS_MNEMONIC_MOV) {
    return Fail("not inline: " + FormatInsn(d));
  }

  // The flags the checks clobber are saved if live (and restored lazily,
  // by the next instruction that needs them, or at the block's end).
  SaveFlagsIfLive(live_after != 0);
  // Not ring 0: the runtime emulates it (with the IOPL check).
  Label alone = a_.newLabel();
  a_.test(CtxPtr(kCsSelectorOffset, 1), 3);
  a_.jnz(alone);
  const bool flags_saved = flags_saved_;
  const uint16_t borrowed = borrowed_;
  const uint64_t rip = d.rip;
  out_of_line_.push_back([this, alone, flags_saved, borrowed, rip] {
    a_.bind(alone);
    RestoreBoundary(flags_saved, borrowed);
    EmitExit(rip, BlockExit::kAlone);
  });

  if (m == ZYDIS_MNEMONIC_CLI) {
    a_.and_(CtxPtr(kRflagsOffset, 4), ~static_cast<int32_t>(rflags::kIF));
    return true;
  }
  if (m == ZYDIS_MNEMONIC_MOV) {
    GprRef g;
    if (!DecodeGpr(d.ops[0].reg.value, &g)) return Fail("not inline: " + FormatInsn(d));
    const ZydisRegister cr = d.ops[1].reg.value;
    const int32_t offset = static_cast<int32_t>(
        cr == ZYDIS_REGISTER_CR0   ? offsetof(CpuState, cr0)
        : cr == ZYDIS_REGISTER_CR2 ? offsetof(CpuState, cr2)
        : cr == ZYDIS_REGISTER_CR3 ? offsetof(CpuState, cr3)
                                   : offsetof(CpuState, cr4));
    Plan p;
    p.used = 1u << g.index;
    TakeRegisters(&p);
    SpillPlan(p);
    a_.mov(x86::gpq(g.index), CtxPtr(offset, 8));
    return true;
  }
  if (m == ZYDIS_MNEMONIC_RDTSC || m == ZYDIS_MNEMONIC_RDTSCP) {
    // RAX and RDX (and RCX) in their host registers (it writes them).
    const bool aux = m == ZYDIS_MNEMONIC_RDTSCP;
    Plan p;
    p.used = (1u << kRax) | (1u << kRdx) | (aux ? 1u << kRcx : 0u);
    TakeRegisters(&p);
    SpillPlan(p);
    if (aux) {
      // It waits for the instructions before it, as lfence does (the
      // host may lack rdtscp: the virtual CPU has it regardless).
      a_.lfence();
      a_.mov(x86::ecx, CtxPtr(kTscAuxOffset, 4));
    }
    a_.rdtsc();
    a_.shl(x86::rdx, 32);
    a_.or_(x86::rax, x86::rdx);
    a_.add(x86::rax, CtxPtr(kTscOffsetOffset, 8));
    a_.mov(x86::rdx, x86::rax);
    a_.shr(x86::rdx, 32);
    a_.mov(x86::eax, x86::eax);
    return true;
  }
  if (m == ZYDIS_MNEMONIC_SWAPGS) {
    a_.push(CtxPtr(SegBaseOffset(kGs), 8));
    a_.push(CtxPtr(kKernelGsBaseOffset, 8));
    a_.pop(CtxPtr(SegBaseOffset(kGs), 8));
    a_.pop(CtxPtr(kKernelGsBaseOffset, 8));
    return true;
  }
  a_.or_(CtxPtr(kRflagsOffset, 4), static_cast<int32_t>(rflags::kIF));
  Label waiting = a_.newLabel();
  a_.cmp(CtxPtr(offsetof(BtContext, irq_waiting), 1), 0);
  a_.jne(waiting);
  const bool saved_now = flags_saved_;
  const uint16_t borrowed_now = borrowed_;
  const uint64_t next = d.NextRip();
  out_of_line_.push_back([this, waiting, saved_now, borrowed_now, next] {
    a_.bind(waiting);
    RestoreBoundary(saved_now, borrowed_now);
    EmitExit(next, BlockExit::kSti);
  });
  Materialize();
  EmitJumpTo(next);
  return true;
}

bool BlockEmitter::EmitPushf(const DecodedInsn& d, uint32_t live_after) {
  Plan p;
  TakeRegisters(&p);
  RenameRsp(&p);
  int u = PickScratch(&p, false), v = PickScratch(&p, false), s = PickScratch(&p, false);
  const bool index_ready = stack_slot_in_ >= 0;
  int t = index_ready ? stack_slot_in_ : PickScratch(&p, false);
  if (u < 0 || v < 0 || s < 0 || t < 0) return Fail("no scratch register for " + FormatInsn(d));
  p.used |= 1u << t;
  // pushf reads the flags: they must be in host RFLAGS.
  RestoreSavedFlags();
  SpillPlan(p);
  LoadRenamed(p);
  x86::Gp U = x86::gpq(u), V = x86::gpq(v);
  // The monitor's stack is host RSP (helper calls use it too).
  a_.pushfq();
  a_.pop(U);
  SaveFlagsIfLive(live_after != 0);
  constexpr uint64_t kFromHost = rflags::kArith | rflags::kDF;
  a_.and_(U, static_cast<int32_t>(kFromHost));
  a_.mov(V, CtxPtr(kRflagsOffset, 8));
  a_.and_(V, static_cast<int32_t>(~(kFromHost | rflags::kRF | rflags::kVM)));
  a_.or_(U, V);
  const int r = p.rename[kRsp];
  x86::Gp R = x86::gpq(r);
  a_.lea(x86::gpq(s), x86::ptr(R, -8));
  EmitAccess(d, p, s, t, 8, false, true, [this, s, U] { a_.mov(x86::qword_ptr(x86::gpq(s)), U); },
             false, index_ready);
  a_.lea(R, x86::ptr(R, -8));
  stack_slot_in_ = t;
  return true;
}

}  // namespace btvm
