#pragma once
// Internals of the sequence generator, shared by its files: randomness,
// encoder helpers, the integer instruction tables, the operand and address
// builders (class Gen). One file per group of categories builds items:
// gen_integer.cpp, gen_control.cpp, gen_sse.cpp, gen_fault.cpp; the core
// (addresses, operands, the initial state, the sequence) is generator.cpp
// and the layout (Encode, Disassemble, flag effects) encode.cpp.

#include <Zydis/Zydis.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "tests/diff/generator.h"

namespace btvm::diff::gen {

// Shorthand for the many mnemonics in the tables.
#define MN(x) ZYDIS_MNEMONIC_##x

inline constexpr ZydisMachineMode kMode = ZYDIS_MACHINE_MODE_LONG_64;
inline constexpr int kRax = 0, kRcx = 1, kRdx = 2, kRbx = 3, kRsp = 4, kRbp = 5, kRsi = 6, kRdi = 7;
constexpr uint32_t Bit(int reg) {
  return 1u << reg;
}

// ---------------------------------------------------------------------------
// Randomness: only the engine's raw output, so a seed means the same
// sequence with every standard library.

inline uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t Mask(unsigned bytes) {
  return bytes >= 8 ? ~0ull : (1ull << (8 * bytes)) - 1;
}
inline int64_t SignExtend(uint64_t v, unsigned bytes) {
  if (bytes >= 8) return static_cast<int64_t>(v);
  const unsigned shift = 64 - 8 * bytes;
  return static_cast<int64_t>(v << shift) >> shift;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t Bits() { return g_(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : g_() % n; }
  int Int(int lo, int hi) {
    return lo + static_cast<int>(Below(static_cast<uint64_t>(hi - lo) + 1));
  }
  bool Chance(unsigned percent) { return Below(100) < percent; }
  template <typename T, size_t N>
  const T& Pick(const T (&a)[N]) {
    return a[Below(N)];
  }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }
  // A value of `bytes` bytes (zero-extended), biased towards the edges
  // where flags and carries change: 0, 1, all ones, the sign bit, ...
  uint64_t Value(unsigned bytes) {
    const unsigned bits = 8 * bytes;
    const uint64_t sign = 1ull << (bits - 1);
    uint64_t v;
    // clang-format off
    switch (Below(14)) {
      case 0: v = 0; break;
      case 1: v = 1; break;
      case 2: v = ~0ull; break;
      case 3: v = sign; break;
      case 4: v = sign - 1; break;
      case 5: v = Below(16); break;
      case 6: v = ~Below(16); break;
      case 7: v = 1ull << Below(bits); break;
      case 8: v = sign + Below(4); break;
      case 9: v = sign - 1 - Below(4); break;
      case 10: v = Bits() & Bits(); break;  // few bits set
      default: v = Bits(); break;
    }
    // clang-format on
    return v & Mask(bytes);
  }

 private:
  std::mt19937_64 g_;
};

// ---------------------------------------------------------------------------
// Registers and encoder operands.

inline ZydisRegister Gpr(int index, unsigned bytes) {
  // clang-format off
  switch (bytes) {
    case 1:
      return static_cast<ZydisRegister>(index < 4 ? ZYDIS_REGISTER_AL + index
                                                  : ZYDIS_REGISTER_SPL + (index - 4));
    case 2: return static_cast<ZydisRegister>(ZYDIS_REGISTER_AX + index);
    case 4: return static_cast<ZydisRegister>(ZYDIS_REGISTER_EAX + index);
    default: return static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + index);
  }
  // clang-format on
}
inline ZydisRegister High8(int index) {
  return static_cast<ZydisRegister>(ZYDIS_REGISTER_AH + index);
}
inline ZydisRegister Xmm(int index) {
  return static_cast<ZydisRegister>(ZYDIS_REGISTER_XMM0 + index);
}

