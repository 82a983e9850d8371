// Compatibility mode (IA-32e mode with a 32-bit code segment, CS.L = 0,
// CS.D = 1; SDM Vol. 3 §5.2.1, Vol. 1 §3.4.1.1): what differs from 64-bit
// code once the block was decoded as 32-bit code.
//
// - Ordinary instructions run as their 64-bit form (emit_ident.cpp
//   re-encodes every one: the same bytes mean other things there).
// - Memory operands: the effective address wraps at 4 GiB and the base of
//   the operand's segment register (DS, ES, SS, CS, FS or GS, as CpuState
//   holds it) is added, the linear address wrapping at 4 GiB too (legacy
//   segmentation, as QEMU computes it). Segment limits, null selectors and
//   access rights are not checked on data accesses: the segments guests
//   use in compatibility mode are flat (documented in DESIGN.md).
// - The stack is 32-bit: push/pop/call/ret move ESP, which wraps at 4 GiB
//   and is written zero-extended, in 4-byte slots (2 with the operand-size
//   prefix for push/pop) at SS.base + ESP.
// - EIP is 32 bits: near branch targets wrap (emit_branch.cpp masks them).
//   Indirect branches and returns leave for the runtime: the jump cache
//   is keyed by RIP alone and holds 64-bit blocks, so compatibility-mode
//   blocks stay out of it, and their calls make no host call (direct
//   branches within a page still chain).

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

// Flags are saved (or dead) where addresses are computed, so add may
// clobber them.
void BlockEmitter::AddCompatSegmentBase(ZydisRegister segment, int s) {
  a_.add(x86::gpq(s), CtxPtr(SegBaseOffset(SegmentIndexOf(segment)), 8));
  a_.mov(x86::gpd(s), x86::gpd(s));
}

void BlockEmitter::CompatStackAddress(int s, int32_t delta) {
  a_.mov(x86::gpd(s), x86::gpd(kGuestRspHost));
  if (delta) a_.lea(x86::gpd(s), x86::ptr(x86::gpq(s), delta));
  AddCompatSegmentBase(ZYDIS_REGISTER_SS, s);
}

void BlockEmitter::AdjustGuestEsp(int32_t delta) {
  a_.lea(x86::gpd(kGuestRspHost), x86::ptr(x86::gpq(kGuestRspHost), delta));
}

// push r32/r16, push imm, pop r32/r16, leave (SDM Vol. 2 PUSH, POP, LEAVE
// with a 32-bit stack-address size). ESP changes only after the access
// succeeded, as in emit_stack.cpp.
bool BlockEmitter::EmitCompatStack(const DecodedInsn& d, uint32_t flags_live) {
  Plan p;
  const bool live = flags_live != 0;
  const ZydisDecodedOperand& op = d.ops[0];
  const int width = d.insn.operand_width / 8;
  if (width != 4 && width != 2) return Fail("push/pop of this size: " + FormatInsn(d));
  // One instruction at a time: from and back to the block-boundary state
  // (emitter.h), guest ESP in its host register (kGuestRspHost).
  Materialize();

  if (d.insn.mnemonic == ZYDIS_MNEMONIC_LEAVE) {
    // ESP = EBP, then EBP (BP with 66h) is popped.
    p.used |= 1u << kRbp;
    int s = PickScratch(&p, false), t = PickScratch(&p, false);
    SaveFlagsIfLive(live);
    SpillPlan(p);
    a_.mov(x86::gpd(s), x86::ebp);
    AddCompatSegmentBase(ZYDIS_REGISTER_SS, s);
    EmitAccess(d, p, s, t, width, true, false, [this, s, t, width] {
      if (width == 2) a_.movzx(x86::gpd(t), x86::word_ptr(x86::gpq(s)));
      else a_.mov(x86::gpd(t), x86::dword_ptr(x86::gpq(s)));
    }, true);
    a_.lea(x86::gpd(kGuestRspHost), x86::ptr(x86::rbp, width));
    if (width == 2) a_.mov(x86::bp, x86::gpw(t));
    else a_.mov(x86::rbp, x86::gpq(t));
    Materialize();
    return true;
  }

  GprRef reg;
  const bool is_reg = op.type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(op.reg.value, &reg);
  const bool is_imm = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE;
  if (!is_reg && !is_imm) return Fail("push/pop of this operand: " + FormatInsn(d));
  // Only EAX..EDI exist here; ESP lives in kGuestRspHost.
  const bool esp = is_reg && reg.index == kRsp;
  if (is_reg && !esp) p.used |= 1u << reg.index;
  int s = PickScratch(&p, false), t = PickScratch(&p, false);
  SaveFlagsIfLive(live);
  SpillPlan(p);

  if (d.insn.mnemonic == ZYDIS_MNEMONIC_PUSH) {
    CompatStackAddress(s, -width);
    EmitAccess(d, p, s, t, width, false, true, [this, s, t, is_imm, esp, reg, op, width] {
      x86::Mem dst = x86::ptr(x86::gpq(s), 0, width);
      if (is_imm) {
        if (width == 2) a_.mov(dst, static_cast<int32_t>(op.imm.value.s & 0xffff));
        else a_.mov(dst, static_cast<int32_t>(op.imm.value.s));
      } else if (esp) {  // push esp pushes the value before the push
        a_.mov(x86::gpd(t), x86::gpd(kGuestRspHost));
        a_.mov(dst, width == 2 ? x86::Gp(x86::gpw(t)) : x86::Gp(x86::gpd(t)));
      } else {
        a_.mov(dst, width == 2 ? x86::Gp(x86::gpw(reg.index)) : x86::Gp(x86::gpd(reg.index)));
      }
    }, true);
    AdjustGuestEsp(-width);
  } else {  // POP
    if (!is_reg) return Fail("pop to non-register");
    CompatStackAddress(s, 0);
    EmitAccess(d, p, s, t, width, true, false, [this, s, t, width] {
      if (width == 2) a_.movzx(x86::gpd(t), x86::word_ptr(x86::gpq(s)));
      else a_.mov(x86::gpd(t), x86::dword_ptr(x86::gpq(s)));
    }, true);
    AdjustGuestEsp(width);
    // pop esp: ESP takes the value read; a 16-bit pop replaces the low 16 bits.
    if (esp) {
      if (width == 2) a_.mov(x86::gpw(kGuestRspHost), x86::gpw(t));
      else a_.mov(x86::gpq(kGuestRspHost), x86::gpq(t));
    } else if (width == 2) {
      a_.mov(x86::gpw(reg.index), x86::gpw(t));
    } else {
      a_.mov(x86::gpq(reg.index), x86::gpq(t));  // zero-extended by the 32-bit load
    }
  }
  Materialize();
  return true;
}

