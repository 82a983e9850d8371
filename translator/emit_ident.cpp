// Ident translation (DESIGN.md, Translator): an ordinary instruction is
// re-emitted in its own form. Guest GPRs live in the host GPRs of the same
// number, so most instructions are copied byte for byte; only guest RSP and
// R15 (whose host registers belong to the monitor) are renamed into a free
// host register around the instruction, and a memory operand becomes [s]
// after the soft-TLB probe.

#include <cstring>

#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

bool DecodeGpr(ZydisRegister r, GprRef* out) {
  if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_R15B) {
    int id = r - ZYDIS_REGISTER_AL;
    out->size = 1;
    out->high8 = id >= 4 && id < 8;
    out->index = id < 4 ? id : id < 8 ? id - 4 : id - 4;
    return true;
  }
  if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W) {
    *out = {r - ZYDIS_REGISTER_AX, 2, false};
    return true;
  }
  if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D) {
    *out = {r - ZYDIS_REGISTER_EAX, 4, false};
    return true;
  }
  if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15) {
    *out = {r - ZYDIS_REGISTER_RAX, 8, false};
    return true;
  }
  return false;
}

ZydisRegister EncodeGpr(int index, int size) {
  switch (size) {
    case 1:
      return static_cast<ZydisRegister>(index < 4 ? ZYDIS_REGISTER_AL + index
                                                  : ZYDIS_REGISTER_SPL + (index - 4));
    case 2: return static_cast<ZydisRegister>(ZYDIS_REGISTER_AX + index);
    case 4: return static_cast<ZydisRegister>(ZYDIS_REGISTER_EAX + index);
    default: return static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + index);
  }
}

bool BlockEmitter::Fail(std::string why) {
  why_ = std::move(why);
  return false;
}

// Collects the registers an instruction uses and renames guest RSP and R15,
// whose host registers are the monitor's stack and the context pointer.
bool BlockEmitter::PlanInsn(const DecodedInsn& d, Plan* p) {
  auto note = [&](ZydisRegister r, bool hidden) -> bool {
    if (r == ZYDIS_REGISTER_NONE || r == ZYDIS_REGISTER_RIP || r == ZYDIS_REGISTER_EIP) {
      return true;
    }
    GprRef g;
    if (!DecodeGpr(r, &g)) return true;  // not a GPR (xmm, flags, segment...)
    if (g.high8) p->needs_low = true;
    if (g.index == kRsp || g.index == kR15) {
      if (hidden) return Fail("implicit use of rsp/r15 by " + FormatInsn(d));
      p->rename[g.index] = -1;  // assigned below
    } else {
      p->used |= 1u << g.index;
    }
    return true;
  };
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    const ZydisDecodedOperand& op = d.ops[i];
    bool hidden = op.visibility == ZYDIS_OPERAND_VISIBILITY_HIDDEN;
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      if (!note(op.reg.value, hidden)) return false;
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      if (!note(op.mem.base, hidden) || !note(op.mem.index, hidden)) return false;
    }
  }
  TakeRegisters(p);
  if (p->rename[kRsp] == -1) RenameRsp(p);
  for (int g : {kRsp, kR15}) {
    if (p->rename[g] == -1) {
      int h = PickScratch(p, p->needs_low);
      if (h < 0) return Fail("no free host register for " + FormatInsn(d));
      p->rename[g] = h;
    }
  }
  return true;
}

void BlockEmitter::NoteAddressRegisters(const ZydisDecodedOperand& op, Plan* p) {
  for (ZydisRegister reg : {op.mem.base, op.mem.index}) {
    GprRef r;
    if (!DecodeGpr(reg, &r)) continue;
    if (r.index == kRsp || r.index == kR15) {
      p->rename[r.index] = -1;
    } else {
      p->used |= 1u << r.index;
    }
  }
}

void BlockEmitter::TakeRegisters(Plan* p) {
  for (int h = 0; h < 16; ++h) {
    if (p->used & borrowed_ & (1u << h)) Reload(h);
  }
  borrowed_ &= ~p->used;
  p->spilled = borrowed_;
  if (p->used & sticky_) {  // named by the guest code: not a page register after all
    std::erase_if(loop_pages_, [&](const LoopPage& lp) {
      return p->used & lp.regs();
    });
    sticky_ &= ~p->used;
  }
  if (stack_slot_in_ >= 0 && (p->used & (1u << stack_slot_in_))) stack_slot_in_ = -1;
}

void BlockEmitter::RenameRsp(Plan* p) {
  p->rename[kRsp] = kGuestRspHost;
  p->used |= 1u << kGuestRspHost;
}

