// Stack and control-flow categories: push/pop, calls and returns, RSP
// arithmetic, enter/leave, 16-bit stack operations, forward branches,
// string instructions, flag instructions.

#include "tests/diff/gen_internal.h"

namespace btvm::diff::gen {

bool Gen::Stack(Item& it) {
  it.changes_rsp = true;
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (roll < 20) {
    if (!StackFits(-8)) return false;
    if (rng_.Chance(25)) {
      it.ops.push_back(MakeOp(Req(MN(PUSH), {ImmOp(Imm(rng_.Chance(50) ? 1 : 4))})));
    } else {
      it.ops.push_back(MakeOp(Req(MN(PUSH), {RegOp(Gpr(PickGpr(0), 8))})));
    }
    rsp_ -= 8;
    return true;
  }
  if (roll < 35) {
    if (!StackFits(8)) return false;
    it.ops.push_back(MakeOp(Req(MN(POP), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8))})));
    rsp_ += 8;
    return true;
  }
  if (roll < 42) {
    // push [mem] / pop [mem]: pop computes an RSP-based address after the
    // increment (SDM Vol. 2 POP).
    const bool push = rng_.Chance(50);
    if (!StackFits(push ? -8 : 8)) return false;
    InsnOptions o;
    o.mem.allow_cross = true;
    Item tmp;
    const uint64_t saved = rsp_;
    if (!push) rsp_ += 8;
    const bool ok = Insn(tmp, push ? MN(PUSH) : MN(POP), push ? "m" : "M", 8, o);
    rsp_ = saved;
    if (!ok) return false;
    for (Op& op : tmp.ops) it.ops.push_back(std::move(op));
    rsp_ += push ? -8 : 8;
    return true;
  }
  if (roll < 46) {
    // push rsp / pop rsp.
    it.ops.push_back(MakeOp(Req(MN(PUSH), {RegOp(ZYDIS_REGISTER_RSP)})));
    it.ops.push_back(MakeOp(Req(MN(POP), {RegOp(ZYDIS_REGISTER_RSP)})));
    return true;
  }
  if (roll < 56) {
    // RSP arithmetic, as prologues and epilogues do it.
    const int64_t delta = 8 * rng_.Int(-6, 6);
    if (!StackFits(delta)) return false;
    // clang-format off
    switch (rng_.Below(3)) {
      case 0:
        it.ops.push_back(MakeOp(Req(delta < 0 ? MN(SUB) : MN(ADD),
                                    {RegOp(ZYDIS_REGISTER_RSP), ImmOp(delta < 0 ? -delta : delta)})));
        break;
      case 1: {
        ZydisEncoderOperand mem{};
        mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
        mem.mem.base = ZYDIS_REGISTER_RSP;
        mem.mem.size = 8;
        mem.mem.displacement = delta;
        it.ops.push_back(MakeOp(Req(MN(LEA), {RegOp(ZYDIS_REGISTER_RSP), mem})));
        break;
      }
      default: {
        // Through another register: mov r, rsp / add r, delta / mov rsp, r;
        // or xchg r, rsp.
        int r = PickGpr(Bit(kRsp));
        it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(Gpr(r, 8)), RegOp(ZYDIS_REGISTER_RSP)})));
        it.ops.push_back(MakeOp(Req(MN(ADD), {RegOp(Gpr(r, 8)), ImmOp(delta)})));
        if (rng_.Chance(50)) {
          it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(ZYDIS_REGISTER_RSP), RegOp(Gpr(r, 8))})));
        } else {
          it.ops.push_back(MakeOp(Req(MN(XCHG), {RegOp(Gpr(r, 8)), RegOp(ZYDIS_REGISTER_RSP)})));
        }
        break;
      }
    }
    // clang-format on
    rsp_ += static_cast<uint64_t>(delta);
    return true;
  }
  if (roll < 64) {
    // and rsp, -16 (known result: the generator knows RSP).
    const uint64_t next = rsp_ & ~uint64_t{15};
    if (!StackFits(static_cast<int64_t>(next - rsp_))) return false;
    it.ops.push_back(MakeOp(Req(MN(AND), {RegOp(ZYDIS_REGISTER_RSP), ImmOp(-16)})));
    rsp_ = next;
    return true;
  }
  if (roll < 70) {
    // leave: RSP = RBP, then pop RBP (SDM Vol. 2 LEAVE).
    const int64_t below = 8 * rng_.Int(0, 4);
    if (!StackFits(-below) || !StackFits(8 - below)) return false;
    ZydisEncoderOperand mem{};
    mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
    mem.mem.base = ZYDIS_REGISTER_RSP;
    mem.mem.size = 8;
    mem.mem.displacement = -below;
    it.ops.push_back(MakeOp(Req(MN(LEA), {RegOp(ZYDIS_REGISTER_RBP), mem})));
    it.ops.push_back(MakeOp(Req(MN(LEAVE), {})));
    rsp_ = rsp_ - below + 8;
    return true;
  }
  if (roll < 82) {
    // call next; pop r: the pushed return address is an absolute address.
    if (!StackFits(-8)) return false;
    Op call = MakeOp(Req(MN(CALL), {ImmOp(0)}));
    call.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
    call.req.branch_width = ZYDIS_BRANCH_WIDTH_32;
    call.flow = Op::Flow::kCall;
    call.patch = Op::Patch::kBranch;
    call.target_op = 1;
    call.wide = true;
    it.ops.push_back(call);
    it.ops.push_back(MakeOp(Req(MN(POP), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8))})));
    return true;
  }
  // A subroutine: call L / jmp over / L: body / ret [imm] / over:
  // the call direct, through a register or through memory.
  const int pop_extra = rng_.Chance(20) ? 8 : 0;
  if (!StackFits(-8) || !StackFits(pop_extra)) return false;
  const unsigned how = static_cast<unsigned>(rng_.Below(3));
  const int reg = PickGpr(Bit(kRsp));
  // Index of L is fixed after we know how many ops precede it.
  const int ops_before = how == 0 ? 2 : how == 1 ? 3 : 4;  // ..., call, jmp
  if (how >= 1) {
    ZydisEncoderOperand mem{};
    mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
    mem.mem.base = ZYDIS_REGISTER_RIP;
    mem.mem.size = 8;
    Op lea = MakeOp(Req(MN(LEA), {RegOp(Gpr(reg, 8)), mem}));
    lea.patch = Op::Patch::kRipDisp;
    lea.target_op = ops_before;
    it.ops.push_back(lea);
  }
  ZydisEncoderOperand slot{};
  if (how == 2) {
    // The target address goes through a data slot, absolute or RIP-relative.
    slot.type = ZYDIS_OPERAND_TYPE_MEMORY;
    slot.mem.size = 8;
    slot.mem.displacement = static_cast<int64_t>(kDataAddress + 8 * rng_.Below(kDataSize / 8));
    if (rng_.Chance(50)) slot.mem.base = ZYDIS_REGISTER_RIP;
    it.ops.push_back(MakeOp(Req(MN(MOV), {slot, RegOp(Gpr(reg, 8))})));
  }
  Op call;
  if (how == 0) {
    call = MakeOp(Req(MN(CALL), {ImmOp(0)}));
    call.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
    call.req.branch_width = ZYDIS_BRANCH_WIDTH_32;
    call.patch = Op::Patch::kBranch;
    call.wide = true;
  } else if (how == 1) {
    call = MakeOp(Req(MN(CALL), {RegOp(Gpr(reg, 8))}));
    call.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
  } else {
    call = MakeOp(Req(MN(CALL), {slot}));
    call.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
  }
  call.flow = Op::Flow::kCall;
  call.target_op = ops_before;
  it.ops.push_back(call);
  const int jmp_index = static_cast<int>(it.ops.size());
  Op jmp = MakeOp(Req(MN(JMP), {ImmOp(0)}));
  jmp.req.branch_type = ZYDIS_BRANCH_TYPE_SHORT;
  jmp.req.branch_width = ZYDIS_BRANCH_WIDTH_8;
  jmp.flow = Op::Flow::kJump;
  jmp.patch = Op::Patch::kBranch;
  jmp.skip_items = 0;
  it.ops.push_back(jmp);
  if (static_cast<int>(it.ops.size()) != ops_before) return false;
  rsp_ -= 8;
  const int body = rng_.Int(1, 3);
  for (int i = 0; i < body; ++i) InlineAlu(it);
  Op ret = pop_extra ? MakeOp(Req(MN(RET), {ImmOp(pop_extra)})) : MakeOp(Req(MN(RET), {}));
  ret.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
  ret.flow = Op::Flow::kRet;
  ret.target_op = jmp_index;
  it.ops.push_back(ret);
  rsp_ += 8 + pop_extra;
  // A short jmp over a long body would not reach.
  it.ops[jmp_index].wide = body > 2;
  if (it.ops[jmp_index].wide) {
    it.ops[jmp_index].req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
    it.ops[jmp_index].req.branch_width = ZYDIS_BRANCH_WIDTH_32;
  }
  return true;
}

