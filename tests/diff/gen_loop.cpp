// Loops: counted loops whose back edge branches to their head, the shape
// the translator gives a loop block of its own (block_builder.cpp: a block
// whose last instruction branches back to its start keeps scratch and
// page registers live around the back edge). The body walks
// memory through a pointer it advances by a constant stride; a long walk
// crosses the boundary of the two data pages, and a faulting one runs into
// the unmapped page part-way through the loop.
//
// Termination is by construction: the counter is a register no op of the
// body names, set before the head and stepped once an iteration, and the
// back edge tests only flags the step itself defines.

#include <climits>

#include "tests/diff/gen_internal.h"

namespace btvm::diff::gen {

// A pointer walk. Offsets are relative to the pointer's value at the loop
// head, so iteration j touches [start + j * stride + lo, ... + hi).
struct Gen::Walk {
  int reg = -1;  // -1: no walk
  int64_t stride = 0;
  bool advanced = false;  // the body's step is emitted: later accesses see + stride
  bool writes = false;
  unsigned align = 1;  // the start is a multiple of this
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  uint64_t start = 0;
  bool any() const { return lo <= hi; }
};

namespace {

// Loads and stores through the walk pointer: SSE forms with a memory
// operand (`mem` bytes; `align` 16: only when the walk keeps 16-byte
// alignment).
constexpr SseRow kWalkSse[] = {
    {MN(MOVUPS), "xm Mx", 16, 1},  {MN(MOVDQU), "xm Mx", 16, 1}, {MN(MOVUPD), "xm Mx", 16, 1},
    {MN(MOVSS), "xm Mx", 4, 1},    {MN(MOVSD), "xm Mx", 8, 1},   {MN(MOVLPS), "xm Mx", 8, 1},
    {MN(MOVHPD), "xm Mx", 8, 1},   {MN(ADDSD), "xm", 8, 1},      {MN(MOVDQA), "xm Mx", 16, 16},
    {MN(MOVAPS), "xm Mx", 16, 16}, {MN(PADDD), "xm", 16, 16},    {MN(PXOR), "xm", 16, 16},
};

// The alternatives of a table form that have a memory operand and no CL
// count (RCX may be the counter).
std::vector<std::string_view> MemoryForms(const char* forms) {
  std::vector<std::string_view> out;
  std::string_view s(forms);
  while (!s.empty()) {
    const size_t sp = s.find(' ');
    const std::string_view f = s.substr(0, sp);
    if ((f.find('m') != std::string_view::npos || f.find('M') != std::string_view::npos) &&
        f.find('c') == std::string_view::npos)
      out.push_back(f);
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  return out;
}

// Whether the ops of an item built by another category may stand in a loop
// body: no control flow (nothing branches out of the body) and no
// register of `untouchable` named, explicitly or implicitly.
bool FitsLoopBody(const Item& sub, uint32_t untouchable) {
  for (const Op& op : sub.ops) {
    if (op.flow != Op::Flow::kNext || op.target_op >= 0 || op.skip_items >= 0) return false;
    std::vector<uint8_t> b = op.raw;
    if (b.empty() && !EncodeAt(Patched(op, op.req, kCodeAddress), kCodeAddress, &b)) return false;
    ZydisDisassembledInstruction d;
    if (!ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress, b.data(), b.size(), &d))) {
      return false;
    }
    auto names = [&](ZydisRegister r) {
      if (r == ZYDIS_REGISTER_NONE) return false;
      const ZydisRegister full = ZydisRegisterGetLargestEnclosing(kMode, r);
      if (full < ZYDIS_REGISTER_RAX || full > ZYDIS_REGISTER_R15) return false;
      return (untouchable & Bit(static_cast<int>(full - ZYDIS_REGISTER_RAX))) != 0;
    };
    for (unsigned k = 0; k < d.info.operand_count; ++k) {
      const ZydisDecodedOperand& o = d.operands[k];
      if (o.type == ZYDIS_OPERAND_TYPE_REGISTER && names(o.reg.value)) return false;
      if (o.type == ZYDIS_OPERAND_TYPE_MEMORY && (names(o.mem.base) || names(o.mem.index))) {
        return false;
      }
    }
  }
  return true;
}

size_t CodeBytes(const std::vector<Op>& ops) {
  size_t n = 0;
  for (const Op& op : ops) {
    std::vector<uint8_t> b = op.raw;
    if (b.empty()) EncodeAt(Patched(op, op.req, kCodeAddress), kCodeAddress, &b);
    n += b.size();
  }
  return n;
}

Op BranchOp(ZydisMnemonic m, int target, bool wide) {
  Op b = MakeOp(Req(m, {ImmOp(0)}));
  b.flow = m == MN(JMP) ? Op::Flow::kJump : Op::Flow::kBranch;
  b.patch = Op::Patch::kBranch;
  b.target_op = target;
  b.wide = wide;
  b.req.branch_type = wide ? ZYDIS_BRANCH_TYPE_NEAR : ZYDIS_BRANCH_TYPE_SHORT;
  b.req.branch_width = wide ? ZYDIS_BRANCH_WIDTH_32 : ZYDIS_BRANCH_WIDTH_8;
  return b;
}

}  // namespace

