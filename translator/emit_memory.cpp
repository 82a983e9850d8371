// Memory operands (DESIGN.md, Translator): the effective address is computed
// into a scratch register, probed in the soft TLB inline (hit: host pointer
// in the same register), and the access then runs on the host pointer. A
// miss goes to an out-of-line slow path that calls the MMU, runs the same
// access there, and jumps back.
//
// The inline probe (s = guest address, t = scratch):
//     mov t, s ; shr t, 7 ; and t, (kEntries-1)*32   ; t = entry offset
//     xor s, [r15 + tlb + t + tag]                    ; s = offset in page on a hit
//     cmp s, 4096 - size ; ja slow                    ; miss, or crosses the page
//     add s, [r15 + tlb + t + host_page]              ; s = host pointer
// It clobbers arithmetic flags, so flags live across it are saved
// (flag liveness per block, computed in block_builder.cpp).

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

namespace {
constexpr uint16_t kCallerSaved = (1u << kRax) | (1u << kRcx) | (1u << kRdx) | (1u << kRsi) |
                                  (1u << kRdi) | (1u << kR8) | (1u << kR9) | (1u << kR10) |
                                  (1u << kR11);
}  // namespace

void BlockEmitter::SaveFlags(int32_t slot) {
  a_.pushfq();
  a_.pop(CtxPtr(slot, 8));
}

void BlockEmitter::RestoreFlags(int32_t slot) {
  a_.push(CtxPtr(slot, 8));
  a_.popfq();
}

// lahf keeps SF ZF AF PF CF in AH; seto puts OF in AL. Restoring, adding
// 0x7f to AL sets OF exactly when AL was 1, and sahf restores the rest.
void BlockEmitter::SaveArith(int32_t slot) {
  a_.mov(CtxPtr(offsetof(BtContext, rax_save), 8), x86::rax);
  a_.lahf();
  a_.seto(x86::al);
  a_.mov(CtxPtr(slot, 2), x86::ax);
  a_.mov(x86::rax, CtxPtr(offsetof(BtContext, rax_save), 8));
}

void BlockEmitter::RestoreArith(int32_t slot) { EmitRestoreArith(a_, slot); }

void EmitRestoreArith(x86::Assembler& a, int32_t slot) {
  a.mov(CtxPtr(offsetof(BtContext, rax_save), 8), x86::rax);
  a.mov(x86::ax, CtxPtr(slot, 2));
  a.add(x86::al, 0x7f);
  a.sahf();
  a.mov(x86::rax, CtxPtr(offsetof(BtContext, rax_save), 8));
}

void EmitJumpCacheSlot(x86::Assembler& a, const x86::Gp& rip, const x86::Gp& out) {
  a.imul(out.r32(), rip.r32(), static_cast<int32_t>(kJumpCacheMultiplier));
  a.shr(out.r32(), 32 - kJumpCacheBits);
  a.shl(out, 4);  // sizeof(JumpCacheEntry)
}

void BlockEmitter::EmitEffectiveAddress(const DecodedInsn& d, const ZydisDecodedOperand& op,
                                        const Plan& p, int s, int plus) {
  const auto& m = op.mem;
  bool addr32 = d.insn.address_width == 32;
  if (m.base == ZYDIS_REGISTER_RIP || m.base == ZYDIS_REGISTER_EIP) {
    uint64_t ea = d.NextRip() + m.disp.value;
    if (addr32) ea &= 0xffffffff;
    a_.mov(x86::gpq(s), ea);
  } else {
    GprRef b, i;
    bool has_base = DecodeGpr(m.base, &b);
    bool has_index = DecodeGpr(m.index, &i);
    int32_t disp = static_cast<int32_t>(m.disp.value);
    unsigned shift = m.scale == 8 ? 3 : m.scale == 4 ? 2 : m.scale == 2 ? 1 : 0;
    // Flags are already saved when live, so add/shl may clobber them here.
    if (has_base) {
      x86::Gp base = x86::gpq(p.rename[b.index]);
      x86::Mem ea = has_index ? x86::ptr(base, x86::gpq(p.rename[i.index]), shift, disp)
                              : x86::ptr(base, disp);
      if (addr32) {
        a_.lea(x86::gpd(s), ea);
      } else if (plus >= 0 && !has_index && !env_.compat && m.segment != ZYDIS_REGISTER_FS &&
                 m.segment != ZYDIS_REGISTER_GS) {
        // No segment base to add: `plus` folds into the lea.
        a_.lea(x86::gpq(s), x86::ptr(base, x86::gpq(plus), 0, disp));
        return;
      } else {
        a_.lea(x86::gpq(s), ea);
      }
    } else {
      if (has_index) {
        a_.mov(x86::gpq(s), x86::gpq(p.rename[i.index]));
        if (shift) a_.shl(x86::gpq(s), shift);
        if (disp) a_.add(x86::gpq(s), disp);
      } else {
        // Absolute: disp32 sign-extended, or the 64-bit moffs of mov
        // al/ax/eax/rax <-> [imm64] (opcodes A0-A3), which Zydis gives whole.
        a_.mov(x86::gpq(s), static_cast<uint64_t>(m.disp.value));
      }
      if (addr32) a_.mov(x86::gpd(s), x86::gpd(s));
    }
  }
  AddSegmentBase(m.segment, s);
  if (plus >= 0) a_.add(x86::gpq(s), x86::gpq(plus));
}

