// Tests of the native runner against known x86-64 behaviour (SDM Vol. 2).
// Snippet bytes were produced with GNU as + objdump; the assembly is next to
// each array.

#include "tests/native/native_runner.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <thread>

#include "base/cpu_state.h"

namespace btvm::native {
namespace {

constexpr uint64_t kData = 0x20000000;   // a data page for loads and stores
constexpr uint64_t kStack = 0x30000000;  // a stack page: RSP starts at its top
constexpr uint64_t kUnmapped = 0x6ff00000;
constexpr uint64_t kFlagsIn = rflags::kArith | rflags::kDF;

// Page faults' error code (SDM Vol. 3 §4.7): P, W/R, U/S, I/D.
constexpr uint64_t kPfPresent = 1, kPfWrite = 2, kPfUser = 4, kPfFetch = 16;
constexpr uint64_t kVectorDE = 0, kVectorUD = 6, kVectorPF = 14, kVectorXM = 19;

MemoryRegion Page(uint64_t address, uint8_t fill = 0, Access access = Access::kReadWrite) {
  return MemoryRegion{
      .address = address, .bytes = std::vector<uint8_t>(4096, fill), .access = access};
}

// Runs a snippet that is expected to run (the runner itself must not fail).
RunResult RunOk(std::span<const uint8_t> code, const MachineState& in,
                uint64_t code_address = kDefaultCodeAddress) {
  Result<RunResult> r = RunNative(code, in, code_address);
  if (!r.ok()) {
    ADD_FAILURE() << "RunNative failed: " << r.error().message;
    return {};
  }
  return std::move(r.value());
}

// Every GPR gets a distinct value so that a clobbered one shows. RSP stays
// canonical: see the limitation in native_runner.h.
MachineState Distinct() {
  MachineState s;
  for (int i = 0; i < 16; ++i) s.gpr[i] = 0x0101010101010101ull * static_cast<uint64_t>(i + 1);
  s.gpr[kRsp] = 0x0000050505050505;
  return s;
}

uint64_t Load64(const std::vector<uint8_t>& bytes, size_t offset) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + offset, sizeof(v));
  return v;
}

void Store64(std::vector<uint8_t>& bytes, size_t offset, uint64_t v) {
  std::memcpy(bytes.data() + offset, &v, sizeof(v));
}

TEST(NativeRunner, EmptySnippetReturnsTheInputState) {
  MachineState in = Distinct();
  in.rflags = rflags::kCF | rflags::kZF | rflags::kDF | rflags::kFixed1;
  for (int i = 0; i < 16; ++i) {
    for (int b = 0; b < 16; ++b) in.xmm[i][b] = static_cast<uint8_t>(i * 16 + b);
  }
  in.mxcsr = 0x7f80;  // all exceptions masked, round toward zero
  in.memory.push_back(Page(kData, 0x5a));

  RunResult r = RunOk({}, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.fault_rip_offset, 0u);
  EXPECT_EQ(r.rip, kDefaultCodeAddress);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(r.final.gpr[i], in.gpr[i]) << "gpr " << i;
  EXPECT_EQ(r.final.rflags & kFlagsIn, in.rflags & kFlagsIn);
  EXPECT_EQ(std::memcmp(r.final.xmm, in.xmm, sizeof(in.xmm)), 0);
  EXPECT_EQ(r.final.mxcsr, in.mxcsr);
  ASSERT_EQ(r.final.memory.size(), 1u);
  EXPECT_EQ(r.final.memory[0].address, kData);
  EXPECT_EQ(r.final.memory[0].bytes, in.memory[0].bytes);
}

TEST(NativeRunner, AddSetsOverflowAndSign) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  MachineState in = Distinct();
  in.gpr[kRax] = 0x7fffffffffffffff;
  in.gpr[kRbx] = 1;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.fault_rip_offset, sizeof(code));
  EXPECT_EQ(r.final.gpr[kRax], 0x8000000000000000);
  // 0x7f..ff + 1: signed overflow, negative, no carry out; the low nibble
  // carries (AF) and the low byte 0x00 has even parity (PF).
  EXPECT_EQ(r.final.rflags & rflags::kArith, rflags::kOF | rflags::kSF | rflags::kAF | rflags::kPF);
  for (int i = 1; i < 16; ++i) EXPECT_EQ(r.final.gpr[i], in.gpr[i]) << "gpr " << i;
}

