#include "translator/block_builder.h"

#include <asmjit/x86.h>

#include <algorithm>

#include "translator/emitter.h"

namespace btvm {

namespace {

constexpr uint32_t kArithFlags = ZYDIS_CPUFLAG_CF | ZYDIS_CPUFLAG_PF | ZYDIS_CPUFLAG_AF |
                                 ZYDIS_CPUFLAG_ZF | ZYDIS_CPUFLAG_SF | ZYDIS_CPUFLAG_OF;

uint32_t FlagsRead(const DecodedInsn& d) {
  // pushf stores every flag, syscall copies them to R11.
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHFQ || d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHF ||
      d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHFD || d.insn.mnemonic == ZYDIS_MNEMONIC_SYSCALL) {
    return kArithFlags;
  }
  return d.insn.cpu_flags ? (d.insn.cpu_flags->tested & kArithFlags) : 0;
}
// Shifts and rotates whose masked count is 0 leave every flag alone (SDM
// Vol. 2 SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR, SHLD/SHRD), so they may only
// count as writing flags when the count is an immediate known not to be 0.
bool MayLeaveFlags(const DecodedInsn& d) {
  switch (d.insn.mnemonic) {
    case ZYDIS_MNEMONIC_SHL: case ZYDIS_MNEMONIC_SHR: case ZYDIS_MNEMONIC_SAR:
    case ZYDIS_MNEMONIC_ROL: case ZYDIS_MNEMONIC_ROR: case ZYDIS_MNEMONIC_RCL:
    case ZYDIS_MNEMONIC_RCR: case ZYDIS_MNEMONIC_SHLD: case ZYDIS_MNEMONIC_SHRD:
      break;
    default:
      return false;
  }
  const ZydisDecodedOperand* count = nullptr;
  for (unsigned i = 1; i < d.insn.operand_count_visible; ++i) count = &d.ops[i];
  if (!count || count->type != ZYDIS_OPERAND_TYPE_IMMEDIATE) return true;  // CL (or implicit 1)
  unsigned bits = d.insn.operand_width;
  uint64_t masked = count->imm.value.u & (bits == 64 ? 63 : 31);
  if (masked == 0) return true;
  // 8/16-bit rcl/rcr rotate through CF by count mod 9/17.
  bool rc = d.insn.mnemonic == ZYDIS_MNEMONIC_RCL || d.insn.mnemonic == ZYDIS_MNEMONIC_RCR;
  return rc && bits < 32 && masked % (bits + 1) == 0;
}

uint32_t FlagsWritten(const DecodedInsn& d) {
  if (!d.insn.cpu_flags || MayLeaveFlags(d)) return 0;
  const auto* f = d.insn.cpu_flags;
  return (f->modified | f->set_0 | f->set_1 | f->undefined) & kArithFlags;
}

bool IsJcc(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_JB: case ZYDIS_MNEMONIC_JBE: case ZYDIS_MNEMONIC_JL:
    case ZYDIS_MNEMONIC_JLE: case ZYDIS_MNEMONIC_JNB: case ZYDIS_MNEMONIC_JNBE:
    case ZYDIS_MNEMONIC_JNL: case ZYDIS_MNEMONIC_JNLE: case ZYDIS_MNEMONIC_JNO:
    case ZYDIS_MNEMONIC_JNP: case ZYDIS_MNEMONIC_JNS: case ZYDIS_MNEMONIC_JNZ:
    case ZYDIS_MNEMONIC_JO: case ZYDIS_MNEMONIC_JP: case ZYDIS_MNEMONIC_JS:
    case ZYDIS_MNEMONIC_JZ: case ZYDIS_MNEMONIC_LOOP: case ZYDIS_MNEMONIC_LOOPE:
    case ZYDIS_MNEMONIC_LOOPNE: case ZYDIS_MNEMONIC_JRCXZ: case ZYDIS_MNEMONIC_JECXZ:
      return true;
    default:
      return false;
  }
}

