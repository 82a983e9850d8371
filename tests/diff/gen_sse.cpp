// SSE categories: the integer and floating-point tables and their builder.

#include "tests/diff/gen_internal.h"

namespace btvm::diff::gen {

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

}  // namespace btvm::diff::gen