int BlockEmitter::PickScratch(Plan* p, bool low_only) {
  // Prefer registers without a REX prefix: shorter code, and the only ones
  // an instruction naming AH..BH can use.
  static constexpr int kOrder[] = {kRcx, kRdx, kRsi, kRdi, kRax, kRbx, kRbp,
                                   kR8,  kR9,  kR10, kR11, kR12, kR13, kR14};
  // First a register already taken (no store), then one the next
  // instructions leave alone (no reload soon), then any.
  // The stack's slot offset is kept if possible.
  uint16_t keep = 0xffff;
  if (stack_slot_in_ >= 0) keep &= ~(1u << stack_slot_in_);
  for (uint16_t prefer : {static_cast<uint16_t>(p->spilled & keep),
                          static_cast<uint16_t>(~lookahead_ & keep), static_cast<uint16_t>(keep),
                          static_cast<uint16_t>(0xffff)}) {
    for (int h : kOrder) {
      if (low_only && h >= 8) break;
      if (((p->used | sticky_) & (1u << h)) || !(prefer & (1u << h))) continue;
      p->used |= 1u << h;
      p->spilled |= 1u << h;
      if (h == stack_slot_in_) stack_slot_in_ = -1;
      return h;
    }
  }
  return -1;
}

void BlockEmitter::SpillPlan(const Plan& p) {
  for (int h = 0; h < 16; ++h) {
    if ((p.spilled & ~borrowed_) & (1u << h)) Spill(h);
  }
  borrowed_ |= p.spilled;
}

bool BlockEmitter::SaveFlagsIfLive(bool live) {
  if (live && !flags_saved_) {
    SaveArith(offsetof(BtContext, saved_flags));
    flags_saved_ = true;
  }
  return flags_saved_;
}

void BlockEmitter::RestoreSavedFlags() {
  if (!flags_saved_) return;
  RestoreArith(offsetof(BtContext, saved_flags));
  flags_saved_ = false;
}

void BlockEmitter::BeginInsn(uint64_t rip, uint32_t flags_live, uint16_t lookahead) {
  insn_rip_ = rip;
  last_scratch_ = 0xffff;
  last_flags_saved_ = false;
  last_null_page_fault_ = 0;
  if (flags_live == 0) flags_saved_ = false;
  lookahead_ = lookahead;
}

void BlockEmitter::Materialize() {
  RestoreSavedFlags();
  for (int h = 0; h < 16; ++h) {
    if (borrowed_ & (1u << h)) Reload(h);
  }
  borrowed_ = 0;
  stack_slot_in_ = -1;
  pages_valid_ = false;  // page registers hold guest values again
  if (window_reg_ >= 0) sticky_ &= ~(1u << window_reg_);
  window_reg_ = -1;
}

void BlockEmitter::RestoreBoundary(bool flags_saved, uint16_t regs) {
  if (flags_saved) RestoreArith(offsetof(BtContext, saved_flags));
  for (int h = 0; h < 16; ++h) {
    if (regs & (1u << h)) Reload(h);
  }
}

void BlockEmitter::Spill(int host) {
  a_.mov(CtxPtr(GprOffset(host), 8), x86::gpq(host));
}

void BlockEmitter::Reload(int host) {
  a_.mov(x86::gpq(host), CtxPtr(GprOffset(host), 8));
}

void BlockEmitter::LoadRenamed(const Plan& p) {
  // Guest RSP is in its host register for good; only R15 is loaded.
  if (p.rename[kR15] != kR15) a_.mov(x86::gpq(p.rename[kR15]), CtxPtr(GprOffset(kR15), 8));
}

void BlockEmitter::StoreRenamed(const DecodedInsn& d, const Plan& p) {
  // Guest RSP's host register is its home; R15's is CpuState.
  if (p.rename[kR15] == kR15) return;
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    GprRef r;
    if (d.ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(d.ops[i].reg.value, &r) &&
        r.index == kR15 && (d.ops[i].actions & ZYDIS_OPERAND_ACTION_MASK_WRITE)) {
      a_.mov(CtxPtr(GprOffset(kR15), 8), x86::gpq(p.rename[kR15]));
      return;
    }
  }
}

void BlockEmitter::ReloadSpilled(const Plan& p) {
  for (int h = 0; h < 16; ++h) {
    if (p.spilled & (1u << h)) Reload(h);
  }
}

