// Control transfers end a block (DESIGN.md, Translator). A direct branch to
// the block's own page leaves through a patchable `jmp rel32` that the
// runtime later points straight at the target block (chaining); a direct
// branch elsewhere probes the jump cache inline; indirect branches probe the
// jump cache. Calls and returns pair a host call with a host ret
// (bt_context.h). What misses returns to the runtime with the target in
// CpuState.rip.

#include "base/check.h"
#include "translator/code_cache.h"
#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

namespace {
// A 64-bit value a sign-extended imm32 store can write (user addresses
// below 2 GiB, kernel addresses in the top 2 GiB).
bool FitsImm32(uint64_t v) {
  return static_cast<int64_t>(v) == static_cast<int32_t>(v);
}

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
    case ZYDIS_MNEMONIC_JRCXZ:
    case ZYDIS_MNEMONIC_JECXZ: return x86::Inst::kIdJecxz;
    default: return x86::Inst::kIdNone;
  }
}
}  // namespace

void BlockEmitter::StoreImm64(int32_t offset, uint64_t value) {
  a_.mov(CtxPtr(offset, 4), static_cast<uint32_t>(value));
  a_.mov(CtxPtr(offset + 4, 4), static_cast<uint32_t>(value >> 32));
}

void BlockEmitter::EmitExit(uint64_t rip, BlockExit reason) {
  if (reason == BlockExit::kNext) {
    EmitCompactExit(env_.exit_next, rip);
    return;
  }
  StoreImm64(kRipOffset, rip);
  a_.mov(CtxPtr(offsetof(BtContext, exit_reason), 4),
         static_cast<uint32_t>(reason));
  a_.jmp(Imm(env_.exit_stub));
}

void BlockEmitter::EmitCompactExit(uint64_t stub, uint64_t rip) {
  a_.call(Imm(stub));
  a_.embedUInt64(rip);
}

namespace {
int32_t JumpCacheOffset(unsigned mmu_index, uint64_t rip) {
  return static_cast<int32_t>(offsetof(BtContext, jump_cache) +
                              (mmu_index * kJumpCacheEntries + JumpCacheIndex(rip)) *
                                  sizeof(JumpCacheEntry));
}
}  // namespace

void BlockEmitter::EmitJumpTo(uint64_t target, InstId jcc, uint32_t target_flags,
                             bool checked) {
  if (env_.single || ((target ^ env_.block_rip) >> 12) != 0) {
    // Not chainable: the runtime, or an inline jump-cache probe, which
    // know no variants.
    BTVM_CHECK(target_flags == 0);
    Label go = a_.newLabel();
    if (jcc != x86::Inst::kIdNone) {
      a_.emit(jcc, go);
      out_of_line_.push_back([this, go, target] {
        a_.bind(go);
        EmitJumpTo(target);
      });
      return;
    }
    // Compatibility-mode blocks stay out of the jump cache (keyed by RIP
    // alone, it would mix them up with 64-bit blocks at the same RIP).
    if (env_.single || env_.compat) {
      EmitExit(target, BlockExit::kNext);
    } else {
      EmitLookupConst(target);
    }
    return;
  }
  ExitLabels x{a_.newLabel(), a_.newLabel(), target, target_flags,
               !checked && target > insn_rip_};
  uint32_t index = static_cast<uint32_t>(exits_.size());
  exits_.push_back(x);
  a_.bind(x.jmp);
  // Patchable: a 5-byte jmp rel32 or a 6-byte jcc rel32 (code_cache.cpp).
  if (jcc != x86::Inst::kIdNone) {
    a_.long_().emit(jcc, x.stub);
  } else {
    a_.long_().jmp(x.stub);
  }
  (void)index;
  out_of_line_.push_back([this, x] {
    a_.bind(x.stub);
    EmitCompactExit(env_.exit_chain, x.target);
  });
}