TEST(NativeRunner, AddSetsCarryAndZero) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  MachineState in = Distinct();
  in.gpr[kRax] = ~0ull;
  in.gpr[kRbx] = 1;
  in.rflags = rflags::kOF | rflags::kSF;  // stale input flags must be overwritten
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.final.gpr[kRax], 0u);
  EXPECT_EQ(r.final.rflags & rflags::kArith, rflags::kCF | rflags::kZF | rflags::kAF | rflags::kPF);
}

TEST(NativeRunner, StoreWritesMemory) {
  const uint8_t code[] = {0x48, 0x89, 0x06};  // mov [rsi], rax
  MachineState in = Distinct();
  in.gpr[kRax] = 0x1122334455667788;
  in.gpr[kRsi] = kData + 8;
  in.memory.push_back(Page(kData, 0xee));
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  ASSERT_EQ(r.final.memory.size(), 1u);
  std::vector<uint8_t> want(4096, 0xee);
  Store64(want, 8, 0x1122334455667788);
  EXPECT_EQ(r.final.memory[0].bytes, want);
}

TEST(NativeRunner, LoadReadsMemory) {
  const uint8_t code[] = {0x48, 0x8b, 0x07};  // mov rax, [rdi]
  MachineState in = Distinct();
  in.gpr[kRdi] = kData + 0x100;
  in.memory.push_back(Page(kData));
  Store64(in.memory[0].bytes, 0x100, 0xfeedfacecafebeef);
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.final.gpr[kRax], 0xfeedfacecafebeef);
  EXPECT_EQ(r.final.memory[0].bytes, in.memory[0].bytes);
}

TEST(NativeRunner, RspIsAGeneralRegister) {
  const uint8_t code[] = {
      0x48, 0x87, 0xdc,              // xchg rsp, rbx
      0x48, 0x8d, 0x64, 0x44, 0x08,  // lea  rsp, [rsp + rax*2 + 8]
      0x48, 0x0f, 0xaf, 0xe1,        // imul rsp, rcx
  };
  MachineState in = Distinct();
  in.gpr[kRsp] = 0xdead;  // no stack anywhere near: fine, nothing is pushed
  in.gpr[kRbx] = 5;
  in.gpr[kRax] = 3;
  in.gpr[kRcx] = 7;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.final.gpr[kRsp], (5u + 3 * 2 + 8) * 7);
  EXPECT_EQ(r.final.gpr[kRbx], 0xdeadu);
}

TEST(NativeRunner, PushAndPopUseTheGuestStack) {
  const uint8_t code[] = {
      0x50,  // push rax
      0x5b,  // pop  rbx
  };
  MachineState in = Distinct();
  in.gpr[kRax] = 0x0123456789abcdef;
  in.gpr[kRsp] = kStack + 4096;
  in.memory.push_back(Page(kStack));
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.final.gpr[kRbx], 0x0123456789abcdefu);
  EXPECT_EQ(r.final.gpr[kRsp], kStack + 4096);
  EXPECT_EQ(Load64(r.final.memory[0].bytes, 4096 - 8), 0x0123456789abcdefu);
}

TEST(NativeRunner, PushfqSeesInputFlags) {
  const uint8_t code[] = {
      0x9c,  // pushfq
      0x58,  // pop rax
  };
  for (uint64_t flags : {uint64_t{0}, kFlagsIn, rflags::kCF | rflags::kDF, rflags::kZF}) {
    MachineState in = Distinct();
    in.gpr[kRsp] = kStack + 4096;
    in.memory.push_back(Page(kStack));
    in.rflags = flags | rflags::kTF | rflags::kAC;  // TF and AC are not honoured
    RunResult r = RunOk(code, in);
    EXPECT_EQ(r.signal, 0);
    EXPECT_EQ(r.final.gpr[kRax] & (kFlagsIn | rflags::kTF | rflags::kAC), flags)
        << std::hex << flags;
    EXPECT_TRUE(r.final.gpr[kRax] & rflags::kFixed1);
    EXPECT_TRUE(r.final.gpr[kRax] & rflags::kIF);  // the host forces IF in user mode
  }
}

