// The sequence generator's core: see generator.h for the model (items, ops,
// the shared address space) and gen_internal.h for how the files divide the
// work. Here: the dispatch to the category builders, addresses and memory
// operands, the operand builder (Gen::Insn) that turns a table row's operand
// form into registers, immediates and a memory operand whose base and index
// registers it first loads so that the effective address is valid, the
// initial state, and the assembly of a sequence.

#include <cpuid.h>

#include "tests/diff/gen_internal.h"

namespace btvm::diff {
namespace gen {

bool Gen::Build(Category c, Item& it) {
  // In the order of BTVM_DIFF_CATEGORIES.
  static constexpr Builder kBuilders[] = {
      &Gen::Alu,        &Gen::Unary,   &Gen::Shift,      &Gen::MulDiv,    &Gen::Bits,
      &Gen::Cmov,       &Gen::Xchg,    &Gen::Lock,       &Gen::Movx,      &Gen::Lea,
      &Gen::Mem,        &Gen::Stack,   &Gen::Branch,     &Gen::String,    &Gen::Flags,
      &Gen::Sse,        &Gen::SseFp,   &Gen::Fault,      &Gen::HostFault, &Gen::Shift0,
      &Gen::Enter,      &Gen::Xlat,    &Gen::Stack16,    &Gen::Branch32,  &Gen::BtMemR15,
      &Gen::FaultFlags, &Gen::FaultSs, &Gen::FaultSplit, &Gen::Loop,      &Gen::FaultLoop,
  };
  static_assert(std::size(kBuilders) == kCategoryCount, "one builder per category");
  it.category = c;
  return (this->*kBuilders[static_cast<size_t>(c)])(it);
}

uint64_t Gen::PickEa(unsigned size, const MemOptions& o) {
  if (o.force_ea) return o.ea;
  Region r = Region::kData;
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (o.write) {
    r = roll < 80 ? Region::kData : Region::kStack;
  } else {
    r = roll < 70 ? Region::kData : roll < 85 ? Region::kStack : Region::kReadOnly;
  }
  const unsigned align = std::max(o.align, 1u);
  uint64_t base = kDataAddress, span = kDataSize;
  if (r == Region::kStack) base = kStackAddress, span = kStackSize;
  if (r == Region::kReadOnly) base = kReadOnlyAddress, span = kReadOnlySize;
  if (r == Region::kData && o.allow_cross && align == 1 && size > 1 && rng_.Chance(15)) {
    // Straddle the boundary between the two data pages.
    return kDataAddress + 0x1000 - rng_.Int(1, static_cast<int>(size) - 1);
  }
  const uint64_t lo = base + o.margin, hi = base + span - o.margin - size;
  uint64_t ea = lo + rng_.Below(hi - lo + 1);
  ea &= ~static_cast<uint64_t>(align - 1);
  if (ea < lo) ea += align;
  return ea;
}

ZydisEncoderOperand Gen::Address(uint64_t ea, unsigned size, const MemOptions& o,
                                 std::vector<Op>* setup, ZydisAddressSizeHint* hint,
                                 ZydisInstructionAttributes* prefixes) {
  ZydisEncoderOperand op{};
  op.type = ZYDIS_OPERAND_TYPE_MEMORY;
  op.mem.size = static_cast<ZyanU16>(size);
  *hint = ZYDIS_ADDRESS_SIZE_HINT_NONE;
  const uint32_t busy = o.reserved | Bit(kRsp);
  static constexpr uint8_t kScales[] = {1, 2, 4, 8};
  auto pick_disp = [&]() -> int64_t {
    // clang-format off
    switch (rng_.Below(4)) {
      case 0: return 0;
      case 1: return SignExtend(rng_.Bits(), 1);
      case 2: return SignExtend(rng_.Bits(), 2);
      default: return SignExtend(rng_.Bits(), 4);
    }
    // clang-format on
  };
  const bool in_stack = ea >= kStackAddress && ea < kStackAddress + kStackSize;
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));

