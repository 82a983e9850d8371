// The decoder's classification: what is re-emitted, what goes to the
// runtime, and what is outside the CPU model (#UD).

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "translator/decoder.h"

namespace btvm {
namespace {

struct Decoded {
  bool ok;
  InsnClass cls;
};

Decoded Classify(std::vector<uint8_t> bytes, CodeMode mode = CodeMode::k64) {
  Decoder decoder(mode);
  DecodedInsn d;
  bool ok = decoder.Decode(bytes.data(), bytes.size(), 0x1000, &d);
  return {ok, d.cls};
}

Decoded Compat(std::vector<uint8_t> bytes) { return Classify(std::move(bytes), CodeMode::kCompat32); }

TEST(DecoderTest, OrdinaryInstructionsAreIdent) {
  EXPECT_EQ(Classify({0x48, 0x01, 0xd8}).cls, InsnClass::kIdent);        // add rax, rbx
  EXPECT_EQ(Classify({0x48, 0xf7, 0xf1}).cls, InsnClass::kIdent);        // div rcx (native)
  EXPECT_EQ(Classify({0x48, 0x0f, 0xa3, 0x06}).cls, InsnClass::kIdent);  // bt [rsi], rax
  EXPECT_EQ(Classify({0xd7}).cls, InsnClass::kIdent);                    // xlat
}

TEST(DecoderTest, ControlTransfersAreBranches) {
  EXPECT_EQ(Classify({0xeb, 0x00}).cls, InsnClass::kBranch);        // jmp short
  EXPECT_EQ(Classify({0x75, 0x00}).cls, InsnClass::kBranch);        // jnz
  EXPECT_EQ(Classify({0x67, 0xe3, 0x00}).cls, InsnClass::kBranch);  // jecxz
  EXPECT_EQ(Classify({0xc3}).cls, InsnClass::kBranch);              // ret
}

TEST(DecoderTest, StringInstructionsByAddressSize) {
  EXPECT_EQ(Classify({0xf3, 0x48, 0xab}).cls, InsnClass::kString);         // rep stosq
  EXPECT_EQ(Classify({0xf3, 0x67, 0x48, 0xab}).cls, InsnClass::kRuntime);  // 32-bit addressing
  EXPECT_EQ(Classify({0xf3, 0xa6}).cls, InsnClass::kRuntime);              // repe cmpsb
}

TEST(DecoderTest, SensitiveInstructionsGoToTheRuntime) {
  EXPECT_EQ(Classify({0xfa}).cls, InsnClass::kRuntime);              // cli
  EXPECT_EQ(Classify({0x0f, 0x22, 0xd8}).cls, InsnClass::kRuntime);  // mov cr3, rax
  EXPECT_EQ(Classify({0x48, 0x0f, 0xae, 0x26}).cls, InsnClass::kRuntime);  // xsave64 [rsi]
  EXPECT_EQ(Classify({0x0f, 0xb4, 0x03}).cls, InsnClass::kRuntime);        // lfs eax, [rbx]
  EXPECT_EQ(Classify({0x8e, 0xd8}).cls, InsnClass::kRuntime);              // mov ds, ax
}

TEST(DecoderTest, OutsideTheCpuModelIsUndefined) {
  EXPECT_FALSE(Classify({0xc5, 0xe9, 0xef, 0xcb}).ok);              // vpxor (VEX)
  EXPECT_FALSE(Classify({0xc7, 0xf8, 0x00, 0x00, 0x00, 0x00}).ok);  // xbegin
  EXPECT_FALSE(Classify({0x0f, 0x01, 0xef}).ok);                    // wrpkru
  EXPECT_FALSE(Classify({0x0f, 0x01, 0xfc}).ok);                    // clzero
}

TEST(DecoderTest, MpxEncodingsAreNops) {
  EXPECT_EQ(Classify({0xf3, 0x0f, 0x1b, 0x02}).cls, InsnClass::kNop);  // bndmk bnd0, [rdx]
  EXPECT_EQ(Classify({0x0f, 0x1a, 0x02}).cls, InsnClass::kNop);        // bndldx bnd0, [rdx]
}

// Compatibility mode (32-bit code segments): the same bytes are other
// instructions, and some exist only there.
TEST(DecoderTest, CompatibilityModeDecodesAs32BitCode) {
  Decoder decoder(CodeMode::kCompat32);
  DecodedInsn d;
  const uint8_t inc[] = {0x40};  // inc eax (a REX prefix in 64-bit mode)
  ASSERT_TRUE(decoder.Decode(inc, sizeof inc, 0x1000, &d));
  EXPECT_EQ(d.insn.mnemonic, ZYDIS_MNEMONIC_INC);
  EXPECT_EQ(d.insn.operand_width, 32);
  EXPECT_EQ(d.cls, InsnClass::kIdent);
  EXPECT_EQ(d.mode, CodeMode::kCompat32);
  const uint8_t push[] = {0x50};  // push eax: a 4-byte slot
  ASSERT_TRUE(decoder.Decode(push, sizeof push, 0x1000, &d));
  EXPECT_EQ(d.cls, InsnClass::kStack);
  EXPECT_EQ(d.insn.operand_width, 32);
  const uint8_t mov[] = {0x8b, 0x44, 0x24, 0x04};  // mov eax, [esp + 4]
  ASSERT_TRUE(decoder.Decode(mov, sizeof mov, 0x1000, &d));
  EXPECT_EQ(d.insn.address_width, 32);
  EXPECT_EQ(d.ops[1].mem.segment, ZYDIS_REGISTER_SS);
  // EIP wraps at 4 GiB.
  const uint8_t nop[] = {0x90};
  ASSERT_TRUE(decoder.Decode(nop, sizeof nop, 0xffffffff, &d));
  EXPECT_EQ(d.NextRip(), 0u);
  Decoder decoder64;
  ASSERT_TRUE(decoder64.Decode(nop, sizeof nop, 0xffffffff, &d));
  EXPECT_EQ(d.NextRip(), 0x100000000u);
}

TEST(DecoderTest, CompatibilityModeOnlyInstructionsGoToTheRuntime) {
  EXPECT_EQ(Compat({0x60}).cls, InsnClass::kRuntime);              // pushad
  EXPECT_EQ(Compat({0x61}).cls, InsnClass::kRuntime);              // popad
  EXPECT_EQ(Compat({0x1e}).cls, InsnClass::kRuntime);              // push ds
  EXPECT_EQ(Compat({0x07}).cls, InsnClass::kRuntime);              // pop es
  EXPECT_EQ(Compat({0xc5, 0x03}).cls, InsnClass::kRuntime);        // lds eax, [ebx]
  EXPECT_EQ(Compat({0x62, 0x03}).cls, InsnClass::kRuntime);        // bound eax, [ebx]
  EXPECT_EQ(Compat({0x63, 0xc8}).cls, InsnClass::kRuntime);        // arpl ax, cx
  EXPECT_EQ(Compat({0x27}).cls, InsnClass::kRuntime);              // daa
  EXPECT_EQ(Compat({0xce}).cls, InsnClass::kRuntime);              // into
  EXPECT_EQ(Compat({0x9c}).cls, InsnClass::kRuntime);              // pushfd
  EXPECT_EQ(Compat({0x9a, 0, 0, 0, 0, 0x2b, 0}).cls, InsnClass::kRuntime);  // call far ptr16:32
  EXPECT_EQ(Compat({0xcf}).cls, InsnClass::kRuntime);              // iretd
  EXPECT_EQ(Compat({0x0f, 0x05}).cls, InsnClass::kRuntime);        // syscall
  // 16-bit addressing and 16-bit near branches are reported by the runtime.
  EXPECT_EQ(Compat({0x67, 0x8b, 0x00}).cls, InsnClass::kRuntime);  // mov eax, [bx + si]
  EXPECT_EQ(Compat({0x67, 0xe2, 0x00}).cls, InsnClass::kRuntime);  // loop (CX)
  EXPECT_EQ(Compat({0x66, 0xc3}).cls, InsnClass::kRuntime);        // ret (16-bit IP)
  // The rest is as in 64-bit mode.
  EXPECT_EQ(Compat({0x01, 0xd8}).cls, InsnClass::kIdent);          // add eax, ebx
  EXPECT_EQ(Compat({0xe2, 0x00}).cls, InsnClass::kBranch);         // loop (ECX)
  EXPECT_EQ(Compat({0xc3}).cls, InsnClass::kBranch);               // ret
  EXPECT_EQ(Compat({0xf3, 0xa4}).cls, InsnClass::kRuntime);        // rep movsb (32-bit addresses)
}

}  // namespace
}  // namespace btvm
