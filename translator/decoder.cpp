#include "translator/decoder.h"

#include <string>

#include "base/cpu_state.h"

namespace btvm {

Decoder::Decoder(CodeMode mode) : mode_(mode) {
  if (mode == CodeMode::kCompat32) {
    ZydisDecoderInit(&decoder_, ZYDIS_MACHINE_MODE_LONG_COMPAT_32, ZYDIS_STACK_WIDTH_32);
  } else {
    ZydisDecoderInit(&decoder_, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  }
}

bool Decoder::Decode(const uint8_t* bytes, size_t len, uint64_t rip, DecodedInsn* out) const {
  if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder_, bytes, len, &out->insn, out->ops))) {
    return false;
  }
  // VEX, EVEX, XOP and 3DNow! encodings are outside the virtual CPU: CPUID
  // exposes no AVX (so no XCR0 can enable it), and a real CPU raises #UD.
  // Gathers also address memory through vector registers, which the
  // memory-operand rewriting could not check.
  if (out->insn.encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY) return false;
  out->rip = rip;
  out->mode = mode_;
  __builtin_memcpy(out->bytes, bytes, out->insn.length);
  out->cls = ClassifyInsn(out->insn, out->ops);
  return out->cls != InsnClass::kUndefined;
}

std::string FormatInsn(const DecodedInsn& d) {
  ZydisFormatter f;
  ZydisFormatterInit(&f, ZYDIS_FORMATTER_STYLE_INTEL);
  char buf[256];
  if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&f, &d.insn, d.ops,
                                                    d.insn.operand_count_visible, buf,
                                                    sizeof(buf), d.rip, nullptr))) {
    return "(unformattable)";
  }
  return buf;
}

bool IsRcxBranch(ZydisMnemonic m) {
  return m == ZYDIS_MNEMONIC_LOOP || m == ZYDIS_MNEMONIC_LOOPE || m == ZYDIS_MNEMONIC_LOOPNE ||
         m == ZYDIS_MNEMONIC_JRCXZ || m == ZYDIS_MNEMONIC_JECXZ;
}

int SegmentIndexOf(ZydisRegister r) {
  switch (r) {
    case ZYDIS_REGISTER_ES: return kEs;
    case ZYDIS_REGISTER_CS: return kCs;
    case ZYDIS_REGISTER_SS: return kSs;
    case ZYDIS_REGISTER_FS: return kFs;
    case ZYDIS_REGISTER_GS: return kGs;
    default: return kDs;
  }
}

}  // namespace btvm