  if (in_stack && o.allow_rsp && roll < 40) {
    // [rsp + disp] or [rsp + index*scale + disp], RSP as the generator knows it.
    op.mem.base = ZYDIS_REGISTER_RSP;
    int64_t disp = static_cast<int64_t>(ea - o.rsp);
    if (rng_.Chance(30)) {
      int idx = PickGpr(busy);
      uint8_t scale = rng_.Pick(kScales);
      int64_t v = rng_.Int(-16, 16);
      setup->push_back(MovImm(idx, static_cast<uint64_t>(v)));
      op.mem.index = Gpr(idx, 8);
      op.mem.scale = scale;
      disp -= v * scale;
    }
    op.mem.displacement = disp;
  } else if (roll < 50) {
    // RIP-relative: the displacement is the absolute address here (the
    // encoder makes it relative).
    op.mem.base = ZYDIS_REGISTER_RIP;
    op.mem.displacement = static_cast<int64_t>(ea);
  } else if (roll < 58) {
    // Absolute [disp32] (the addresses all lie below 2 GiB).
    op.mem.displacement = static_cast<int64_t>(ea);
  } else if (roll < 68) {
    // [index*scale + disp32], no base. Upper bits of the index beyond what
    // the scale shifts out are free.
    int idx = PickGpr(busy);
    uint8_t scale = rng_.Pick(kScales);
    int64_t disp = SignExtend(rng_.Bits(), 2);
    disp += static_cast<int64_t>((ea - static_cast<uint64_t>(disp)) & (scale - 1));
    const unsigned shift = scale == 8 ? 3 : scale == 4 ? 2 : scale == 2 ? 1 : 0;
    uint64_t v = (ea - static_cast<uint64_t>(disp)) >> shift;
    if (shift) v |= rng_.Bits() << (64 - shift);
    setup->push_back(MovImm(idx, v));
    op.mem.index = Gpr(idx, 8);
    op.mem.scale = scale;
    op.mem.displacement = disp;
  } else {
    // [base + disp] or [base + index*scale + disp], 64- or 32-bit address
    // size. In 32-bit form the upper halves of the registers are garbage
    // the CPU must ignore (SDM Vol. 1 §3.3.7).
    const bool addr32 = rng_.Chance(20);
    int base = PickGpr(busy);
    int64_t disp = pick_disp();
    uint64_t sum = static_cast<uint64_t>(disp);
    if (rng_.Chance(50)) {
      int idx = PickGpr(busy | Bit(base));
      uint8_t scale = rng_.Pick(kScales);
      uint64_t v = rng_.Chance(50) ? static_cast<uint64_t>(rng_.Int(-64, 64)) : rng_.Value(8);
      if (addr32) v = (v & 0xffffffff) | (rng_.Bits() << 32);
      setup->push_back(MovImm(idx, v));
      op.mem.index = Gpr(idx, addr32 ? 4 : 8);
      op.mem.scale = scale;
      sum += v * scale;
    }
    uint64_t b = ea - sum;
    if (addr32) b = (b & 0xffffffff) | (rng_.Bits() << 32);
    setup->push_back(MovImm(base, b));
    op.mem.base = Gpr(base, addr32 ? 4 : 8);
    op.mem.displacement = disp;
    if (addr32) {
      *hint = ZYDIS_ADDRESS_SIZE_HINT_32;
      op.mem.displacement = static_cast<int32_t>(disp);
    }
  }
  // Segment overrides other than FS/GS do nothing in 64-bit mode
  // (SDM Vol. 3 §3.4.4); the translator must ignore them too.
  static constexpr ZydisInstructionAttributes kSegs[] = {
      ZYDIS_ATTRIB_HAS_SEGMENT_CS, ZYDIS_ATTRIB_HAS_SEGMENT_SS, ZYDIS_ATTRIB_HAS_SEGMENT_DS,
      ZYDIS_ATTRIB_HAS_SEGMENT_ES};
  if (rng_.Chance(5)) *prefixes |= rng_.Pick(kSegs);
  return op;
}