// call rel32, call r/m32, jmp r/m32, ret, ret imm16 (SDM Vol. 2 CALL, JMP,
// RET: near, 32-bit operand size). `target` is the wrapped relative target.
bool BlockEmitter::EmitCompatBranch(const DecodedInsn& d, uint32_t flags_live, uint64_t target) {
  static const ZydisDecodedOperand kNone{};
  const ZydisDecodedOperand& op = d.insn.operand_count_visible > 0 ? d.ops[0] : kNone;
  const ZydisMnemonic m = d.insn.mnemonic;
  const bool relative = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative;
  if (d.insn.operand_width != 32) return Fail("near branch of this size: " + FormatInsn(d));
  if (m != ZYDIS_MNEMONIC_CALL && m != ZYDIS_MNEMONIC_JMP && m != ZYDIS_MNEMONIC_RET) {
    return Fail("unhandled branch " + FormatInsn(d));
  }

  Materialize();
  Plan p;
  const bool save = flags_live != 0;
  // Registers of the target operand; guest ESP is in kGuestRspHost.
  if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
    GprRef r;
    if (!DecodeGpr(op.reg.value, &r)) return Fail("odd branch operand");
    if (r.index != kRsp) p.used |= 1u << r.index;
  } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
    for (ZydisRegister reg : {op.mem.base, op.mem.index}) {
      GprRef r;
      if (!DecodeGpr(reg, &r)) continue;
      if (r.index == kRsp) p.rename[kRsp] = -1;
      else p.used |= 1u << r.index;
    }
    if (p.rename[kRsp] == -1) RenameRsp(&p);
  }
  const int s = PickScratch(&p, false), t = PickScratch(&p, false);
  SaveFlagsIfLive(save);
  SpillPlan(p);
  LoadRenamed(p);
  const int32_t slot = offsetof(BtContext, jump_target);

  // The target of an indirect branch, zero-extended, to jump_target.
  if (!relative && m != ZYDIS_MNEMONIC_RET) {
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef r;
      DecodeGpr(op.reg.value, &r);
      if (r.index == kRsp) {
        a_.mov(x86::gpd(t), x86::gpd(kGuestRspHost));
      } else {
        a_.mov(x86::gpd(t), x86::gpd(r.index));
      }
      a_.mov(CtxPtr(slot, 8), x86::gpq(t));
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      EmitEffectiveAddress(d, op, p, s);
      EmitAccess(
          d, p, s, t, 4, true, false,
          [this, s, slot] {
            a_.mov(x86::gpd(s), x86::dword_ptr(x86::gpq(s)));
            a_.mov(CtxPtr(slot, 8), x86::gpq(s));
          },
          false);
    } else {
      return Fail("odd branch operand in " + FormatInsn(d));
    }
  }

  if (m == ZYDIS_MNEMONIC_CALL) {
    const uint32_t ret = static_cast<uint32_t>(d.NextRip());
    CompatStackAddress(s, -4);
    EmitAccess(
        d, p, s, t, 4, false, true,
        [this, s, ret] { a_.mov(x86::dword_ptr(x86::gpq(s)), static_cast<int32_t>(ret)); },
        false);
    AdjustGuestEsp(-4);
    if (relative) {
      if (save) RestoreArith(offsetof(BtContext, saved_flags));
      ReloadSpilled(p);
      EmitJumpTo(target, x86::Inst::kIdNone, 0, /*checked=*/true);  // calls close loops
      return true;
    }
    a_.mov(x86::gpq(s), CtxPtr(slot, 8));
    EmitRuntimeExit(p, s, save);
    return true;
  }
  if (m == ZYDIS_MNEMONIC_JMP) {
    a_.mov(x86::gpq(s), CtxPtr(slot, 8));
    EmitRuntimeExit(p, s, save);
    return true;
  }
  // RET: pop EIP, then release imm16 bytes.
  const int32_t release = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE
                              ? static_cast<int32_t>(op.imm.value.u & 0xffff)
                              : 0;
  CompatStackAddress(s, 0);
  EmitAccess(
      d, p, s, t, 4, true, false,
      [this, s] { a_.mov(x86::gpd(s), x86::dword_ptr(x86::gpq(s))); }, false);
  AdjustGuestEsp(4 + release);
  EmitRuntimeExit(p, s, save);
  return true;
}

}  // namespace btvm
