// The decoder's classification: what is re-emitted, what goes to the
// runtime, and what is outside the CPU model (#UD).

#include <gtest/gtest.h>

#include <vector>

#include "translator/decoder.h"

namespace btvm {
namespace {

struct Decoded {
  bool ok;
  InsnClass cls;
};

Decoded Classify(std::vector<uint8_t> bytes) {
  Decoder decoder;
  DecodedInsn d;
  bool ok = decoder.Decode(bytes.data(), bytes.size(), 0x1000, &d);
  return {ok, d.cls};
}

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

}  // namespace
}  // namespace btvm