ZydisEncoderOperand Gen::RandomAgen(ZydisAddressSizeHint* hint) {
  // lea computes an address without accessing it: any registers, any
  // values, RSP and RIP included.
  ZydisEncoderOperand op{};
  op.type = ZYDIS_OPERAND_TYPE_MEMORY;
  static constexpr uint8_t kScales[] = {1, 2, 4, 8};
  const bool addr32 = rng_.Chance(20);
  *hint = addr32 ? ZYDIS_ADDRESS_SIZE_HINT_32 : ZYDIS_ADDRESS_SIZE_HINT_NONE;
  const unsigned bytes = addr32 ? 4 : 8;
  const unsigned roll = static_cast<unsigned>(rng_.Below(10));
  if (roll == 0 && !addr32) {
    op.mem.base = ZYDIS_REGISTER_RIP;
    op.mem.displacement = static_cast<int64_t>(kCodeAddress + rng_.Below(0x100000));
    return op;
  }
  if (roll != 1) op.mem.base = Gpr(PickGpr(0), bytes);
  if (roll != 2 && rng_.Chance(60)) {
    op.mem.index = Gpr(PickGpr(Bit(kRsp)), bytes);
    op.mem.scale = rng_.Pick(kScales);
  }
  if (op.mem.base == ZYDIS_REGISTER_NONE && op.mem.index == ZYDIS_REGISTER_NONE) {
    op.mem.base = Gpr(PickGpr(0), bytes);
  }
  // clang-format off
  switch (rng_.Below(3)) {
    case 0: break;
    case 1: op.mem.displacement = SignExtend(rng_.Bits(), 1); break;
    default: op.mem.displacement = SignExtend(rng_.Bits(), 4); break;
  }
  // clang-format on
  return op;
}

bool Gen::Insn(Item& it, ZydisMnemonic m, std::string_view form, unsigned size, InsnOptions o) {
  ZydisEncoderRequest req = Req(m, {}, o.prefixes);
  std::vector<Op> setup;
  for (size_t i = 0; i < form.size(); ++i) {
    const char k = form[i];
    ZydisEncoderOperand op{};
    // clang-format off
    switch (k) {
      case 'R': op = RegOp(PickReg(size, true)); break;
      case 'r': op = RegOp(PickReg(size, false)); break;
      case 'w': op = RegOp(Gpr(PickGpr(Bit(kRsp)), 4)); break;
      case 'Q': op = RegOp(Gpr(PickGpr(Bit(kRsp)), 8)); break;
      case 'd': op = RegOp(Gpr(PickGpr(0), 4)); break;
      case 'q': op = RegOp(Gpr(PickGpr(0), 8)); break;
      case 'x': op = RegOp(Xmm(static_cast<int>(rng_.Below(16)))); break;
      case 'i': op = ImmOp(Imm(o.imm_bytes ? o.imm_bytes : size)); break;
      case 'k': op = ImmOp(o.count >= 0 ? o.count : ShiftCount()); break;
      case 'b': op = ImmOp(static_cast<uint8_t>(rng_.Bits())); break;
      case '1': op = ImmOp(1); break;
      case 'c': op = RegOp(ZYDIS_REGISTER_CL); break;
      case 'm':
      case 'M': {
        MemOptions mo = o.mem;
        mo.write = k == 'M';
        mo.rsp = rsp_;
        const unsigned msize = o.mem_size ? o.mem_size : size;
        if (o.fixed_mem) {
          op = o.mem_operand;
          op.mem.size = static_cast<ZyanU16>(msize);
          if (ZydisRegisterGetWidth(kMode, op.mem.base) == 32) {
            req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_32;
          }
          break;
        }
        // `c` needs RCX for the count, loaded after the address.
        if (form.find('c') != std::string_view::npos) mo.reserved |= Bit(kRcx);
        ZydisAddressSizeHint hint;
        op = Address(PickEa(msize, mo), msize, mo, &setup, &hint, &req.prefixes);
        req.address_size_hint = hint;
        break;
      }
      default: return false;
    }
    // clang-format on
    req.operands[req.operand_count++] = op;
  }
  // A CL count, loaded after the address (which avoids RCX).
  if (form.find('c') != std::string_view::npos && o.cl >= 0) {
    setup.push_back(MovImm(kRcx, 1, static_cast<uint64_t>(o.cl)));
  }
  std::vector<uint8_t> probe;
  if (!EncodeAt(req, kCodeAddress, &probe)) return false;
  for (Op& s : setup) it.ops.push_back(std::move(s));
  it.ops.push_back(MakeOp(req));
  return true;
}

