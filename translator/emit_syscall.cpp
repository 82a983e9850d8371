// syscall and sysretq inline: the change of privilege in translated code
// (InsnClass::kSystem; block_builder.cpp picks them). A Linux system call
// is syscall, the kernel's work and sysretq; through the runtime each of the
// two would cost an exit, an emulation and a block lookup, about a third of
// a getppid each.
//
//   syscall (64-bit user code; SDM Vol. 2 SYSCALL): RCX := the next RIP,
//          R11 := RFLAGS without RF, RFLAGS &= ~FMASK, CS and SS the flat
//          kernel descriptors at STAR[47:32] and +8, RIP := LSTAR.
//   sysretq (64-bit code at CPL 0; SDM Vol. 2 SYSRET): RFLAGS := R11 with
//          RF, VM and the reserved bits clear, CS and SS the flat user
//          descriptors at STAR[63:48] + 16 and + 8 (RPL 3), RIP := RCX.
//
// Both keep the descriptor caches exactly as runtime/emulate.cpp's
// emulation does. What the emulation checks first sends the instruction
// to the runtime (kAlone) instead: EFER.SCE clear (#UD), and for sysret
// CPL above 0 (a ring 1 or 2 guest: #GP), a non-canonical RCX (#GP; Intel
// faults at CPL 0) or TF set in R11 (a #DB at once, bt_engine.cpp).
// sysretl, syscall from compatibility mode or supervisor code, and
// one-instruction blocks (TF) still go to the runtime.
//
// After the state change the code jumps to the target through the jump
// cache of the new MmuIndex, else returns to the runtime with RIP at the
// target. On the way it
//   - drops the host call frames (a return across the change of privilege
//     must not land in a continuation of the other mode) and puts the new
//     MmuIndex's sentinel in place of the old (bt_context.h, calls);
//   - keeps the user-time count of BtContext when count_user_time (a
//     syscall ends the stretch either way; untimed, a sysret begins none);
//   - after sysret, returns to the runtime instead if IF is set while an
//     interrupt waits (kIrqWindow), or if the direct engine may want the
//     user code (user_chain_any, user_chain_cr3).

#include "mmu/mmu.h"
#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

namespace {
constexpr int32_t kRflagsOffset = static_cast<int32_t>(offsetof(CpuState, rflags));
constexpr int32_t kEferOffset = static_cast<int32_t>(offsetof(CpuState, efer));
constexpr int32_t kCr3Offset = static_cast<int32_t>(offsetof(CpuState, cr3));
constexpr int32_t MsrOffset(size_t field) {
  return static_cast<int32_t>(offsetof(CpuState, msr) + field);
}
constexpr int32_t SegOffset(int seg, size_t field) {
  return static_cast<int32_t>(offsetof(CpuState, seg) + seg * sizeof(SegmentReg) + field);
}
constexpr int32_t kSave = static_cast<int32_t>(offsetof(BtContext, sys_save));
constexpr int32_t kSaveRax = kSave, kSaveRdx = kSave + 8, kSaveFlags = kSave + 16;
constexpr uint64_t kHostFlags = rflags::kArith | rflags::kDF;
// What sysret keeps of R11 (SDM Vol. 2 SYSRET: RF, VM and the reserved
// bits cleared; mask 3C7FD7H).
constexpr uint32_t kSysretFlags = 0x3c7fd7;

// A flat segment's descriptor cache: selector and attributes in one dword,
// limit 4 GiB, base 0. The selector is in the low 16 bits of `sel`
// (bits above are cleared here).
void StoreFlatSegment(x86::Assembler& a, int seg, const x86::Gp& sel, uint16_t attrib) {
  a.movzx(sel.r32(), sel.r16());
  a.or_(sel.r32(), static_cast<uint32_t>(attrib) << 16);
  a.mov(CtxPtr(SegOffset(seg, offsetof(SegmentReg, selector)), 4), sel.r32());
  a.mov(CtxPtr(SegOffset(seg, offsetof(SegmentReg, limit)), 4), 0xffffffffu);
  a.mov(CtxPtr(SegOffset(seg, offsetof(SegmentReg, base)), 8), 0);
}

// Guest RAX and RDX back from sys_save, and the new host flags.
void RestoreSaved(x86::Assembler& a) {
  a.mov(x86::rax, CtxPtr(kSaveRax, 8));
  a.mov(x86::rdx, CtxPtr(kSaveRdx, 8));
  a.push(CtxPtr(kSaveFlags, 8));
  a.popfq();
}

// Common tail: with the new state in CpuState (RIP included) and the new
// host flags in sys_save[2], guest RAX and RDX in sys_save and RAX = the
// target: drop the host frames for `to`'s sentinel, then the jump cache of
// MmuIndex `to`, else to `runtime` (not bound here).
void EmitSwitchTail(x86::Assembler& a, const EmitEnv& env, unsigned to, Label runtime) {
  a.mov(x86::rsp, CtxPtr(offsetof(BtContext, host_rsp), 8));
  a.mov(x86::rdx, env.underflow[to]);
  a.mov(x86::qword_ptr(x86::rsp), x86::rdx);
  const int32_t jc = static_cast<int32_t>(offsetof(BtContext, jump_cache) +
                                          to * kJumpCacheEntries * sizeof(JumpCacheEntry));
  EmitJumpCacheSlot(a, x86::rax, x86::rdx);
  a.cmp(x86::rax, CtxPtr(x86::rdx, 0, jc, 8));
  a.jne(runtime);
  a.mov(x86::rax, CtxPtr(x86::rdx, 0, jc + 8, 8));
  a.mov(CtxPtr(offsetof(BtContext, jump_target), 8), x86::rax);
  RestoreSaved(a);
  a.jmp(CtxPtr(offsetof(BtContext, jump_target), 8));
}

// Leaves for the runtime with RIP already in CpuState, from the state the
// tail's jumps to the runtime come with.
void EmitSwitchExit(x86::Assembler& a, const EmitEnv& env, BlockExit reason) {
  RestoreSaved(a);
  a.mov(CtxPtr(offsetof(BtContext, exit_reason), 4), static_cast<uint32_t>(reason));
  a.jmp(Imm(env.exit_stub));
}

// RAX, RDX free: the TSC in RAX.
void ReadTsc(x86::Assembler& a) {
  a.rdtsc();
  a.shl(x86::rdx, 32);
  a.or_(x86::rax, x86::rdx);
}
}  // namespace

