// Fault categories: the final item of a sequence, which raises an
// exception both sides must report alike.

#include "tests/diff/gen_internal.h"

namespace btvm::diff::gen {

bool Gen::Fault(Item& it) {
  // The last item of a sequence: everything after a fault is dead. Both
  // sides must agree on the vector, the faulting RIP and the state there.
  // Only instructions that write no flag fault here (see FaultFlags).
  // clang-format off
  switch (rng_.Below(9)) {
    case 0:
    case 1: {  // #PF: load or store in the unmapped page
      InsnOptions o;
      o.mem.force_ea = true;
      o.mem.ea = kUnmappedAddress + rng_.Below(0x1000 - 8);
      const unsigned size = PickSize(kAll);
      return InsnFromRow(it, MN(MOV), "Rm Mr Mi", size, o);
    }
    case 2: {  // #PF: a store to the read-only page
      InsnOptions o;
      o.mem.force_ea = true;
      o.mem.ea = kReadOnlyAddress + rng_.Below(0x1000 - 8);
      const unsigned size = PickSize(kAll);
      return InsnFromRow(it, MN(MOV), "Mr Mi", size, o);
    }
    case 3: {  // #PF on the second page of a split access (bounce path)
      InsnOptions o;
      const unsigned size = PickSize(2 | 4 | 8);
      o.mem.force_ea = true;
      o.mem.ea = kUnmappedAddress - rng_.Int(1, static_cast<int>(size) - 1);
      return InsnFromRow(it, MN(MOV), "Rm Mr", size, o);
    }
    case 4: {  // #PF part-way through rep stos/movs: the registers show progress
      const bool movs = rng_.Chance(50);
      const unsigned done = static_cast<unsigned>(rng_.Int(0, 6));
      it.ops.push_back(MakeOp(Req(MN(CLD), {})));
      it.ops.push_back(MovImm(kRdi, kUnmappedAddress - 8 * done));
      if (movs) it.ops.push_back(MovImm(kRsi, kDataAddress + 8 * rng_.Below(64)));
      it.ops.push_back(MovImm(kRcx, done + 1 + rng_.Below(4)));
      it.ops.push_back(RawOp({0xf3, 0x48, static_cast<uint8_t>(movs ? 0xa5 : 0xab)}));
      return true;
    }
    case 5: {  // #PF on a fetch: jump into the unmapped page
      const int r = PickGpr(Bit(kRsp));
      it.ops.push_back(MovImm(r, kUnmappedAddress + rng_.Below(0x1000)));
      Op j = MakeOp(Req(MN(JMP), {RegOp(Gpr(r, 8))}));
      j.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
      it.ops.push_back(j);
      return true;
    }
    case 6: {  // #GP: a non-canonical address (not RBP/RSP-based: that is #SS)
      const int r = PickGpr(Bit(kRsp) | Bit(kRbp));
      it.ops.push_back(MovImm(r, 0x8000000000000000ull + (rng_.Bits() & 0xffff)));
      ZydisEncoderOperand mem{};
      mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
      mem.mem.base = Gpr(r, 8);
      mem.mem.size = 8;
      it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8)), mem})));
      return true;
    }
    case 7: {  // #UD: ud2, lock on a register operand
      static constexpr uint8_t kUd2[] = {0x0f, 0x0b};
      static constexpr uint8_t kLockReg[] = {0xf0, 0x01, 0xd8};  // lock add eax, ebx
      if (rng_.Chance(50)) {
        it.ops.push_back(RawOp({kUd2[0], kUd2[1]}));
      } else {
        it.ops.push_back(RawOp({kLockReg[0], kLockReg[1], kLockReg[2]}));
      }
      return true;
    }
    default:  // #BP: int3 (a trap: RIP after it)
      it.ops.push_back(RawOp({0xcc}));
      return true;
  }
  // clang-format on
}