bool Gen::LoopWalkAccess(std::vector<Op>* body, Walk* walk) {
  for (int tries = 0; tries < 20; ++tries) {
    if (WalkAccessOnce(body, walk)) return true;
  }
  return false;
}

bool Gen::WalkAccessOnce(std::vector<Op>* body, Walk* walk) {
  // [ptr + disp], disp small (sometimes not), sometimes with a 32-bit
  // address size (every address lies below 4 GiB).
  const bool addr32 = rng_.Chance(10);
  int64_t disp = rng_.Chance(90) ? rng_.Int(-40, 40) : rng_.Int(-0x200, 0x200);
  InsnOptions o;
  o.fixed_mem = true;
  o.mem_operand.type = ZYDIS_OPERAND_TYPE_MEMORY;
  o.mem_operand.mem.base = Gpr(walk->reg, addr32 ? 4 : 8);
  Item tmp;
  unsigned bytes = 0, align = 1;
  bool writes = false;
  if (rng_.Chance(65)) {
    const IntRow* row = nullptr;
    // clang-format off
    switch (rng_.Below(4)) {
      case 0: row = &rng_.Pick(kAluRows); break;
      case 1: row = &rng_.Pick(kUnaryRows); break;
      case 2: row = &rng_.Pick(kShiftRows); break;
      default: row = &rng_.Pick(kBitRows); break;
    }
    // clang-format on
    const std::vector<std::string_view> forms = MemoryForms(row->forms);
    if (forms.empty()) return false;
    const std::string_view form = rng_.Pick(forms);
    bytes = PickSize(row->sizes);
    writes = form.find('M') != std::string_view::npos;
    o.mem_operand.mem.displacement = disp;
    if (!Insn(tmp, row->m, form, bytes, o)) return false;
  } else {
    const SseRow& row = rng_.Pick(kWalkSse);
    if (!HasFeature(row.feature)) return false;
    if (row.align > 1) {
      if (walk->stride % row.align != 0) return false;
      disp &= ~static_cast<int64_t>(row.align - 1);
      align = row.align;
    }
    std::vector<std::string_view> forms = MemoryForms(row.forms);
    const std::string_view form = rng_.Pick(forms);
    bytes = row.mem;
    writes = form.find('M') != std::string_view::npos;
    o.mem_size = row.mem;
    o.mem_operand.mem.displacement = disp;
    if (!Insn(tmp, row.m, form, 8, o)) return false;
  }
  const int64_t at = disp + (walk->advanced ? walk->stride : 0);
  walk->lo = std::min(walk->lo, at);
  walk->hi = std::max(walk->hi, at + static_cast<int64_t>(bytes));
  walk->writes |= writes;
  walk->align = std::max(walk->align, align);
  for (Op& op : tmp.ops) body->push_back(std::move(op));
  return true;
}