inline ZydisEncoderOperand RegOp(ZydisRegister r) {
  ZydisEncoderOperand o{};
  o.type = ZYDIS_OPERAND_TYPE_REGISTER;
  o.reg.value = r;
  return o;
}
inline ZydisEncoderOperand ImmOp(int64_t v) {
  ZydisEncoderOperand o{};
  o.type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
  o.imm.s = v;
  return o;
}

inline ZydisEncoderRequest Req(ZydisMnemonic m, std::initializer_list<ZydisEncoderOperand> ops,
                               ZydisInstructionAttributes prefixes = 0) {
  ZydisEncoderRequest r;
  std::memset(&r, 0, sizeof(r));
  r.machine_mode = kMode;
  r.mnemonic = m;
  r.prefixes = prefixes;
  for (const ZydisEncoderOperand& o : ops) r.operands[r.operand_count++] = o;
  return r;
}

inline bool EncodeAt(const ZydisEncoderRequest& req, uint64_t address, std::vector<uint8_t>* out) {
  ZydisEncoderRequest copy = req;
  uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
  ZyanUSize len = sizeof(buf);
  if (!ZYAN_SUCCESS(ZydisEncoderEncodeInstructionAbsolute(&copy, buf, &len, address))) {
    return false;
  }
  out->assign(buf, buf + len);
  return true;
}

// `r` with the op's target address written where the op wants it.
inline ZydisEncoderRequest Patched(const Op& op, ZydisEncoderRequest r, uint64_t target) {
  // clang-format off
  switch (op.patch) {
    case Op::Patch::kNone: break;
    case Op::Patch::kBranch: r.operands[0].imm.u = target; break;
    case Op::Patch::kImm: r.operands[r.operand_count - 1].imm.u = target; break;
    case Op::Patch::kRipDisp:
      for (unsigned k = 0; k < r.operand_count; ++k) {
        if (r.operands[k].type == ZYDIS_OPERAND_TYPE_MEMORY) {
          r.operands[k].mem.displacement = static_cast<int64_t>(target);
        }
      }
      break;
  }
  // clang-format on
  return r;
}

inline Op MakeOp(const ZydisEncoderRequest& req) {
  Op op;
  op.req = req;
  return op;
}
inline Op RawOp(std::initializer_list<uint8_t> bytes) {
  Op op;
  op.raw = bytes;
  return op;
}

inline constexpr uint64_t kArithFlags = 0x8d5;  // CF PF AF ZF SF OF

inline FlagEffect EffectOf(const Op& op) {
  std::vector<uint8_t> b = op.raw;
  if (b.empty() && !EncodeAt(Patched(op, op.req, kCodeAddress), kCodeAddress, &b)) return {};
  return FlagEffectOf(b.data(), b.size());
}

// ---------------------------------------------------------------------------
// Instruction tables. A form is a space-separated list of alternatives; each
// letter is one operand:
//   R  a GPR the instruction writes (never RSP)   r  a GPR it only reads
//   M  memory it writes (or reads and writes)     m  memory it only reads
//   i  an immediate of the operand size (imm32 for 64-bit)
//   k  a shift or rotate count (imm8)             c  CL
//   1  the constant 1                             b  a byte immediate
//   x  an XMM register                            d/q  a 32/64-bit GPR (SSE forms)
//   w  a 32/64-bit GPR the instruction writes (SSE forms)

struct IntRow {
  ZydisMnemonic m;
  const char* forms;
  uint8_t sizes;  // bit mask of operand sizes: 1, 2, 4, 8
};

inline constexpr uint8_t kAll = 1 | 2 | 4 | 8, kWide = 2 | 4 | 8;

