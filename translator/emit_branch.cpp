// Control transfers end a block (DESIGN.md, Translator). This first slice
// returns to the dispatcher with the next guest RIP in CpuState; chaining
// direct branches block to block and the return-address cache come with the
// bt engine issue (#3).

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

void BlockEmitter::StoreImm64(int32_t offset, uint64_t value) {
  a_.mov(x86::dword_ptr(x86::r15, offset), static_cast<uint32_t>(value));
  a_.mov(x86::dword_ptr(x86::r15, offset + 4), static_cast<uint32_t>(value >> 32));
}

void BlockEmitter::EmitExit(uint64_t rip, BlockExit reason) {
  StoreImm64(kRipOffset, rip);
  a_.mov(x86::dword_ptr(x86::r15, offsetof(BtContext, exit_reason)),
         static_cast<uint32_t>(reason));
  a_.jmp(Imm(env_.exit_stub));
}

namespace {
// Jcc mnemonic -> AsmJit instruction (SDM Vol. 2, Jcc).
InstId JccId(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_JB: return x86::Inst::kIdJb;
    case ZYDIS_MNEMONIC_JBE: return x86::Inst::kIdJbe;
    case ZYDIS_MNEMONIC_JL: return x86::Inst::kIdJl;
    case ZYDIS_MNEMONIC_JLE: return x86::Inst::kIdJle;
    case ZYDIS_MNEMONIC_JNB: return x86::Inst::kIdJnb;
    case ZYDIS_MNEMONIC_JNBE: return x86::Inst::kIdJnbe;
    case ZYDIS_MNEMONIC_JNL: return x86::Inst::kIdJnl;
    case ZYDIS_MNEMONIC_JNLE: return x86::Inst::kIdJnle;
    case ZYDIS_MNEMONIC_JNO: return x86::Inst::kIdJno;
    case ZYDIS_MNEMONIC_JNP: return x86::Inst::kIdJnp;
    case ZYDIS_MNEMONIC_JNS: return x86::Inst::kIdJns;
    case ZYDIS_MNEMONIC_JNZ: return x86::Inst::kIdJnz;
    case ZYDIS_MNEMONIC_JO: return x86::Inst::kIdJo;
    case ZYDIS_MNEMONIC_JP: return x86::Inst::kIdJp;
    case ZYDIS_MNEMONIC_JS: return x86::Inst::kIdJs;
    case ZYDIS_MNEMONIC_JZ: return x86::Inst::kIdJz;
    case ZYDIS_MNEMONIC_LOOP: return x86::Inst::kIdLoop;
    case ZYDIS_MNEMONIC_LOOPE: return x86::Inst::kIdLoope;
    case ZYDIS_MNEMONIC_LOOPNE: return x86::Inst::kIdLoopne;
    case ZYDIS_MNEMONIC_JRCXZ: return x86::Inst::kIdJecxz;
    default: return x86::Inst::kIdNone;
  }
}
}  // namespace

