// Tests of the differential-testing harness itself: that the bt runner's
// machine really runs at the CPL it claims and reports faults as the native
// runner does, that the flag masking follows control flow, that the
// comparison sees what it must, and that a seed means one sequence.

#include <gtest/gtest.h>

#include <vector>

#include "base/exception.h"
#include "tests/diff/bt_runner.h"
#include "tests/diff/difftest.h"
#include "tests/diff/generator.h"

namespace btvm::diff {
namespace {

constexpr uint64_t kFlagCF = 1, kFlagPF = 4, kFlagAF = 0x10, kFlagZF = 0x40, kFlagSF = 0x80,
                   kFlagOF = 0x800;

native::MachineState SmallState() {
  native::MachineState s;
  s.gpr[4] = kStackStart;
  s.gpr[3] = 1;  // rbx
  s.memory = {
      {kDataAddress, std::vector<uint8_t>(kDataSize, 0x5a), native::Access::kReadWrite},
      {kReadOnlyAddress, std::vector<uint8_t>(kReadOnlySize, 0xa5), native::Access::kReadOnly},
      {kStackAddress, std::vector<uint8_t>(kStackSize, 0), native::Access::kReadWrite},
  };
  return s;
}

class BtRunnerTest : public ::testing::TestWithParam<unsigned> {
 protected:
  void SetUp() override {
    auto r = BtRunner::Create();
    ASSERT_TRUE(r.ok()) << r.error().message;
    runner_ = std::move(r.value());
  }
  Outcome Run(std::vector<uint8_t> code, const native::MachineState& s = SmallState()) {
    return runner_->Run(code, s, GetParam());
  }
  std::unique_ptr<BtRunner> runner_;
};

TEST_P(BtRunnerTest, RunsToTheEnd) {
  // mov rax, 0x1234 ; add rax, rbx ; push rax
  Outcome o = Run({0x48, 0xc7, 0xc0, 0x34, 0x12, 0, 0, 0x48, 0x01, 0xd8, 0x50});
  ASSERT_EQ(o.kind, Outcome::kEnd) << o.message;
  EXPECT_EQ(o.state.gpr[0], 0x1235u);
  EXPECT_EQ(o.state.gpr[4], kStackStart - 8);
  const auto& stack = o.state.memory[2].bytes;
  EXPECT_EQ(stack[kStackStart - 8 - kStackAddress], 0x35);
}

TEST_P(BtRunnerTest, ReportsUndefinedOpcode) {
  Outcome o = Run({0x90, 0x0f, 0x0b});  // nop ; ud2
  ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
  EXPECT_EQ(o.vector, kUD);
  EXPECT_EQ(o.rip_offset, 1u);
  EXPECT_EQ(o.state.gpr[4], kStackStart);  // the guest's RSP, not the handler's
}

TEST_P(BtRunnerTest, ReportsDivideError) {
  Outcome o = Run({0x31, 0xc9, 0xf7, 0xf1});  // xor ecx, ecx ; div ecx
  ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
  EXPECT_EQ(o.vector, kDE);
  EXPECT_EQ(o.rip_offset, 2u);
}

TEST_P(BtRunnerTest, ReportsPageFaultWithAddress) {
  // mov rax, [kUnmappedAddress + 8]
  Outcome o = Run({0x48, 0x8b, 0x04, 0x25, 0x08, 0x20, 0x00, 0x20});
  ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
  EXPECT_EQ(o.vector, kPF);
  EXPECT_EQ(o.fault_address, kUnmappedAddress + 8);
  EXPECT_EQ(o.error_code, GetParam() == 3 ? 4u : 0u);  // not present; U at CPL3
}

// A stack access at a non-canonical address is a stack fault, #SS(0), with
// RSP as before it (SDM Vol. 3 §6.15; this host's CPU agrees: a push with
// RSP = 0x8000000000000010 traps with vector 12). The first push meets an
// empty stack copy in the soft TLB (SoftTlb::stack), the later ones a
// filled one; the run of three pushes is a stack window.
TEST_P(BtRunnerTest, NonCanonicalStackIsAStackFault) {
  constexpr uint64_t kBad = 0x8000000000000010ull;
  native::MachineState bad = SmallState();
  bad.gpr[4] = kBad;
  for (const std::vector<uint8_t>& code : {std::vector<uint8_t>{0x50},                 // push rax
                                           std::vector<uint8_t>{0x58},                 // pop rax
                                           std::vector<uint8_t>{0x50, 0x50, 0x50},     // push x3
                                           std::vector<uint8_t>{0xc3}}) {              // ret
    Outcome o = Run(code, bad);
    ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
    EXPECT_EQ(o.vector, kSS);
    EXPECT_EQ(o.error_code, 0u);
    EXPECT_EQ(o.rip_offset, 0u);
    EXPECT_EQ(o.state.gpr[4], kBad);
  }
  // After pushes on a good stack (the copy filled), then a bad RSP.
  // push rax ; pop rax ; mov rsp, rbx ; push rax
  native::MachineState s = SmallState();
  s.gpr[3] = kBad;
  Outcome o = Run({0x50, 0x58, 0x48, 0x89, 0xdc, 0x50}, s);
  ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
  EXPECT_EQ(o.vector, kSS);
  EXPECT_EQ(o.rip_offset, 5u);
  EXPECT_EQ(o.state.gpr[4], kBad);
}

TEST_P(BtRunnerTest, HarnessPagesAreSupervisorOnly) {
  // mov rax, [0x1000] (the GDT): fine at CPL0, #PF(P|U) at CPL3. This is
  // what shows the CPL3 run really runs in user mode.
  Outcome o = Run({0x48, 0x8b, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00});
  if (GetParam() == 0) {
    EXPECT_EQ(o.kind, Outcome::kEnd) << o.message;
  } else {
    ASSERT_EQ(o.kind, Outcome::kFault) << o.message;
    EXPECT_EQ(o.vector, kPF);
    EXPECT_EQ(o.error_code, 5u);
  }
}

TEST_P(BtRunnerTest, AgreesWithTheNativeRunner) {
  // add [rip+x], rbx ; mov rcx, [kReadOnlyAddress] ; movd xmm3, ecx
  std::vector<uint8_t> code = {0x48, 0x01, 0x1d, 0xf9, 0xff, 0xff, 0x0f,  // add [0x20000000], rbx
                               0x48, 0x8b, 0x0c, 0x25, 0x00, 0x30, 0x00,
                               0x20, 0x66, 0x0f, 0x6e, 0xd9};
  const native::MachineState s = SmallState();
  Outcome native = RunNativeOutcome(code, s);
  ASSERT_EQ(native.kind, Outcome::kEnd) << native.message;
  Outcome bt = Run(code, s);
  Encoded e;
  e.code = code;
  e.insns = {{0, 7, 0}, {7, 8, 0}, {15, 4, 0}};
  Comparison c = Compare(e, native, bt, GetParam());
  EXPECT_TRUE(c.ok()) << c.text;
  EXPECT_EQ(bt.state.gpr[1], 0xa5a5a5a5a5a5a5a5u);
}

TEST_P(BtRunnerTest, StopsAnEndlessLoop) {
  // jmp $: the watchdog stops the engine after a second.
  Outcome o = Run({0xeb, 0xfe});
  ASSERT_EQ(o.kind, Outcome::kError);
  EXPECT_NE(o.message.find("did not finish"), std::string::npos) << o.message;
  // And the runner is usable afterwards.
  EXPECT_EQ(Run({0x90}).kind, Outcome::kEnd);
}

INSTANTIATE_TEST_SUITE_P(Cpl, BtRunnerTest, ::testing::Values(0u, 3u),
                         [](const auto& info) { return "Cpl" + std::to_string(info.param); });

Encoded Linear(std::vector<uint8_t> code, std::vector<uint8_t> lengths) {
  Encoded e;
  e.code = std::move(code);
  uint64_t at = 0;
  for (uint8_t len : lengths) {
    e.insns.push_back({at, len, 0});
    at += len;
  }
  return e;
}

TEST(UndefinedFlags, LastWriterDecides) {
  // imul rbx: SF ZF AF PF undefined; then add eax, eax defines them all.
  Encoded imul = Linear({0x48, 0xf7, 0xeb}, {3});
  EXPECT_EQ(UndefinedFlags(imul, 3), kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  Encoded imul_add = Linear({0x48, 0xf7, 0xeb, 0x01, 0xc0}, {3, 2});
  EXPECT_EQ(UndefinedFlags(imul_add, 5), 0u);
  // At a fault in the add, the imul's flags are what the frame holds.
  EXPECT_EQ(UndefinedFlags(imul_add, 3), kFlagSF | kFlagZF | kFlagAF | kFlagPF);
}

TEST(UndefinedFlags, FollowsBranches) {
  // imul rbx ; jmp over ; add eax, eax ; over: -> the add never runs.
  Encoded e = Linear({0x48, 0xf7, 0xeb, 0xeb, 0x02, 0x01, 0xc0}, {3, 2, 2});
  e.insns[1].flow = Op::Flow::kJump;
  e.insns[1].target = 7;
  EXPECT_EQ(UndefinedFlags(e, 7), kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  // As a conditional branch, either path: still maybe undefined.
  e.insns[1].flow = Op::Flow::kBranch;
  EXPECT_EQ(UndefinedFlags(e, 7), kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  // Straight-line: defined.
  e.insns[1].flow = Op::Flow::kNext;
  EXPECT_EQ(UndefinedFlags(e, 7), 0u);
}

TEST(UndefinedFlags, ValueDependentWriters) {
  constexpr uint64_t kImulUndefined = kFlagSF | kFlagZF | kFlagAF | kFlagPF;
  // repne scasq may run no iteration (RCX = 0): the flags may stay as imul left them.
  EXPECT_EQ(UndefinedFlags(Linear({0x48, 0xf7, 0xeb, 0xf2, 0x48, 0xaf}, {3, 3}), 6),
            kImulUndefined);
  // A shift by CL may shift by 0; by an immediate 0 it surely writes nothing.
  EXPECT_EQ(UndefinedFlags(Linear({0x48, 0xf7, 0xeb, 0xd3, 0xe0}, {3, 2}), 5) & kImulUndefined,
            kImulUndefined);
  EXPECT_EQ(UndefinedFlags(Linear({0x48, 0xf7, 0xeb, 0xc1, 0xe0, 0x00}, {3, 3}), 6),
            kImulUndefined);
  // shl al, 9: CF undefined (the count reaches the operand size).
  EXPECT_EQ(UndefinedFlags(Linear({0xc0, 0xe0, 0x09}, {3}), 3) & kFlagCF, kFlagCF);
  // shl eax, 5: CF ZF SF PF defined, OF and AF undefined.
  EXPECT_EQ(UndefinedFlags(Linear({0xc1, 0xe0, 0x05}, {3}), 3), kFlagOF | kFlagAF);
}

TEST(DeadFlags, FollowTheBackEdge) {
  // 0: adc edx, edx ; 2: mov eax, [rbx] ; 4: inc ecx ; 6: jnz 0 ; 8: add eax, eax
  Encoded e = Linear({0x11, 0xd2, 0x8b, 0x03, 0xff, 0xc1, 0x75, 0xf8, 0x01, 0xc0}, {2, 2, 2, 2, 2});
  e.insns[3].flow = Op::Flow::kBranch;
  e.insns[3].target = 0;
  // At the mov: inc overwrites all but CF; CF goes around the back edge
  // to the adc, which reads it.
  EXPECT_EQ(DeadFlags(e, 2), kFlagOF | kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  // Without the back edge the add overwrites CF too.
  e.insns[3].flow = Op::Flow::kNext;
  EXPECT_EQ(DeadFlags(e, 2), kFlagCF | kFlagOF | kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  // The end of the sequence reads every flag; the adc reads CF itself.
  EXPECT_EQ(DeadFlags(e, 10), 0u);
  EXPECT_EQ(DeadFlags(e, 0), kFlagOF | kFlagSF | kFlagZF | kFlagAF | kFlagPF);
  // A shift by CL may write nothing: it kills no flag.
  EXPECT_EQ(DeadFlags(Linear({0x8b, 0x03, 0xd3, 0xe0}, {2, 2}), 0), 0u);
}

TEST(Compare, MasksFlagsDeadAtAFault) {
  // add [rbx], eax faults: every arithmetic flag is dead there (the add
  // overwrites them all), so the frame's may differ; with kExact not.
  Encoded e = Linear({0x01, 0x03}, {2});
  Outcome a;
  a.state = SmallState();
  a.kind = Outcome::kFault;
  a.vector = kPF;
  Outcome b = a;
  b.state.rflags ^= kFlagZF | kFlagCF;
  EXPECT_TRUE(Compare(e, a, b, 0).ok());
  EXPECT_FALSE(Compare(e, a, b, 0, FaultFlags::kExact).ok());
  // DF is never masked.
  b.state.rflags ^= 0x400;
  EXPECT_FALSE(Compare(e, a, b, 0).ok());
  // A trap (#BP: RIP after int3) is compared as ever.
  Encoded trap = Linear({0xcc, 0x01, 0xc0}, {1, 2});  // int3 ; add eax, eax
  a.vector = b.vector = kBP;
  a.rip_offset = b.rip_offset = 1;
  b.state.rflags = a.state.rflags ^ kFlagZF;
  EXPECT_FALSE(Compare(trap, a, b, 0).ok());
}

TEST(Compare, SeesEveryKindOfDifference) {
  Encoded e = Linear({0x48, 0xf7, 0xeb}, {3});  // imul rbx
  Outcome a;
  a.state = SmallState();
  Outcome b = a;
  EXPECT_TRUE(Compare(e, a, b, 0).ok());
  // Undefined after imul: masked. Defined (CF, OF) and DF: compared.
  b.state.rflags ^= kFlagZF | kFlagSF;
  EXPECT_TRUE(Compare(e, a, b, 0).ok());
  b.state.rflags ^= kFlagCF | kFlagOF;
  EXPECT_TRUE(Compare(e, a, b, 0).kinds.test(static_cast<size_t>(DiffKind::kFlags)));
  b = a;
  b.state.gpr[13] ^= 1;
  b.state.xmm[7][3] ^= 1;
  b.state.memory[0].bytes[100] ^= 1;
  b.state.mxcsr ^= 0x20;
  const Comparison c = Compare(e, a, b, 0);
  for (DiffKind k : {DiffKind::kGpr, DiffKind::kXmm, DiffKind::kMemory, DiffKind::kMxcsr}) {
    EXPECT_TRUE(c.kinds.test(static_cast<size_t>(k))) << DiffKindName(k);
  }
  b = a;
  b.kind = Outcome::kFault;
  b.vector = kGP;
  EXPECT_TRUE(Compare(e, a, b, 0).kinds.test(static_cast<size_t>(DiffKind::kOutcome)));
  // A native #PF from user mode has U set; at CPL0 the bt one does not.
  a.kind = b.kind = Outcome::kFault;
  a.vector = b.vector = kPF;
  a.error_code = 6;
  b.error_code = 2;
  EXPECT_TRUE(Compare(e, a, b, 0).ok());
  EXPECT_FALSE(Compare(e, a, b, 3).ok());
}

TEST(Generator, SameSeedSameSequence) {
  GeneratorConfig config;
  config.host = HostFeatures::Detect();
  for (uint64_t i = 0; i < 20; ++i) {
    const uint64_t seed = SequenceSeed(42, i);
    Encoded a, b;
    std::string error;
    ASSERT_TRUE(Encode(Generate(config, seed), &a, &error)) << error;
    ASSERT_TRUE(Encode(Generate(config, seed), &b, &error)) << error;
    EXPECT_EQ(a.code, b.code);
    EXPECT_EQ(Disassemble(a), Disassemble(b));
  }
}

TEST(Generator, BuildsEveryCategory) {
  // Each category on its own yields items (the host may lack an extension
  // or two, but never a whole category).
  GeneratorConfig config;
  config.host = HostFeatures::Detect();
  for (size_t c = 0; c < kCategoryCount; ++c) {
    config.categories.reset();
    config.categories.set(c);
    size_t items = 0;
    for (uint64_t i = 0; i < 20; ++i) {
      Sequence s = Generate(config, SequenceSeed(7, i));
      EXPECT_FALSE(s.dropped.any()) << CategoryName(static_cast<Category>(c));
      items += s.items.size();
      Encoded e;
      std::string error;
      EXPECT_TRUE(Encode(s, &e, &error)) << CategoryName(static_cast<Category>(c)) << ": " << error;
    }
    EXPECT_GT(items, 0u) << CategoryName(static_cast<Category>(c));
  }
}

TEST(Generator, LoopsBranchBack) {
  // Every loop item has a branch back into itself, and its sequences
  // encode (rel8 loop forms reach).
  GeneratorConfig config;
  config.host = HostFeatures::Detect();
  config.categories.reset();
  config.categories.set(static_cast<size_t>(Category::kLoop));
  size_t loops = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    const Sequence s = Generate(config, SequenceSeed(9, i));
    Encoded e;
    std::string error;
    ASSERT_TRUE(Encode(s, &e, &error)) << error;
    std::vector<bool> back(s.items.size(), false);
    for (const Encoded::Insn& insn : e.insns) {
      if (insn.flow != Op::Flow::kNext && insn.target <= insn.offset) {
        back[static_cast<size_t>(insn.item)] = true;
      }
    }
    for (size_t k = 0; k < s.items.size(); ++k) {
      EXPECT_TRUE(back[k]) << "sequence " << i << " item " << k;
      loops += back[k];
    }
  }
  EXPECT_GT(loops, 100u);
}

}  // namespace
}  // namespace btvm::diff