// SDM Vol. 2: ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST, MOV.
inline constexpr IntRow kAluRows[] = {
    {MN(ADD), "Rr Ri Rm Mr Mi", kAll}, {MN(OR), "Rr Ri Rm Mr Mi", kAll},
    {MN(ADC), "Rr Ri Rm Mr Mi", kAll}, {MN(SBB), "Rr Ri Rm Mr Mi", kAll},
    {MN(AND), "Rr Ri Rm Mr Mi", kAll}, {MN(SUB), "Rr Ri Rm Mr Mi", kAll},
    {MN(XOR), "Rr Ri Rm Mr Mi", kAll}, {MN(CMP), "rr ri rm mr mi", kAll},
    {MN(TEST), "rr ri mr mi", kAll},   {MN(MOV), "Rr Ri Rm Mr Mi", kAll},
};
inline constexpr IntRow kUnaryRows[] = {
    {MN(INC), "R M", kAll},
    {MN(DEC), "R M", kAll},
    {MN(NEG), "R M", kAll},
    {MN(NOT), "R M", kAll},
};
inline constexpr IntRow kShiftRows[] = {
    {MN(SHL), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(SHR), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(SAR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(ROL), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(ROR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(RCL), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(RCR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(SHLD), "Rrk Rrc Mrk Mrc", kWide},
    {MN(SHRD), "Rrk Rrc Mrk Mrc", kWide},
};
inline constexpr IntRow kMulRows[] = {
    {MN(MUL), "r m", kAll},
    {MN(IMUL), "r m", kAll},
    {MN(IMUL), "Rr Rm", kWide},
    {MN(IMUL), "Rri Rmi", kWide},
};
inline constexpr IntRow kBitRows[] = {
    {MN(BT), "rr rk mk", kWide},  {MN(BTS), "Rr Rk Mk", kWide}, {MN(BTR), "Rr Rk Mk", kWide},
    {MN(BTC), "Rr Rk Mk", kWide}, {MN(BSF), "Rr Rm", kWide},    {MN(BSR), "Rr Rm", kWide},
    {MN(BSWAP), "R", 4 | 8},
};
inline constexpr ZydisMnemonic kCmovs[] = {
    MN(CMOVB),  MN(CMOVBE),  MN(CMOVL),  MN(CMOVLE), MN(CMOVNB), MN(CMOVNBE),
    MN(CMOVNL), MN(CMOVNLE), MN(CMOVNO), MN(CMOVNP), MN(CMOVNS), MN(CMOVNZ),
    MN(CMOVO),  MN(CMOVP),   MN(CMOVS),  MN(CMOVZ),
};
inline constexpr ZydisMnemonic kSets[] = {
    MN(SETB),  MN(SETBE), MN(SETL),  MN(SETLE), MN(SETNB), MN(SETNBE), MN(SETNL), MN(SETNLE),
    MN(SETNO), MN(SETNP), MN(SETNS), MN(SETNZ), MN(SETO),  MN(SETP),   MN(SETS),  MN(SETZ),
};
inline constexpr ZydisMnemonic kJccs[] = {
    MN(JB),  MN(JBE), MN(JL),  MN(JLE), MN(JNB), MN(JNBE), MN(JNL), MN(JNLE),
    MN(JNO), MN(JNP), MN(JNS), MN(JNZ), MN(JO),  MN(JP),   MN(JS),  MN(JZ),
};
inline constexpr ZydisMnemonic kLockAlu[] = {MN(ADD), MN(OR),  MN(ADC), MN(SBB),
                                             MN(AND), MN(SUB), MN(XOR)};

// SSE rows: operand forms as above; `mem` is the memory operand's size and
// `align` the alignment it needs (16 for the legacy m128 forms, SDM Vol. 1
// §11.4.1: misaligned ones raise #GP).

// Whether a shift or rotate by `count` leaves every flag as it was
// (gen_integer.cpp).
bool KeepsFlags(ZydisMnemonic m, unsigned size, unsigned count);

enum class Feature : uint8_t { kSse2, kSsse3, kSse41 };
struct SseRow {
  ZydisMnemonic m;
  const char* forms;
  uint8_t mem;
  uint8_t align;
  Feature feature = Feature::kSse2;
};

enum class Region : uint8_t { kData, kStack, kReadOnly };

struct MemOptions {
  unsigned align = 1;       // the effective address is a multiple of this
  bool write = false;       // read-only memory is never the target
  bool allow_cross = true;  // may straddle the page boundary inside the data region
  unsigned margin = 0;      // keep this many bytes away from the region's edges
  uint32_t reserved = 0;    // registers address setup must not change
  bool allow_rsp = true;    // [rsp + ...] forms allowed (for the stack region)
  uint64_t rsp = 0;         // RSP when the address is computed
  bool force_ea = false;    // use `ea` as given (faults)
  uint64_t ea = 0;
};

struct InsnOptions {
  ZydisInstructionAttributes prefixes = 0;
  unsigned mem_size = 0;  // 0: the operand size
  MemOptions mem;
  int imm_bytes = 0;  // 0: the operand size (imm32 at most)
  int count = -1;     // the `k` immediate (-1: random)
  int cl = -1;        // with a `c` operand: load CL with this first (-1: leave CL)
  // The memory operand as given (base and displacement already set up by
  // the caller, as in a loop's pointer walk); no setup is emitted.
  bool fixed_mem = false;
  ZydisEncoderOperand mem_operand{};
};

class Gen {
 public:
  Gen(const GeneratorConfig& config, uint64_t seed) : cfg_(config), rng_(seed) {}

  Sequence Generate();

 private:
  using Builder = bool (Gen::*)(Item&);
  bool Build(Category c, Item& it);

  bool Alu(Item& it);
  bool Unary(Item& it);
  bool Shift(Item& it);
  bool Shift0(Item& it);
  bool ShiftWith(Item& it, bool keeps_flags);
  bool Enter(Item& it);
  bool FaultFlags(Item& it);
  bool FaultSplit(Item& it);
  bool BtMemR15(Item& it);
  bool BtMem(Item& it, bool r15);
  bool MisalignedSse(Item& it, uint64_t ea);
  bool FaultSs(Item& it);
  bool FaultLoop(Item& it);
  bool Xlat(Item& it);
  bool MulDiv(Item& it);
  bool Bits(Item& it);
  bool Cmov(Item& it);
  bool Xchg(Item& it);
  bool Lock(Item& it);
  bool Movx(Item& it);
  bool Lea(Item& it);
  bool Mem(Item& it);
  bool Stack(Item& it);
  bool Stack16(Item& it);
  bool Branch(Item& it);
  bool Branch32(Item& it);
  bool String(Item& it);
  bool Flags(Item& it);
  bool Sse(Item& it);
  bool SseFp(Item& it);
  bool Fault(Item& it);
  bool HostFault(Item& it);
  bool Loop(Item& it);

  // Parts of a loop (gen_loop.cpp).
  struct Walk;
  bool LoopBodyPart(std::vector<Op>* body, Walk* walk, int counter, bool* moves_rsp);
  bool LoopWalkAccess(std::vector<Op>* body, Walk* walk);
  bool WalkAccessOnce(std::vector<Op>* body, Walk* walk);
  bool PlaceWalk(Walk* walk, uint64_t iterations, bool fault);

  // Operand builder: emits the memory setup (if the form has memory) and the
  // instruction. `size` is the GPR/memory operand size; SSE forms use
  // `mem_size` for memory. Returns false when the combination does not
  // encode (e.g. AH with a REX register): the caller retries.
  bool Insn(Item& it, ZydisMnemonic m, std::string_view form, unsigned size, InsnOptions o = {});
  bool InsnFromRow(Item& it, ZydisMnemonic m, const char* forms, unsigned size, InsnOptions o = {});

  // Picks a target address in a region and builds a memory operand for it,
  // appending the register loads it needs to `setup`.
  uint64_t PickEa(unsigned size, const MemOptions& o);
  ZydisEncoderOperand Address(uint64_t ea, unsigned size, const MemOptions& o,
                              std::vector<Op>* setup, ZydisAddressSizeHint* hint,
                              ZydisInstructionAttributes* prefixes);
  ZydisEncoderOperand RandomAgen(ZydisAddressSizeHint* hint);

  // Register choice. `exclude` are register numbers not to use.
  int PickGpr(uint32_t exclude) {
    exclude |= reserved_;
    for (;;) {
      int r = static_cast<int>(rng_.Below(16));
      if (!(exclude & Bit(r))) return r;
    }
  }
  // A GPR operand of `bytes`; written ones are never RSP. 8-bit operands
  // are AH..BH a quarter of the time.
  ZydisRegister PickReg(unsigned bytes, bool written, uint32_t exclude = 0, int* index = nullptr) {
    if (bytes == 1 && rng_.Chance(25)) {
      int r = static_cast<int>(rng_.Below(4));
      if (!((exclude | reserved_) & Bit(r))) {
        if (index) *index = r;
        return High8(r);
      }
    }
    int r = PickGpr(exclude | (written ? Bit(kRsp) : 0));
    if (index) *index = r;
    return Gpr(r, bytes);
  }
  unsigned PickSize(uint8_t sizes) {
    for (;;) {
      unsigned s = 1u << rng_.Below(4);
      if (sizes & s) return s;
    }
  }
  int64_t Imm(unsigned bytes) {
    const unsigned b = std::min(bytes, 4u);
    return SignExtend(rng_.Value(b), b);
  }
  uint8_t ShiftCount() {
    static constexpr uint8_t kCounts[] = {0,  1,  2,  7,  8,  9,  15, 16,
                                          17, 31, 32, 33, 63, 64, 65, 255};
    return rng_.Chance(70) ? rng_.Pick(kCounts) : static_cast<uint8_t>(rng_.Bits());
  }
  Op MovImm(int reg, uint64_t value) {
    return MakeOp(Req(MN(MOV), {RegOp(Gpr(reg, 8)), ImmOp(static_cast<int64_t>(value))}));
  }
  Op MovImm(int reg, unsigned bytes, uint64_t value) {
    return MakeOp(Req(MN(MOV), {RegOp(Gpr(reg, bytes)), ImmOp(SignExtend(value, bytes))}));
  }
  // A register-only ALU op on random registers, for bodies of subroutines.
  void InlineAlu(Item& it);
  bool StackFits(int64_t delta) const {
    int64_t next = static_cast<int64_t>(rsp_) + delta;
    return next >= static_cast<int64_t>(kStackLow) && next <= static_cast<int64_t>(kStackHigh);
  }
  bool HasFeature(Feature f) const {
    // clang-format off
    switch (f) {
      case Feature::kSse2: return true;
      case Feature::kSsse3: return cfg_.host.ssse3;
      case Feature::kSse41: return cfg_.host.sse41;
    }
    // clang-format on
    return false;
  }
  bool SseFromRows(Item& it, std::span<const SseRow> rows);
  // Inserts `cmp r, r` before any op of item `index` that reads a flag that
  // may be undefined there (after imul, bsf, a shift...): its result would
  // be undefined too, and flags pushed to memory or copied to a register
  // cannot be masked. Returns the flags that may be undefined after the
  // item, and adds those at each forward branch to `undefined_at` of the
  // items it may go to.
  uint64_t DefineReadFlags(Item& it, uint64_t undefined, std::vector<uint64_t>* undefined_at,
                           size_t index);
  void InitialState(native::MachineState* s);

  const GeneratorConfig& cfg_;
  Rng rng_;
  uint64_t rsp_ = kStackStart;  // guest RSP as far as the generator knows
  // Registers no builder may pick (a loop's counter and pointer while its
  // body is built; builders with fixed registers are checked afterwards).
  uint32_t reserved_ = 0;
  // The item being built is the sequence's first: a loop may take its
  // counter and pointer from the initial state (`initial_gprs_`), so that
  // its head is the sequence's first instruction.
  bool first_item_ = false;
  std::vector<std::pair<int, uint64_t>> initial_gprs_;
};

}  // namespace btvm::diff::gen
