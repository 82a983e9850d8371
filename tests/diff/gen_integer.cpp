// Integer categories: ALU, unary, shifts, multiply and divide, bit
// operations, cmov/setcc, exchanges, locked operations, moves with
// extension, lea and hint instructions, plain memory moves, xlat.

#include "tests/diff/gen_internal.h"

namespace btvm::diff::gen {

bool Gen::Alu(Item& it) {
  if (cfg_.host.adx && rng_.Chance(5)) {
    // adcx / adox: add with carry through CF or OF alone (SDM Vol. 2 ADCX).
    return InsnFromRow(it, rng_.Chance(50) ? MN(ADCX) : MN(ADOX), "Rr Rm", PickSize(4 | 8));
  }
  const IntRow& row = rng_.Pick(kAluRows);
  const unsigned size = PickSize(row.sizes);
  if (row.m == MN(MOV) && size == 8 && rng_.Chance(20)) {
    // mov r64, imm64 (REX.W B8+r).
    it.ops.push_back(MovImm(PickGpr(Bit(kRsp)), rng_.Value(8)));
    return true;
  }
  return InsnFromRow(it, row.m, row.forms, size);
}

bool Gen::Unary(Item& it) {
  const IntRow& row = rng_.Pick(kUnaryRows);
  return InsnFromRow(it, row.m, row.forms, PickSize(row.sizes));
}

// Whether a shift or rotate by `count` leaves every flag as it was (SDM
// Vol. 2 SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR, SHLD/SHRD: a masked count of 0
// affects no flag; 8- and 16-bit RCL/RCR rotate by the masked count mod 9
// or 17, and by 0 leave CF alone). Zydis, from the encoding alone, lists
// the flags as written.
bool KeepsFlags(ZydisMnemonic m, unsigned size, unsigned count) {
  const unsigned masked = count & (size == 8 ? 63 : 31);
  if (masked == 0) return true;
  if ((m == MN(RCL) || m == MN(RCR)) && size == 1 && masked % 9 == 0) return true;
  if ((m == MN(RCL) || m == MN(RCR)) && size == 2 && masked % 17 == 0) return true;
  return false;
}

bool Gen::Shift(Item& it) {
  return ShiftWith(it, false);
}
bool Gen::Shift0(Item& it) {
  return ShiftWith(it, true);
}

bool Gen::ShiftWith(Item& it, bool keeps_flags) {
  // `keeps_flags`: only counts after which no flag changes (category
  // shift0); otherwise never such a count.
  const IntRow& row = rng_.Pick(kShiftRows);
  const unsigned size = PickSize(row.sizes);
  std::vector<std::string_view> alts;
  for (std::string_view f : {"R1", "Rk", "Rc", "M1", "Mk", "Mc", "Rrk", "Rrc", "Mrk", "Mrc"}) {
    if (std::string_view(row.forms).find(f) == std::string_view::npos) continue;
    if (keeps_flags && f.find('1') != std::string_view::npos) continue;
    alts.push_back(f);
  }
  const std::string_view form = rng_.Pick(alts);
  InsnOptions o;
  unsigned count = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    count = ShiftCount();
    if (KeepsFlags(row.m, size, count) == keeps_flags) break;
  }
  if (KeepsFlags(row.m, size, count) != keeps_flags) return false;
  o.count = static_cast<int>(count);
  o.cl = static_cast<int>(count);
  return Insn(it, row.m, form, size, o);
}