bool Gen::LoopBodyPart(std::vector<Op>* body, Walk* walk, int counter, bool* moves_rsp) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (walk->reg >= 0 && roll < 45) return LoopWalkAccess(body, walk);
  if (roll < 55) {
    // push / something / pop: RSP is the same at every head.
    if (!StackFits(-8)) return false;
    *moves_rsp = true;
    if (rng_.Chance(30)) {
      body->push_back(MakeOp(Req(MN(PUSH), {ImmOp(Imm(rng_.Chance(50) ? 1 : 4))})));
    } else {
      body->push_back(MakeOp(Req(MN(PUSH), {RegOp(Gpr(PickGpr(0), 8))})));
    }
    rsp_ -= 8;
    bool ok = true;
    if (walk->reg >= 0 && rng_.Chance(30)) {
      ok = LoopWalkAccess(body, walk);
    } else if (rng_.Chance(50)) {
      Item tmp;
      InlineAlu(tmp);
      for (Op& op : tmp.ops) body->push_back(std::move(op));
    }
    body->push_back(MakeOp(Req(MN(POP), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8))})));
    rsp_ += 8;
    return ok;
  }
  // An item of another category that keeps RSP where it was and leaves
  // the counter and the pointer alone.
  static constexpr Category kParts[] = {
      Category::kAlu,   Category::kUnary,  Category::kShift, Category::kMulDiv,   Category::kBits,
      Category::kCmov,  Category::kXchg,   Category::kLock,  Category::kMovx,     Category::kLea,
      Category::kMem,   Category::kSse,    Category::kSseFp, Category::kString,   Category::kStack,
      Category::kFlags, Category::kShift0, Category::kXlat,  Category::kBtMemR15,
  };
  const uint32_t untouchable = Bit(counter) | (walk->reg >= 0 ? Bit(walk->reg) : 0);
  for (int tries = 0; tries < 20; ++tries) {
    Item sub;
    const uint64_t rsp = rsp_;
    const bool built = Build(rng_.Pick(kParts), sub) && FitsLoopBody(sub, untouchable);
    if (!built || rsp_ != rsp) {
      rsp_ = rsp;
      continue;
    }
    for (Op& op : sub.ops) body->push_back(std::move(op));
    *moves_rsp |= sub.changes_rsp;
    return true;
  }
  return false;
}

bool Gen::PlaceWalk(Walk* walk, uint64_t iterations, bool fault) {
  const int64_t s = walk->stride;
  const uint64_t a = walk->align;
  if (!walk->any()) {
    walk->start = kDataAddress + rng_.Below(kDataSize);
    return !fault;
  }
  // Iteration j touches [p + j * s + lo, p + j * s + hi).
  auto first = [&](uint64_t p, uint64_t j) { return p + j * s + walk->lo; };
  auto last = [&](uint64_t p, uint64_t j) { return p + j * s + walk->hi; };  // one past
  if (fault) {
    // The first iteration to reach into the unmapped page is f, part-way:
    // 1 <= f <= iterations - 2 (a rotated or jmp-back loop runs part of
    // its body one time fewer).
    if (s <= 0 || iterations < 3) return false;
    const uint64_t f = static_cast<uint64_t>(rng_.Int(1, static_cast<int>(iterations) - 2));
    uint64_t p = kUnmappedAddress - walk->hi - f * s + 1 + rng_.Below(static_cast<uint64_t>(s));
    p = (p + a - 1) & ~(a - 1);
    uint64_t hit = 0;
    while (hit < iterations && last(p, hit) <= kUnmappedAddress) ++hit;
    if (hit == 0 || hit + 2 > iterations || first(p, 0) < kDataAddress) return false;
    walk->start = p;
    return true;
  }
  // Inside one region: the data pages, or for loads alone sometimes the
  // read-only page. Most long walks cross the boundary of the data pages.
  uint64_t base = kDataAddress, span = kDataSize;
  if (!walk->writes && rng_.Chance(15)) base = kReadOnlyAddress, span = kReadOnlySize;
  const uint64_t travel = (iterations - 1) * static_cast<uint64_t>(s < 0 ? -s : s);
  const int64_t width = walk->hi - walk->lo;
  if (travel + static_cast<uint64_t>(width) > span) return false;
  // `m`: the lowest pointer value (the start going up, the last going down).
  const uint64_t m_lo = base - walk->lo, m_hi = base + span - walk->hi - travel;
  uint64_t m = m_lo + rng_.Below(m_hi - m_lo + 1);
  const uint64_t boundary = kDataAddress + 0x1000;
  if (base == kDataAddress && rng_.Chance(60)) {
    // Straddle the boundary: m + lo < boundary < m + travel + hi.
    const uint64_t c_lo = std::max(m_lo, boundary - travel - walk->hi + 1);
    const uint64_t c_hi = std::min(m_hi, boundary - walk->lo - 1);
    if (c_lo <= c_hi) m = c_lo + rng_.Below(c_hi - c_lo + 1);
  }
  uint64_t p = s >= 0 ? m : m + travel;
  p &= ~(a - 1);
  const uint64_t low = s >= 0 ? p : p - travel;
  if (low < m_lo || low > m_hi) return false;
  walk->start = p;
  return true;
}