bool BlockEmitter::EmitSyscall(const DecodedInsn& d) {
  Materialize();
  // EFER.SCE clear: #UD, from the runtime. The guest flags wait on the
  // host stack meanwhile.
  Label alone = a_.newLabel();
  a_.pushfq();
  a_.test(CtxPtr(kEferOffset, 1), static_cast<int32_t>(efer::kSCE));
  a_.jz(alone);
  const uint64_t rip = d.rip;
  out_of_line_.push_back([this, alone, rip] {
    a_.bind(alone);
    a_.popfq();
    EmitExit(rip, BlockExit::kAlone);
  });

  // R11 := RFLAGS (the arithmetic flags and DF from the host's, the rest
  // from CpuState), RF clear.
  a_.pop(x86::r11);
  a_.and_(x86::r11, static_cast<int32_t>(kHostFlags));
  a_.mov(x86::rcx, CtxPtr(kRflagsOffset, 8));
  a_.and_(x86::rcx, static_cast<int32_t>(~(kHostFlags | rflags::kRF)));
  a_.or_(x86::r11, x86::rcx);
  // RFLAGS := R11 & ~FMASK.
  a_.mov(x86::rcx, CtxPtr(MsrOffset(offsetof(MsrState, fmask)), 8));
  a_.not_(x86::rcx);
  a_.and_(x86::rcx, x86::r11);
  a_.or_(x86::rcx, static_cast<int32_t>(rflags::kFixed1));
  a_.mov(CtxPtr(kRflagsOffset, 8), x86::rcx);
  a_.and_(x86::rcx, static_cast<int32_t>(kHostFlags | rflags::kFixed1));
  a_.mov(CtxPtr(kSaveFlags, 8), x86::rcx);
  // CS := STAR[47:32] & ~3, SS := that + 8: flat, DPL 0.
  a_.mov(x86::rcx, CtxPtr(MsrOffset(offsetof(MsrState, star)), 8));
  a_.shr(x86::rcx, 32);
  a_.and_(x86::ecx, 0xfffc);
  a_.mov(CtxPtr(kSaveRax, 8), x86::rax);
  a_.mov(x86::eax, x86::ecx);
  StoreFlatSegment(a_, kCs, x86::rcx, 0xa09b);
  a_.add(x86::ax, 8);
  StoreFlatSegment(a_, kSs, x86::rax, 0xc093);
  a_.mov(CtxPtr(kSaveRdx, 8), x86::rdx);
  // The end of this stretch of user mode (timed if it began timed).
  Label uncounted = a_.newLabel();
  a_.cmp(CtxPtr(offsetof(BtContext, count_user_time), 1), 0);
  a_.je(uncounted);
  a_.cmp(CtxPtr(offsetof(BtContext, user_since), 8), 0);
  a_.je(uncounted);
  ReadTsc(a_);
  a_.sub(x86::rax, CtxPtr(offsetof(BtContext, user_since), 8));
  a_.add(CtxPtr(offsetof(BtContext, user_tsc), 8), x86::rax);
  a_.bind(uncounted);
  a_.mov(CtxPtr(offsetof(BtContext, user_since), 8), 0);
  a_.mov(x86::rcx, d.NextRip());
  a_.mov(x86::rax, CtxPtr(MsrOffset(offsetof(MsrState, lstar)), 8));
  a_.mov(CtxPtr(kRipOffset, 8), x86::rax);

  Label runtime = a_.newLabel();
  EmitSwitchTail(a_, env_, kMmuKernel, runtime);
  a_.bind(runtime);
  EmitSwitchExit(a_, env_, BlockExit::kNext);
  return true;
}

