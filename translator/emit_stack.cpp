// Explicit stack sequences (DESIGN.md, Translator): guest RSP is not host
// RSP (host RSP is the monitor's stack, used for helper calls), so push,
// pop and leave become loads and stores through the soft TLB at the guest
// RSP, which lives in host r15 (kGuestRspHost). RSP changes only after the
// access succeeded, so a #PF on the stack leaves the guest state as before
// the instruction.

#include "translator/code_cache.h"
#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

bool BlockEmitter::EnterStackWindow(int32_t lo, uint32_t size, bool write, bool flags_live,
                                    uint16_t names) {
  Plan p;
  TakeRegisters(&p);
  RenameRsp(&p);
  // The window's register: one no instruction of the block names, so that
  // it stays taken to the end of the block.
  uint16_t saved = lookahead_;
  lookahead_ = names;
  int h = PickScratch(&p, false);
  lookahead_ = saved;
  if (h < 0 || (names & (1u << h))) return false;
  const bool saved_here = flags_live && !flags_saved_;
  SaveFlagsIfLive(flags_live);
  SpillPlan(p);
  LoadRenamed(p);
  const int r = p.rename[kRsp];

  // The soft TLB's stack copy first (SoftTlb::stack): one page holds the
  // whole window, and it allows the accesses.
  x86::Gp H = x86::gpq(h);
  Label refill = a_.newLabel(), ready = a_.newLabel();
  a_.lea(H, x86::ptr(x86::gpq(r), lo));
  a_.xor_(H, CtxPtr(StackTagOffset(write), 8));
  a_.cmp(H, static_cast<int32_t>(kPageSize - size));
  a_.ja(refill);
  a_.add(H, CtxPtr(StackHostOffset(), 8));
  a_.bind(ready);
  window_reg_ = h;
  sticky_ |= 1u << h;

  // Else the page's own slot, and else (another page, no permission, or a
  // range across two pages): nothing of the block has run, so back to the
  // entry state, and on to the block without a window (a patchable exit,
  // linked once it exists).
  const uint16_t spilled = p.spilled;
  out_of_line_.push_back([this, refill, ready, h, size, write, spilled, saved_here] {
    a_.bind(refill);
    a_.xor_(x86::gpq(h), CtxPtr(StackTagOffset(write), 8));
    EmitStackRefill(h, size, write, ready);
    RestoreBoundary(saved_here, spilled);
    EmitJumpTo(env_.block_rip, x86::Inst::kIdNone, kBlockPlainStack);
  });
  return true;
}

bool BlockEmitter::WindowMem(unsigned size, x86::Mem* out) {
  if (window_reg_ < 0 || window_access_ < 0) return false;
  *out = x86::ptr(x86::gpq(window_reg_), window_access_, size);
  last_null_page_fault_ = kSS;  // the window may come from the empty stack copy
  return true;
}