bool BlockEmitter::EmitBranch(const DecodedInsn& d, uint32_t flags_live) {
  // Hidden operands (RIP, RSP of call/ret) are handled explicitly here.
  static const ZydisDecodedOperand kNone{};
  const ZydisDecodedOperand& op = d.insn.operand_count_visible > 0 ? d.ops[0] : kNone;
  bool live = flags_live != 0;
  ZydisMnemonic m = d.insn.mnemonic;
  bool relative = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative;
  uint64_t target = relative ? d.NextRip() + op.imm.value.u : 0;
  if (d.insn.operand_width != 64 && m != ZYDIS_MNEMONIC_JRCXZ && m != ZYDIS_MNEMONIC_LOOP &&
      m != ZYDIS_MNEMONIC_LOOPE && m != ZYDIS_MNEMONIC_LOOPNE && JccId(m) == x86::Inst::kIdNone) {
    return Fail("16-bit branch: " + FormatInsn(d));
  }

  if (InstId id = JccId(m); id != x86::Inst::kIdNone) {
    if (d.insn.address_width != 64 && (m == ZYDIS_MNEMONIC_LOOP || m == ZYDIS_MNEMONIC_LOOPE ||
                                       m == ZYDIS_MNEMONIC_LOOPNE || m == ZYDIS_MNEMONIC_JRCXZ)) {
      return Fail("32-bit-address loop: " + FormatInsn(d));
    }
    Label taken = a_.newLabel();
    if (m == ZYDIS_MNEMONIC_LOOP || m == ZYDIS_MNEMONIC_LOOPE || m == ZYDIS_MNEMONIC_LOOPNE ||
        m == ZYDIS_MNEMONIC_JRCXZ) {
      a_.emit(id, x86::rcx, taken);
    } else {
      a_.emit(id, taken);
    }
    EmitExit(d.NextRip(), BlockExit::kNext);
    a_.bind(taken);
    EmitExit(target, BlockExit::kNext);
    return true;
  }

  if (m == ZYDIS_MNEMONIC_JMP && relative) {
    EmitExit(target, BlockExit::kNext);
    return true;
  }

  Plan p;
  int s = -1, t = -1;
  auto setup = [&]() -> bool {
    // Registers of the target operand (visible operand only: the hidden
    // RSP of call/ret is handled here explicitly).
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef r;
      if (!DecodeGpr(op.reg.value, &r)) return Fail("odd branch operand");
      if (r.index != kRsp && r.index != kR15) p.used |= 1u << r.index;
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      for (ZydisRegister reg : {op.mem.base, op.mem.index}) {
        GprRef r;
        if (DecodeGpr(reg, &r)) {
          if (r.index == kRsp || r.index == kR15) p.rename[r.index] = -1;
          else p.used |= 1u << r.index;
        }
      }
      for (int g : {kRsp, kR15}) {
        if (p.rename[g] == -1) p.rename[g] = PickScratch(&p, false);
      }
    }
    s = PickScratch(&p, false);
    t = PickScratch(&p, false);
    if (live) SaveFlags(offsetof(BtContext, saved_flags));
    for (int h = 0; h < 16; ++h) if (p.spilled & (1u << h)) Spill(h);
    LoadRenamed(p);
    return true;
  };
  // The target of an indirect branch goes straight to CpuState.rip.
  auto load_target = [&] {
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef r;
      DecodeGpr(op.reg.value, &r);
      if (r.index == kRsp || r.index == kR15) {
        a_.mov(x86::gpq(t), x86::qword_ptr(x86::r15, GprOffset(r.index)));
        a_.mov(x86::qword_ptr(x86::r15, kRipOffset), x86::gpq(t));
      } else {
        a_.mov(x86::qword_ptr(x86::r15, kRipOffset), x86::gpq(r.index));
      }
    } else {
      EmitEffectiveAddress(d, op, p, s);
      EmitAccess(d, p, s, t, 8, true, false, live, [this, s] {
        a_.mov(x86::gpq(s), x86::qword_ptr(x86::gpq(s)));
        a_.mov(x86::qword_ptr(x86::r15, kRipOffset), x86::gpq(s));
      });
    }
  };
  auto push_return = [&] {
    uint64_t ret = d.NextRip();
    a_.mov(x86::gpq(s), x86::qword_ptr(x86::r15, GprOffset(kRsp)));
    a_.lea(x86::gpq(s), x86::ptr(x86::gpq(s), -8));
    EmitAccess(d, p, s, t, 8, false, true, live, [this, s, t, ret] {
      a_.mov(x86::gpq(t), ret);
      a_.mov(x86::qword_ptr(x86::gpq(s)), x86::gpq(t));
    });
    AdjustGuestRsp(t, -8);
  };
  auto leave = [&](bool rip_set, uint64_t rip) {
    if (live) RestoreFlags(offsetof(BtContext, saved_flags));
    ReloadSpilled(p);
    if (!rip_set) StoreImm64(kRipOffset, rip);
    a_.mov(x86::dword_ptr(x86::r15, offsetof(BtContext, exit_reason)),
           static_cast<uint32_t>(BlockExit::kNext));
    a_.jmp(Imm(env_.exit_stub));
  };

  if (m == ZYDIS_MNEMONIC_CALL) {
    if (!setup()) return false;
    if (relative) {
      push_return();
      leave(false, target);
    } else {
      load_target();
      push_return();
      leave(true, 0);
    }
    return true;
  }
  if (m == ZYDIS_MNEMONIC_JMP) {
    if (!setup()) return false;
    load_target();
    leave(true, 0);
    return true;
  }
  if (m == ZYDIS_MNEMONIC_RET) {
    uint16_t pop = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE ? op.imm.value.u : 0;
    if (!setup()) return false;
    a_.mov(x86::gpq(s), x86::qword_ptr(x86::r15, GprOffset(kRsp)));
    EmitAccess(d, p, s, t, 8, true, false, live, [this, s] {
      a_.mov(x86::gpq(s), x86::qword_ptr(x86::gpq(s)));
      a_.mov(x86::qword_ptr(x86::r15, kRipOffset), x86::gpq(s));
    });
    AdjustGuestRsp(t, 8 + pop);
    leave(true, 0);
    return true;
  }
  return Fail("unhandled branch " + FormatInsn(d));
}

}  // namespace btvm