bool BlockEmitter::EmitSysret(const DecodedInsn& d) {
  Materialize();
  // CPL above 0, EFER.SCE clear or RCX not canonical: the runtime raises
  // the fault, with the guest's flags as they were.
  Label alone = a_.newLabel();
  a_.pushfq();
  a_.test(CtxPtr(SegOffset(kCs, offsetof(SegmentReg, selector)), 1), 3);
  a_.jnz(alone);
  a_.test(CtxPtr(kEferOffset, 1), static_cast<int32_t>(efer::kSCE));
  a_.jz(alone);
  a_.test(x86::r11d, static_cast<int32_t>(rflags::kTF));  // the runtime traps at once
  a_.jnz(alone);
  a_.mov(CtxPtr(kSaveRax, 8), x86::rax);
  a_.mov(x86::rax, x86::rcx);
  a_.shl(x86::rax, 16);
  a_.sar(x86::rax, 16);
  a_.cmp(x86::rax, x86::rcx);
  a_.mov(x86::rax, CtxPtr(kSaveRax, 8));
  a_.jne(alone);
  const uint64_t rip = d.rip;
  out_of_line_.push_back([this, alone, rip] {
    a_.bind(alone);
    a_.popfq();
    EmitExit(rip, BlockExit::kAlone);
  });
  a_.lea(x86::rsp, x86::ptr(x86::rsp, 8));  // the kernel's flags: sysret replaces them

  // RFLAGS := R11 & 3C7FD7H | 2.
  a_.mov(x86::eax, x86::r11d);
  a_.and_(x86::eax, kSysretFlags);
  a_.or_(x86::eax, static_cast<int32_t>(rflags::kFixed1));
  a_.mov(CtxPtr(kRflagsOffset, 8), x86::rax);
  a_.and_(x86::eax, static_cast<int32_t>(kHostFlags | rflags::kFixed1));
  a_.mov(CtxPtr(kSaveFlags, 8), x86::rax);
  // SS := STAR[63:48] + 8, CS := STAR[63:48] + 16, RPL 3, flat, DPL 3.
  a_.mov(CtxPtr(kSaveRdx, 8), x86::rdx);
  a_.mov(x86::rax, CtxPtr(MsrOffset(offsetof(MsrState, star)), 8));
  a_.shr(x86::rax, 48);
  a_.lea(x86::edx, x86::ptr(x86::eax, 16));
  a_.or_(x86::dx, 3);
  StoreFlatSegment(a_, kCs, x86::rdx, 0xa0fb);
  a_.add(x86::ax, 8);
  a_.or_(x86::ax, 3);
  StoreFlatSegment(a_, kSs, x86::rax, 0xc0f3);
  a_.mov(CtxPtr(kRipOffset, 8), x86::rcx);
  // A stretch of user mode begins.
  Label uncounted = a_.newLabel();
  a_.cmp(CtxPtr(offsetof(BtContext, count_user_time), 1), 0);
  a_.je(uncounted);
  a_.add(CtxPtr(offsetof(BtContext, user_entries), 8), 1);
  ReadTsc(a_);
  a_.mov(CtxPtr(offsetof(BtContext, user_since), 8), x86::rax);
  a_.bind(uncounted);

  // On into translated user code, unless the runtime must see it.
  Label runtime = a_.newLabel(), interrupt = a_.newLabel(), chain = a_.newLabel();
  Label no_irq = a_.newLabel();
  a_.test(CtxPtr(kRflagsOffset, 4), static_cast<int32_t>(rflags::kIF));
  a_.jz(no_irq);
  a_.cmp(CtxPtr(offsetof(BtContext, irq_waiting), 1), 0);
  a_.jne(interrupt);
  a_.bind(no_irq);
  a_.cmp(CtxPtr(offsetof(BtContext, user_chain_any), 1), 0);
  a_.jne(chain);
  a_.mov(x86::rax, CtxPtr(kCr3Offset, 8));
  a_.cmp(x86::rax, CtxPtr(offsetof(BtContext, user_chain_cr3), 8));
  a_.jne(runtime);
  a_.bind(chain);
  a_.mov(x86::rax, x86::rcx);
  EmitSwitchTail(a_, env_, kMmuUser, runtime);
  // (The exit stub drops the host frames itself.)
  a_.bind(interrupt);
  EmitSwitchExit(a_, env_, BlockExit::kIrqWindow);
  a_.bind(runtime);
  EmitSwitchExit(a_, env_, BlockExit::kNext);
  return true;
}

}  // namespace btvm