bool BlockEmitter::EmitStack(const DecodedInsn& d, uint32_t flags_live) {
  Plan p;
  bool live = flags_live != 0;
  const ZydisDecodedOperand& op = d.ops[0];
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_LEAVE) {
    // RSP = RBP, then RBP (or BP with the operand-size prefix) is popped
    // (SDM Vol. 2 LEAVE; the stack address size is 64).
    const int width = d.insn.operand_width / 8;
    if (width != 8 && width != 2) return Fail("leave of this size: " + FormatInsn(d));
    p.used |= 1u << kRbp;
    TakeRegisters(&p);
    int s = PickScratch(&p, false), t = PickScratch(&p, false);
    SaveFlagsIfLive(live);
    SpillPlan(p);
    a_.mov(x86::gpq(s), x86::rbp);
    EmitAccess(d, p, s, t, width, true, false, [this, s, t, width] {
      if (width == 2) a_.movzx(x86::gpd(t), x86::word_ptr(x86::gpq(s)));
      else a_.mov(x86::gpq(t), x86::qword_ptr(x86::gpq(s)));
    }, false);
    a_.lea(x86::gpq(kGuestRspHost), x86::ptr(x86::rbp, width));
    if (width == 2) a_.mov(x86::bp, x86::gpw(t));
    else a_.mov(x86::rbp, x86::gpq(t));
    return true;
  }

  if (d.insn.mnemonic == ZYDIS_MNEMONIC_PUSH && op.type == ZYDIS_OPERAND_TYPE_MEMORY &&
      d.insn.operand_width == 64) {
    return EmitPushMemory(d, flags_live);
  }
  // 64-bit, or 16-bit with the operand-size prefix (SDM Vol. 2 PUSH/POP).
  const int width = d.insn.operand_width / 8;
  if (width != 8 && width != 2) return Fail("push/pop of this size: " + FormatInsn(d));
  GprRef reg;
  bool is_reg = op.type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(op.reg.value, &reg);
  bool is_imm = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE;
  bool push = d.insn.mnemonic == ZYDIS_MNEMONIC_PUSH;
  if (!is_reg && !(is_imm && push)) return Fail("push/pop of memory: " + FormatInsn(d));
  bool special = is_reg && (reg.index == kRsp || reg.index == kR15);
  if (is_reg && !special) p.used |= 1u << reg.index;
  TakeRegisters(&p);
  RenameRsp(&p);
  x86::Mem win;
  if (!special && WindowMem(width, &win)) {
    // In the window: no probe, and flags untouched.
    SpillPlan(p);
    LoadRenamed(p);
    last_scratch_ = p.spilled;
    last_flags_saved_ = flags_saved_;
    x86::Gp R = x86::gpq(p.rename[kRsp]);
    if (push && is_imm) {
      a_.mov(win, static_cast<int32_t>(width == 2 ? op.imm.value.s & 0xffff : op.imm.value.s));
    } else if (push) {
      a_.mov(win, width == 2 ? x86::Gp(x86::gpw(reg.index)) : x86::Gp(x86::gpq(reg.index)));
    } else if (width == 2) {
      a_.mov(x86::gpw(reg.index), win);
    } else {
      a_.mov(x86::gpq(reg.index), win);
    }
    a_.lea(R, x86::ptr(R, push ? -width : width));
    return true;
  }
  int s = PickScratch(&p, false);
  // push r15 reads guest R15 through t; the accesses probe the soft TLB's
  // stack copy, which needs no slot register.
  int t = special ? PickScratch(&p, false) : -1;
  SaveFlagsIfLive(live);
  SpillPlan(p);
  LoadRenamed(p);
  last_scratch_ = p.spilled;
  last_flags_saved_ = flags_saved_;
  const int r = p.rename[kRsp];
  x86::Gp R = x86::gpq(r);

  if (push) {
    a_.lea(x86::gpq(s), x86::ptr(R, -width));
    EmitAccess(d, p, s, t, width, false, true,
               [this, s, t, is_imm, special, reg, op, width, R] {
      x86::Mem dst = x86::ptr(x86::gpq(s), 0, width);
      if (is_imm) {
        if (width == 2) a_.mov(dst, static_cast<int32_t>(op.imm.value.s & 0xffff));
        else a_.mov(dst, static_cast<int32_t>(op.imm.value.s));
      } else if (special) {  // push rsp pushes the value before the push
        x86::Gp v = reg.index == kRsp ? R : x86::gpq(t);
        if (reg.index != kRsp) a_.mov(v, CtxPtr(GprOffset(reg.index), 8));
        a_.mov(dst, width == 2 ? x86::Gp(v.r16()) : v);
      } else {
        a_.mov(dst, width == 2 ? x86::Gp(x86::gpw(reg.index)) : x86::Gp(x86::gpq(reg.index)));
      }
    }, false, false, /*stack=*/true);
    a_.lea(R, x86::ptr(R, -width));
  } else {
    // The value goes to s itself.
    a_.mov(x86::gpq(s), R);
    EmitAccess(d, p, s, t, width, true, false, [this, s, width] {
      if (width == 2) a_.movzx(x86::gpd(s), x86::word_ptr(x86::gpq(s)));
      else a_.mov(x86::gpq(s), x86::qword_ptr(x86::gpq(s)));
    }, false, false, /*stack=*/true);
    a_.lea(R, x86::ptr(R, width));
  }
  stack_slot_in_ = -1;
  if (!push) {
    // pop rsp: RSP takes the value read (SDM Vol. 2 POP); a 16-bit pop
    // replaces only the low 16 bits.
    x86::Gp v = width == 2 ? x86::Gp(x86::gpw(s)) : x86::Gp(x86::gpq(s));
    if (reg.index == kRsp) {
      a_.mov(width == 2 ? x86::Gp(R.r16()) : R, v);
    } else if (special) {
      a_.mov(width == 2 ? CtxPtr(GprOffset(reg.index), 2)
                        : CtxPtr(GprOffset(reg.index), 8),
             v);
    } else {
      a_.mov(width == 2 ? x86::Gp(x86::gpw(reg.index)) : x86::Gp(x86::gpq(reg.index)), v);
    }
  }
  return true;
}

// push m64: the source is read first, at an address computed with RSP as
// before the push (SDM Vol. 2 PUSH), into a scratch register; then it is
// stored as push reg stores, and RSP moves last, so a fault in either
// access leaves the guest state as before the instruction. The source's
// access is recorded as the explicit operand's alone (a fault there is
// #SS only if that operand is SS-relative, not because of the push's own
// stack operand).
bool BlockEmitter::EmitPushMemory(const DecodedInsn& d, uint32_t flags_live) {
  const ZydisDecodedOperand& op = d.ops[0];
  Plan p;
  // The address's registers: RSP is in its host register for good, R15
  // comes into a scratch register (LoadRenamed).
  NoteAddressRegisters(op, &p);
  TakeRegisters(&p);
  RenameRsp(&p);
  if (p.rename[kR15] == -1) p.rename[kR15] = PickScratch(&p, false);
  const int s = PickScratch(&p, false), t = PickScratch(&p, false), u = PickScratch(&p, false);
  if (s < 0 || t < 0 || u < 0 || p.rename[kR15] < 0) {
    return Fail("no scratch register for " + FormatInsn(d));
  }
  SaveFlagsIfLive(flags_live != 0);
  SpillPlan(p);
  LoadRenamed(p);
  last_scratch_ = p.spilled;
  last_flags_saved_ = flags_saved_;
  const x86::Gp R = x86::gpq(p.rename[kRsp]), U = x86::gpq(u);

  DecodedInsn source = d;
  source.insn.operand_count = 1;  // the explicit operand only
  EmitEffectiveAddress(source, op, p, s, -1);
  EmitAccess(source, p, s, t, 8, true, false,
             [this, s, U] { a_.mov(U, x86::qword_ptr(x86::gpq(s))); }, false);
  x86::Mem win;
  if (WindowMem(8, &win)) {
    a_.mov(win, U);
  } else {
    a_.lea(x86::gpq(s), x86::ptr(R, -8));
    EmitAccess(d, p, s, t, 8, false, true, [this, s, U] { a_.mov(x86::qword_ptr(x86::gpq(s)), U); },
               false, false, /*stack=*/true);
  }
  a_.lea(R, x86::ptr(R, -8));
  stack_slot_in_ = -1;
  return true;
}

}  // namespace btvm