TEST(NativeRunner, DivideByZeroRaisesSigfpe) {
  const uint8_t code[] = {
      0x90,              // nop
      0x90,              // nop
      0x48, 0xf7, 0xf1,  // div rcx
      0x90,              // nop
  };
  MachineState in = Distinct();
  in.gpr[kRcx] = 0;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGFPE);
  EXPECT_EQ(r.fault_rip_offset, 2u);
  EXPECT_EQ(r.rip, kDefaultCodeAddress + 2);
  EXPECT_EQ(r.trap_number, kVectorDE);
  EXPECT_EQ(r.final.gpr[kRax], in.gpr[kRax]);  // a fault leaves state as before the instruction
}

TEST(NativeRunner, UnmappedLoadRaisesSigsegv) {
  const uint8_t code[] = {
      0x90,              // nop
      0x48, 0x8b, 0x07,  // mov rax, [rdi]
  };
  MachineState in = Distinct();
  in.gpr[kRdi] = kUnmapped + 8;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_EQ(r.fault_address, kUnmapped + 8);
  EXPECT_EQ(r.fault_rip_offset, 1u);
  EXPECT_EQ(r.trap_number, kVectorPF);
  EXPECT_EQ(r.error_code, kPfUser);  // not present, read, user
}

TEST(NativeRunner, StoreToReadOnlyRegionRaisesSigsegv) {
  const uint8_t code[] = {0x48, 0x89, 0x06};  // mov [rsi], rax
  MachineState in = Distinct();
  in.gpr[kRsi] = kData + 16;
  in.memory.push_back(Page(kData, 0x11, Access::kReadOnly));
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_EQ(r.fault_address, kData + 16);
  EXPECT_EQ(r.trap_number, kVectorPF);
  EXPECT_EQ(r.error_code, kPfPresent | kPfWrite | kPfUser);
  EXPECT_EQ(r.final.memory[0].bytes, in.memory[0].bytes);
}

TEST(NativeRunner, LoadFromNoAccessRegionRaisesSigsegv) {
  const uint8_t code[] = {0x48, 0x8b, 0x07};  // mov rax, [rdi]
  MachineState in = Distinct();
  in.gpr[kRdi] = kData;
  in.memory.push_back(Page(kData, 0x22, Access::kNone));
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_EQ(r.fault_address, kData);
  // Linux keeps PROT_NONE pages non-present in the page table, so the
  // hardware reports P=0 even though the page is mapped.
  EXPECT_EQ(r.error_code, kPfUser);
  EXPECT_EQ(r.final.memory[0].bytes, in.memory[0].bytes);
}

TEST(NativeRunner, JumpToUnmappedCodeRaisesSigsegv) {
  const uint8_t code[] = {0xff, 0xe0};  // jmp rax
  MachineState in = Distinct();
  in.gpr[kRax] = kUnmapped;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_EQ(r.fault_address, kUnmapped);
  EXPECT_EQ(r.rip, kUnmapped);
  EXPECT_EQ(r.error_code, kPfUser | kPfFetch);
}

TEST(NativeRunner, AlignmentCheckRaisesSigbus) {
  const uint8_t code[] = {
      0x9c,                                      // pushfq
      0x81, 0x0c, 0x24, 0x00, 0x00, 0x04, 0x00,  // or dword ptr [rsp], 0x40000 (AC)
      0x9d,                                      // popfq
      0x48, 0x8b, 0x44, 0x24, 0x01,              // mov rax, [rsp + 1]
  };
  MachineState in = Distinct();
  in.gpr[kRsp] = kStack + 4096;
  in.memory.push_back(Page(kStack));
  RunResult r = RunOk(code, in);
  // Linux runs user code with CR0.AM set, so AC=1 makes a misaligned load #AC.
  EXPECT_EQ(r.signal, SIGBUS);
  EXPECT_EQ(r.fault_rip_offset, 9u);
  EXPECT_EQ(r.trap_number, 17u);
  EXPECT_TRUE(r.final.rflags & rflags::kAC);
}