bool Gen::MulDiv(Item& it) {
  if (rng_.Chance(60)) {
    const IntRow& row = rng_.Pick(kMulRows);
    return InsnFromRow(it, row.m, row.forms, PickSize(row.sizes));
  }
  // div/idiv set up so that no #DE can happen (SDM Vol. 2 DIV, IDIV): a
  // non-zero divisor (not -1 for idiv) and a high half of the dividend
  // that keeps the quotient in range.
  const bool is_signed = rng_.Chance(50);
  const unsigned size = PickSize(kAll);
  uint64_t d = rng_.Value(size);
  if (d == 0) d = 1;
  if (is_signed && d == Mask(size)) d = 2;
  const uint32_t fixed = Bit(kRax) | Bit(kRdx);
  int dreg = PickGpr(fixed | Bit(kRsp));
  const bool in_memory = rng_.Chance(40);
  InsnOptions o;
  o.mem.reserved = fixed | Bit(dreg);
  std::vector<Op> pre;
  pre.push_back(MovImm(dreg, size, d));
  ZydisEncoderOperand divisor = RegOp(Gpr(dreg, size));
  if (in_memory) {
    MemOptions mo = o.mem;
    mo.write = true;
    mo.rsp = rsp_;
    ZydisAddressSizeHint hint;
    ZydisInstructionAttributes pfx = 0;
    std::vector<Op> setup;
    divisor = Address(PickEa(size, mo), size, mo, &setup, &hint, &pfx);
    ZydisEncoderRequest store = Req(MN(MOV), {divisor, RegOp(Gpr(dreg, size))}, pfx);
    store.address_size_hint = hint;
    for (Op& s : setup) pre.push_back(std::move(s));
    pre.push_back(MakeOp(store));
    ZydisEncoderRequest div = Req(is_signed ? MN(IDIV) : MN(DIV), {divisor}, pfx);
    div.address_size_hint = hint;
    if (!is_signed) {
      pre.push_back(size == 1 ? MakeOp(Req(MN(MOV), {RegOp(ZYDIS_REGISTER_AH),
                                                     ImmOp(SignExtend(rng_.Below(d), 1))}))
                              : MovImm(kRdx, size, rng_.Below(d)));
    } else {
      static constexpr ZydisMnemonic kExt[] = {MN(CBW), MN(CWD), MN(CDQ), MN(CQO)};
      pre.push_back(MakeOp(Req(kExt[size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3], {})));
    }
    for (Op& p : pre) it.ops.push_back(std::move(p));
    it.ops.push_back(MakeOp(div));
    return true;
  }
  if (size == 1 && dreg < 4 && rng_.Chance(30)) {
    divisor = RegOp(High8(dreg));  // ch, bh (never ah: it is the dividend)
    if (dreg == kRax) return false;
    pre.push_back(MakeOp(Req(MN(MOV), {divisor, ImmOp(SignExtend(d, 1))})));
  }
  if (!is_signed) {
    pre.push_back(size == 1 ? MakeOp(Req(MN(MOV), {RegOp(ZYDIS_REGISTER_AH),
                                                   ImmOp(SignExtend(rng_.Below(d), 1))}))
                            : MovImm(kRdx, size, rng_.Below(d)));
  } else {
    static constexpr ZydisMnemonic kExt[] = {MN(CBW), MN(CWD), MN(CDQ), MN(CQO)};
    pre.push_back(MakeOp(Req(kExt[size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3], {})));
  }
  for (Op& p : pre) it.ops.push_back(std::move(p));
  it.ops.push_back(MakeOp(Req(is_signed ? MN(IDIV) : MN(DIV), {divisor})));
  return true;
}

// bt* [mem], reg: the register is a signed bit offset that may reach
// outside the operand (SDM Vol. 2 BT); it stays within +-32 bytes here. R15
// as the offset register only when `r15` (category btmemr15).
bool Gen::BtMem(Item& it, bool r15) {
  static constexpr ZydisMnemonic kBt[] = {MN(BT), MN(BTS), MN(BTR), MN(BTC)};
  const ZydisMnemonic m = rng_.Pick(kBt);
  const unsigned size = PickSize(kWide);
  const int off = r15 ? 15 : PickGpr(Bit(kRsp) | Bit(15));
  InsnOptions o;
  o.mem.reserved = Bit(off);
  o.mem.margin = 64;
  o.mem.allow_cross = false;
  Item tmp;
  std::string_view f = m == MN(BT) ? "mr" : "Mr";
  // Build the access, then replace the random register with `off`.
  if (!Insn(tmp, m, f, size, o)) return false;
  Op& last = tmp.ops.back();
  last.req.operands[1] = RegOp(Gpr(off, size));
  std::vector<uint8_t> probe;
  if (!EncodeAt(last.req, kCodeAddress, &probe)) return false;
  it.ops.push_back(MovImm(off, static_cast<uint64_t>(rng_.Int(-256, 255))));
  for (Op& op : tmp.ops) it.ops.push_back(std::move(op));
  return true;
}

bool Gen::BtMemR15(Item& it) {
  return BtMem(it, true);
}

bool Gen::Bits(Item& it) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (roll < 15) return BtMem(it, false);
  if (roll < 35) {
    // Counting: sometimes of a zero source, where the result is special.
    std::vector<ZydisMnemonic> ms = {MN(BSF), MN(BSR)};
    if (cfg_.host.popcnt) ms.push_back(MN(POPCNT));
    if (cfg_.host.lzcnt) ms.push_back(MN(LZCNT));
    if (cfg_.host.bmi1) ms.push_back(MN(TZCNT));
    const ZydisMnemonic m = rng_.Pick(ms);
    const unsigned size = PickSize(kWide);
    if (rng_.Chance(25)) {
      int src = PickGpr(Bit(kRsp)), dst = PickGpr(Bit(kRsp));
      if (rng_.Chance(50)) it.ops.push_back(MovImm(src, 0));
      it.ops.push_back(MakeOp(Req(m, {RegOp(Gpr(dst, size)), RegOp(Gpr(src, size))})));
      return true;
    }
    return InsnFromRow(it, m, "Rr Rm", size);
  }
  const IntRow& row = rng_.Pick(kBitRows);
  return InsnFromRow(it, row.m, row.forms, PickSize(row.sizes));
}