// The arithmetic flags the code at `rip` may read before writing them,
// found by decoding ahead within `page` (the block's own page, so the same
// translation); all of them where decoding stops before it knows. The
// bytes decoded widen [*lo, *hi), the range whose modification must
// invalidate the block that relies on this.
uint32_t FlagsLiveAt(uint64_t rip, uint64_t page, const FetchFn& fetch, const Decoder& decoder,
                     uint64_t* lo, uint64_t* hi) {
  uint32_t unknown = kArithFlags, live = 0;
  uint64_t pc = rip;
  for (int i = 0; i < 16 && unknown; ++i) {
    if ((pc & kPageMask) != page) break;
    uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
    GuestException fault;
    size_t n = fetch(pc, buf, sizeof(buf), &fault);
    DecodedInsn d;
    if (!decoder.Decode(buf, n, pc, &d) || d.NextRip() > page + kPageSize) break;
    if (d.cls == InsnClass::kRuntime) break;  // may read any flag (pushf)
    *lo = std::min(*lo, pc);
    *hi = std::max(*hi, d.NextRip());
    live |= FlagsRead(d) & unknown;
    unknown &= ~FlagsWritten(d);
    if (d.cls == InsnClass::kBranch) break;
    pc = d.NextRip();
  }
  return live | unknown;
}

// The target of a direct jmp or jcc, else 0.
uint64_t BranchTarget(const DecodedInsn& d) {
  const ZydisDecodedOperand& op = d.ops[0];
  if (d.insn.operand_count_visible == 0 || op.type != ZYDIS_OPERAND_TYPE_IMMEDIATE ||
      !op.imm.is_relative) {
    return 0;
  }
  if (d.insn.mnemonic != ZYDIS_MNEMONIC_JMP && !IsJcc(d.insn.mnemonic)) return 0;
  return d.NextRip() + op.imm.value.u;
}

// Guest GPRs an instruction names, explicitly or implicitly.
uint16_t RegistersNamed(const DecodedInsn& d) {
  uint16_t regs = 0;
  auto note = [&](ZydisRegister r) {
    GprRef g;
    if (DecodeGpr(r, &g)) regs |= 1u << g.index;
  };
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    const ZydisDecodedOperand& op = d.ops[i];
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) note(op.reg.value);
    if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      note(op.mem.base);
      note(op.mem.index);
    }
  }
  return regs;
}

// The stack window (emit_stack.cpp): the stack accesses of push, pop, call
// and ret at offsets from the block's entry RSP known now, up to the first
// instruction that moves RSP in another way. `offsets[i]` = instruction i's
// offset in the window, or -1.
struct StackWindowPlan {
  int32_t lo = 0;
  uint32_t size = 0;
  bool write = false;
  std::vector<int32_t> offsets;
};

// Whether an instruction writes RSP (any operand, hidden ones included).
bool WritesRsp(const DecodedInsn& d) {
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    GprRef r;
    if (d.ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(d.ops[i].reg.value, &r) &&
        r.index == kRsp && (d.ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE)) {
      return true;
    }
  }
  return false;
}

// mov r64, CR0/CR2/CR3/CR4 into a register other than RSP and R15.
bool IsControlRegisterRead(const DecodedInsn& d) {
  if (d.insn.mnemonic != ZYDIS_MNEMONIC_MOV || d.insn.operand_count_visible != 2 ||
      d.ops[0].type != ZYDIS_OPERAND_TYPE_REGISTER || d.ops[1].type != ZYDIS_OPERAND_TYPE_REGISTER) {
    return false;
  }
  const ZydisRegister cr = d.ops[1].reg.value;
  GprRef g;
  return (cr == ZYDIS_REGISTER_CR0 || cr == ZYDIS_REGISTER_CR2 || cr == ZYDIS_REGISTER_CR3 ||
          cr == ZYDIS_REGISTER_CR4) &&
         DecodeGpr(d.ops[0].reg.value, &g) && g.size == 8 && g.index != kRsp && g.index != kR15;
}