// The jump-cache slot of a constant target is known now. The probe keeps
// flags intact: rcx = slot.rip - target by lea, tested by jrcxz.
void BlockEmitter::EmitLookupConst(uint64_t target) {
  int64_t neg = -static_cast<int64_t>(target);
  if (neg < INT32_MIN || neg > INT32_MAX) {
    EmitExit(target, BlockExit::kNext);
    return;
  }
  int32_t slot = JumpCacheOffset(env_.mmu_index, target);
  Label hit = a_.newLabel(), miss = a_.newLabel();
  a_.mov(CtxPtr(offsetof(BtContext, rcx_save), 8), x86::rcx);
  a_.mov(x86::rcx, CtxPtr(slot, 8));
  a_.lea(x86::rcx, x86::ptr(x86::rcx, static_cast<int32_t>(neg)));
  a_.jecxz(x86::rcx, hit);
  a_.mov(x86::rcx, CtxPtr(offsetof(BtContext, rcx_save), 8));
  a_.jmp(miss);
  a_.bind(hit);
  a_.mov(x86::rcx, CtxPtr(offsetof(BtContext, rcx_save), 8));
  a_.jmp(CtxPtr(slot + 8, 8));
  out_of_line_.push_back([this, miss, target] {
    a_.bind(miss);
    EmitExit(target, BlockExit::kNext);
  });
}

void BlockEmitter::EnterLoop(uint16_t regs, bool flags_live) {
  for (int h = 0; h < 16; ++h) {
    if (regs & (1u << h)) Spill(h);
  }
  borrowed_ = loop_regs_ = regs;
  for (const LoopPage& lp : loop_pages_) EmitEmptyLoopPage(lp.nt, lp.hb);
  loop_head_ = a_.newLabel();
  a_.bind(loop_head_);
  EmitEntryCheck(flags_live);
  EmitCountExecution();
}

void BlockEmitter::EmitCountExecution() {
  if (!env_.count_hits || !env_.block) return;
  // RAX and RCX (guest values or a loop's scratch) through the context's
  // save slots, free between instructions, and lea, which leaves the
  // flags alone.
  a_.mov(CtxPtr(offsetof(BtContext, rax_save), 8), x86::rax);
  a_.mov(CtxPtr(offsetof(BtContext, rcx_save), 8), x86::rcx);
  a_.mov(x86::rcx, reinterpret_cast<uint64_t>(&env_.block->executions));
  a_.mov(x86::rax, x86::qword_ptr(x86::rcx));
  a_.lea(x86::rax, x86::qword_ptr(x86::rax, 1));
  a_.mov(x86::qword_ptr(x86::rcx), x86::rax);
  a_.mov(x86::rcx, CtxPtr(offsetof(BtContext, rcx_save), 8));
  a_.mov(x86::rax, CtxPtr(offsetof(BtContext, rax_save), 8));
}

void BlockEmitter::EmitBackEdge(InstId jcc) {
  uint16_t store = loop_regs_ & ~borrowed_, reload = borrowed_ & ~loop_regs_;
  std::vector<LoopPage> pages;  // pairs given back in the body: empty again
  for (const LoopPage& lp : loop_pages_) {
    if (store & lp.regs()) pages.push_back(lp);
  }
  auto fix = [this, store, reload, pages] {
    for (int h = 0; h < 16; ++h) {
      if (store & (1u << h)) Spill(h);
      if (reload & (1u << h)) Reload(h);
    }
    for (const LoopPage& lp : pages) EmitEmptyLoopPage(lp.nt, lp.hb);
    a_.jmp(loop_head_);
  };
  if (!store && !reload) {
    if (jcc == x86::Inst::kIdNone) a_.jmp(loop_head_);
    else a_.emit(jcc, loop_head_);
  } else if (jcc == x86::Inst::kIdNone) {
    fix();
  } else {
    Label stub = a_.newLabel();
    a_.emit(jcc, stub);
    out_of_line_.push_back([this, stub, fix] {
      a_.bind(stub);
      fix();
    });
  }
}

void BlockEmitter::EmitEntryCheck(bool flags_live) {
  Label out = a_.newLabel();
  int32_t req = offsetof(BtContext, exit_request);
  if (flags_live) {
    Label go = a_.newLabel();
    a_.mov(CtxPtr(offsetof(BtContext, rcx_save), 8), x86::rcx);
    a_.movzx(x86::ecx, CtxPtr(req, 1));
    a_.jecxz(x86::rcx, go);
    a_.mov(x86::rcx, CtxPtr(offsetof(BtContext, rcx_save), 8));
    a_.jmp(out);
    a_.bind(go);
    a_.mov(x86::rcx, CtxPtr(offsetof(BtContext, rcx_save), 8));
  } else {
    a_.cmp(CtxPtr(req, 1), 0);
    a_.jne(out);
  }
  uint64_t rip = env_.block_rip;
  uint16_t taken = loop_regs_;
  out_of_line_.push_back([this, out, rip, taken] {
    a_.bind(out);
    RestoreBoundary(false, taken);
    EmitExit(rip, BlockExit::kNext);
  });
}

