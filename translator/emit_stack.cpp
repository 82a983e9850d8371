// Explicit stack sequences (DESIGN.md, Translator): guest RSP is not host
// RSP (host RSP is the monitor's stack, used for helper calls), so push,
// pop and leave become loads and stores through the soft TLB at the guest
// RSP kept in CpuState. RSP changes only after the access succeeded, so a
// #PF on the stack leaves the guest state as before the instruction.

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

void BlockEmitter::AdjustGuestRsp(int tmp, int32_t delta) {
  a_.mov(x86::gpq(tmp), x86::qword_ptr(x86::r15, GprOffset(kRsp)));
  a_.lea(x86::gpq(tmp), x86::ptr(x86::gpq(tmp), delta));
  a_.mov(x86::qword_ptr(x86::r15, GprOffset(kRsp)), x86::gpq(tmp));
}

bool BlockEmitter::EmitStack(const DecodedInsn& d, uint32_t flags_live) {
  Plan p;
  bool live = flags_live != 0;
  const ZydisDecodedOperand& op = d.ops[0];
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_LEAVE) {
    if (d.insn.operand_width != 64) return Fail("16-bit leave");
    p.used |= 1u << kRbp;
    int s = PickScratch(&p, false), t = PickScratch(&p, false);
    if (live) SaveArith(offsetof(BtContext, saved_flags));
    Spill(s);
    Spill(t);
    a_.mov(x86::gpq(s), x86::rbp);
    EmitAccess(d, p, s, t, 8, true, false, live,
               [this, s, t] { a_.mov(x86::gpq(t), x86::qword_ptr(x86::gpq(s))); });
    a_.lea(x86::gpq(s), x86::ptr(x86::rbp, 8));
    a_.mov(x86::qword_ptr(x86::r15, GprOffset(kRsp)), x86::gpq(s));
    a_.mov(x86::rbp, x86::gpq(t));
    ReloadSpilled(p);
    return true;
  }

  if (d.insn.operand_width != 64) return Fail("16-bit push/pop: " + FormatInsn(d));
  GprRef reg;
  bool is_reg = op.type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(op.reg.value, &reg);
  bool is_imm = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE;
  if (!is_reg && !is_imm) return Fail("push/pop of memory: " + FormatInsn(d));
  bool special = is_reg && (reg.index == kRsp || reg.index == kR15);
  if (is_reg && !special) p.used |= 1u << reg.index;
  int s = PickScratch(&p, false), t = PickScratch(&p, false);
  if (live) SaveArith(offsetof(BtContext, saved_flags));
  Spill(s);
  Spill(t);
  a_.mov(x86::gpq(s), x86::qword_ptr(x86::r15, GprOffset(kRsp)));

  if (d.insn.mnemonic == ZYDIS_MNEMONIC_PUSH) {
    a_.lea(x86::gpq(s), x86::ptr(x86::gpq(s), -8));
    EmitAccess(d, p, s, t, 8, false, true, live, [this, s, t, is_imm, special, reg, op] {
      x86::Mem dst = x86::qword_ptr(x86::gpq(s));
      if (is_imm) {
        a_.mov(dst, static_cast<int32_t>(op.imm.value.s));
      } else if (special) {  // push rsp pushes the value before the push
        a_.mov(x86::gpq(t), x86::qword_ptr(x86::r15, GprOffset(reg.index)));
        a_.mov(dst, x86::gpq(t));
      } else {
        a_.mov(dst, x86::gpq(reg.index));
      }
    });
    AdjustGuestRsp(t, -8);
  } else {  // POP
    if (!is_reg) return Fail("pop to non-register");
    EmitAccess(d, p, s, t, 8, true, false, live,
               [this, s, t] { a_.mov(x86::gpq(t), x86::qword_ptr(x86::gpq(s))); });
    AdjustGuestRsp(s, 8);
    if (special) {  // pop rsp: RSP takes the value read (SDM Vol. 2 POP)
      a_.mov(x86::qword_ptr(x86::r15, GprOffset(reg.index)), x86::gpq(t));
    } else {
      a_.mov(x86::gpq(reg.index), x86::gpq(t));
    }
  }
  ReloadSpilled(p);
  return true;
}

}  // namespace btvm
