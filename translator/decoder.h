#pragma once
// The front end: decodes guest code with Zydis, one block at a time, and
// classifies each instruction by how it is translated (the instruction
// table, insn_table.cpp).

#include <Zydis/Zydis.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace btvm {

// How an instruction is translated (DESIGN.md, Translator).
enum class InsnClass : uint8_t {
  kIdent,      // re-emitted in its own form (memory operand through the soft TLB)
  kNop,        // no architectural effect to emulate (nop with ModRM, prefetch)
  kStack,      // push / pop / leave: explicit stack sequences
  kBranch,     // ends the block: jmp, jcc, loop, call, ret
  kString,     // movs / stos / lods: a helper call that works page by page
  kRuntime,    // ends the block; the runtime emulates it against CpuState
  kSystem,     // cli, sti, pushfq, swapgs, ... in a 64-bit supervisor block, syscall
               // in a 64-bit user block: inline against the state in
               // CpuState (emit_system.cpp, emit_syscall.cpp); never given
               // by the decoder, the block builder picks it
  kUndefined,  // outside the virtual CPU: the decoder reports it as #UD
};

// The code a block is decoded as: 64-bit mode (CS.L = 1), or 32-bit
// compatibility mode (IA-32e mode with CS.L = 0, CS.D = 1; SDM Vol. 3
// §5.2.1). 16-bit code segments are not translated.
enum class CodeMode : uint8_t { k64, kCompat32 };

struct DecodedInsn {
  uint64_t rip = 0;
  CodeMode mode = CodeMode::k64;
  ZydisDecodedInstruction insn{};
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT]{};
  InsnClass cls = InsnClass::kIdent;
  uint8_t bytes[ZYDIS_MAX_INSTRUCTION_LENGTH]{};  // the guest bytes

  // In compatibility mode EIP wraps at 4 GiB (SDM Vol. 1 §3.5).
  uint64_t NextRip() const {
    uint64_t next = rip + insn.length;
    return mode == CodeMode::kCompat32 ? next & 0xffffffff : next;
  }
};

// Reads up to `len` guest code bytes at guest-virtual `rip` into `buf`;
// returns how many could be read (fewer at a fetch fault).
using CodeFetcher = std::function<size_t(uint64_t rip, uint8_t* buf, size_t len)>;

class Decoder {
 public:
  explicit Decoder(CodeMode mode = CodeMode::k64);
  // Decodes one instruction in the decoder's mode. False if the bytes are
  // not a valid instruction (the guest gets #UD) or could not be fetched.
  bool Decode(const uint8_t* bytes, size_t len, uint64_t rip, DecodedInsn* out) const;

 private:
  ZydisDecoder decoder_;
  CodeMode mode_;
};

InsnClass ClassifyInsn(const ZydisDecodedInstruction& insn, const ZydisDecodedOperand* ops);

// Formats one instruction in Intel syntax (for traces and error messages).
std::string FormatInsn(const DecodedInsn& d);

// loop, loope, loopne, jrcxz, jecxz: conditional branches on RCX (or ECX),
// not on flags.
bool IsRcxBranch(ZydisMnemonic m);

// CpuState's index (kEs..kGs) of a segment register operand; DS for any
// other value (the default data segment).
int SegmentIndexOf(ZydisRegister r);

}  // namespace btvm