TEST(NativeRunner, Ud2RaisesSigill) {
  const uint8_t code[] = {
      0x90,        // nop
      0x0f, 0x0b,  // ud2
  };
  RunResult r = RunOk(code, Distinct());
  EXPECT_EQ(r.signal, SIGILL);
  EXPECT_EQ(r.fault_rip_offset, 1u);
  EXPECT_EQ(r.trap_number, kVectorUD);
}

TEST(NativeRunner, Int3InSnippetIsNotTheEnd) {
  const uint8_t code[] = {
      0xcc,  // int3
      0x90,  // nop
  };
  RunResult r = RunOk(code, Distinct());
  EXPECT_EQ(r.signal, SIGTRAP);
  EXPECT_EQ(r.fault_rip_offset, 1u);  // a trap reports the next instruction
}

TEST(NativeRunner, SyscallIsStoppedBySandbox) {
  const uint8_t code[] = {0x0f, 0x05};  // syscall
  MachineState in = Distinct();
  in.gpr[kRax] = 62;  // kill(rdi, rsi): must never reach the host
  in.gpr[kRdi] = static_cast<uint64_t>(-1);
  in.gpr[kRsi] = SIGKILL;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGSYS);
  EXPECT_EQ(r.fault_rip_offset, 2u);
}

TEST(NativeRunner, EndlessLoopTimesOut) {
  const uint8_t code[] = {0xeb, 0xfe};  // jmp .
  const auto start = std::chrono::steady_clock::now();
  Result<RunResult> r =
      RunNative(code, Distinct(), kDefaultCodeAddress, std::chrono::milliseconds(200));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "snippet timed out");
  EXPECT_GE(took, std::chrono::milliseconds(200));
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST(NativeRunner, PadddAddsDwordLanes) {
  const uint8_t code[] = {0x66, 0x0f, 0xfe, 0xc1};  // paddd xmm0, xmm1
  MachineState in = Distinct();
  const uint32_t a[4] = {1, 0xffffffff, 0x7fffffff, 100};
  const uint32_t b[4] = {2, 1, 1, 0xffffff9c};
  const uint32_t sum[4] = {3, 0, 0x80000000, 0};  // each lane wraps on its own
  std::memcpy(in.xmm[0], a, sizeof(a));
  std::memcpy(in.xmm[1], b, sizeof(b));
  in.xmm[2][0] = 0x42;
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(std::memcmp(r.final.xmm[0], sum, sizeof(sum)), 0);
  EXPECT_EQ(std::memcmp(r.final.xmm[1], b, sizeof(b)), 0);
  EXPECT_EQ(r.final.xmm[2][0], 0x42);
}

TEST(NativeRunner, DivssByZeroSetsMxcsrZeroDivide) {
  const uint8_t code[] = {0xf3, 0x0f, 0x5e, 0xc1};  // divss xmm0, xmm1
  MachineState in = Distinct();
  const float one = 1.0f, zero = 0.0f;
  std::memcpy(in.xmm[0], &one, sizeof(one));
  std::memcpy(in.xmm[1], &zero, sizeof(zero));
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.final.mxcsr, 0x1f80u | 0x4u);  // ZE set, masked: result is +inf
  uint32_t bits;
  std::memcpy(&bits, r.final.xmm[0], sizeof(bits));
  EXPECT_EQ(bits, 0x7f800000u);
}

TEST(NativeRunner, UnmaskedSimdExceptionRaisesSigfpe) {
  const uint8_t code[] = {0xf3, 0x0f, 0x5e, 0xc1};  // divss xmm0, xmm1
  MachineState in = Distinct();
  const float one = 1.0f, zero = 0.0f;
  std::memcpy(in.xmm[0], &one, sizeof(one));
  std::memcpy(in.xmm[1], &zero, sizeof(zero));
  in.mxcsr = 0x1f80 & ~0x200u;  // ZM clear: zero-divide unmasked
  RunResult r = RunOk(code, in);
  EXPECT_EQ(r.signal, SIGFPE);
  EXPECT_EQ(r.trap_number, kVectorXM);
  EXPECT_EQ(r.fault_rip_offset, 0u);
}

TEST(NativeRunner, CodeMayCrossAPageBoundary) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  MachineState in = Distinct();
  const uint64_t address = kDefaultCodeAddress + 4096 - 1;
  RunResult r = RunOk(code, in, address);
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.rip, address + sizeof(code));
  EXPECT_EQ(r.final.gpr[kRax], in.gpr[kRax] + in.gpr[kRbx]);
}