bool BlockEmitter::Reencode(const DecodedInsn& d, const Plan& p, int s,
                            std::vector<uint8_t>* out, int index) {
  ZydisEncoderRequest req;
  if (!ZYAN_SUCCESS(ZydisEncoderDecodedInstructionToEncoderRequest(
          &d.insn, d.ops, d.insn.operand_count_visible, &req))) {
    return Fail("cannot re-encode " + FormatInsn(d));
  }
  bool agen = false;
  for (unsigned i = 0; i < req.operand_count; ++i) {
    ZydisEncoderOperand& op = req.operands[i];
    agen |= op.type == ZYDIS_OPERAND_TYPE_MEMORY && s < 0;
    if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
      GprRef g;
      if (DecodeGpr(op.reg.value, &g) && p.rename[g.index] != g.index) {
        op.reg.value = EncodeGpr(p.rename[g.index], g.size);
      }
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY && s < 0) {
      // lea: rename the registers of the address, keep its form.
      for (ZydisRegister* r : {&op.mem.base, &op.mem.index}) {
        GprRef g;
        if (DecodeGpr(*r, &g) && p.rename[g.index] != g.index) {
          *r = EncodeGpr(p.rename[g.index], g.size);
        }
      }
    } else if (op.type == ZYDIS_OPERAND_TYPE_MEMORY) {
      op.mem.base = EncodeGpr(s, 8);
      op.mem.index = index >= 0 ? EncodeGpr(index, 8) : ZYDIS_REGISTER_NONE;
      op.mem.scale = index >= 0 ? 1 : 0;
      op.mem.displacement = 0;
    }
  }
  if (s >= 0) {
    // The segment base is already in s; the host address is 64-bit.
    req.prefixes &= ~(ZYDIS_ATTRIB_HAS_SEGMENT_CS | ZYDIS_ATTRIB_HAS_SEGMENT_SS |
                      ZYDIS_ATTRIB_HAS_SEGMENT_DS | ZYDIS_ATTRIB_HAS_SEGMENT_ES |
                      ZYDIS_ATTRIB_HAS_SEGMENT_FS | ZYDIS_ATTRIB_HAS_SEGMENT_GS);
    req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_64;
  }
  if (env_.compat) {
    // Compatibility-mode code runs as the 64-bit form of the same
    // instruction: the operand sizes are the decoded ones (32 by default,
    // as in 64-bit mode without REX.W); a 32-bit register write
    // zero-extends, which compatibility mode leaves undefined (SDM Vol. 1
    // §3.4.1.1). lea keeps its 32-bit address size (67h), so it wraps.
    req.machine_mode = ZYDIS_MACHINE_MODE_LONG_64;
    if (s < 0 && !agen) req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_NONE;
  }
  uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
  ZyanUSize len = sizeof(buf);
  if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstruction(&req, buf, &len))) {
    return Fail("cannot re-encode " + FormatInsn(d));
  }
  out->assign(buf, buf + len);
  return true;
}

// xlat: AL = [RBX + zero-extended AL] (SDM Vol. 2 XLAT), through the
// soft TLB like any load; a segment override (FS/GS) adds its base.
bool BlockEmitter::EmitXlat(const DecodedInsn& d, uint32_t flags_live) {
  Plan p;
  p.used = (1u << kRax) | (1u << kRbx);
  TakeRegisters(&p);
  int s = PickScratch(&p, false), t = PickScratch(&p, false);
  last_scratch_ = p.spilled;
  SaveFlagsIfLive(flags_live != 0);
  last_flags_saved_ = flags_saved_;
  SpillPlan(p);
  a_.movzx(x86::gpd(s), x86::al);
  if (d.insn.address_width == 32) {
    a_.add(x86::gpd(s), x86::ebx);  // wraps at 4 GiB, zero-extended
  } else {
    a_.add(x86::gpq(s), x86::rbx);
  }
  AddSegmentBase(OverrideSegment(d), s);
  EmitAccess(d, p, s, t, 1, true, false,
             [this, s] { a_.mov(x86::al, x86::byte_ptr(x86::gpq(s))); }, false);
  return true;
}