bool Gen::Cmov(Item& it) {
  if (rng_.Chance(40)) {
    // A fresh comparison first, so both outcomes are common.
    if (!Insn(it, MN(CMP), "rr", PickSize(kAll))) return false;
  }
  if (rng_.Chance(60)) return InsnFromRow(it, rng_.Pick(kCmovs), "Rr Rm", PickSize(kWide));
  return InsnFromRow(it, rng_.Pick(kSets), "R M", 1);
}

bool Gen::Xchg(Item& it) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  const unsigned size = PickSize(kAll);
  if (roll < 25) return InsnFromRow(it, MN(XCHG), "RR RM MR", size);
  if (roll < 45) return InsnFromRow(it, MN(XADD), "RR MR", size);
  if (roll < 80) {
    // cmpxchg: half the time with the accumulator equal to the destination.
    InsnOptions o;
    o.mem.reserved = Bit(kRax);
    Item tmp;
    if (!InsnFromRow(tmp, MN(CMPXCHG), "Rr Mr", size, o)) return false;
    Op& x = tmp.ops.back();
    if (rng_.Chance(50)) {
      ZydisEncoderRequest load =
          Req(MN(MOV), {RegOp(Gpr(kRax, size)), x.req.operands[0]}, x.req.prefixes);
      load.address_size_hint = x.req.address_size_hint;
      std::vector<uint8_t> probe;
      if (!EncodeAt(load, kCodeAddress, &probe)) return false;
      tmp.ops.insert(tmp.ops.end() - 1, MakeOp(load));
    }
    for (Op& op : tmp.ops) it.ops.push_back(std::move(op));
    return true;
  }
  // cmpxchg8b / cmpxchg16b (SDM Vol. 2 CMPXCHG8B/CMPXCHG16B: m128 aligned).
  const bool wide = cfg_.host.cx16 && rng_.Chance(50);
  const unsigned bytes = wide ? 16 : 8;
  InsnOptions o;
  o.mem.reserved = Bit(kRax) | Bit(kRdx);
  o.mem.align = bytes;
  o.mem.write = true;
  const ZydisInstructionAttributes lock = rng_.Chance(50) ? ZYDIS_ATTRIB_HAS_LOCK : 0;
  o.prefixes = lock;
  Item tmp;
  if (!Insn(tmp, wide ? MN(CMPXCHG16B) : MN(CMPXCHG8B), "M", bytes, o)) return false;
  Op& x = tmp.ops.back();
  if (rng_.Chance(50)) {
    const unsigned half = bytes / 2;
    for (int k = 0; k < 2; ++k) {
      ZydisEncoderOperand mem = x.req.operands[0];
      mem.mem.size = static_cast<ZyanU16>(half);
      mem.mem.displacement += k * half;
      ZydisEncoderRequest load = Req(MN(MOV), {RegOp(Gpr(k ? kRdx : kRax, half)), mem},
                                     x.req.prefixes & ~ZYDIS_ATTRIB_HAS_LOCK);
      load.address_size_hint = x.req.address_size_hint;
      std::vector<uint8_t> probe;
      if (!EncodeAt(load, kCodeAddress, &probe)) return false;
      tmp.ops.insert(tmp.ops.end() - 1, MakeOp(load));
    }
  }
  for (Op& op : tmp.ops) it.ops.push_back(std::move(op));
  return true;
}

