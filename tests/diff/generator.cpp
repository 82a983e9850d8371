// The sequence generator: see generator.h for the model (items, ops, the
// shared address space). One function per category builds an item from the
// tables below; the operand builder (Gen::Insn) turns a row's operand form
// into registers, immediates and a memory operand whose base and index
// registers it first loads so that the effective address is valid.

#include "tests/diff/generator.h"

#include <cpuid.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace btvm::diff {

namespace {

#define MN(x) ZYDIS_MNEMONIC_##x

constexpr ZydisMachineMode kMode = ZYDIS_MACHINE_MODE_LONG_64;
constexpr int kRax = 0, kRcx = 1, kRdx = 2, kRbx = 3, kRsp = 4, kRbp = 5, kRsi = 6, kRdi = 7;
constexpr uint32_t Bit(int reg) { return 1u << reg; }

// ---------------------------------------------------------------------------
// Randomness: only the engine's raw output, so a seed means the same
// sequence with every standard library.

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t Mask(unsigned bytes) { return bytes >= 8 ? ~0ull : (1ull << (8 * bytes)) - 1; }
int64_t SignExtend(uint64_t v, unsigned bytes) {
  if (bytes >= 8) return static_cast<int64_t>(v);
  const unsigned shift = 64 - 8 * bytes;
  return static_cast<int64_t>(v << shift) >> shift;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t Bits() { return g_(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : g_() % n; }
  int Int(int lo, int hi) { return lo + static_cast<int>(Below(static_cast<uint64_t>(hi - lo) + 1)); }
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
    return v & Mask(bytes);
  }

 private:
  std::mt19937_64 g_;
};

// ---------------------------------------------------------------------------
// Registers and encoder operands.

ZydisRegister Gpr(int index, unsigned bytes) {
  switch (bytes) {
    case 1:
      return static_cast<ZydisRegister>(index < 4 ? ZYDIS_REGISTER_AL + index
                                                  : ZYDIS_REGISTER_SPL + (index - 4));
    case 2: return static_cast<ZydisRegister>(ZYDIS_REGISTER_AX + index);
    case 4: return static_cast<ZydisRegister>(ZYDIS_REGISTER_EAX + index);
    default: return static_cast<ZydisRegister>(ZYDIS_REGISTER_RAX + index);
  }
}
ZydisRegister High8(int index) { return static_cast<ZydisRegister>(ZYDIS_REGISTER_AH + index); }
ZydisRegister Xmm(int index) { return static_cast<ZydisRegister>(ZYDIS_REGISTER_XMM0 + index); }

ZydisEncoderOperand RegOp(ZydisRegister r) {
  ZydisEncoderOperand o{};
  o.type = ZYDIS_OPERAND_TYPE_REGISTER;
  o.reg.value = r;
  return o;
}
ZydisEncoderOperand ImmOp(int64_t v) {
  ZydisEncoderOperand o{};
  o.type = ZYDIS_OPERAND_TYPE_IMMEDIATE;
  o.imm.s = v;
  return o;
}

ZydisEncoderRequest Req(ZydisMnemonic m, std::initializer_list<ZydisEncoderOperand> ops,
                        ZydisInstructionAttributes prefixes = 0) {
  ZydisEncoderRequest r;
  std::memset(&r, 0, sizeof(r));
  r.machine_mode = kMode;
  r.mnemonic = m;
  r.prefixes = prefixes;
  for (const ZydisEncoderOperand& o : ops) r.operands[r.operand_count++] = o;
  return r;
}

bool EncodeAt(const ZydisEncoderRequest& req, uint64_t address, std::vector<uint8_t>* out) {
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
ZydisEncoderRequest Patched(const Op& op, ZydisEncoderRequest r, uint64_t target) {
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
  return r;
}

Op MakeOp(const ZydisEncoderRequest& req) {
  Op op;
  op.req = req;
  return op;
}
Op RawOp(std::initializer_list<uint8_t> bytes) {
  Op op;
  op.raw = bytes;
  return op;
}

constexpr uint64_t kArithFlags = 0x8d5;  // CF PF AF ZF SF OF

FlagEffect EffectOf(const Op& op) {
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

constexpr uint8_t kAll = 1 | 2 | 4 | 8, kWide = 2 | 4 | 8;

// SDM Vol. 2: ADD, OR, ADC, SBB, AND, SUB, XOR, CMP, TEST, MOV.
constexpr IntRow kAluRows[] = {
    {MN(ADD), "Rr Ri Rm Mr Mi", kAll}, {MN(OR), "Rr Ri Rm Mr Mi", kAll},
    {MN(ADC), "Rr Ri Rm Mr Mi", kAll}, {MN(SBB), "Rr Ri Rm Mr Mi", kAll},
    {MN(AND), "Rr Ri Rm Mr Mi", kAll}, {MN(SUB), "Rr Ri Rm Mr Mi", kAll},
    {MN(XOR), "Rr Ri Rm Mr Mi", kAll}, {MN(CMP), "rr ri rm mr mi", kAll},
    {MN(TEST), "rr ri mr mi", kAll},   {MN(MOV), "Rr Ri Rm Mr Mi", kAll},
};
constexpr IntRow kUnaryRows[] = {
    {MN(INC), "R M", kAll}, {MN(DEC), "R M", kAll}, {MN(NEG), "R M", kAll}, {MN(NOT), "R M", kAll},
};
constexpr IntRow kShiftRows[] = {
    {MN(SHL), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(SHR), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(SAR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(ROL), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(ROR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(RCL), "R1 Rk Rc M1 Mk Mc", kAll},
    {MN(RCR), "R1 Rk Rc M1 Mk Mc", kAll}, {MN(SHLD), "Rrk Rrc Mrk Mrc", kWide},
    {MN(SHRD), "Rrk Rrc Mrk Mrc", kWide},
};
constexpr IntRow kMulRows[] = {
    {MN(MUL), "r m", kAll},     {MN(IMUL), "r m", kAll},
    {MN(IMUL), "Rr Rm", kWide}, {MN(IMUL), "Rri Rmi", kWide},
};
constexpr IntRow kBitRows[] = {
    {MN(BT), "rr rk mk", kWide},   {MN(BTS), "Rr Rk Mk", kWide}, {MN(BTR), "Rr Rk Mk", kWide},
    {MN(BTC), "Rr Rk Mk", kWide},  {MN(BSF), "Rr Rm", kWide},    {MN(BSR), "Rr Rm", kWide},
    {MN(BSWAP), "R", 4 | 8},
};
constexpr ZydisMnemonic kCmovs[] = {
    MN(CMOVB),  MN(CMOVBE), MN(CMOVL),  MN(CMOVLE), MN(CMOVNB), MN(CMOVNBE),
    MN(CMOVNL), MN(CMOVNLE), MN(CMOVNO), MN(CMOVNP), MN(CMOVNS), MN(CMOVNZ),
    MN(CMOVO),  MN(CMOVP),  MN(CMOVS),  MN(CMOVZ),
};
constexpr ZydisMnemonic kSets[] = {
    MN(SETB),  MN(SETBE), MN(SETL),  MN(SETLE), MN(SETNB), MN(SETNBE), MN(SETNL), MN(SETNLE),
    MN(SETNO), MN(SETNP), MN(SETNS), MN(SETNZ), MN(SETO),  MN(SETP),   MN(SETS),  MN(SETZ),
};
constexpr ZydisMnemonic kJccs[] = {
    MN(JB),  MN(JBE), MN(JL),  MN(JLE), MN(JNB), MN(JNBE), MN(JNL), MN(JNLE),
    MN(JNO), MN(JNP), MN(JNS), MN(JNZ), MN(JO),  MN(JP),   MN(JS),  MN(JZ),
};
constexpr ZydisMnemonic kLockAlu[] = {MN(ADD), MN(OR), MN(ADC), MN(SBB), MN(AND), MN(SUB), MN(XOR)};

// SSE rows: operand forms as above; `mem` is the memory operand's size and
// `align` the alignment it needs (16 for the legacy m128 forms, SDM Vol. 1
// §11.4.1: misaligned ones raise #GP).
enum class Feature : uint8_t { kSse2, kSsse3, kSse41 };
struct SseRow {
  ZydisMnemonic m;
  const char* forms;
  uint8_t mem;
  uint8_t align;
  Feature feature = Feature::kSse2;
};

constexpr SseRow kSseIntRows[] = {
    {MN(PADDB), "xx xm", 16, 16},    {MN(PADDW), "xx xm", 16, 16},
    {MN(PADDD), "xx xm", 16, 16},    {MN(PADDQ), "xx xm", 16, 16},
    {MN(PSUBB), "xx xm", 16, 16},    {MN(PSUBW), "xx xm", 16, 16},
    {MN(PSUBD), "xx xm", 16, 16},    {MN(PSUBQ), "xx xm", 16, 16},
    {MN(PADDSB), "xx xm", 16, 16},   {MN(PADDSW), "xx xm", 16, 16},
    {MN(PADDUSB), "xx xm", 16, 16},  {MN(PADDUSW), "xx xm", 16, 16},
    {MN(PSUBSB), "xx xm", 16, 16},   {MN(PSUBUSW), "xx xm", 16, 16},
    {MN(PMULLW), "xx xm", 16, 16},   {MN(PMULHW), "xx xm", 16, 16},
    {MN(PMULHUW), "xx xm", 16, 16},  {MN(PMULUDQ), "xx xm", 16, 16},
    {MN(PMADDWD), "xx xm", 16, 16},  {MN(PAND), "xx xm", 16, 16},
    {MN(PANDN), "xx xm", 16, 16},    {MN(POR), "xx xm", 16, 16},
    {MN(PXOR), "xx xm", 16, 16},     {MN(PCMPEQB), "xx xm", 16, 16},
    {MN(PCMPEQW), "xx xm", 16, 16},  {MN(PCMPEQD), "xx xm", 16, 16},
    {MN(PCMPGTB), "xx xm", 16, 16},  {MN(PCMPGTW), "xx xm", 16, 16},
    {MN(PCMPGTD), "xx xm", 16, 16},  {MN(PMAXUB), "xx xm", 16, 16},
    {MN(PMINUB), "xx xm", 16, 16},   {MN(PMAXSW), "xx xm", 16, 16},
    {MN(PMINSW), "xx xm", 16, 16},   {MN(PAVGB), "xx xm", 16, 16},
    {MN(PAVGW), "xx xm", 16, 16},    {MN(PSADBW), "xx xm", 16, 16},
    {MN(PUNPCKLBW), "xx xm", 16, 16}, {MN(PUNPCKLWD), "xx xm", 16, 16},
    {MN(PUNPCKLDQ), "xx xm", 16, 16}, {MN(PUNPCKLQDQ), "xx xm", 16, 16},
    {MN(PUNPCKHBW), "xx xm", 16, 16}, {MN(PUNPCKHWD), "xx xm", 16, 16},
    {MN(PUNPCKHDQ), "xx xm", 16, 16}, {MN(PUNPCKHQDQ), "xx xm", 16, 16},
    {MN(PACKSSWB), "xx xm", 16, 16}, {MN(PACKSSDW), "xx xm", 16, 16},
    {MN(PACKUSWB), "xx xm", 16, 16}, {MN(PSLLW), "xb xx xm", 16, 16},
    {MN(PSLLD), "xb xx xm", 16, 16}, {MN(PSLLQ), "xb xx xm", 16, 16},
    {MN(PSRLW), "xb xx xm", 16, 16}, {MN(PSRLD), "xb xx xm", 16, 16},
    {MN(PSRLQ), "xb xx xm", 16, 16}, {MN(PSRAW), "xb xx xm", 16, 16},
    {MN(PSRAD), "xb xx xm", 16, 16}, {MN(PSLLDQ), "xb", 16, 16},
    {MN(PSRLDQ), "xb", 16, 16},      {MN(PSHUFD), "xxb xmb", 16, 16},
    {MN(PSHUFHW), "xxb xmb", 16, 16}, {MN(PSHUFLW), "xxb xmb", 16, 16},
    {MN(MOVDQA), "xx xm Mx", 16, 16}, {MN(MOVDQU), "xx xm Mx", 16, 1},
    {MN(MOVD), "xd wx xm Mx", 4, 1}, {MN(MOVQ), "xq Qx xx xm Mx", 8, 1},
    {MN(PMOVMSKB), "wx", 0, 1},      {MN(PEXTRW), "wxb", 0, 1},
    {MN(PINSRW), "xdb xmb", 2, 1},   {MN(MOVNTDQ), "Mx", 16, 16},
    // SSSE3
    {MN(PSHUFB), "xx xm", 16, 16, Feature::kSsse3}, {MN(PABSB), "xx xm", 16, 16, Feature::kSsse3},
    {MN(PABSD), "xx xm", 16, 16, Feature::kSsse3},  {MN(PSIGNW), "xx xm", 16, 16, Feature::kSsse3},
    {MN(PHADDD), "xx xm", 16, 16, Feature::kSsse3}, {MN(PALIGNR), "xxb xmb", 16, 16, Feature::kSsse3},
    {MN(PMADDUBSW), "xx xm", 16, 16, Feature::kSsse3},
    {MN(PMULHRSW), "xx xm", 16, 16, Feature::kSsse3},
    // SSE4.1
    {MN(PMULLD), "xx xm", 16, 16, Feature::kSse41}, {MN(PMINSD), "xx xm", 16, 16, Feature::kSse41},
    {MN(PMAXUD), "xx xm", 16, 16, Feature::kSse41}, {MN(PMINUW), "xx xm", 16, 16, Feature::kSse41},
    {MN(PMAXSB), "xx xm", 16, 16, Feature::kSse41}, {MN(PCMPEQQ), "xx xm", 16, 16, Feature::kSse41},
    {MN(PACKUSDW), "xx xm", 16, 16, Feature::kSse41}, {MN(PTEST), "xx xm", 16, 16, Feature::kSse41},
    {MN(PBLENDW), "xxb xmb", 16, 16, Feature::kSse41},
    {MN(PEXTRB), "wxb Mxb", 1, 1, Feature::kSse41}, {MN(PEXTRD), "wxb Mxb", 4, 1, Feature::kSse41},
    {MN(PEXTRQ), "Qxb Mxb", 8, 1, Feature::kSse41}, {MN(PINSRB), "xdb xmb", 1, 1, Feature::kSse41},
    {MN(PINSRD), "xdb xmb", 4, 1, Feature::kSse41}, {MN(PINSRQ), "xqb xmb", 8, 1, Feature::kSse41},
    {MN(PMOVZXBW), "xx xm", 8, 1, Feature::kSse41}, {MN(PMOVSXWD), "xx xm", 8, 1, Feature::kSse41},
    {MN(PMOVZXDQ), "xx xm", 8, 1, Feature::kSse41}, {MN(PMOVSXBQ), "xx xm", 2, 1, Feature::kSse41},
};

constexpr SseRow kSseFpRows[] = {
    {MN(ADDPS), "xx xm", 16, 16},  {MN(SUBPS), "xx xm", 16, 16},  {MN(MULPS), "xx xm", 16, 16},
    {MN(DIVPS), "xx xm", 16, 16},  {MN(MINPS), "xx xm", 16, 16},  {MN(MAXPS), "xx xm", 16, 16},
    {MN(SQRTPS), "xx xm", 16, 16}, {MN(RCPPS), "xx xm", 16, 16},  {MN(RSQRTPS), "xx xm", 16, 16},
    {MN(ANDPS), "xx xm", 16, 16},  {MN(ANDNPS), "xx xm", 16, 16}, {MN(ORPS), "xx xm", 16, 16},
    {MN(XORPS), "xx xm", 16, 16},  {MN(UNPCKLPS), "xx xm", 16, 16},
    {MN(UNPCKHPS), "xx xm", 16, 16},
    {MN(ADDPD), "xx xm", 16, 16},  {MN(SUBPD), "xx xm", 16, 16},  {MN(MULPD), "xx xm", 16, 16},
    {MN(DIVPD), "xx xm", 16, 16},  {MN(MINPD), "xx xm", 16, 16},  {MN(MAXPD), "xx xm", 16, 16},
    {MN(SQRTPD), "xx xm", 16, 16}, {MN(ANDPD), "xx xm", 16, 16},  {MN(XORPD), "xx xm", 16, 16},
    {MN(UNPCKLPD), "xx xm", 16, 16},
    {MN(ADDSS), "xx xm", 4, 1},    {MN(SUBSS), "xx xm", 4, 1},    {MN(MULSS), "xx xm", 4, 1},
    {MN(DIVSS), "xx xm", 4, 1},    {MN(MINSS), "xx xm", 4, 1},    {MN(MAXSS), "xx xm", 4, 1},
    {MN(SQRTSS), "xx xm", 4, 1},   {MN(RCPSS), "xx xm", 4, 1},    {MN(RSQRTSS), "xx xm", 4, 1},
    {MN(ADDSD), "xx xm", 8, 1},    {MN(SUBSD), "xx xm", 8, 1},    {MN(MULSD), "xx xm", 8, 1},
    {MN(DIVSD), "xx xm", 8, 1},    {MN(MINSD), "xx xm", 8, 1},    {MN(MAXSD), "xx xm", 8, 1},
    {MN(SQRTSD), "xx xm", 8, 1},
    {MN(CMPPS), "xxb xmb", 16, 16}, {MN(CMPPD), "xxb xmb", 16, 16},
    {MN(CMPSS), "xxb xmb", 4, 1},  {MN(CMPSD), "xxb xmb", 8, 1},
    {MN(SHUFPS), "xxb xmb", 16, 16}, {MN(SHUFPD), "xxb xmb", 16, 16},
    {MN(MOVAPS), "xx xm Mx", 16, 16}, {MN(MOVAPD), "xx xm Mx", 16, 16},
    {MN(MOVUPS), "xx xm Mx", 16, 1}, {MN(MOVUPD), "xx xm Mx", 16, 1},
    {MN(MOVSS), "xx xm Mx", 4, 1}, {MN(MOVSD), "xx xm Mx", 8, 1},
    {MN(MOVHLPS), "xx", 0, 1},     {MN(MOVLHPS), "xx", 0, 1},
    {MN(MOVLPS), "xm Mx", 8, 1},   {MN(MOVHPS), "xm Mx", 8, 1},
    {MN(MOVLPD), "xm Mx", 8, 1},   {MN(MOVHPD), "xm Mx", 8, 1},
    {MN(UCOMISS), "xx xm", 4, 1},  {MN(COMISS), "xx xm", 4, 1},
    {MN(UCOMISD), "xx xm", 8, 1},  {MN(COMISD), "xx xm", 8, 1},
    {MN(CVTSI2SS), "xd xq xm", 4, 1}, {MN(CVTSI2SD), "xd xq xm", 8, 1},
    {MN(CVTTSS2SI), "wx Qx wm Qm", 4, 1}, {MN(CVTSS2SI), "wx Qx wm Qm", 4, 1},
    {MN(CVTTSD2SI), "wx Qx wm Qm", 8, 1}, {MN(CVTSD2SI), "wx Qx wm Qm", 8, 1},
    {MN(CVTSS2SD), "xx xm", 4, 1},  {MN(CVTSD2SS), "xx xm", 8, 1},
    {MN(CVTDQ2PS), "xx xm", 16, 16}, {MN(CVTPS2DQ), "xx xm", 16, 16},
    {MN(CVTTPS2DQ), "xx xm", 16, 16}, {MN(CVTDQ2PD), "xx xm", 8, 1},
    {MN(CVTPD2DQ), "xx xm", 16, 16}, {MN(CVTTPD2DQ), "xx xm", 16, 16},
    {MN(CVTPD2PS), "xx xm", 16, 16}, {MN(CVTPS2PD), "xx xm", 8, 1},
    {MN(MOVMSKPS), "wx", 0, 1},    {MN(MOVMSKPD), "wx", 0, 1},
    // SSE4.1
    {MN(ROUNDPS), "xxb xmb", 16, 16, Feature::kSse41}, {MN(ROUNDSD), "xxb xmb", 8, 1, Feature::kSse41},
    {MN(DPPS), "xxb xmb", 16, 16, Feature::kSse41},    {MN(BLENDPD), "xxb xmb", 16, 16, Feature::kSse41},
    {MN(INSERTPS), "xxb xmb", 4, 1, Feature::kSse41},  {MN(EXTRACTPS), "wxb Mxb", 4, 1, Feature::kSse41},
};

// ---------------------------------------------------------------------------
// The generator proper.

enum class Region : uint8_t { kData, kStack, kReadOnly };

struct MemOptions {
  unsigned align = 1;        // the effective address is a multiple of this
  bool write = false;        // read-only memory is never the target
  bool allow_cross = true;   // may straddle the page boundary inside the data region
  unsigned margin = 0;       // keep this many bytes away from the region's edges
  uint32_t reserved = 0;     // registers address setup must not change
  bool allow_rsp = true;     // [rsp + ...] forms allowed (for the stack region)
  uint64_t rsp = 0;          // RSP when the address is computed
  bool force_ea = false;     // use `ea` as given (faults)
  uint64_t ea = 0;
};

struct InsnOptions {
  ZydisInstructionAttributes prefixes = 0;
  unsigned mem_size = 0;  // 0: the operand size
  MemOptions mem;
  int imm_bytes = 0;      // 0: the operand size (imm32 at most)
  int count = -1;         // the `k` immediate (-1: random)
  int cl = -1;            // with a `c` operand: load CL with this first (-1: leave CL)
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
  bool FaultRmw(Item& it);
  bool FaultSs(Item& it);
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

  // Operand builder: emits the memory setup (if the form has memory) and the
  // instruction. `size` is the GPR/memory operand size; SSE forms use
  // `mem_size` for memory. Returns false when the combination does not
  // encode (e.g. AH with a REX register): the caller retries.
  bool Insn(Item& it, ZydisMnemonic m, std::string_view form, unsigned size,
            InsnOptions o = {});
  bool InsnFromRow(Item& it, ZydisMnemonic m, const char* forms, unsigned size,
                   InsnOptions o = {});

  // Picks a target address in a region and builds a memory operand for it,
  // appending the register loads it needs to `setup`.
  uint64_t PickEa(unsigned size, const MemOptions& o);
  ZydisEncoderOperand Address(uint64_t ea, unsigned size, const MemOptions& o,
                              std::vector<Op>* setup, ZydisAddressSizeHint* hint,
                              ZydisInstructionAttributes* prefixes);
  ZydisEncoderOperand RandomAgen(ZydisAddressSizeHint* hint);

  // Register choice. `exclude` are register numbers not to use.
  int PickGpr(uint32_t exclude) {
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
      if (!(exclude & Bit(r))) {
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
    static constexpr uint8_t kCounts[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255};
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
    switch (f) {
      case Feature::kSse2: return true;
      case Feature::kSsse3: return cfg_.host.ssse3;
      case Feature::kSse41: return cfg_.host.sse41;
    }
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
};

bool Gen::Build(Category c, Item& it) {
  // In the order of BTVM_DIFF_CATEGORIES.
  static constexpr Builder kBuilders[] = {
      &Gen::Alu,     &Gen::Unary,  &Gen::Shift,    &Gen::MulDiv, &Gen::Bits,   &Gen::Cmov,
      &Gen::Xchg,    &Gen::Lock,   &Gen::Movx,     &Gen::Lea,    &Gen::Mem,    &Gen::Stack,
      &Gen::Branch,  &Gen::String, &Gen::Flags,    &Gen::Sse,    &Gen::SseFp,  &Gen::Fault,
      &Gen::Shift0,  &Gen::Enter,  &Gen::Xlat,     &Gen::Stack16, &Gen::Branch32, &Gen::FaultRmw,
      &Gen::FaultSs, &Gen::HostFault,
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
    switch (rng_.Below(4)) {
      case 0: return 0;
      case 1: return SignExtend(rng_.Bits(), 1);
      case 2: return SignExtend(rng_.Bits(), 2);
      default: return SignExtend(rng_.Bits(), 4);
    }
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
  switch (rng_.Below(3)) {
    case 0: break;
    case 1: op.mem.displacement = SignExtend(rng_.Bits(), 1); break;
    default: op.mem.displacement = SignExtend(rng_.Bits(), 4); break;
  }
  return op;
}

bool Gen::Insn(Item& it, ZydisMnemonic m, std::string_view form, unsigned size, InsnOptions o) {
  ZydisEncoderRequest req = Req(m, {}, o.prefixes);
  std::vector<Op> setup;
  for (size_t i = 0; i < form.size(); ++i) {
    const char k = form[i];
    ZydisEncoderOperand op{};
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
        // `c` needs RCX for the count, loaded after the address.
        if (form.find('c') != std::string_view::npos) mo.reserved |= Bit(kRcx);
        ZydisAddressSizeHint hint;
        op = Address(PickEa(msize, mo), msize, mo, &setup, &hint, &req.prefixes);
        req.address_size_hint = hint;
        break;
      }
      default: return false;
    }
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

bool Gen::Shift(Item& it) { return ShiftWith(it, false); }
bool Gen::Shift0(Item& it) { return ShiftWith(it, true); }

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
      pre.push_back(size == 1 ? MakeOp(Req(MN(MOV), {RegOp(ZYDIS_REGISTER_AH), ImmOp(SignExtend(rng_.Below(d), 1))}))
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
    pre.push_back(size == 1 ? MakeOp(Req(MN(MOV), {RegOp(ZYDIS_REGISTER_AH), ImmOp(SignExtend(rng_.Below(d), 1))}))
                            : MovImm(kRdx, size, rng_.Below(d)));
  } else {
    static constexpr ZydisMnemonic kExt[] = {MN(CBW), MN(CWD), MN(CDQ), MN(CQO)};
    pre.push_back(MakeOp(Req(kExt[size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3], {})));
  }
  for (Op& p : pre) it.ops.push_back(std::move(p));
  it.ops.push_back(MakeOp(Req(is_signed ? MN(IDIV) : MN(DIV), {divisor})));
  return true;
}

bool Gen::Bits(Item& it) {
  const unsigned roll = static_cast<unsigned>(rng_.Below(100));
  if (roll < 15) {
    // bt* [mem], reg: the register is a signed bit offset that may reach
    // outside the operand (SDM Vol. 2 BT): keep it within +-32 bytes.
    static constexpr ZydisMnemonic kBt[] = {MN(BT), MN(BTS), MN(BTR), MN(BTC)};
    const ZydisMnemonic m = rng_.Pick(kBt);
    const unsigned size = PickSize(kWide);
    const int off = PickGpr(Bit(kRsp));
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
      ZydisEncoderRequest load = Req(MN(MOV), {RegOp(Gpr(kRax, size)), x.req.operands[0]},
                                     x.req.prefixes);
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
  if (roll < 70) return rng_.Chance(50) ? Insn(it, MN(XADD), "MR", size, o) : Insn(it, MN(CMPXCHG), "Mr", size, o);
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
    ZydisEncoderRequest r =
        Req(m, {RegOp(PickReg(dst, true)), RegOp(PickReg(src, false))});
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
      it.ops.push_back(RawOp({0x66, 0x6a, static_cast<uint8_t>(rng_.Bits())}));  // push imm8 (16-bit)
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
}

bool Gen::SseFromRows(Item& it, std::span<const SseRow> rows) {
  const SseRow& row = rows[rng_.Below(rows.size())];
  if (!HasFeature(row.feature)) return false;
  InsnOptions o;
  o.mem_size = row.mem;
  o.mem.align = row.align;
  // The 32/64-bit GPR forms take their size from the letter.
  return InsnFromRow(it, row.m, row.forms, 8, o);
}

bool Gen::Sse(Item& it) { return SseFromRows(it, kSseIntRows); }
bool Gen::SseFp(Item& it) { return SseFromRows(it, kSseFpRows); }

bool Gen::Fault(Item& it) {
  // The last item of a sequence: everything after a fault is dead. Both
  // sides must agree on the vector, the faulting RIP and the state there.
  switch (rng_.Below(11)) {
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
    case 2:
    case 3: {  // #PF: load or store in the unmapped page
      InsnOptions o;
      o.mem.force_ea = true;
      o.mem.ea = kUnmappedAddress + rng_.Below(0x1000 - 8);
      const unsigned size = PickSize(kAll);
      return InsnFromRow(it, MN(MOV), "Rm Mr Mi", size, o);
    }
    case 4: {  // #PF: a store to the read-only page
      InsnOptions o;
      o.mem.force_ea = true;
      o.mem.ea = kReadOnlyAddress + rng_.Below(0x1000 - 8);
      const unsigned size = PickSize(kAll);
      return InsnFromRow(it, MN(MOV), "Mr Mi", size, o);
    }
    case 5: {  // #PF on the second page of a split access (bounce path)
      InsnOptions o;
      const unsigned size = PickSize(2 | 4 | 8);
      o.mem.force_ea = true;
      o.mem.ea = kUnmappedAddress - rng_.Int(1, static_cast<int>(size) - 1);
      return InsnFromRow(it, MN(MOV), "Rm Mr", size, o);
    }
    case 6: {  // #PF part-way through rep stos/movs: the registers show progress
      const bool movs = rng_.Chance(50);
      const unsigned done = static_cast<unsigned>(rng_.Int(0, 6));
      it.ops.push_back(MakeOp(Req(MN(CLD), {})));
      it.ops.push_back(MovImm(kRdi, kUnmappedAddress - 8 * done));
      if (movs) it.ops.push_back(MovImm(kRsi, kDataAddress + 8 * rng_.Below(64)));
      it.ops.push_back(MovImm(kRcx, done + 1 + rng_.Below(4)));
      it.ops.push_back(RawOp({0xf3, 0x48, static_cast<uint8_t>(movs ? 0xa5 : 0xab)}));
      return true;
    }
    case 7: {  // #PF on a fetch: jump into the unmapped page
      const int r = PickGpr(Bit(kRsp));
      it.ops.push_back(MovImm(r, kUnmappedAddress + rng_.Below(0x1000)));
      Op j = MakeOp(Req(MN(JMP), {RegOp(Gpr(r, 8))}));
      j.req.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
      it.ops.push_back(j);
      return true;
    }
    case 8: {  // #GP: a non-canonical address (not RBP/RSP-based: that is #SS)
      const int r = PickGpr(Bit(kRsp) | Bit(kRbp));
      it.ops.push_back(MovImm(r, 0x8000000000000000ull + (rng_.Bits() & 0xffff)));
      ZydisEncoderOperand mem{};
      mem.type = ZYDIS_OPERAND_TYPE_MEMORY;
      mem.mem.base = Gpr(r, 8);
      mem.mem.size = 8;
      it.ops.push_back(MakeOp(Req(MN(MOV), {RegOp(Gpr(PickGpr(Bit(kRsp)), 8)), mem})));
      return true;
    }
    case 9: {  // #UD: ud2, lock on a register operand
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
}

bool Gen::FaultRmw(Item& it) {
  // #PF in an instruction that writes the flags: the exception frame must
  // hold the flags from before it (SDM Vol. 3 §6.5: a fault leaves the
  // state as before the instruction).
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
      return Insn(it, rng_.Pick(kShiftRows).m == MN(SHL) ? MN(SHL) : MN(SAR), "Mk", size, o);
  }
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

bool Gen::HostFault(Item& it) {
  // movdqa from a misaligned address: #GP(0) (SDM Vol. 2 MOVDQA).
  InsnOptions o;
  o.mem_size = 16;
  o.mem.force_ea = true;
  o.mem.ea = kDataAddress + 16 * rng_.Below(0x100) + static_cast<uint64_t>(rng_.Int(1, 15));
  return Insn(it, MN(MOVDQA), "xm", 8, o);
}

uint64_t Gen::DefineReadFlags(Item& it, uint64_t undefined, std::vector<uint64_t>* undefined_at,
                              size_t index) {
  for (size_t j = 0; j < it.ops.size(); ++j) {
    const FlagEffect e = EffectOf(it.ops[j]);
    if (e.tested & undefined) {
      // cmp defines all six (SDM Vol. 2 CMP) and writes no register.
      Op cmp = MakeOp(Req(MN(CMP), {RegOp(Gpr(PickGpr(0), 8)), RegOp(Gpr(PickGpr(0), 8))}));
      it.ops.insert(it.ops.begin() + static_cast<long>(j), cmp);
      for (Op& op : it.ops) {
        if (op.target_op >= static_cast<int>(j)) ++op.target_op;
      }
      undefined = 0;
      continue;  // the reading op, now at j + 1, is looked at next
    }
    undefined = (undefined & ~e.defined) | e.undefined;
    const Op& op = it.ops[j];
    if (op.skip_items >= 0) {
      const size_t last = std::min(index + 1 + static_cast<size_t>(op.skip_items),
                                   undefined_at->size() - 1);
      for (size_t t = index + 1; t <= last; ++t) (*undefined_at)[t] |= undefined;
    }
  }
  return undefined;
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
    const bool last = cat == Category::kFault || cat == Category::kFaultRmw ||
                      cat == Category::kFaultSs || cat == Category::kHostFault;
    (last ? terminal : body).push_back(cat);
  }
  const int n = body.empty() ? 0 : rng_.Int(cfg_.min_items, cfg_.max_items);
  // Flags that may be undefined at the start of each item: a forward
  // branch carries its flags to every item it may skip to.
  std::vector<uint64_t> undefined_at(static_cast<size_t>(n) + 2, 0);
  auto add = [&](Category c) {
    bool built = false;
    for (int tries = 0; tries < 50 && !built; ++tries) {
      Item it;
      const uint64_t rsp = rsp_;
      built = Build(c, it) && Encodes(it);
      if (built) {
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
  for (int i = 0; i < n; ++i) add(rng_.Pick(body));
  if (!terminal.empty() && (body.empty() || rng_.Chance(35))) add(rng_.Pick(terminal));
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
  return seq;
}

}  // namespace

// ---------------------------------------------------------------------------

FlagEffect FlagEffectOf(const uint8_t* code, size_t length) {
  ZydisDisassembledInstruction d;
  if (!ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress, code, length, &d)) ||
      d.info.cpu_flags == nullptr) {
    return {};
  }
  const ZydisAccessedFlags& f = *d.info.cpu_flags;
  FlagEffect e;
  e.tested = f.tested & kArithFlags;
  e.undefined = f.undefined & kArithFlags;
  e.defined = (f.modified | f.set_0 | f.set_1) & kArithFlags & ~e.undefined;
  const ZydisMnemonic m = d.info.mnemonic;
  // rep cmps/scas with RCX = 0 compare nothing and write no flag.
  if (d.info.attributes & (ZYDIS_ATTRIB_HAS_REPE | ZYDIS_ATTRIB_HAS_REPNE)) e.defined = 0;
  const bool shift = m == MN(SHL) || m == MN(SHR) || m == MN(SAR) ||
                     m == MN(ROL) || m == MN(ROR) || m == MN(RCL) || m == MN(RCR) ||
                     m == MN(SHLD) || m == MN(SHRD);
  if (shift) {
    const ZydisDecodedOperand& count = d.operands[d.info.operand_count_visible - 1];
    const unsigned size = d.operands[0].size / 8;
    if (count.type != ZYDIS_OPERAND_TYPE_IMMEDIATE) {
      e.defined = 0;  // by CL: perhaps by 0, which writes nothing
    } else {
      const unsigned n = static_cast<unsigned>(count.imm.value.u);
      const unsigned masked = n & (size == 8 ? 63 : 31);
      if (KeepsFlags(m, size, n)) {
        e.defined = e.undefined = 0;
      } else if ((m == MN(SHL) || m == MN(SHR)) && masked >= 8 * size) {
        // SDM Vol. 2 SAL/SAR/SHL/SHR: CF undefined once the count reaches
        // the operand size.
        e.undefined |= 1;
        e.defined &= ~uint64_t{1};
      } else if ((m == MN(SHLD) || m == MN(SHRD)) && masked > 8 * size) {
        // SDM Vol. 2 SHLD/SHRD: a count beyond the operand size leaves the
        // result and the flags undefined.
        e.undefined |= e.defined;
        e.defined = 0;
      }
    }
  }
  return e;
}

const char* CategoryName(Category c) {
  static constexpr const char* kNames[] = {
#define BTVM_DIFF_NAME(id, name, text) name,
      BTVM_DIFF_CATEGORIES(BTVM_DIFF_NAME)
#undef BTVM_DIFF_NAME
  };
  return kNames[static_cast<size_t>(c)];
}

const char* CategoryHelp(Category c) {
  static constexpr const char* kTexts[] = {
#define BTVM_DIFF_TEXT(id, name, text) text,
      BTVM_DIFF_CATEGORIES(BTVM_DIFF_TEXT)
#undef BTVM_DIFF_TEXT
  };
  return kTexts[static_cast<size_t>(c)];
}

std::optional<Category> CategoryByName(std::string_view name) {
  for (size_t c = 0; c < kCategoryCount; ++c) {
    if (name == CategoryName(static_cast<Category>(c))) return static_cast<Category>(c);
  }
  return std::nullopt;
}

CategorySet DefaultCategories() {
  // Every category up to and including kFault; the ones after it fail on
  // the current translator and are opt-in (--include).
  CategorySet s;
  for (size_t c = 0; c <= static_cast<size_t>(Category::kFault); ++c) s.set(c);
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

uint64_t SequenceSeed(uint64_t seed, uint64_t index) { return SplitMix(seed ^ SplitMix(index)); }

Sequence Generate(const GeneratorConfig& config, uint64_t seed) {
  return Gen(config, seed).Generate();
}

bool Encode(const Sequence& seq, Encoded* out, std::string* error) {
  // Every op's length is independent of where it lies (branch widths are
  // fixed per op, RIP-relative displacements are always 32-bit), so one
  // pass measures and a second pass encodes with the real targets. A short
  // branch whose target is out of reach is widened and the layout redone.
  std::vector<std::vector<bool>> widen(seq.items.size());
  for (size_t i = 0; i < seq.items.size(); ++i) widen[i].assign(seq.items[i].ops.size(), false);

  for (int attempt = 0; attempt < 8; ++attempt) {
    auto request = [&](size_t i, size_t j) {
      ZydisEncoderRequest r = seq.items[i].ops[j].req;
      if (widen[i][j]) {
        r.branch_type = ZYDIS_BRANCH_TYPE_NEAR;
        r.branch_width = ZYDIS_BRANCH_WIDTH_32;
      }
      return r;
    };
    // Pass 1: lengths, with each target at the op itself.
    std::vector<std::vector<uint64_t>> addr(seq.items.size());
    uint64_t pc = kCodeAddress;
    for (size_t i = 0; i < seq.items.size(); ++i) {
      for (size_t j = 0; j < seq.items[i].ops.size(); ++j) {
        const Op& op = seq.items[i].ops[j];
        addr[i].push_back(pc);
        if (!op.raw.empty()) {
          pc += op.raw.size();
          continue;
        }
        const ZydisEncoderRequest r = Patched(op, request(i, j), pc);
        std::vector<uint8_t> b;
        if (!EncodeAt(r, pc, &b)) {
          if (error) *error = "item " + std::to_string(i) + " op " + std::to_string(j) + " does not encode";
          return false;
        }
        pc += b.size();
      }
    }
    const uint64_t end = pc;
    auto target_of = [&](size_t i, const Op& op) -> uint64_t {
      if (op.target_op >= 0) {
        if (static_cast<size_t>(op.target_op) < addr[i].size()) return addr[i][op.target_op];
        for (size_t k = i + 1; k < seq.items.size(); ++k) {
          if (!addr[k].empty()) return addr[k][0];
        }
        return end;
      }
      if (op.skip_items >= 0) {
        const size_t k = i + 1 + static_cast<size_t>(op.skip_items);
        return k < seq.items.size() ? addr[k][0] : end;
      }
      return 0;
    };
    // Pass 2: the real encoding.
    Encoded e;
    bool again = false;
    for (size_t i = 0; i < seq.items.size() && !again; ++i) {
      for (size_t j = 0; j < seq.items[i].ops.size(); ++j) {
        const Op& op = seq.items[i].ops[j];
        const uint64_t at = addr[i][j];
        Encoded::Insn insn;
        insn.offset = at - kCodeAddress;
        insn.item = static_cast<int>(i);
        insn.flow = op.flow;
        const uint64_t target = target_of(i, op);
        if (op.flow != Op::Flow::kNext) insn.target = target - kCodeAddress;
        std::vector<uint8_t> b;
        if (!op.raw.empty()) {
          b = op.raw;
        } else {
          const ZydisEncoderRequest r = Patched(op, request(i, j), target);
          if (!EncodeAt(r, at, &b)) {
            if (op.patch == Op::Patch::kBranch && !widen[i][j]) {
              widen[i][j] = true;  // out of rel8 reach
              again = true;
              break;
            }
            if (error) *error = "item " + std::to_string(i) + " op " + std::to_string(j) + " does not encode";
            return false;
          }
        }
        const uint64_t next = j + 1 < addr[i].size() ? addr[i][j + 1]
                              : [&] {
                                  for (size_t k = i + 1; k < seq.items.size(); ++k) {
                                    if (!addr[k].empty()) return addr[k][0];
                                  }
                                  return end;
                                }();
        if (at + b.size() != next) {
          if (error) *error = "item " + std::to_string(i) + " op " + std::to_string(j) + " changed length";
          return false;
        }
        insn.length = static_cast<uint8_t>(b.size());
        e.code.insert(e.code.end(), b.begin(), b.end());
        e.insns.push_back(insn);
      }
    }
    if (again) continue;
    *out = std::move(e);
    return true;
  }
  if (error) *error = "layout does not converge";
  return false;
}

std::string Disassemble(const Encoded& e) {
  std::string s;
  for (const Encoded::Insn& insn : e.insns) {
    ZydisDisassembledInstruction d;
    char line[256];
    const uint8_t* p = e.code.data() + insn.offset;
    std::string hex;
    for (unsigned i = 0; i < insn.length; ++i) {
      char b[4];
      std::snprintf(b, sizeof b, "%02x ", p[i]);
      hex += b;
    }
    const bool ok = ZYAN_SUCCESS(ZydisDisassembleIntel(kMode, kCodeAddress + insn.offset, p,
                                                       insn.length, &d));
    std::snprintf(line, sizeof line, "  %4llx: %-36s %s\n",
                  static_cast<unsigned long long>(insn.offset), hex.c_str(),
                  ok ? d.text : "(undecodable)");
    s += line;
  }
  return s;
}

}  // namespace btvm::diff