// In 64-bit mode only FS and GS have bases (SDM Vol. 3 §3.4.4).
void BlockEmitter::AddSegmentBase(ZydisRegister segment, int s) {
  if (env_.compat) return AddCompatSegmentBase(segment, s);
  if (segment != ZYDIS_REGISTER_FS && segment != ZYDIS_REGISTER_GS) return;
  int seg = segment == ZYDIS_REGISTER_FS ? kFs : kGs;
  a_.add(x86::gpq(s), CtxPtr(SegBaseOffset(seg), 8));
}

// The segment an instruction with an implicit memory operand overrides.
ZydisRegister OverrideSegment(const DecodedInsn& d) {
  if (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_FS) return ZYDIS_REGISTER_FS;
  if (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_GS) return ZYDIS_REGISTER_GS;
  return ZYDIS_REGISTER_DS;
}

int32_t BlockEmitter::TlbTagOffset(bool write) const {
  return static_cast<int32_t>(offsetof(BtContext, tlb) + env_.mmu_index * sizeof(SoftTlb) +
                              (write ? offsetof(TlbEntry, write_tag) : offsetof(TlbEntry, read_tag)));
}

int32_t BlockEmitter::TlbHostOffset() const {
  return static_cast<int32_t>(offsetof(BtContext, tlb) + env_.mmu_index * sizeof(SoftTlb) +
                              offsetof(TlbEntry, host_page));
}

int32_t BlockEmitter::StackTagOffset(bool write) const {
  return static_cast<int32_t>(offsetof(BtContext, tlb) + env_.mmu_index * sizeof(SoftTlb) +
                              offsetof(SoftTlb, stack) +
                              (write ? offsetof(TlbEntry, write_tag) : offsetof(TlbEntry, read_tag)));
}

int32_t BlockEmitter::StackHostOffset() const {
  return static_cast<int32_t>(offsetof(BtContext, tlb) + env_.mmu_index * sizeof(SoftTlb) +
                              offsetof(SoftTlb, stack) + offsetof(TlbEntry, host_page));
}

void BlockEmitter::EmitStackRefill(int s, unsigned size, bool write, Label hit) {
  // A temporary kept on the host stack: push and pop leave the flags alone.
  const int t = s == kRax ? kRcx : kRax;
  x86::Gp S = x86::gpq(s), T = x86::gpq(t);
  const int32_t tlb = static_cast<int32_t>(offsetof(BtContext, tlb) + env_.mmu_index * sizeof(SoftTlb));
  const int32_t entries = tlb + static_cast<int32_t>(offsetof(SoftTlb, entries));
  const int32_t copy = tlb + static_cast<int32_t>(offsetof(SoftTlb, stack));
  const int32_t tag = TlbTagOffset(write);
  Label miss = a_.newLabel();
  a_.push(T);
  SlotOffset(s, t);
  a_.xor_(S, CtxPtr(T, 0, tag, 8));
  a_.cmp(S, static_cast<int32_t>(kPageSize - size));
  a_.ja(miss);
  for (int32_t field : {static_cast<int32_t>(offsetof(TlbEntry, read_tag)),
                        static_cast<int32_t>(offsetof(TlbEntry, write_tag)),
                        static_cast<int32_t>(offsetof(TlbEntry, host_page))}) {
    a_.push(CtxPtr(T, 0, entries + field, 8));
    a_.pop(CtxPtr(copy + field, 8));
  }
  a_.mov(CtxPtr(tlb + static_cast<int32_t>(offsetof(SoftTlb, stack_offset)), 8), T);
  a_.add(S, CtxPtr(T, 0, TlbHostOffset(), 8));
  a_.pop(T);
  a_.jmp(hit);
  a_.bind(miss);
  a_.xor_(S, CtxPtr(T, 0, tag, 8));
  a_.pop(T);
}