void BlockEmitter::EmitIndirectJump(const Plan& p, int s, int t, bool flags_saved) {
  x86::Gp S = x86::gpq(s), T = x86::gpq(t);
  Label miss = a_.newLabel();
  if (env_.single) {
    a_.jmp(miss);
  } else {
    int32_t jc = static_cast<int32_t>(offsetof(BtContext, jump_cache) +
                                      env_.mmu_index * kJumpCacheEntries * sizeof(JumpCacheEntry));
    EmitJumpCacheSlot(a_, S, T);
    a_.cmp(S, CtxPtr(T, 0, jc, 8));
    a_.jne(miss);
    a_.mov(S, CtxPtr(T, 0, jc + 8, 8));
    a_.mov(CtxPtr(offsetof(BtContext, jump_target), 8), S);
    if (flags_saved) RestoreArith(offsetof(BtContext, saved_flags));
    ReloadSpilled(p);
    a_.jmp(CtxPtr(offsetof(BtContext, jump_target), 8));
  }
  a_.bind(miss);
  EmitRuntimeExit(p, s, flags_saved);  // s still holds the target
}

void BlockEmitter::EmitRuntimeExit(const Plan& p, int s, bool flags_saved) {
  a_.mov(CtxPtr(kRipOffset, 8), x86::gpq(s));
  if (flags_saved) RestoreArith(offsetof(BtContext, saved_flags));
  ReloadSpilled(p);
  a_.mov(CtxPtr(offsetof(BtContext, exit_reason), 4),
         static_cast<uint32_t>(BlockExit::kNext));
  a_.jmp(Imm(env_.exit_stub));
}


// A call's continuation, reached by a host ret with RCX = the guest return
// RIP, guest RCX in CpuState and guest flags in saved_flags: if RCX is
// this call's return address, the guest state is put back and the block
// after the call follows; else the ret-miss stub looks the target up.
void BlockEmitter::EmitContinuation(uint64_t ret) {
  if (FitsImm32(ret)) {
    a_.cmp(x86::rcx, static_cast<int32_t>(ret));
  } else {
    a_.mov(CtxPtr(offsetof(BtContext, rax_save), 8), x86::rax);
    a_.mov(x86::rax, ret);
    a_.cmp(x86::rcx, x86::rax);
    a_.mov(x86::rax, CtxPtr(offsetof(BtContext, rax_save), 8));
  }
  a_.jne(Imm(env_.ret_miss));
  Reload(kRcx);
  if (!env_.flags_live_at || env_.flags_live_at(ret) != 0) {
    RestoreArith(offsetof(BtContext, saved_flags));
  }
  EmitJumpTo(ret);
}