bool Gen::Enter(Item& it) {
  // enter size, 0 or 1 (SDM Vol. 2 ENTER: level 1 pushes RBP, then the new
  // frame pointer).
  it.changes_rsp = true;
  const int size = 8 * rng_.Int(0, 4);
  const int level = rng_.Int(0, 1);
  const int64_t delta = -(8 + 8 * level + size);
  if (!StackFits(delta)) return false;
  it.ops.push_back(MakeOp(Req(MN(ENTER), {ImmOp(size), ImmOp(level)})));
  rsp_ += static_cast<uint64_t>(delta);
  return true;
}

bool Gen::Stack16(Item& it) {
  // 16-bit push and pop (66 prefix): RSP moves by 2 (SDM Vol. 2 PUSH).
  it.changes_rsp = true;
  const int r = PickGpr(Bit(kRsp));
  switch (rng_.Below(3)) {
    case 0:
      if (!StackFits(-2)) return false;
      it.ops.push_back(MakeOp(Req(MN(PUSH), {RegOp(Gpr(r, 2))})));
      rsp_ -= 2;
      return true;
    case 1:
      if (!StackFits(2)) return false;
      it.ops.push_back(MakeOp(Req(MN(POP), {RegOp(Gpr(r, 2))})));
      rsp_ += 2;
      return true;
    default:
      if (!StackFits(-2)) return false;
      it.ops.push_back(
          RawOp({0x66, 0x6a, static_cast<uint8_t>(rng_.Bits())}));  // push imm8 (16-bit)
      rsp_ -= 2;
      return true;
  }
}