bool Gen::Loop(Item& it) {
  it.loops = true;
  enum Shape { kDown, kUp, kLoopInsn, kJmpBack, kRotated };
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  const Shape shape = roll < 35   ? kDown
                      : roll < 45 ? kUp
                      : roll < 65 ? kLoopInsn
                      : roll < 80 ? kJmpBack
                                  : kRotated;
  const int counter = shape == kLoopInsn ? kRcx : PickGpr(Bit(kRsp));
  Walk walk;
  if (rng_.Chance(75)) walk.reg = PickGpr(Bit(kRsp) | Bit(counter));
  static constexpr int64_t kStrides[] = {1, 2, 4, 8, 16, 24, 32, 64, 3, 100};
  walk.stride = rng_.Pick(kStrides) * (rng_.Chance(35) ? -1 : 1);
  // A fault ends the run, so only a few loops fault.
  const bool fault = walk.reg >= 0 && walk.stride > 0 && rng_.Chance(5);
  const bool long_walk = walk.reg >= 0 && !fault && rng_.Chance(20);
  int64_t n = long_walk ? rng_.Int(41, 400) : rng_.Int(fault ? 3 : 1, 40);
  if (walk.reg >= 0) n = std::max<int64_t>(std::min<int64_t>(n, 0x1c00 / std::abs(walk.stride)), 1);
  if (fault && n < 3) return false;

  // The body, with the pointer step among its parts.
  reserved_ = Bit(counter) | (walk.reg >= 0 ? Bit(walk.reg) : 0);
  const int parts = shape == kLoopInsn ? rng_.Int(1, 2) : rng_.Int(1, 4);
  const int step_at = rng_.Int(0, parts);
  const int split = rng_.Int(0, parts);  // kJmpBack: parts before the exit test
  std::vector<Op> body1, body2;
  for (int p = 0; p <= parts; ++p) {
    std::vector<Op>& body = shape == kJmpBack && p >= split ? body2 : body1;
    if (p == step_at && walk.reg >= 0) {
      const ZydisRegister r = Gpr(walk.reg, 8);
      const int64_t s = walk.stride;
      // clang-format off
      switch (rng_.Below(std::abs(s) == 1 ? 4 : 3)) {
        case 0: body.push_back(MakeOp(Req(MN(ADD), {RegOp(r), ImmOp(s)}))); break;
        case 1: body.push_back(MakeOp(Req(MN(SUB), {RegOp(r), ImmOp(-s)}))); break;
        case 2: {
          ZydisEncoderOperand mem{};
          mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
          mem.mem.base = r;
          mem.mem.size = 8;
          mem.mem.displacement = s;
          body.push_back(MakeOp(Req(MN(LEA), {RegOp(r), mem})));
          break;
        }
        default: body.push_back(MakeOp(Req(s > 0 ? MN(INC) : MN(DEC), {RegOp(r)}))); break;
      }
      // clang-format on
      walk.advanced = true;
    }
    if (p == parts) break;
    if (!LoopBodyPart(&body, &walk, counter, &it.changes_rsp)) {
      reserved_ = 0;
      return false;
    }
  }
  reserved_ = 0;

  // Iterations every part of the body runs at least (the rotated loop and
  // the second half of a jmp-back loop run one fewer) bound the fault.
  const uint64_t iterations = static_cast<uint64_t>(n);
  if (walk.reg >= 0 && !PlaceWalk(&walk, iterations, fault)) return false;
  it.ends_run = fault;

  // The counter: its size, its start value, its step and the back edge.
  unsigned csize = 8;
  if (shape != kLoopInsn) {
    static constexpr unsigned kSizes[] = {1, 2, 4, 8};
    csize = rng_.Pick(kSizes);
    if (n > 127 && csize == 1) csize = 4;
    if (shape == kUp && csize < 4) csize = 4;
  }
  const bool addr32 = shape == kLoopInsn && rng_.Chance(25);
  uint64_t init = shape == kUp ? 0 : static_cast<uint64_t>(n);
  if (addr32) init |= rng_.Bits() << 32;  // loop with a 67 prefix counts in ECX
  const bool from_initial = first_item_ && rng_.Chance(50);
  std::vector<Op> setup;
  if (from_initial) {
    // Head first: the loop block starts the sequence. Above the counter's
    // size, garbage (it must not matter).
    const uint64_t high = csize == 8 ? 0 : rng_.Bits() & ~Mask(csize);
    initial_gprs_.emplace_back(counter, init | high);
    if (walk.reg >= 0) initial_gprs_.emplace_back(walk.reg, walk.start);
  } else {
    if (shape == kUp && rng_.Chance(50)) {
      setup.push_back(MakeOp(Req(MN(XOR), {RegOp(Gpr(counter, 4)), RegOp(Gpr(counter, 4))})));
    } else {
      setup.push_back(csize == 8 || addr32 ? MovImm(counter, init) : MovImm(counter, csize, init));
    }
    if (walk.reg >= 0) {
      Op p = MovImm(walk.reg, walk.start);
      setup.insert(rng_.Chance(50) ? setup.begin() : setup.end(), p);
    }
  }
  const ZydisRegister ctr = Gpr(counter, csize);
  auto step_down = [&](bool need_cf) {
    // dec leaves CF alone: ja after it would read an older CF.
    const unsigned k = static_cast<unsigned>(rng_.Below(need_cf ? 1 : 3));
    if (k == 0) return MakeOp(Req(MN(SUB), {RegOp(ctr), ImmOp(1)}));
    if (k == 1) return MakeOp(Req(MN(DEC), {RegOp(ctr)}));
    return MakeOp(Req(MN(ADD), {RegOp(ctr), ImmOp(-1)}));
  };
  const bool wide = rng_.Chance(30);

  for (Op& op : setup) it.ops.push_back(std::move(op));
  if (!setup.empty() && shape != kRotated && rng_.Chance(40)) {
    // jmp to the next op: the head starts a block on the first entry.
    it.ops.push_back(BranchOp(MN(JMP), static_cast<int>(it.ops.size()) + 1, false));
  }
  const int rotated_jmp = static_cast<int>(it.ops.size());
  if (shape == kRotated) it.ops.push_back(BranchOp(MN(JMP), -1, wide));
  const int head = static_cast<int>(it.ops.size());
  for (Op& op : body1) it.ops.push_back(std::move(op));
  switch (shape) {
    case kDown: {
      // sub/dec/add -1, then jnz, ja (CF from sub alone) or jg (n is
      // positive in the counter's size).
      const unsigned j = static_cast<unsigned>(rng_.Below(3));
      it.ops.push_back(step_down(j == 1));
      const ZydisMnemonic m = j == 0 ? MN(JNZ) : j == 1 ? MN(JNBE) : MN(JNLE);
      it.ops.push_back(BranchOp(m, head, wide));
      break;
    }
    case kUp: {
      // inc/add 1, cmp with the count, jne/jb/jl; or with count - 1, jbe/jle.
      it.ops.push_back(rng_.Chance(50) ? MakeOp(Req(MN(INC), {RegOp(ctr)}))
                                       : MakeOp(Req(MN(ADD), {RegOp(ctr), ImmOp(1)})));
      static constexpr ZydisMnemonic kBelow[] = {MN(JNZ), MN(JB), MN(JL)};
      static constexpr ZydisMnemonic kAtMost[] = {MN(JBE), MN(JLE)};
      const bool at_most = rng_.Chance(30);
      it.ops.push_back(MakeOp(Req(MN(CMP), {RegOp(ctr), ImmOp(at_most ? n - 1 : n)})));
      it.ops.push_back(BranchOp(at_most ? rng_.Pick(kAtMost) : rng_.Pick(kBelow), head, wide));
      break;
    }
    case kLoopInsn: {
      // loop/loope/loopne: rel8 only, so the body must be short (a
      // redundant REX prefix may still be added to some of its ops).
      if (CodeBytes(body1) > 100) return false;
      // (loope/loopne often leave after one iteration: loop is the most.)
      static constexpr ZydisMnemonic kLoops[] = {MN(LOOP), MN(LOOP), MN(LOOP), MN(LOOPE),
                                                 MN(LOOPNE)};
      // loope/loopne may leave early: a fault part-way is not sure then.
      Op b = BranchOp(fault ? MN(LOOP) : rng_.Pick(kLoops), head, false);
      if (addr32) b.req.address_size_hint = ZYDIS_ADDRESS_SIZE_HINT_32;
      it.ops.push_back(b);
      break;
    }
    case kJmpBack: {
      // head: body1; dec; jz out; body2; jmp head.
      it.ops.push_back(step_down(false));
      const int exit = static_cast<int>(it.ops.size());
      it.ops.push_back(BranchOp(MN(JZ), -1, rng_.Chance(30)));
      for (Op& op : body2) it.ops.push_back(std::move(op));
      it.ops.push_back(BranchOp(MN(JMP), head, wide));
      it.ops[exit].target_op = static_cast<int>(it.ops.size());  // the next item
      break;
    }
    case kRotated: {
      // jmp test; head: body; test: dec; jnz head.
      it.ops[rotated_jmp].target_op = static_cast<int>(it.ops.size());
      it.ops.push_back(step_down(false));
      it.ops.push_back(BranchOp(MN(JNZ), head, wide));
      break;
    }
  }
  return true;
}