bool Gen::FaultFlags(Item& it) {
  // A fault in an instruction that writes the flags: the exception frame
  // must hold the flags from before it (SDM Vol. 3 §6.5: a fault leaves the
  // state as before the instruction), though the instruction would have
  // overwritten them.
  // clang-format off
  switch (rng_.Below(5)) {
    case 0: {  // #DE: divide by zero
      const unsigned size = PickSize(kAll);
      const int r = PickGpr(Bit(kRsp) | Bit(kRax) | Bit(kRdx));
      it.ops.push_back(MovImm(r, 0));
      it.ops.push_back(MakeOp(Req(rng_.Chance(50) ? MN(DIV) : MN(IDIV), {RegOp(Gpr(r, size))})));
      return true;
    }
    case 1: {  // #DE: quotient overflow, including INT_MIN / -1
      const unsigned size = PickSize(kAll);
      const int r = PickGpr(Bit(kRsp) | Bit(kRax) | Bit(kRdx));
      if (rng_.Chance(50)) {
        it.ops.push_back(MovImm(kRax, 8, 1ull << (8 * size - 1)));
        static constexpr ZydisMnemonic kExt[] = {MN(CBW), MN(CWD), MN(CDQ), MN(CQO)};
        it.ops.push_back(MakeOp(Req(kExt[size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3], {})));
        it.ops.push_back(MovImm(r, ~0ull));
        it.ops.push_back(MakeOp(Req(MN(IDIV), {RegOp(Gpr(r, size))})));
      } else {
        it.ops.push_back(MovImm(kRdx, ~0ull));
        it.ops.push_back(MovImm(kRax, ~0ull));
        it.ops.push_back(MovImm(r, 1));
        it.ops.push_back(MakeOp(Req(MN(DIV), {RegOp(Gpr(r, size))})));
      }
      return true;
    }
    default: {  // #PF in a read-modify-write of the read-only or the unmapped page
      InsnOptions o;
      o.mem.force_ea = true;
      o.mem.ea = (rng_.Chance(50) ? kReadOnlyAddress : kUnmappedAddress) + rng_.Below(0x1000 - 8);
      const unsigned size = PickSize(kAll);
      switch (rng_.Below(3)) {
        case 0: {
          const IntRow& row = rng_.Pick(kAluRows);
          if (row.m == MN(MOV) || row.m == MN(CMP) || row.m == MN(TEST)) return false;
          return InsnFromRow(it, row.m, "Mr Mi", size, o);
        }
        case 1: {
          static constexpr ZydisMnemonic kMs[] = {MN(INC), MN(DEC), MN(NEG)};
          return Insn(it, rng_.Pick(kMs), "M", size, o);
        }
        default:
          o.count = rng_.Int(1, 7);
          return Insn(it, rng_.Chance(50) ? MN(SHL) : MN(SAR), "Mk", size, o);
      }
    }
  }
  // clang-format on
}

bool Gen::FaultSs(Item& it) {
  // A non-canonical address through RBP is a stack-segment reference:
  // #SS(0), not #GP(0) (SDM Vol. 3 §6.15, "Interrupt 12").
  it.ops.push_back(MovImm(kRbp, 0x8000000000000000ull + (rng_.Bits() & 0xffff)));
  ZydisEncoderOperand mem{};
  mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
  mem.mem.base = ZYDIS_REGISTER_RBP;
  mem.mem.size = 8;
  mem.mem.displacement = SignExtend(rng_.Bits(), 1);
  if (rng_.Chance(50)) {
    it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8)), mem})));
  } else {
    it.ops.push_back(MakeOp(Req(MN(MOV), {mem, RegOp(Gpr(PickGpr(0), 8))})));
  }
  return true;
}

// An SSE instruction that needs 16-byte alignment, on a misaligned address
// `ea`: #GP(0) (SDM Vol. 1 §11.4.1), which the host raises in translated
// code.
bool Gen::MisalignedSse(Item& it, uint64_t ea) {
  static constexpr ZydisMnemonic kAligned[] = {MN(MOVDQA), MN(MOVAPS), MN(PADDD), MN(PXOR),
                                               MN(ADDPS),  MN(MULPD),  MN(PSHUFD)};
  const ZydisMnemonic m = rng_.Pick(kAligned);
  InsnOptions o;
  o.mem_size = 16;
  o.mem.force_ea = true;
  o.mem.ea = ea;
  return Insn(it, m, m == MN(PSHUFD) ? "xmb" : "xm", 8, o);
}

bool Gen::HostFault(Item& it) {
  // Faults of natively executed instructions, which reach the monitor as
  // host signals: a misaligned SSE operand (#GP) inside a page, or an
  // unmasked SIMD exception (#XM: CR4.OSXMMEXCPT is set on both sides).
  if (rng_.Chance(70)) {
    return MisalignedSse(it, kDataAddress + 16 * rng_.Below(0xff) + rng_.Int(1, 15));
  }
  // ldmxcsr with divide-by-zero and invalid unmasked, then 1/0 or 0/0.
  const uint64_t slot = kDataAddress + 4 * rng_.Below(kDataSize / 4);
  ZydisEncoderOperand mem{};
  mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
  mem.mem.size = 4;
  mem.mem.displacement = static_cast<int64_t>(slot);
  it.ops.push_back(MakeOp(Req(MN(MOV), {mem, ImmOp(0x1f80 & ~0x280)})));  // ZM, IM clear
  it.ops.push_back(MakeOp(Req(MN(LDMXCSR), {mem})));
  it.ops.push_back(MovImm(kRax, rng_.Chance(50) ? 0x3ff0000000000000ull : 0));
  it.ops.push_back(MakeOp(Req(MN(MOVQ), {RegOp(Xmm(1)), RegOp(ZYDIS_REGISTER_RAX)})));
  it.ops.push_back(MovImm(kRax, 0));
  it.ops.push_back(MakeOp(Req(MN(MOVQ), {RegOp(Xmm(2)), RegOp(ZYDIS_REGISTER_RAX)})));
  it.ops.push_back(
      MakeOp(Req(rng_.Chance(50) ? MN(DIVSD) : MN(DIVPD), {RegOp(Xmm(1)), RegOp(Xmm(2))})));
  return true;
}

bool Gen::FaultSplit(Item& it) {
  // The same misaligned SSE operand, across the boundary of the two data
  // pages (the translator takes its slow path for it).
  return MisalignedSse(it, kDataAddress + 0x1000 - rng_.Int(1, 15));
}

}  // namespace btvm::diff::gen