// maskmovq / maskmovdqu store the selected bytes at DS:[RDI] (SDM Vol. 2
// MASKMOVQ): the host instruction runs with RDI pointing at the host
// bytes. The access counts as a read too, so that a bounced one (across a
// page, or MMIO) writes back the bytes the mask left alone unchanged.
bool BlockEmitter::EmitMaskMove(const DecodedInsn& d, uint32_t flags_live) {
  if (d.insn.address_width != 64) return Fail("maskmov with 32-bit addressing");
  unsigned size = d.insn.mnemonic == ZYDIS_MNEMONIC_MASKMOVQ ? 8 : 16;
  Plan p;
  p.used = 1u << kRdi;
  TakeRegisters(&p);
  int s = PickScratch(&p, false), t = PickScratch(&p, false);
  last_scratch_ = p.spilled;
  SaveFlagsIfLive(flags_live != 0);
  last_flags_saved_ = flags_saved_;
  SpillPlan(p);
  a_.mov(x86::gpq(s), x86::rdi);
  AddSegmentBase(OverrideSegment(d), s);
  // The instruction's own bytes without a segment prefix (the base is in s).
  std::vector<uint8_t> bytes;
  for (unsigned i = 0; i < d.insn.length; ++i) {
    uint8_t b = d.bytes[i];
    bool seg_prefix = i < d.insn.raw.prefix_count &&
                      (b == 0x2e || b == 0x36 || b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65);
    if (!seg_prefix) bytes.push_back(b);
  }
  EmitAccess(d, p, s, t, size, true, true, [this, s, bytes] {
    Spill(kRdi);
    a_.mov(x86::rdi, x86::gpq(s));
    a_.embed(bytes.data(), bytes.size());
    Reload(kRdi);
  }, false);
  return true;
}