TEST(NativeRunner, RefusesRegionOverAHostMapping) {
  auto host = std::make_unique<uint8_t[]>(3 * 4096);  // heap: mapped in the host
  MachineState in;
  in.memory.push_back(Page((reinterpret_cast<uint64_t>(host.get()) + 4095) & ~uint64_t{4095}));
  Result<RunResult> r = RunNative({}, in);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("collides with a host mapping"), std::string::npos)
      << r.error().message;
}

TEST(NativeRunner, RefusesCodeOverAHostMapping) {
  const uint64_t here = reinterpret_cast<uint64_t>(&RunNative);  // the runner's own text
  Result<RunResult> r = RunNative({}, MachineState{}, here);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("collide with a host mapping"), std::string::npos)
      << r.error().message;
}

TEST(NativeRunner, RefusesBadRegions) {
  MachineState misaligned;
  misaligned.memory.push_back(Page(kData + 8));
  EXPECT_FALSE(RunNative({}, misaligned).ok());

  MachineState odd_size;
  odd_size.memory.push_back(MemoryRegion{.address = kData, .bytes = std::vector<uint8_t>(100)});
  EXPECT_FALSE(RunNative({}, odd_size).ok());

  MachineState overlapping;
  overlapping.memory.push_back(Page(kData));
  overlapping.memory.push_back(Page(kData));
  EXPECT_FALSE(RunNative({}, overlapping).ok());

  MachineState over_code;
  over_code.memory.push_back(Page(kDefaultCodeAddress));
  EXPECT_FALSE(RunNative({}, over_code).ok());

  MachineState beyond_user_space;
  beyond_user_space.memory.push_back(Page(0xffff800000000000));
  EXPECT_FALSE(RunNative({}, beyond_user_space).ok());
}

TEST(NativeRunner, RefusesReservedMxcsrBits) {
  MachineState in;
  in.mxcsr = 0xffff0000;
  Result<RunResult> r = RunNative({}, in);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("mxcsr"), std::string::npos) << r.error().message;
}

TEST(NativeRunner, ConcurrentCallersDoNotInterfere) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        MachineState in = Distinct();
        in.gpr[kRax] = static_cast<uint64_t>(t * 1000 + i);
        Result<RunResult> r = RunNative(code, in);
        if (!r.ok() || r->signal != 0 || r->final.gpr[kRax] != in.gpr[kRax] + in.gpr[kRbx]) {
          ++wrong;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// The runner keeps its servers across calls; a process forked from the
// caller must get servers of its own, not talk on the parent's sockets.
TEST(NativeRunner, ForkedCallerRunsOnItsOwnServer) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  MachineState in = Distinct();
  RunOk(code, in);  // the parent now has a server
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool good = true;
    for (int i = 0; i < 5; ++i) {
      in.gpr[kRax] = static_cast<uint64_t>(i);
      Result<RunResult> r = RunNative(code, in);
      good &= r.ok() && r->final.gpr[kRax] == static_cast<uint64_t>(i) + in.gpr[kRbx];
    }
    _exit(good ? 0 : 1);
  }
  for (int i = 0; i < 5; ++i) {
    in.gpr[kRax] = static_cast<uint64_t>(100 + i);
    EXPECT_EQ(RunOk(code, in).final.gpr[kRax], in.gpr[kRax] + in.gpr[kRbx]);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

TEST(NativeRunner, RepeatedRunsLeakNothing) {
  const uint8_t code[] = {0x48, 0x01, 0xd8};  // add rax, rbx
  MachineState in = Distinct();
  in.memory.push_back(Page(kData));
  RunOk(code, in);  // warm up
  const int fds = OpenFds();
  for (int i = 0; i < 50; ++i) {
    in.gpr[kRax] = static_cast<uint64_t>(i);
    RunResult r = RunOk(code, in);
    ASSERT_EQ(r.final.gpr[kRax], static_cast<uint64_t>(i) + in.gpr[kRbx]);
  }
  EXPECT_EQ(OpenFds(), fds);
}

}  // namespace
}  // namespace btvm::native