bool Gen::FaultLoop(Item& it) {
  // A loop whose access reaches a non-canonical address: #GP(0), or #SS(0)
  // through RBP (SDM Vol. 3 §6.15). On the first iteration the
  // translator's page registers for the access are still empty and let
  // an address just above 2^63 through to a null host page; on the
  // second they hold the data page and the soft TLB's slow path finds it.
  it.loops = true;
  it.ends_run = true;
  const bool ss = rng_.Chance(40);
  const int ptr = ss ? kRbp : PickGpr(Bit(kRsp) | Bit(kRbp));
  const int counter = PickGpr(Bit(kRsp) | Bit(ptr));
  const int value = PickGpr(Bit(kRsp) | Bit(ptr) | Bit(counter));
  const bool later = rng_.Chance(40);
  const int64_t disp = rng_.Int(0, 0x40);
  uint64_t start;
  if (later) {
    start = kDataAddress + 8 * rng_.Below(0x100);  // then with bit 63 flipped
  } else if (rng_.Chance(85)) {
    start = (uint64_t{1} << 63) + rng_.Below(0xf80);  // where an empty pair lets it through
  } else {
    start = (uint64_t{1} << 47) + rng_.Below(0x1000);  // just above the low canonical half
  }
  it.ops.push_back(MovImm(ptr, start));
  it.ops.push_back(MovImm(counter, static_cast<uint64_t>(rng_.Int(2, 6))));
  // The head starts a block, which the translator treats as a loop.
  it.ops.push_back(BranchOp(MN(JMP), static_cast<int>(it.ops.size()) + 1, false));
  const int head = static_cast<int>(it.ops.size());
  ZydisEncoderOperand mem{};
  mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
  mem.mem.base = Gpr(ptr, 8);
  mem.mem.displacement = disp;
  const ZydisRegister r = Gpr(value, 8);
  switch (rng_.Below(4)) {
    case 0: mem.mem.size = 8; it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(r), mem}))); break;
    case 1: mem.mem.size = 8; it.ops.push_back(MakeOp(Req(MN(ADD), {mem, RegOp(r)}))); break;
    case 2: mem.mem.size = 4; it.ops.push_back(MakeOp(Req(MN(MOV), {mem, ImmOp(7)}))); break;
    default:
      mem.mem.size = 1;
      it.ops.push_back(MakeOp(Req(MN(CMP), {mem, RegOp(Gpr(value, 1))})));
      break;
  }
  if (later) it.ops.push_back(MakeOp(Req(MN(BTC), {RegOp(Gpr(ptr, 8)), ImmOp(63)})));
  it.ops.push_back(MakeOp(Req(MN(DEC), {RegOp(Gpr(counter, 8))})));
  it.ops.push_back(BranchOp(MN(JNZ), head, rng_.Chance(30)));
  return true;
}

}  // namespace btvm::diff::gen