void BlockEmitter::EmitLoopPageRefill(int s, int nt, int hb, unsigned size, bool write,
                                      Label hit) {
  x86::Gp S = x86::gpq(s), NT = x86::gpq(nt), HB = x86::gpq(hb);
  const int32_t tag = TlbTagOffset(write);
  Label miss = a_.newLabel();
  a_.sub(S, NT);      // the guest address
  SlotOffset(s, hb);  // the pair is refilled or emptied: HB is free
  a_.xor_(S, CtxPtr(HB, 0, tag, 8));
  a_.cmp(S, static_cast<int32_t>(kPageSize - size));
  a_.ja(miss);
  a_.mov(NT, CtxPtr(HB, 0, tag, 8));
  a_.neg(NT);
  a_.mov(HB, CtxPtr(HB, 0, TlbHostOffset(), 8));
  a_.jmp(hit);
  a_.bind(miss);
  a_.xor_(S, CtxPtr(HB, 0, tag, 8));  // the guest address again
  EmitEmptyLoopPage(nt, hb);
}

void BlockEmitter::EmitEmptyLoopPage(int nt, int hb) {
  a_.mov(x86::gpq(nt), uint64_t{1} << 63);
  a_.mov(x86::gpd(hb), 0);
}

// t = the byte offset of the soft-TLB slot of the guest address in s.
void BlockEmitter::SlotOffset(int s, int t) {
  a_.mov(x86::gpq(t), x86::gpq(s));
  a_.shr(x86::gpq(t), 7);
  a_.and_(x86::gpq(t), (SoftTlb::kEntries - 1) * sizeof(TlbEntry));
}

void BlockEmitter::EmitAccess(const DecodedInsn& d, const Plan& p, int s, int t, unsigned size,
                              bool read, bool write, std::function<void()> body,
                              bool restore_flags, bool index_ready, bool stack,
                              const LoopPage* page) {
  SlowPath sp;
  sp.entry = a_.newLabel();
  sp.hit = a_.newLabel();
  sp.index_ready = index_ready;
  sp.stack = stack;
  if (page) {
    sp.nt = page->nt;
    sp.hb = page->hb;
  }
  sp.resume = a_.newLabel();
  sp.fault = a_.newLabel();
  sp.s = s;
  sp.t = t;
  sp.info = size | (read ? kAccessRead : 0) | (write ? kAccessWrite : 0);
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    if (d.ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY && d.ops[i].mem.type == ZYDIS_MEMOP_TYPE_MEM &&
        d.ops[i].mem.segment == ZYDIS_REGISTER_SS) {
      sp.info |= kAccessStack;
    }
  }
  sp.flags_saved = flags_saved_;
  sp.restore_after = restore_flags;
  sp.spilled = p.spilled;
  sp.rip = d.rip;
  sp.body = body;
  if (stack || page) last_null_page_fault_ = (sp.info & kAccessStack) || stack ? kSS : kGP;

  x86::Gp S = x86::gpq(s);
  if (page) {
    a_.cmp(S, static_cast<int32_t>(kPageSize - size));  // S: the guest address + NT
    a_.ja(sp.entry);
    a_.bind(sp.hit);  // S: the offset in the page, HB: its host address
    if (env_.count_hits) a_.add(CtxPtr(offsetof(BtContext, tlb_hits), 8), 1);
  } else if (stack) {
    a_.xor_(S, CtxPtr(StackTagOffset(write), 8));
    a_.cmp(S, static_cast<int32_t>(kPageSize - size));
    a_.ja(sp.entry);
    a_.add(S, CtxPtr(StackHostOffset(), 8));
    a_.bind(sp.hit);  // S: the host pointer
    if (env_.count_hits) a_.add(CtxPtr(offsetof(BtContext, tlb_hits), 8), 1);
  } else {
    const int32_t tag = TlbTagOffset(write), host = TlbHostOffset();
    x86::Gp T = x86::gpq(t);
    if (!index_ready) SlotOffset(s, t);
    a_.xor_(S, CtxPtr(T, 0, tag, 8));
    a_.cmp(S, static_cast<int32_t>(kPageSize - size));
    a_.ja(sp.entry);
    a_.bind(sp.hit);  // S: the guest address ^ the tag of slot T
    // Flags are clobbered here anyway (and restored below when live).
    if (env_.count_hits) a_.add(CtxPtr(offsetof(BtContext, tlb_hits), 8), 1);
    a_.add(S, CtxPtr(T, 0, host, 8));
  }
  if (restore_flags) RestoreSavedFlags();
  body();
  a_.bind(sp.resume);
  slow_paths_.push_back(std::move(sp));
}