// Whether `d` may change the x87 state (the x87 registers, control, status
// or tag word; MMX aliases them): the exit stub then saves it in full
// (BtContext::x87_dirty).
bool TouchesX87(const DecodedInsn& d) {
  switch (d.insn.meta.isa_ext) {
    case ZYDIS_ISA_EXT_X87: case ZYDIS_ISA_EXT_MMX: case ZYDIS_ISA_EXT_AMD3DNOW: return true;
    default: break;
  }
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    if (d.ops[i].type != ZYDIS_OPERAND_TYPE_REGISTER) continue;
    const ZydisRegister r = d.ops[i].reg.value;
    const ZydisRegisterClass rc = ZydisRegisterGetClass(r);
    if (rc == ZYDIS_REGCLASS_X87 || rc == ZYDIS_REGCLASS_MMX || r == ZYDIS_REGISTER_X87CONTROL ||
        r == ZYDIS_REGISTER_X87STATUS || r == ZYDIS_REGISTER_X87TAG) {
      return true;
    }
  }
  return false;
}

// Whether the block ends with `d`: control transfers, and sti (an
// interrupt may wait for it).
bool EndsBlock(const DecodedInsn& d) {
  if (d.cls == InsnClass::kBranch) return true;
  if (d.cls != InsnClass::kSystem) return false;
  const ZydisMnemonic m = d.insn.mnemonic;
  return m == ZYDIS_MNEMONIC_STI || m == ZYDIS_MNEMONIC_SYSCALL || m == ZYDIS_MNEMONIC_SYSRET;
}

StackWindowPlan PlanStackWindow(const std::vector<DecodedInsn>& insns) {
  // Below two accesses the one probe saves nothing; a window this large
  // already means frames the probe would rarely fit in one page.
  constexpr int kMinAccesses = 2;
  constexpr int32_t kMaxSize = 512;
  StackWindowPlan w;
  w.offsets.assign(insns.size(), -1);
  std::vector<int32_t> at(insns.size(), INT32_MIN);
  int32_t delta = 0, lo = INT32_MAX, hi = INT32_MIN;
  int accesses = 0;
  auto access = [&](size_t i, int32_t from, bool write) {
    at[i] = from;
    lo = std::min(lo, from);
    hi = std::max(hi, from + 8);
    w.write |= write;
    ++accesses;
  };
  for (size_t i = 0; i < insns.size(); ++i) {
    const DecodedInsn& d = insns[i];
    const ZydisMnemonic m = d.insn.mnemonic;
    const ZydisDecodedOperand& op = d.ops[0];
    if (d.cls == InsnClass::kStack) {
      GprRef r;
      bool reg = op.type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(op.reg.value, &r) &&
                 r.index != kRsp && r.index != kR15;
      bool push = m == ZYDIS_MNEMONIC_PUSH && (reg || op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE);
      bool pop = m == ZYDIS_MNEMONIC_POP && reg;
      if (d.insn.operand_width != 64 || (!push && !pop)) break;
      if (push) {
        access(i, delta - 8, true);
        delta -= 8;
      } else {
        access(i, delta, false);
        delta += 8;
      }
      continue;
    }
    if (d.cls == InsnClass::kBranch) {
      bool relative = d.insn.operand_count_visible > 0 && op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE &&
                      op.imm.is_relative;
      if (m == ZYDIS_MNEMONIC_CALL && relative) access(i, delta - 8, true);
      if (m == ZYDIS_MNEMONIC_RET) access(i, delta, false);
      break;
    }
    if (WritesRsp(d)) {
      // add/sub rsp, imm move it by a known amount.
      GprRef r;
      bool imm = d.insn.operand_count_visible == 2 && op.type == ZYDIS_OPERAND_TYPE_REGISTER &&
                 DecodeGpr(op.reg.value, &r) && r.index == kRsp && r.size == 8 &&
                 d.ops[1].type == ZYDIS_OPERAND_TYPE_IMMEDIATE;
      int64_t v = imm ? d.ops[1].imm.value.s : 0;
      if (imm && m == ZYDIS_MNEMONIC_ADD && v > -kMaxSize && v < kMaxSize) {
        delta += static_cast<int32_t>(v);
      } else if (imm && m == ZYDIS_MNEMONIC_SUB && v > -kMaxSize && v < kMaxSize) {
        delta -= static_cast<int32_t>(v);
      } else {
        break;
      }
      if (delta < -kMaxSize || delta > kMaxSize) break;
    }
  }
  if (accesses < kMinAccesses || hi - lo > kMaxSize) return w;
  w.lo = lo;
  w.size = static_cast<uint32_t>(hi - lo);
  for (size_t i = 0; i < insns.size(); ++i) {
    if (at[i] != INT32_MIN) w.offsets[i] = at[i] - lo;
  }
  return w;
}

}  // namespace