bool Gen::InsnFromRow(Item& it, ZydisMnemonic m, const char* forms, unsigned size, InsnOptions o) {
  // Pick one space-separated alternative.
  std::vector<std::string_view> alts;
  std::string_view s(forms);
  while (!s.empty()) {
    size_t sp = s.find(' ');
    alts.push_back(s.substr(0, sp));
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  return Insn(it, m, rng_.Pick(alts), size, o);
}

void Gen::InlineAlu(Item& it) {
  for (int tries = 0; tries < 16; ++tries) {
    const IntRow& row = rng_.Pick(kAluRows);
    const unsigned size = PickSize(row.sizes);
    std::string_view f = rng_.Chance(50) ? "Rr" : "Ri";
    if (row.m == MN(CMP) || row.m == MN(TEST)) f = "rr";
    if (Insn(it, row.m, f, size)) return;
  }
}

// --- Categories -----------------------------------------------------------

uint64_t Gen::DefineReadFlags(Item& it, uint64_t undefined, std::vector<uint64_t>* undefined_at,
                              size_t index) {
  // In a loop, the flags at the head also come around the back edge: any
  // flag an op of the item may leave undefined is taken as undefined
  // everywhere in it (a fixpoint would be tighter; this is never wrong).
  // Its exits may leave at any op, so the item passes on all it has seen.
  uint64_t seen = 0;
  if (it.loops) {
    for (const Op& op : it.ops) undefined |= EffectOf(op).undefined;
  }
  for (size_t j = 0; j < it.ops.size(); ++j) {
    const FlagEffect e = EffectOf(it.ops[j]);
    if (e.tested & undefined) {
      // cmp defines all six (SDM Vol. 2 CMP) and writes no register.
      Op cmp = MakeOp(Req(MN(CMP), {RegOp(Gpr(PickGpr(0), 8)), RegOp(Gpr(PickGpr(0), 8))}));
      it.ops.insert(it.ops.begin() + static_cast<long>(j), cmp);
      for (Op& op : it.ops) {
        // Jumps to the reader now land on the cmp before it.
        if (op.target_op > static_cast<int>(j)) ++op.target_op;
      }
      undefined = 0;
      continue;  // the reading op, now at j + 1, is looked at next
    }
    undefined = (undefined & ~e.defined) | e.undefined;
    seen |= undefined;
    const Op& op = it.ops[j];
    if (op.skip_items >= 0) {
      const size_t last =
          std::min(index + 1 + static_cast<size_t>(op.skip_items), undefined_at->size() - 1);
      for (size_t t = index + 1; t <= last; ++t) (*undefined_at)[t] |= undefined;
    }
  }
  return it.loops ? seen | undefined : undefined;
}

// --- Initial state --------------------------------------------------------

void Gen::InitialState(native::MachineState* s) {
  for (int i = 0; i < 16; ++i) s->gpr[i] = rng_.Value(8);
  s->gpr[kRsp] = kStackStart;
  // Arithmetic flags and DF at random (bit 1 is forced by the runners).
  s->rflags = 0x2 | (rng_.Bits() & 0xcd5);
  // XMM: a mix of raw bits and interesting float and double lanes.
  static constexpr uint64_t kDoubles[] = {
      0x0000000000000000, 0x8000000000000000, 0x3ff0000000000000, 0xbff0000000000000,
      0x3ff8000000000000, 0x0010000000000000, 0x000fffffffffffff, 0x7ff0000000000000,
      0xfff0000000000000, 0x7ff8000000000000, 0x7ff4000000000000, 0x7fefffffffffffff,
      0x41dfffffffc00000, 0xc3e0000000000000, 0x43e0000000000000, 0x4059000000000000,
  };
  static constexpr uint32_t kFloats[] = {
      0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x3fc00000, 0x00800000,
      0x007fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0x7fa00000, 0x7f7fffff,
      0x4f000000, 0xcf000000, 0x5f000000, 0x42c80000,
  };
  for (auto& x : s->xmm) {
    const unsigned kind = static_cast<unsigned>(rng_.Below(4));
    for (int lane = 0; lane < 4; ++lane) {
      uint32_t v = static_cast<uint32_t>(rng_.Bits());
      if (kind == 1 && rng_.Chance(70)) v = rng_.Pick(kFloats);
      std::memcpy(&x[4 * lane], &v, 4);
    }
    if (kind == 2) {
      for (int lane = 0; lane < 2; ++lane) {
        uint64_t v = rng_.Chance(70) ? rng_.Pick(kDoubles) : rng_.Bits();
        std::memcpy(&x[8 * lane], &v, 8);
      }
    }
  }
  // MXCSR: exceptions masked (an unmasked one would be a host SIGFPE in
  // translated code), random rounding, FTZ and DAZ.
  s->mxcsr = 0x1f80 | (static_cast<uint32_t>(rng_.Below(4)) << 13);
  if (rng_.Chance(20)) s->mxcsr |= 0x8000;  // FTZ
  if (rng_.Chance(20)) s->mxcsr |= 0x0040;  // DAZ

  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = rng_.Bits();
      std::memcpy(&b[i], &v, std::min<size_t>(8, n - i));
    }
    return b;
  };
  native::MemoryRegion data{kDataAddress, random_bytes(kDataSize), native::Access::kReadWrite};
  // A zero block and a repeated-byte block, where cmps/scas find equal runs.
  std::fill(data.bytes.begin() + 0x400, data.bytes.begin() + 0x480, 0);
  std::fill(data.bytes.begin() + 0x480, data.bytes.begin() + 0x500, 0xa5);
  native::MemoryRegion ro{kReadOnlyAddress, random_bytes(kReadOnlySize), native::Access::kReadOnly};
  native::MemoryRegion stack{kStackAddress, random_bytes(kStackSize), native::Access::kReadWrite};
  s->memory = {std::move(data), std::move(ro), std::move(stack)};
}