bool Gen::Branch(Item& it) {
  // Forward only, so every sequence ends: the target is the start of a
  // later item (Generate() keeps a branch from skipping RSP changes).
  const int skip = rng_.Int(0, 3);
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  Op b;
  if (roll < 50) {
    if (rng_.Chance(30)) InlineAlu(it);  // fresh flags
    b = MakeOp(Req(rng_.Pick(kJccs), {ImmOp(0)}));
    b.flow = Op::Flow::kBranch;
  } else if (roll < 60) {
    b = MakeOp(Req(MN(JMP), {ImmOp(0)}));
    b.flow = Op::Flow::kJump;
  } else if (roll < 70) {
    if (rng_.Chance(50)) it.ops.push_back(MovImm(kRcx, rng_.Chance(50) ? 0 : rng_.Value(8)));
    b = MakeOp(Req(MN(JRCXZ), {ImmOp(0)}));
    b.flow = Op::Flow::kBranch;
  } else if (roll < 82) {
    static constexpr ZydisMnemonic kLoops[] = {MN(LOOP), MN(LOOPE), MN(LOOPNE)};
    if (rng_.Chance(50)) it.ops.push_back(MovImm(kRcx, static_cast<uint64_t>(rng_.Int(0, 2))));
    b = MakeOp(Req(rng_.Pick(kLoops), {ImmOp(0)}));
    b.flow = Op::Flow::kBranch;
  } else {
    // Indirect jmp through a register or memory, to the address a
    // RIP-relative lea computes.
    const int reg = PickGpr(Bit(kRsp));
    ZydisEncoderOperand mem{};
    mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
    mem.mem.base = ZYDIS_REGISTER_RIP;
    mem.mem.size = 8;
    Op lea = MakeOp(Req(MN(LEA), {RegOp(Gpr(reg, 8)), mem}));
    lea.patch = Op::Patch::kRipDisp;
    lea.skip_items = skip;
    it.ops.push_back(lea);
    if (rng_.Chance(50)) {
      ZydisEncoderOperand slot{};
      slot.type = ZYDIS_OPERAND_TYPE_MEMORY;
      slot.mem.size = 8;
      slot.mem.displacement = static_cast<int64_t>(kDataAddress + 8 * rng_.Below(kDataSize / 8));
      if (rng_.Chance(50)) slot.mem.base = ZYDIS_REGISTER_RIP;
      it.ops.push_back(MakeOp(Req(MN(MOV), {slot, RegOp(Gpr(reg, 8))})));
      b = MakeOp(Req(MN(JMP), {slot}));
    } else {
      b = MakeOp(Req(MN(JMP), {RegOp(Gpr(reg, 8))}));
    }
    b.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
    b.flow = Op::Flow::kJump;
    b.skip_items = skip;
    it.ops.push_back(b);
    return true;
  }
  const bool short_only = b.req.mnemonic == MN(JRCXZ) || b.req.mnemonic == MN(LOOP) ||
                          b.req.mnemonic == MN(LOOPE) || b.req.mnemonic == MN(LOOPNE);
  b.wide = !short_only && rng_.Chance(30);
  b.req.branch_type = b.wide ? ZYDIS_BRANCH_TYPE_NEAR : ZYDIS_BRANCH_TYPE_SHORT;
  b.req.branch_width = b.wide ? ZYDIS_BRANCH_WIDTH_32 : ZYDIS_BRANCH_WIDTH_8;
  b.patch = Op::Patch::kBranch;
  b.skip_items = skip;
  it.ops.push_back(b);
  return true;
}