BuildResult BuildBlock(CodeCache& cache, const BlockKey& key, const FetchFn& fetch,
                       const PhysFn& phys_of, BlockNotes* notes) {
  BuildResult r;
  const uint64_t rip = key.rip;
  const bool single = key.flags & kBlockSingle;
  const bool compat = key.flags & kBlockCompat;
  const unsigned max_insns = single ? 1 : kMaxBlockInsns;
  Decoder decoder(compat ? CodeMode::kCompat32 : CodeMode::k64);
  std::vector<DecodedInsn> insns;
  uint64_t page_end = (rip & kPageMask) + kPageSize;
  uint64_t pc = rip;
  bool ended = false;
  while (!ended && insns.size() < max_insns && pc < page_end) {
    uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
    GuestException fault;
    size_t n = fetch(pc, buf, sizeof(buf), &fault);
    DecodedInsn d;
    if (!decoder.Decode(buf, n, pc, &d)) {
      if (!insns.empty()) break;  // let the runtime meet it as a block of its own
      if (n < sizeof(buf)) {
        // Undecodable with the bytes we could read: the missing bytes fault
        // first, since the instruction may need them (fetch precedes #UD).
        r.kind = BuildResult::kFault;
        r.fault = fault;
      } else {
        r.kind = BuildResult::kUndefined;
      }
      return r;
    }
    // cli, sti, pushfq, swapgs, rdtsc(p) and reads of CR0/2/3/4 of
    // supervisor code go inline (emit_system.cpp): Linux's irq
    // save/restore would otherwise leave translated code at every
    // spin_lock_irqsave, its system-call entry and exit at two swapgs and
    // an rdtsc (the random kernel stack offset) each time, and its page
    // faults at the read of CR2.
    if (d.cls == InsnClass::kRuntime && !single && !compat && key.mmu_index == kMmuKernel &&
        (d.insn.mnemonic == ZYDIS_MNEMONIC_CLI || d.insn.mnemonic == ZYDIS_MNEMONIC_STI ||
         d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHFQ || d.insn.mnemonic == ZYDIS_MNEMONIC_SWAPGS ||
         d.insn.mnemonic == ZYDIS_MNEMONIC_RDTSC || d.insn.mnemonic == ZYDIS_MNEMONIC_RDTSCP ||
         IsControlRegisterRead(d))) {
      d.cls = InsnClass::kSystem;
    }
    // And the system call itself, both ways (emit_syscall.cpp): syscall
    // from 64-bit user code, sysretq from 64-bit supervisor code.
    if (d.cls == InsnClass::kRuntime && !single && !compat &&
        ((d.insn.mnemonic == ZYDIS_MNEMONIC_SYSCALL && key.mmu_index == kMmuUser) ||
         (d.insn.mnemonic == ZYDIS_MNEMONIC_SYSRET && key.mmu_index == kMmuKernel &&
          d.insn.operand_width == 64))) {
      d.cls = InsnClass::kSystem;
    }
    if (d.cls == InsnClass::kRuntime) {
      if (insns.empty()) {  // the runtime emulates it; no block
        r.kind = BuildResult::kEmulate;
        r.emulate = d;
        return r;
      }
      break;
    }
    // An instruction reaching into the next page ends the block before it,
    // unless it is the first: such a block depends on two pages.
    if (d.NextRip() > page_end && !insns.empty()) break;
    ended = EndsBlock(d);
    pc = d.NextRip();
    insns.push_back(d);
  }

  // Flag liveness, backwards from what the block's direct successors in its
  // own page read; other successors (returns, indirect branches, other
  // pages) may read every flag.
  uint64_t watch_lo = rip, watch_hi = pc;
  uint32_t live = kArithFlags;
  if (!single && !insns.empty()) {
    const uint64_t page = rip & kPageMask;
    const DecodedInsn& last = insns.back();
    auto at = [&](uint64_t target) {
      return FlagsLiveAt(target, page, fetch, decoder, &watch_lo, &watch_hi);
    };
    const ZydisDecodedOperand& op = last.ops[0];
    bool relative = last.insn.operand_count_visible > 0 &&
                    op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative;
    uint64_t target = relative ? last.NextRip() + op.imm.value.u : 0;
    if (compat) target &= 0xffffffff;
    if (last.cls == InsnClass::kSystem && (last.insn.mnemonic == ZYDIS_MNEMONIC_SYSCALL ||
                                           last.insn.mnemonic == ZYDIS_MNEMONIC_SYSRET)) {
      live = kArithFlags;  // the other mode's code (and syscall's R11) gets them
    } else if (last.cls != InsnClass::kBranch) {
      live = at(pc);
    } else if (relative && IsJcc(last.insn.mnemonic)) {
      live = at(target) | at(last.NextRip());
    } else if (relative && (last.insn.mnemonic == ZYDIS_MNEMONIC_JMP ||
                            last.insn.mnemonic == ZYDIS_MNEMONIC_CALL)) {
      // A call's flags go to its callee; the return restores its own.
      live = at(target);
    }
  }
  const uint32_t live_out = live;
  std::vector<uint32_t> live_in(insns.size());
  for (size_t i = insns.size(); i-- > 0;) {
    live = (live & ~FlagsWritten(insns[i])) | FlagsRead(insns[i]);
    live_in[i] = live;
  }

  std::unique_ptr<Block> block = cache.NewBlock(key);
  asmjit::CodeHolder code;
  code.init(cache.environment(), cache.next_address());
  asmjit::x86::Assembler a(&code);
  EmitEnv env = cache.EmitEnvFor(key.mmu_index);
  env.block = block.get();
  env.block_rip = rip;
  env.single = single;
  env.compat = compat;
  env.flags_live_at = [&](uint64_t target) -> uint32_t {
    if ((target & kPageMask) != (rip & kPageMask)) return kArithFlags;
    return FlagsLiveAt(target, rip & kPageMask, fetch, decoder, &watch_lo, &watch_hi);
  };
  // The host registers each instruction names (guest GPRs live in the
  // host GPRs of the same number), for picking scratch registers that the
  // next few instructions leave alone.
  std::vector<uint16_t> names(insns.size() + 1, 0);
  for (size_t i = 0; i < insns.size(); ++i) names[i] = RegistersNamed(insns[i]);
  constexpr size_t kLookahead = 4;
  struct InsnLabel {
    asmjit::Label label;
    uint16_t scratch;
    bool flags_saved;
    uint64_t rip;
    uint8_t null_page_fault = 0;
  };
  std::vector<InsnLabel> records;
  size_t emitted = 0;
  StackWindowPlan window;  // none until the final translation decides
  // Emits the instructions; false: the first cannot be translated.
  auto emit_insns = [&](BlockEmitter& e, asmjit::x86::Assembler& a) -> bool {
    records.clear();
    emitted = 0;
    bool x87_marked = false;
    for (size_t i = 0; i < insns.size(); ++i) {
      const DecodedInsn& d = insns[i];
      InsnLabel rec{a.newLabel(), 0xffff, false, d.rip};
      a.bind(rec.label);
      if (!x87_marked && d.cls == InsnClass::kIdent && TouchesX87(d)) {
        e.MarkX87Dirty();
        x87_marked = true;
      }
      // Flags the probe must keep: those live before this instruction.
      uint32_t keep = live_in[i];
      uint16_t ahead = 0;
      for (size_t j = i + 1; j < std::min(insns.size(), i + 1 + kLookahead); ++j) ahead |= names[j];
      e.BeginInsn(d.rip, keep, ahead);
      e.SetWindowAccess(window.offsets.empty() ? -1 : window.offsets[i]);
      bool ok = true;
      switch (d.cls) {
        case InsnClass::kIdent: ok = e.EmitIdent(d, keep); break;
        case InsnClass::kNop: break;
        case InsnClass::kStack:
          ok = compat ? e.EmitCompatStack(d, keep) : e.EmitStack(d, keep);
          break;
        case InsnClass::kString: ok = e.EmitString(d); break;
        case InsnClass::kSystem:
          ok = e.EmitSystem(d, i + 1 < insns.size() ? live_in[i + 1] : live_out);
          break;
        case InsnClass::kBranch: ok = e.EmitBranch(d, keep); break;
        case InsnClass::kRuntime:
        case InsnClass::kUndefined: ok = false; break;
      }
      // What the host-fault side table needs (BeginInsn cleared it: the
      // classes that do not set it own no host fault).
      rec.scratch = e.last_scratch();
      rec.flags_saved = e.last_flags_saved();
      rec.null_page_fault = e.last_null_page_fault();
      if (!ok) {
        if (emitted == 0) return false;
        // End the block before it; it will start a block of its own and be
        // reported there.
        e.Materialize();
        e.EmitExit(d.rip, BlockExit::kNext);
        pc = d.rip;
        break;
      }
      // An instruction that emitted no code (a nop) shares its host offset
      // with the next one, which owns any fault there.
      if (d.cls != InsnClass::kNop) records.push_back(rec);
      ++emitted;
      if (d.cls == InsnClass::kBranch) break;
    }
    const bool ends_itself = !insns.empty() && EndsBlock(insns.back());
    if (emitted == insns.size() && !ends_itself) {
      e.Materialize();
      e.EmitJumpTo(pc);
    }
    return true;
  };

  // A loop (the last instruction branches back to the block's start) is
  // translated twice: the first time tells which scratch registers the
  // body takes, and the second takes them once, before the loop head, so
  // that the back edge neither reloads nor spills them.
  // (loop and jrcxz back edges test RCX themselves: EmitBranch takes no
  // registers around them, so a second translation would change nothing.)
  const bool loop = !single && !insns.empty() && insns.back().cls == InsnClass::kBranch &&
                    !IsRcxBranch(insns.back().insn.mnemonic) && BranchTarget(insns.back()) == rip;
  uint16_t loop_regs = 0;
  std::vector<BlockEmitter::LoopPage> loop_pages;
  if (loop) {
    asmjit::CodeHolder trial_code;
    trial_code.init(cache.environment(), cache.next_address());
    asmjit::x86::Assembler ta(&trial_code);
    BlockEmitter te(ta, env);
    uint16_t all_names = 0;
    for (uint16_t n : names) all_names |= n;
    te.PlanLoopPages(all_names);
    uint64_t saved_pc = pc;
    if (emit_insns(te, ta)) {
      loop_regs = te.back_edge_borrowed();
      for (const BlockEmitter::LoopPage& lp : te.loop_pages()) {
        uint16_t pair = lp.regs();
        if ((loop_regs & pair) == pair) loop_pages.push_back(lp);
      }
    }
    pc = saved_pc;
  }
  BlockEmitter e(a, env);
  asmjit::Label unchecked = a.newLabel();  // bound past the entry check, if there is one
  if (loop_regs) {
    e.UseLoopPages(loop_pages);
    e.EnterLoop(loop_regs, live_in[0] != 0);
  } else if (!single) {
    e.EmitEntryCheck(live_in.empty() ? true : live_in[0] != 0);
    a.bind(unchecked);
    e.EmitCountExecution();
    if (!compat && !(key.flags & kBlockPlainStack) && !loop) {
      StackWindowPlan plan = PlanStackWindow(insns);
      uint16_t all_names = 0;
      for (uint16_t n : names) all_names |= n;
      if (plan.size &&
          e.EnterStackWindow(plan.lo, plan.size, plan.write, live_in[0] != 0, all_names)) {
        window = std::move(plan);
      }
    }
  } else {
    e.EmitCountExecution();
  }
  if (!emit_insns(e, a)) {
    r.kind = BuildResult::kUnsupported;
    r.message = e.why();
    return r;
  }
  asmjit::Label cold = a.newLabel();  // where the slow paths and exit stubs begin
  a.bind(cold);
  e.EmitOutOfLine();

  block->guest_insns = static_cast<uint32_t>(emitted);
  block->guest_size = static_cast<uint32_t>(pc - rip);
  // What the translation relies on in its first page: its own bytes and
  // the successors it read ahead for flag liveness.
  block->watch_lo = static_cast<uint32_t>(std::min(watch_lo, rip) & (kPageSize - 1));
  block->watch_hi = static_cast<uint32_t>(
      std::min(std::max(watch_hi, pc), (rip & kPageMask) + kPageSize) - (rip & kPageMask));
  if (pc > page_end) {
    block->spans_pages = true;
    block->phys2 = phys_of(page_end);
  }
  // Offsets are final once the cache has placed the code.
  Block* b = block.get();
  if (!cache.Install(std::move(block), code)) {
    r.kind = BuildResult::kCacheFull;
    return r;
  }
  if (code.isLabelBound(unchecked)) {
    b->unchecked_offset = static_cast<uint32_t>(code.labelOffsetFromBase(unchecked));
  }
  for (const auto& x : e.exits()) {
    b->exits.push_back({static_cast<uint32_t>(code.labelOffsetFromBase(x.jmp)),
                        static_cast<uint32_t>(code.labelOffsetFromBase(x.stub)), x.target,
                        nullptr, x.flags, x.forward});
  }
  for (const InsnLabel& rec : records) {
    b->insns.push_back({static_cast<uint32_t>(code.labelOffsetFromBase(rec.label)), rec.scratch,
                        rec.flags_saved, rec.rip, rec.null_page_fault});
  }
  for (const auto& rec : e.out_of_line_insns()) {
    b->insns.push_back({static_cast<uint32_t>(code.labelOffsetFromBase(rec.label)), rec.scratch,
                        rec.flags_saved, rec.rip});
  }
  std::stable_sort(b->insns.begin(), b->insns.end(),
            [](const Block::InsnRecord& x, const Block::InsnRecord& y) {
              return x.host_offset < y.host_offset;
            });
  b->main_bytes = static_cast<uint32_t>(code.labelOffsetFromBase(cold));
  b->loop = loop_regs != 0;
  for (size_t i = 0; i < emitted && i < 64; ++i) {
    if (!window.offsets.empty() && window.offsets[i] >= 0) b->window_insns |= uint64_t{1} << i;
  }
  if (notes) notes->insns.assign(insns.begin(), insns.begin() + static_cast<ptrdiff_t>(emitted));
  r.block = b;
  r.guest_insns = static_cast<unsigned>(emitted);
  r.host_bytes = b->code_size;
  r.host_main_bytes = b->main_bytes;
  return r;
}

}  // namespace btvm