// Gives `op` a REX prefix that changes nothing (0x40: no W, R, X or B), as
// raw bytes: the decoder and any re-encoding must see through it. Not for
// ops with an 8-bit register (REX turns AH..BH into SPL..DIL), a
// RIP-relative operand (the displacement would be off by one) or a target.
void AddRedundantRex(Op* op) {
  if (!op->raw.empty() || op->patch != Op::Patch::kNone) return;
  for (unsigned k = 0; k < op->req.operand_count; ++k) {
    const ZydisEncoderOperand& o = op->req.operands[k];
    if (o.type == ZYDIS_OPERAND_TYPE_REGISTER &&
        ZydisRegisterGetClass(o.reg.value) == ZYDIS_REGCLASS_GPR8)
      return;
    if (o.type == ZYDIS_OPERAND_TYPE_MEMORY && o.mem.base == ZYDIS_REGISTER_RIP) return;
  }
  std::vector<uint8_t> b;
  if (!EncodeAt(op->req, kCodeAddress, &b)) return;
  size_t at = 0;
  static constexpr uint8_t kLegacy[] = {0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e,
                                        0x36, 0x3e, 0x26, 0x64, 0x65};
  while (at < b.size() &&
         std::find(std::begin(kLegacy), std::end(kLegacy), b[at]) != std::end(kLegacy))
    ++at;
  if (at >= b.size() || (b[at] & 0xf0) == 0x40 || b[at] == 0xc4 || b[at] == 0xc5)
    return;  // REX or VEX already
  b.insert(b.begin() + static_cast<long>(at), 0x40);
  if (b.size() > ZYDIS_MAX_INSTRUCTION_LENGTH) return;
  op->raw = std::move(b);
}