bool Gen::Branch32(Item& it) {
  // jecxz and loop with a 32-bit address size test ECX, not RCX.
  if (rng_.Chance(50)) it.ops.push_back(MovImm(kRcx, (rng_.Bits() << 32) | rng_.Below(3)));
  static constexpr ZydisMnemonic kMs[] = {MN(JECXZ), MN(LOOP), MN(LOOPE), MN(LOOPNE)};
  Op b = MakeOp(Req(rng_.Pick(kMs), {ImmOp(0)}));
  b.req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_32;
  b.req.branch_type = ZYDIS_BRANCH_TYPE_SHORT;
  b.req.branch_width = ZYDIS_BRANCH_WIDTH_8;
  b.flow = Op::Flow::kBranch;
  b.patch = Op::Patch::kBranch;
  b.skip_items = rng_.Int(0, 3);
  it.ops.push_back(b);
  return true;
}

bool Gen::String(Item& it) {
  // movs/stos/lods/cmps/scas (SDM Vol. 2), raw encodings: opcode per kind,
  // 66 / REX.W for the element size, F3 / F2 for rep, 67 for 32-bit
  // addresses. Counts stay small and RSI/RDI point so that every element
  // lies inside its region in either direction.
  enum Kind { kMovs, kStos, kLods, kCmps, kScas };
  static constexpr uint8_t kOpcode[] = {0xa4, 0xaa, 0xac, 0xa6, 0xae};  // byte forms; +1 wider
  const Kind kind = static_cast<Kind>(rng_.Below(5));
  const unsigned size = PickSize(kAll);
  const bool down = rng_.Chance(40);
  const bool addr32 = rng_.Chance(10);
  const bool conditional = kind == kCmps || kind == kScas;
  uint8_t rep = 0;
  if (rng_.Chance(70)) rep = conditional ? (rng_.Chance(50) ? 0xf3 : 0xf2) : 0xf3;
  const uint64_t count = rep ? static_cast<uint64_t>(rng_.Int(0, 12)) : 1;
  const uint64_t span = std::max<uint64_t>(count, 1) * size;

  auto place = [&](bool writable) -> uint64_t {
    // Start address such that [start - span + size, start + span) or
    // [start, start + span) fits in the chosen region.
    uint64_t base = kDataAddress, region = kDataSize;
    if (!writable && rng_.Chance(25)) base = kReadOnlyAddress, region = kReadOnlySize;
    if (writable && rng_.Chance(15)) base = kStackAddress, region = kStackSize;
    if (base == kDataAddress && rng_.Chance(30)) {
      // The zero-filled block at 0x400 (see InitialState): long equal runs.
      base = kDataAddress + 0x400, region = 0x100;
    }
    const uint64_t lo = down ? base + span - size : base;
    const uint64_t hi = down ? base + region - size : base + region - span;
    uint64_t p = lo + rng_.Below(hi - lo + 1);
    if (rng_.Chance(70)) p &= ~static_cast<uint64_t>(size - 1);
    if (p < lo) p += size;
    return p;
  };
  auto garbage_high = [&](uint64_t v) { return addr32 ? (v | (rng_.Bits() << 32)) : v; };

  it.ops.push_back(MakeOp(Req(down ? MN(STD) : MN(CLD), {})));
  if (kind == kMovs || kind == kLods || kind == kCmps) {
    it.ops.push_back(MovImm(kRsi, garbage_high(place(false))));
  }
  if (kind != kLods) {
    it.ops.push_back(MovImm(kRdi, garbage_high(place(kind == kMovs || kind == kStos))));
  }
  if (rep) it.ops.push_back(MovImm(kRcx, garbage_high(count)));
  if (kind == kScas && rng_.Chance(50)) it.ops.push_back(MovImm(kRax, 0));
  std::vector<uint8_t> bytes;
  if (rep) bytes.push_back(rep);
  if (addr32) bytes.push_back(0x67);
  if (size == 2) bytes.push_back(0x66);
  if (rng_.Chance(5)) bytes.push_back(0x3e);  // ds: on the source, ignored
  if (size == 8) bytes.push_back(0x48);
  bytes.push_back(static_cast<uint8_t>(kOpcode[kind] + (size > 1 ? 1 : 0)));
  Op op;
  op.raw = bytes;
  it.ops.push_back(op);
  return true;
}