// `flags_live`: flags live before the branch; for a call that is what its
// callee reads (block_builder.cpp), for indirect branches all of them.
bool BlockEmitter::EmitBranch(const DecodedInsn& d, uint32_t flags_live) {
  // Hidden operands (RIP, RSP of call/ret) are handled explicitly here.
  static const ZydisDecodedOperand kNone{};
  const ZydisDecodedOperand& op = d.insn.operand_count_visible > 0 ? d.ops[0] : kNone;
  ZydisMnemonic m = d.insn.mnemonic;
  bool relative = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative;
  uint64_t target = relative ? d.NextRip() + op.imm.value.u : 0;
  if (env_.compat) {
    // EIP wraps at 4 GiB; jcc, loop, jecxz and jmp rel are the same
    // sequences as in 64-bit mode (ECX: 32-bit addressing), the rest
    // moves the 32-bit stack (emit_compat.cpp).
    target &= 0xffffffff;
    if (JccId(m) == x86::Inst::kIdNone && !(m == ZYDIS_MNEMONIC_JMP && relative)) {
      return EmitCompatBranch(d, flags_live, target);
    }
  } else if (d.insn.operand_width != 64 && JccId(m) == x86::Inst::kIdNone) {
    return Fail("16-bit branch: " + FormatInsn(d));
  }

  bool plain_jcc = JccId(m) != x86::Inst::kIdNone && !IsRcxBranch(m);
  if ((plain_jcc || (m == ZYDIS_MNEMONIC_JMP && relative)) && target == env_.block_rip &&
      !env_.single) {
    RestoreSavedFlags();
    back_edge_borrowed_ = borrowed_;
    if (loop_regs_) {
      EmitBackEdge(plain_jcc ? JccId(m) : x86::Inst::kIdNone);
      if (plain_jcc) {
        Materialize();
        EmitJumpTo(d.NextRip());
      }
      return true;
    }
  }

  if (InstId id = JccId(m); id != x86::Inst::kIdNone) {
    Materialize();
    if (!plain_jcc) {  // loop, loope, loopne, jrcxz, jecxz
      // rel8 only: hop over a near jump to the taken side.
      Label not_taken = a_.newLabel(), hop = a_.newLabel();
      // 32-bit addressing counts in ECX (the 0x67 prefix).
      bool ecx = d.insn.address_width == 32;
      a_.emit(id, ecx ? x86::Gp(x86::ecx) : x86::Gp(x86::rcx), hop);
      a_.jmp(not_taken);
      a_.bind(hop);
      EmitJumpTo(target);
      a_.bind(not_taken);
    } else {
      EmitJumpTo(target, id);  // the jcc itself is the patchable exit
    }
    EmitJumpTo(d.NextRip());
    return true;
  }

  if (m == ZYDIS_MNEMONIC_JMP && relative) {
    Materialize();
    EmitJumpTo(target);
    return true;
  }

  Plan p;
  int s = -1, t = -1;
  bool save = false;
  auto setup = [&]() -> bool {
    // Registers of the target operand (visible operand only: the hidden
    // RSP of call/ret is handled here explicitly).
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef r;
      if (!DecodeGpr(op.reg.value, &r)) return Fail("odd branch operand");
      if (r.index != kRsp && r.index != kR15) p.used |= 1u << r.index;
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      NoteAddressRegisters(op, &p);
    }
    TakeRegisters(&p);
    // call and ret use RSP themselves.
    if (p.rename[kRsp] == -1 || m != ZYDIS_MNEMONIC_JMP) RenameRsp(&p);
    if (p.rename[kR15] == -1) p.rename[kR15] = PickScratch(&p, false);
    s = PickScratch(&p, false);
    // A second scratch register: the jump cache's index, an indirect
    // target's slot, a return address that is no imm32, or guest R15.
    // Outside single-instruction blocks a ret and a call to a constant
    // target with an imm32 return address need none (their stack accesses
    // probe the soft TLB's stack copy).
    const bool lean = !env_.single && (m == ZYDIS_MNEMONIC_RET ||
                                       (m == ZYDIS_MNEMONIC_CALL && relative &&
                                        FitsImm32(d.NextRip())));
    t = lean ? -1 : PickScratch(&p, false);
    if (t >= 0) p.used |= 1u << t;
    // The probes clobber flags. Every exit below restores them and reloads
    // p.spilled (which includes scratch taken by earlier instructions).
    // A ret leaves the guest flags in saved_flags whatever the liveness
    // says: its continuation restores them if the code after the call
    // reads them.
    save = SaveFlagsIfLive(flags_live != 0 || m == ZYDIS_MNEMONIC_RET);
    SpillPlan(p);
    LoadRenamed(p);
    // For the host-fault handler: a stack access through the stack copy.
    last_scratch_ = p.spilled;
    last_flags_saved_ = save;
    return true;
  };
  // The target of an indirect branch goes to the jump_target slot.
  auto load_target = [&] {
    int32_t slot = offsetof(BtContext, jump_target);
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef r;
      DecodeGpr(op.reg.value, &r);
      if (r.index == kRsp) {
        a_.mov(CtxPtr(slot, 8), x86::gpq(kGuestRspHost));
      } else if (r.index == kR15) {
        a_.mov(x86::gpq(t), CtxPtr(GprOffset(r.index), 8));
        a_.mov(CtxPtr(slot, 8), x86::gpq(t));
      } else {
        a_.mov(CtxPtr(slot, 8), x86::gpq(r.index));
      }
    } else {
      EmitEffectiveAddress(d, op, p, s);
      EmitAccess(
          d, p, s, t, 8, true, false,
          [this, s, slot] {
            a_.mov(x86::gpq(s), x86::qword_ptr(x86::gpq(s)));
            a_.mov(CtxPtr(slot, 8), x86::gpq(s));
          },
          false);
    }
  };
  // Pushes the return address.
  auto push_return = [&] {
    uint64_t ret = d.NextRip();
    auto store = [this, s, t, ret](x86::Mem slot) {
      if (FitsImm32(ret)) {
        a_.mov(slot, static_cast<int32_t>(ret));
      } else {
        a_.mov(x86::gpq(t), ret);
        a_.mov(slot, x86::gpq(t));
      }
    };
    x86::Mem win;
    if (WindowMem(8, &win)) {
      store(win);
    } else {
      a_.lea(x86::gpq(s), x86::ptr(x86::gpq(p.rename[kRsp]), -8));
      EmitAccess(
          d, p, s, t, 8, false, true, [store, s] { store(x86::qword_ptr(x86::gpq(s))); }, false,
          false, /*stack=*/true);
    }
    // Flags here are saved (restored before leaving) or dead.
    x86::Gp R = x86::gpq(p.rename[kRsp]);
    a_.lea(R, x86::ptr(R, -8));
  };
  if (m == ZYDIS_MNEMONIC_CALL) {
    if (!setup()) return false;
    if (!relative) load_target();
    push_return();
    // The way to the callee: a jump to it, with the spilled registers
    // reloaded and the flags restored.
    auto to_callee = [this, p, s, t, save, relative, target] {
      if (relative) {
        if (save) RestoreArith(offsetof(BtContext, saved_flags));
        ReloadSpilled(p);
        EmitJumpTo(target, x86::Inst::kIdNone, 0, /*checked=*/true);  // calls close loops
      } else {
        a_.mov(x86::gpq(s), CtxPtr(offsetof(BtContext, jump_target), 8));
        EmitIndirectJump(p, s, t, save);
      }
    };
    if (env_.single) {
      to_callee();
      return true;
    }
    // A host call to that jump leaves the continuation's address on the
    // host stack, where the guest's ret finds it with a host ret: a return
    // the host CPU predicts (bt_context.h). Deep below the entry RSP the
    // callee is jumped to instead, and its return misses.
    Label callee = a_.newLabel();
    a_.cmp(x86::rsp, CtxPtr(offsetof(BtContext, shadow_floor), 8));
    a_.jb(callee);
    a_.call(callee);
    EmitContinuation(d.NextRip());
    out_of_line_.push_back([this, callee, to_callee] {
      a_.bind(callee);
      to_callee();
    });
    return true;
  }
  if (m == ZYDIS_MNEMONIC_JMP) {
    if (!setup()) return false;
    load_target();
    a_.mov(x86::gpq(s), CtxPtr(offsetof(BtContext, jump_target), 8));
    EmitIndirectJump(p, s, t, save);
    return true;
  }
  if (m == ZYDIS_MNEMONIC_RET) {
    uint16_t pop = op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE ? op.imm.value.u : 0;
    if (!setup()) return false;
    x86::Mem win;
    if (WindowMem(8, &win)) {
      a_.mov(x86::gpq(s), win);
    } else {
      a_.mov(x86::gpq(s), x86::gpq(p.rename[kRsp]));
      EmitAccess(
          d, p, s, t, 8, true, false,
          [this, s] { a_.mov(x86::gpq(s), x86::qword_ptr(x86::gpq(s))); }, false, false,
          /*stack=*/true);
    }
    x86::Gp R = x86::gpq(p.rename[kRsp]);
    a_.lea(R, x86::ptr(R, 8 + pop));
    if (env_.single) {
      EmitIndirectJump(p, s, t, save);
      return true;
    }
    // A host ret to the continuation of the call that pushed it, or to the
    // entry sentinel (code_cache.cpp), with the continuation's contract:
    // RCX = the guest return RIP, guest RCX parked in CpuState, every
    // other guest register in place, guest flags in saved_flags.
    if (!(p.spilled & (1u << kRcx))) Spill(kRcx);
    if (s != kRcx) a_.mov(x86::rcx, x86::gpq(s));
    for (int h = 0; h < 16; ++h) {
      if (h != kRcx && (p.spilled & (1u << h))) Reload(h);
    }
    a_.ret();
    return true;
  }
  return Fail("unhandled branch " + FormatInsn(d));
}

}  // namespace btvm