// True if `it` is sound: every op encodes, and only an item that says so
// writes RSP (a branch may skip any other, and RSP must stay known).
bool Encodes(const Item& it) {
  if (it.ops.empty()) return false;
  for (const Op& op : it.ops) {
    std::vector<uint8_t> b = op.raw;
    if (b.empty() && !EncodeAt(Patched(op, op.req, kCodeAddress), kCodeAddress, &b)) return false;
    if (it.changes_rsp) continue;
    ZydisDisassembledInstruction d;
    if (!ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress, b.data(), b.size(), &d))) continue;
    for (unsigned k = 0; k < d.info.operand_count; ++k) {
      const ZydisDecodedOperand& o = d.operands[k];
      if (o.type == ZYDIS_OPERAND_TYPE_REGISTER && (o.actions & ZYDIS_OPERAND_ACTION_MASK_WRITE) &&
          ZydisRegisterGetLargestEnclosing(kMode, o.reg.value) == ZYDIS_REGISTER_RSP) {
        return false;
      }
    }
  }
  return true;
}

Sequence Gen::Generate() {
  Sequence seq;
  InitialState(&seq.initial);
  std::vector<Category> body, terminal;
  for (size_t c = 0; c < kCategoryCount; ++c) {
    if (!cfg_.categories.test(c)) continue;
    const auto cat = static_cast<Category>(c);
    (IsFinal(cat) ? terminal : body).push_back(cat);
  }
  const int n = body.empty() ? 0 : rng_.Int(cfg_.min_items, cfg_.max_items);
  // Flags that may be undefined at the start of each item: a forward
  // branch carries its flags to every item it may skip to.
  std::vector<uint64_t> undefined_at(static_cast<size_t>(n) + 2, 0);
  auto add = [&](Category c) {
    bool built = false;
    first_item_ = seq.items.empty();
    for (int tries = 0; tries < 50 && !built; ++tries) {
      Item it;
      const uint64_t rsp = rsp_;
      initial_gprs_.clear();
      reserved_ = 0;
      built = Build(c, it) && Encodes(it);
      reserved_ = 0;
      if (built) {
        for (const auto& [reg, value] : initial_gprs_) seq.initial.gpr[reg] = value;
        for (Op& op : it.ops) {
          if (rng_.Chance(4)) AddRedundantRex(&op);
        }
        seq.items.push_back(std::move(it));
      } else {
        rsp_ = rsp;
      }
    }
    if (!built) {
      seq.dropped.set(static_cast<size_t>(c));
      return;
    }
    const size_t k = seq.items.size() - 1;
    const uint64_t after = DefineReadFlags(seq.items.back(), undefined_at[k], &undefined_at, k);
    undefined_at[k + 1] |= after;
  };
  auto ended = [&] { return !seq.items.empty() && seq.items.back().ends_run; };
  for (int i = 0; i < n && !ended(); ++i) add(rng_.Pick(body));
  if (!terminal.empty() && !ended() && (body.empty() || rng_.Chance(35))) {
    add(rng_.Pick(terminal));
  }
  // A branch never skips an item that moves RSP: RSP stays what the
  // generator assumed on every path.
  for (size_t i = 0; i < seq.items.size(); ++i) {
    for (Op& op : seq.items[i].ops) {
      if (op.skip_items <= 0) continue;
      int k = 0;
      while (k < op.skip_items && i + 1 + k < seq.items.size() &&
             !seq.items[i + 1 + k].changes_rsp) {
        ++k;
      }
      op.skip_items = k;
    }
  }
  // jrcxz, jecxz and the loop forms have rel8 only: they skip no more items
  // than they reach (a loop item may be long). Each short jcc or jmp in
  // between may still be widened by 4 bytes.
  auto bytes = [](const Op& op) -> int {
    std::vector<uint8_t> b = op.raw;
    if (b.empty()) EncodeAt(Patched(op, op.req, kCodeAddress), kCodeAddress, &b);
    const bool may_widen = op.patch == Op::Patch::kBranch && !op.wide;
    return static_cast<int>(b.size()) + (may_widen ? 4 : 0);
  };
  for (size_t i = 0; i < seq.items.size(); ++i) {
    std::vector<Op>& ops = seq.items[i].ops;
    for (size_t j = 0; j < ops.size(); ++j) {
      const ZydisMnemonic m = ops[j].req.mnemonic;
      const bool rel8_only = ops[j].raw.empty() && (m == MN(JRCXZ) || m == MN(JECXZ) ||
                                                    m == MN(LOOP) || m == MN(LOOPE) ||
                                                    m == MN(LOOPNE));
      if (!rel8_only || ops[j].skip_items <= 0) continue;
      int distance = 0;
      for (size_t k = j + 1; k < ops.size(); ++k) distance += bytes(ops[k]);
      int reach = 0;
      while (reach < ops[j].skip_items) {
        int item = 0;
        for (const Op& op : seq.items[i + 1 + static_cast<size_t>(reach)].ops) item += bytes(op);
        if (distance + item > 127) break;
        distance += item;
        ++reach;
      }
      ops[j].skip_items = reach;
    }
  }
  return seq;
}

}  // namespace gen