bool Gen::Lock(Item& it) {
  // Locked read-modify-write, naturally aligned (a split lock may trap).
  InsnOptions o;
  o.prefixes = ZYDIS_ATTRIB_HAS_LOCK;
  o.mem.allow_cross = false;
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  unsigned size = PickSize(kAll);
  o.mem.align = size;
  if (roll < 40) return InsnFromRow(it, rng_.Pick(kLockAlu), "Mr Mi", size, o);
  if (roll < 55) {
    static constexpr ZydisMnemonic kUn[] = {MN(INC), MN(DEC), MN(NEG), MN(NOT)};
    return Insn(it, rng_.Pick(kUn), "M", size, o);
  }
  // xadd writes its register operand; cmpxchg only reads it.
  if (roll < 70)
    return rng_.Chance(50) ? Insn(it, MN(XADD), "MR", size, o)
                           : Insn(it, MN(CMPXCHG), "Mr", size, o);
  if (roll < 85) {
    static constexpr ZydisMnemonic kBt[] = {MN(BTS), MN(BTR), MN(BTC)};
    size = PickSize(kWide);
    o.mem.align = size;
    return Insn(it, rng_.Pick(kBt), "Mk", size, o);
  }
  o.prefixes = 0;  // xchg with memory locks without a prefix
  return Insn(it, MN(XCHG), rng_.Chance(50) ? "MR" : "RM", size, o);
}

bool Gen::Movx(Item& it) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (roll < 20) {
    static constexpr ZydisMnemonic kExt[] = {MN(CBW), MN(CWDE), MN(CDQE),
                                             MN(CWD), MN(CDQ),  MN(CQO)};
    it.ops.push_back(MakeOp(Req(rng_.Pick(kExt), {})));
    return true;
  }
  InsnOptions o;
  unsigned dst, src;
  ZydisMnemonic m;
  if (roll < 40) {
    m = MN(MOVSXD);
    dst = 8;
    src = 4;
  } else {
    m = rng_.Chance(50) ? MN(MOVZX) : MN(MOVSX);
    src = rng_.Chance(50) ? 1 : 2;
    dst = src == 1 ? PickSize(kWide) : PickSize(4 | 8);
  }
  Item tmp;
  o.mem_size = src;
  if (rng_.Chance(50)) {
    // Register source.
    ZydisEncoderRequest r = Req(m, {RegOp(PickReg(dst, true)), RegOp(PickReg(src, false))});
    std::vector<uint8_t> probe;
    if (!EncodeAt(r, kCodeAddress, &probe)) return false;
    it.ops.push_back(MakeOp(r));
    return true;
  }
  if (!Insn(tmp, m, "Rm", dst, o)) return false;
  for (Op& op : tmp.ops) it.ops.push_back(std::move(op));
  return true;
}

bool Gen::Lea(Item& it) {
  // lea, and the instructions that name memory without touching it (a hint
  // nop with ModRM, prefetch): any address, mapped or not, never faults.
  ZydisAddressSizeHint hint;
  ZydisEncoderOperand mem = RandomAgen(&hint);
  ZydisEncoderRequest r;
  if (rng_.Chance(80)) {
    const unsigned size = PickSize(kWide);
    mem.mem.size = static_cast<ZyanU16>(size);  // Zydis wants the destination's size
    r = Req(MN(LEA), {RegOp(Gpr(PickGpr(Bit(kRsp)), size)), mem});
  } else {
    static constexpr ZydisMnemonic kHints[] = {MN(NOP), MN(PREFETCHT0), MN(PREFETCHNTA),
                                               MN(PREFETCHW)};
    const ZydisMnemonic m = rng_.Pick(kHints);
    mem.mem.size = m == MN(NOP) ? 4 : 1;
    r = Req(m, {mem});
  }
  r.address_size_hint = hint;
  std::vector<uint8_t> probe;
  if (!EncodeAt(r, kCodeAddress, &probe)) return false;
  it.ops.push_back(MakeOp(r));
  return true;
}

bool Gen::Mem(Item& it) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  const unsigned size = PickSize(kAll);
  if (roll < 80) return InsnFromRow(it, MN(MOV), "Rm Mr Mi", size);
  if (roll < 86 && size >= 4) return Insn(it, MN(MOVNTI), "Mr", size);
  if (roll < 92 && size >= 2 && cfg_.host.movbe) return InsnFromRow(it, MN(MOVBE), "Rm Mr", size);
  // clflush: a memory operand the runtime checks and then ignores.
  InsnOptions o;
  return Insn(it, MN(CLFLUSH), "m", 1, o);
}

bool Gen::Xlat(Item& it) {
  // xlat: AL = [RBX + AL] (SDM Vol. 2 XLAT), a memory operand with no
  // ModRM; RBX at least 256 bytes from the end of its region.
  const uint64_t base = rng_.Chance(70) ? kDataAddress + rng_.Below(kDataSize - 0x100)
                                        : kReadOnlyAddress + rng_.Below(kReadOnlySize - 0x100);
  it.ops.push_back(MovImm(kRbx, base));
  it.ops.push_back(RawOp({0xd7}));
  return true;
}

}  // namespace btvm::diff::gen