bool Gen::Flags(Item& it) {
  // clang-format off
  switch (rng_.Below(6)) {
    case 0: {
      static constexpr ZydisMnemonic kMs[] = {MN(CLC), MN(STC), MN(CMC), MN(CLD), MN(STD)};
      it.ops.push_back(MakeOp(Req(rng_.Pick(kMs), {})));
      return true;
    }
    case 1:
      if (!cfg_.host.lahf) return false;
      it.ops.push_back(MakeOp(Req(rng_.Chance(50) ? MN(LAHF) : MN(SAHF), {})));
      return true;
    case 2:
      // pushfq; pop r: what the guest sees of RFLAGS (IF set, IOPL 0).
      if (!StackFits(-8)) return false;
      it.changes_rsp = true;
      it.ops.push_back(MakeOp(Req(MN(PUSHFQ), {})));
      it.ops.push_back(MakeOp(Req(MN(POP), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8))})));
      return true;
    case 3: {
      // pushfq; xor [rsp], arithmetic flags and DF; popfq.
      if (!StackFits(-8)) return false;
      static constexpr uint8_t kBits[] = {0x01, 0x04, 0x10, 0x40, 0x80};
      int32_t mask = 0;
      for (uint8_t b : kBits) {
        if (rng_.Chance(50)) mask |= b;
      }
      if (rng_.Chance(30)) mask |= 0x800;  // OF
      if (rng_.Chance(20)) mask |= 0x400;  // DF
      ZydisEncoderOperand top{};
      top.type = ZYDIS_OPERAND_TYPE_MEMORY;
      top.mem.base = ZYDIS_REGISTER_RSP;
      top.mem.size = 8;
      it.changes_rsp = true;
      it.ops.push_back(MakeOp(Req(MN(PUSHFQ), {})));
      it.ops.push_back(MakeOp(Req(MN(XOR), {top, ImmOp(mask)})));
      it.ops.push_back(MakeOp(Req(MN(POPFQ), {})));
      return true;
    }
    case 4: {
      // push r (IF | arithmetic flags | DF); popfq.
      if (!StackFits(-8)) return false;
      const int r = PickGpr(Bit(kRsp));
      const uint64_t v = 0x202 | (rng_.Bits() & 0xcd5);
      it.changes_rsp = true;
      it.ops.push_back(MovImm(r, v));
      it.ops.push_back(MakeOp(Req(MN(PUSH), {RegOp(Gpr(r, 8))})));
      it.ops.push_back(MakeOp(Req(MN(POPFQ), {})));
      return true;
    }
    default:
      // Flag producers and consumers next to each other.
      InlineAlu(it);
      it.ops.push_back(MakeOp(Req(rng_.Pick(kSets), {RegOp(PickReg(1, true))})));
      return true;
  }
  // clang-format on
}

}  // namespace btvm::diff::gen