using namespace gen;

const char* CategoryName(Category c) {
  static constexpr const char* kNames[] = {
#define BTVM_DIFF_NAME(id, name, final, text) name,
      BTVM_DIFF_CATEGORIES(BTVM_DIFF_NAME)
#undef BTVM_DIFF_NAME
  };
  return kNames[static_cast<size_t>(c)];
}

const char* CategoryHelp(Category c) {
  static constexpr const char* kTexts[] = {
#define BTVM_DIFF_TEXT(id, name, final, text) text,
      BTVM_DIFF_CATEGORIES(BTVM_DIFF_TEXT)
#undef BTVM_DIFF_TEXT
  };
  return kTexts[static_cast<size_t>(c)];
}

bool IsFinal(Category c) {
  static constexpr bool kFinal[] = {
#define BTVM_DIFF_FINAL(id, name, final, text) final,
      BTVM_DIFF_CATEGORIES(BTVM_DIFF_FINAL)
#undef BTVM_DIFF_FINAL
  };
  return kFinal[static_cast<size_t>(c)];
}

std::optional<Category> CategoryByName(std::string_view name) {
  for (size_t c = 0; c < kCategoryCount; ++c) {
    if (name == CategoryName(static_cast<Category>(c))) return static_cast<Category>(c);
  }
  return std::nullopt;
}

CategorySet DefaultCategories() {
  // Every category but those the current translator fails (README.md):
  // they are opt-in (--include).
  CategorySet s;
  s.set();
  for (Category c : {Category::kFaultFlags}) s.reset(static_cast<size_t>(c));
  return s;
}

HostFeatures HostFeatures::Detect() {
  HostFeatures f;
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    f.ssse3 = c & (1u << 9);
    f.movbe = c & (1u << 22);
    f.cx16 = c & (1u << 13);
    f.sse41 = c & (1u << 19);
    f.popcnt = c & (1u << 23);
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.bmi1 = b & (1u << 3);
    f.adx = b & (1u << 19);
  }
  if (__get_cpuid(0x80000001, &a, &b, &c, &d)) {
    f.lahf = c & (1u << 0);
    f.lzcnt = c & (1u << 5);
  }
  return f;
}

uint64_t SequenceSeed(uint64_t seed, uint64_t index) {
  return SplitMix(seed ^ SplitMix(index));
}

Sequence Generate(const GeneratorConfig& config, uint64_t seed) {
  return Gen(config, seed).Generate();
}

}  // namespace btvm::diff