// Calls a C++ helper that works on the guest registers in CpuState (the
// string helper): the caller-saved ones go to their CpuState slots and come
// back from there (the helper may have changed them), the guest FPU/SSE
// state is saved (the helper may use vector registers) and DF is cleared
// (SysV ABI). Callee-saved guest registers stay in the host ones.
void BlockEmitter::CallHelper(uint64_t fn) {
  SaveFlags(offsetof(BtContext, slow_flags));
  a_.cld();
  for (int h = 0; h < 16; ++h) {
    if (kCallerSaved & (1u << h)) Spill(h);
  }
  a_.fxsave64(CtxPtr(static_cast<int32_t>(offsetof(CpuState, xsave))));
  a_.fnclex();
  a_.ldmxcsr(CtxPtr(offsetof(BtContext, host_mxcsr), 4));
  // Guest RSP, current in CpuState for the helper too.
  a_.mov(CtxPtr(GprOffset(kRsp), 8), x86::gpq(kGuestRspHost));
  a_.mov(x86::rdi, CtxPtr(offsetof(BtContext, self), 8));
  // Host call frames (bt_context.h) leave RSP 8-byte aligned only.
  a_.mov(CtxPtr(offsetof(BtContext, helper_rsp), 8), x86::rsp);
  a_.and_(x86::rsp, -16);
  a_.mov(x86::rax, fn);
  a_.call(x86::rax);
  a_.mov(x86::rsp, CtxPtr(offsetof(BtContext, helper_rsp), 8));
  a_.fxrstor64(CtxPtr(static_cast<int32_t>(offsetof(CpuState, xsave))));
  a_.mov(CtxPtr(offsetof(BtContext, slow_result), 8), x86::rax);
  for (int h = 0; h < 16; ++h) {
    if (kCallerSaved & (1u << h)) Reload(h);
  }
}

void BlockEmitter::EmitOutOfLine() {
  while (!slow_paths_.empty() || !out_of_line_.empty()) {
    std::vector<std::function<void()>> pieces;
    pieces.swap(out_of_line_);
    for (auto& piece : pieces) piece();
    EmitSlowPaths();
  }
}

void BlockEmitter::EmitSlowPaths() {
  std::vector<SlowPath> paths;
  paths.swap(slow_paths_);
  for (SlowPath& sp : paths) {
    x86::Gp S = x86::gpq(sp.s);
    const bool write = sp.info & kAccessWrite;
    const int32_t tag = TlbTagOffset(write);
    a_.bind(sp.entry);
    if (sp.nt >= 0) {
      EmitLoopPageRefill(sp.s, sp.nt, sp.hb, sp.info & 0xff, write, sp.hit);
    } else if (sp.stack) {
      a_.xor_(S, CtxPtr(StackTagOffset(write), 8));  // the guest address again
      EmitStackRefill(sp.s, sp.info & 0xff, write, sp.hit);
    } else {
      x86::Gp T = x86::gpq(sp.t);
      if (sp.index_ready) {
        // The slot was another access's: probe the address's own slot.
        a_.xor_(S, CtxPtr(T, 0, tag, 8));
        SlotOffset(sp.s, sp.t);
        a_.xor_(S, CtxPtr(T, 0, tag, 8));
        a_.cmp(S, static_cast<int32_t>(kPageSize - (sp.info & 0xff)));
        a_.jbe(sp.hit);
      }
      a_.xor_(S, CtxPtr(T, 0, tag, 8));  // the guest address again
    }
    // The helper takes the address and access from the context; the stub
    // keeps every register (DF included) as it is.
    a_.mov(CtxPtr(offsetof(BtContext, slow_addr), 8), S);
    a_.mov(CtxPtr(offsetof(BtContext, slow_info), 8), static_cast<int32_t>(sp.info));
    a_.call(Imm(env_.mem_slow_path));
    a_.mov(S, CtxPtr(offsetof(BtContext, slow_result), 8));
    a_.test(S, S);  // arithmetic flags are in saved_flags if live
    a_.jz(sp.fault);
    if (sp.flags_saved && sp.restore_after) RestoreArith(offsetof(BtContext, saved_flags));
    OutOfLineInsn copy{a_.newLabel(), sp.spilled, sp.flags_saved && !sp.restore_after, sp.rip};
    a_.bind(copy.label);
    out_of_line_insns_.push_back(copy);
    sp.body();
    if (sp.info & kAccessWrite) a_.call(Imm(env_.bounce_commit));
    a_.jmp(sp.resume);

    // The access faulted, or stores into translated code (the helper set
    // exit_reason): guest state is as before the instruction.
    a_.bind(sp.fault);
    RestoreBoundary(sp.flags_saved, sp.spilled);
    EmitCompactExit(env_.exit_rip, sp.rip);
  }
}

}  // namespace btvm