bool BlockEmitter::EmitIdent(const DecodedInsn& d, uint32_t flags_live) {
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_XLAT) return EmitXlat(d, flags_live);
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_MASKMOVQ || d.insn.mnemonic == ZYDIS_MNEMONIC_MASKMOVDQU) {
    return EmitMaskMove(d, flags_live);
  }
  Plan p;
  if (!PlanInsn(d, &p)) return false;
  last_scratch_ = p.spilled;
  const bool renamed = p.rename[kRsp] != kRsp || p.rename[kR15] != kR15;
  // Saved flags go back to host RFLAGS before an instruction that reads or
  // writes any of them; others leave them saved.
  const auto* f = d.insn.cpu_flags;
  constexpr uint32_t kArith = ZYDIS_CPUFLAG_CF | ZYDIS_CPUFLAG_PF | ZYDIS_CPUFLAG_AF |
                              ZYDIS_CPUFLAG_ZF | ZYDIS_CPUFLAG_SF | ZYDIS_CPUFLAG_OF;
  const bool touches_flags =
      f && ((f->tested | f->modified | f->set_0 | f->set_1 | f->undefined) & kArith);
  last_flags_saved_ = flags_saved_;

  const ZydisDecodedOperand* mem = nullptr;
  const ZydisDecodedOperand* agen = nullptr;
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    const ZydisDecodedOperand& op = d.ops[i];
    if (op.type != ZYDIS_OPERAND_TYPE_MEMORY) continue;
    if (op.mem.type == ZYDIS_MEMOP_TYPE_AGEN) {
      agen = &op;
      continue;
    }
    if (op.mem.type != ZYDIS_MEMOP_TYPE_MEM || mem) {
      return Fail("unsupported memory operand in " + FormatInsn(d));
    }
    if (op.visibility == ZYDIS_OPERAND_VISIBILITY_HIDDEN) {
      return Fail("implicit memory operand in " + FormatInsn(d));
    }
    mem = &op;
  }

  // lea with a RIP-relative operand: the address is a constant.
  if (agen && agen->mem.base == ZYDIS_REGISTER_RIP) {
    GprRef dst;
    if (!DecodeGpr(d.ops[0].reg.value, &dst)) return Fail("odd lea " + FormatInsn(d));
    uint64_t value = d.NextRip() + agen->mem.disp.value;
    SpillPlan(p);
    int host = p.rename[dst.index];
    if (dst.size == 8) {
      a_.mov(x86::gpq(host), value);
    } else if (dst.size == 4) {
      a_.mov(x86::gpd(host), static_cast<uint32_t>(value));
    } else {
      a_.mov(x86::gpw(host), static_cast<uint16_t>(value));
    }
    StoreRenamed(d, p);
    return true;
  }

  if (!mem) {
    if (touches_flags) RestoreSavedFlags();
    last_flags_saved_ = flags_saved_;
    // Nothing renamed: the guest bytes are the host code; not in
    // compatibility mode, where the same bytes decode differently
    // (40h-4Fh are inc/dec there, REX prefixes here).
    if (!renamed && !env_.compat) {
      a_.embed(d.bytes, d.insn.length);
      return true;
    }
    std::vector<uint8_t> bytes;
    if (!Reencode(d, p, -1, &bytes)) return false;
    SpillPlan(p);
    LoadRenamed(p);
    a_.embed(bytes.data(), bytes.size());
    StoreRenamed(d, p);
    return true;
  }

  unsigned size = mem->size / 8;
  if (size == 0 || size > kMaxAccessSize) return Fail("unsupported access size in " + FormatInsn(d));
  bool read = mem->actions & ZYDIS_OPERAND_ACTION_MASK_READ;
  bool write = mem->actions & ZYDIS_OPERAND_ACTION_MASK_WRITE;
  int s = PickScratch(&p, p.needs_low);
  // A loop's page pair for this instruction, or one to reserve now.
  int t = -1;
  const LoopPage* page = nullptr;
  for (const LoopPage& lp : loop_pages_) {
    uint16_t pair = lp.regs();
    if (lp.rip == d.rip && !plan_pages_ && pages_valid_ && (borrowed_ & pair) == pair &&
        !(p.used & pair)) {
      page = &lp;
      p.used |= pair;
      p.spilled |= pair;  // taken since EnterLoop
    }
  }
  if (plan_pages_) {
    uint16_t saved = lookahead_;
    lookahead_ = block_names_;  // registers no instruction of the loop names
    // [s + HB] with AH..BH: no REX prefix, so HB is one of the low eight.
    t = PickScratch(&p, false);
    int hb = PickScratch(&p, p.needs_low);
    lookahead_ = saved;
    if (t >= 0 && hb >= 0 && !(block_names_ & ((1u << t) | (1u << hb)))) {
      loop_pages_.push_back({d.rip, t, hb});
      sticky_ |= (1u << t) | (1u << hb);
    }
  }
  if (!page && t < 0) t = PickScratch(&p, false);
  if (s < 0 || (!page && t < 0)) return Fail("no scratch register for " + FormatInsn(d));

  // bt/bts/btr/btc [mem], reg address the bit string at mem + (reg >> 3),
  // signed, beyond the operand (SDM Vol. 2 BT). The address is adjusted
  // here and the instruction gets the offset within the operand, so the
  // access stays inside the probed bytes.
  GprRef bit_reg;
  int bit_src = -1, u = -1;
  ZydisMnemonic mn = d.insn.mnemonic;
  if ((mn == ZYDIS_MNEMONIC_BT || mn == ZYDIS_MNEMONIC_BTS || mn == ZYDIS_MNEMONIC_BTR ||
       mn == ZYDIS_MNEMONIC_BTC) &&
      d.ops[1].type == ZYDIS_OPERAND_TYPE_REGISTER && DecodeGpr(d.ops[1].reg.value, &bit_reg)) {
    u = PickScratch(&p, false);
    if (u < 0) return Fail("no scratch register for " + FormatInsn(d));
    bit_src = p.rename[bit_reg.index];
    p.rename[bit_reg.index] = u;
  }
  last_scratch_ = p.spilled;
  std::vector<uint8_t> bytes;
  if (!Reencode(d, p, s, &bytes, page ? page->hb : -1)) return false;

  SaveFlagsIfLive(flags_live != 0);
  // The instruction's own code runs after the probe: with the flags back
  // in RFLAGS if it touches them, else still saved.
  last_flags_saved_ = flags_saved_ && !touches_flags;
  SpillPlan(p);
  LoadRenamed(p);
  // The address may name RSP, renamed to u above.
  if (u >= 0 && bit_reg.index == kRsp) a_.mov(x86::gpq(u), x86::gpq(kGuestRspHost));
  EmitEffectiveAddress(d, *mem, p, s, page ? page->nt : -1);
  if (u >= 0) {
    x86::Gp U = x86::gpq(u);
    // R15 was loaded into u itself by LoadRenamed (the rename map points
    // it there): keep a copy in the scratch that was meant for it. RSP's
    // host register still holds it.
    if (bit_reg.index == kR15) a_.mov(x86::gpq(bit_src), U);
    x86::Gp src = x86::gpq(bit_src);
    // u = the sign-extended bit offset, scaled to operand units in bytes.
    if (size == 2) a_.movsx(U, src.r16());
    else if (size == 4) a_.movsxd(U, src.r32());
    else a_.mov(U, src);
    a_.sar(U, 3);
    a_.and_(U, -static_cast<int32_t>(size));
    a_.add(x86::gpq(s), U);
    // The offset within the operand: the low bits of the source.
    a_.mov(U, src);
    a_.and_(U, static_cast<int32_t>(size * 8 - 1));
  }
  EmitAccess(d, p, s, t, size, read, write,
             [this, bytes] { a_.embed(bytes.data(), bytes.size()); }, touches_flags, false,
             false, page);
  StoreRenamed(d, p);
  return true;
}

}  // namespace btvm
