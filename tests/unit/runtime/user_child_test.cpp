// The direct engine's child process with each transport, ptrace and
// seccomp (runtime/direct/user_child.h): what it keeps mapped, the
// mappings the stub makes from guest RAM, and guest user code run on the
// host CPU until a syscall or a fault, with the state it stopped in. The
// expectations are the host CPU's and kernel's own behaviour (SDM Vol. 2
// SYSCALL: RCX and R11; Vol. 3A §4.7 page-fault error codes; signals as
// Linux reports the exceptions).

#include "runtime/direct/user_child.h"

#include <asm/prctl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mmu/guest_memory.h"

namespace btvm::direct {
namespace {

constexpr uint64_t kCode = 0x400000, kData = 0x600000, kUnmapped = 0x700000;
constexpr uint64_t kCodeRam = 0x10000, kDataRam = 0x20000;  // offsets in guest RAM

// GNU as, Intel syntax, at kCode.
const std::vector<uint8_t> kProgram = {
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x60, 0x00,        // 0x00 mov rax, [0x600000]
    0x48, 0x01, 0xf8,                                      // 0x08 add rax, rdi
    0x48, 0x89, 0x04, 0x25, 0x08, 0x00, 0x60, 0x00,        // 0x0b mov [0x600008], rax
    0x0f, 0x58, 0xc1,                                      // 0x13 addps xmm0, xmm1
    0x64, 0x48, 0x8b, 0x1c, 0x25, 0x08, 0x00, 0x00, 0x00,  // 0x16 mov rbx, fs:[8]
    0xb8, 0x27, 0x00, 0x00, 0x00,                          // 0x1f mov eax, 39
    0x0f, 0x05,                                            // 0x24 syscall
    0x0f, 0x0b,                                            // 0x26 ud2
    0x89, 0x04, 0x25, 0x00, 0x00, 0x70, 0x00,              // 0x28 mov [0x700000], eax
    0x89, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00,              // 0x2f mov [0x400000], eax
    0xcc,                                                  // 0x36 int3
    0x31, 0xc9,                                            // 0x37 xor ecx, ecx
    0xf7, 0xf1,                                            // 0x39 div ecx
    0x48, 0xff, 0xcf,                                      // 0x3b dec rdi
    0x75, 0xfb,                                            // 0x3e jnz 0x3b
    0x0f, 0x05,                                            // 0x40 syscall
    0xeb, 0xfe,                                            // 0x42 jmp 0x42
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x70, 0x00,              // 0x44 mov eax, [0x700000]
    0xcd, 0x80,                                            // 0x4b int 0x80
    0xf3, 0x48, 0x0f, 0xae, 0xd7,                          // 0x4d wrfsbase rdi
    0xf3, 0x48, 0x0f, 0xae, 0xde,                          // 0x52 wrgsbase rsi
    0x8e, 0xd9,                                            // 0x57 mov ds, ecx
    0x0f, 0x05,                                            // 0x59 syscall
    0xff, 0xe3,                                            // 0x5b jmp rbx
};

class UserChildTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    auto mem = GuestMemory::Create(MiB(2));
    ASSERT_TRUE(mem.ok());
    mem_ = std::make_unique<GuestMemory>(std::move(*mem));
    ASSERT_TRUE(mem_->Write(GuestPhys{kCodeRam}, kProgram).ok());
    uint64_t words[2] = {0x1111, 0x2222};
    ASSERT_TRUE(mem_->WriteValue(GuestPhys{kDataRam}, words));
    auto child = UserChild::Spawn(mem_->fd(), GetParam());
    ASSERT_TRUE(child.ok()) << child.error().message;
    child_ = std::move(*child);
    cpu_.seg[kCs].attrib = 0x20fb;  // a 64-bit user code segment
    cpu_.rflags = 0x202;
    // An FXSAVE image with MXCSR's default and the x87 control word's.
    uint32_t mxcsr = 0x1f80;
    std::memcpy(cpu_.xsave.bytes + 24, &mxcsr, 4);
    uint16_t fcw = 0x37f;
    std::memcpy(cpu_.xsave.bytes, &fcw, 2);
  }

  void MapProgram() {
    ASSERT_TRUE(child_->Map(kCode, 4096, PROT_READ | PROT_EXEC, kCodeRam).ok());
    ASSERT_TRUE(child_->Map(kData, 4096, PROT_READ | PROT_WRITE, kDataRam).ok());
  }

  // The child's mappings, from /proc/PID/maps: "start-end perms name".
  std::vector<std::string> Maps() {
    std::ifstream f("/proc/" + std::to_string(child_->pid()) + "/maps");
    std::vector<std::string> out;
    std::string line;
    while (std::getline(f, line)) {
      std::istringstream in(line);
      std::string range, perms, offset, dev, inode, name;
      in >> range >> perms >> offset >> dev >> inode >> name;
      out.push_back(range + " " + perms + (name.empty() ? "" : " " + name));
    }
    return out;
  }

  Trap RunAt(uint64_t offset) {
    cpu_.rip = kCode + offset;
    auto trap = child_->Run(cpu_);
    EXPECT_TRUE(trap.ok()) << (trap.ok() ? "" : trap.error().message);
    return trap.ok() ? *trap : Trap{};
  }

  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<UserChild> child_;
  CpuState cpu_;
};

TEST_P(UserChildTest, KeepsOnlyTheStubAndVsyscall) {
  std::vector<std::string> maps = Maps();
  ASSERT_EQ(maps.size(), 3u) << ::testing::PrintToString(maps);
  EXPECT_EQ(maps[0], "7ffffffe0000-7ffffffe1000 r-xp");
  EXPECT_EQ(maps[1], "7ffffffe1000-7fffffff0000 rw-s /memfd:btvm-stub");
  EXPECT_NE(maps[2].find("[vsyscall]"), std::string::npos);
}

TEST_P(UserChildTest, MapsGuestRamAtGuestVirtualAddresses) {
  MapProgram();
  ASSERT_TRUE(child_->Flush().ok());
  std::vector<std::string> maps = Maps();
  ASSERT_EQ(maps.size(), 5u) << ::testing::PrintToString(maps);
  EXPECT_EQ(maps[0], "00400000-00401000 r-xs /memfd:btvm-guest-ram");
  EXPECT_EQ(maps[1], "00600000-00601000 rw-s /memfd:btvm-guest-ram");
  ASSERT_TRUE(child_->Protect(kData, 4096, PROT_READ).ok());
  ASSERT_TRUE(child_->Unmap(kCode, 4096).ok());
  ASSERT_TRUE(child_->Flush().ok());
  maps = Maps();
  ASSERT_EQ(maps.size(), 4u) << ::testing::PrintToString(maps);
  EXPECT_EQ(maps[0], "00600000-00601000 r--s /memfd:btvm-guest-ram");
}

TEST_P(UserChildTest, ManyMappingsTakeSeveralBatches) {
  // More than one control page of operations: 300 pages, every other one
  // (so they do not merge), from consecutive RAM pages.
  for (uint64_t i = 0; i < 300; ++i) {
    ASSERT_TRUE(child_->Map(0x10000000 + 2 * i * 4096, 4096, PROT_READ, i * 4096).ok());
  }
  ASSERT_TRUE(child_->Flush().ok());
  EXPECT_EQ(Maps().size(), 303u);
}

TEST_P(UserChildTest, RunsUntilASyscallWithTheGuestState) {
  MapProgram();
  cpu_.gpr[7] = 0x100;  // rdi
  cpu_.seg[kFs].base = kData;
  float a[4] = {1, 2, 3, 4}, b[4] = {10, 20, 30, 40};
  std::memcpy(cpu_.xsave.bytes + 160, a, 16);  // xmm0
  std::memcpy(cpu_.xsave.bytes + 176, b, 16);  // xmm1
  Trap t = RunAt(0);
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[0], 39u);               // the guest's RAX, not the host's -ENOSYS
  EXPECT_EQ(cpu_.rip, kCode + 0x26);         // past the syscall
  EXPECT_EQ(cpu_.gpr[1], kCode + 0x26);      // RCX: the return RIP
  EXPECT_EQ(cpu_.gpr[11], cpu_.rflags);      // R11: RFLAGS
  EXPECT_EQ(cpu_.rflags & 0x8d5, 0x4u);      // PF alone, from the add of 0x1111 and 0x100
  EXPECT_EQ(cpu_.gpr[3], 0x1211u);           // rbx from fs:[8], which the program stored
  uint64_t stored = 0;
  ASSERT_TRUE(mem_->ReadValue(GuestPhys{kDataRam + 8}, &stored));
  EXPECT_EQ(stored, 0x1111u + 0x100u);       // the store went to guest RAM
  float sum[4];
  std::memcpy(sum, cpu_.xsave.bytes + 160, 16);
  EXPECT_EQ(sum[0], 11);
  EXPECT_EQ(sum[3], 44);
}

TEST_P(UserChildTest, FaultsStopWithTheirSignal) {
  MapProgram();
  Trap t = RunAt(0x26);
  EXPECT_EQ(t.kind, Trap::Kind::kSignal);
  EXPECT_EQ(t.signal, SIGILL);
  EXPECT_EQ(cpu_.rip, kCode + 0x26);  // at the ud2

  t = RunAt(0x28);
  EXPECT_EQ(t.signal, SIGSEGV);
  EXPECT_EQ(t.code, SEGV_MAPERR);
  EXPECT_EQ(t.address, kUnmapped);
  EXPECT_EQ(cpu_.rip, kCode + 0x28);

  t = RunAt(0x2f);
  EXPECT_EQ(t.signal, SIGSEGV);
  EXPECT_EQ(t.code, SEGV_ACCERR);  // the code page is read-only
  EXPECT_EQ(t.address, kCode);

  t = RunAt(0x36);
  EXPECT_EQ(t.signal, SIGTRAP);
  EXPECT_EQ(cpu_.rip, kCode + 0x37);  // int3 traps after itself

  t = RunAt(0x37);
  EXPECT_EQ(t.signal, SIGFPE);
  EXPECT_EQ(t.code, FPE_INTDIV);
  EXPECT_EQ(cpu_.rip, kCode + 0x39);

  // Fetching from an unmapped page.
  t = RunAt(kUnmapped - kCode);
  EXPECT_EQ(t.signal, SIGSEGV);
  EXPECT_EQ(t.address, kUnmapped);

  // The child survives them all and runs on.
  cpu_.gpr[7] = 1000;
  t = RunAt(0x3b);
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[7], 0u);
}

TEST_P(UserChildTest, RejectsMappingsOverTheStubOrOutsideTheUserRange) {
  EXPECT_FALSE(child_->Map(UserChild::kDefaultStubBase, 4096, PROT_READ, 0).ok());
  EXPECT_FALSE(child_->Map(0x7ffffffff000, 4096, PROT_READ, 0).ok());
  EXPECT_FALSE(child_->Map(0x1001, 4096, PROT_READ, 0).ok());
  // A RAM offset beyond the memfd maps, but is not backed (SIGBUS on use).
  ASSERT_TRUE(child_->Map(kData, 4096, PROT_READ, MiB(64)).ok());
  ASSERT_TRUE(child_->Flush().ok());
}

TEST_P(UserChildTest, AFailedMappingIsAnError) {
  // mmap refuses an offset that is not a multiple of the page size.
  ASSERT_TRUE(child_->Map(kData, 4096, PROT_READ, kDataRam + 1).ok());
  Status s = child_->Flush();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("0x600000"), std::string::npos) << s.error().message;
  // The child is still usable.
  MapProgram();
  EXPECT_EQ(RunAt(0x26).signal, SIGILL);
}

TEST_P(UserChildTest, ASignalStopsGuestCodeThatNeverTraps) {
  MapProgram();
  std::thread kicker([pid = child_->pid()] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(pid, SIGALRM);
  });
  Trap t = RunAt(0x42);  // jmp to itself
  kicker.join();
  EXPECT_EQ(t.kind, Trap::Kind::kSignal);
  EXPECT_EQ(t.signal, SIGALRM);
  EXPECT_EQ(cpu_.rip, kCode + 0x42);
}

TEST_P(UserChildTest, AChildKilledFromOutsideIsAnErrorNotAHang) {
  MapProgram();
  std::thread killer([pid = child_->pid()] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(pid, SIGKILL);
  });
  cpu_.rip = kCode + 0x42;  // jmp to itself
  auto trap = child_->Run(cpu_);
  killer.join();
  ASSERT_FALSE(trap.ok());
  EXPECT_NE(trap.error().message.find("killed by signal 9"), std::string::npos)
      << trap.error().message;
}

TEST_P(UserChildTest, ASignalWhileMappingsAreAppliedComesBackBeforeTheGuestRuns) {
  MapProgram();
  kill(child_->pid(), SIGALRM);  // pending while the child is stopped
  cpu_.gpr[7] = 5;
  Trap t = RunAt(0x3b);
  EXPECT_EQ(t.kind, Trap::Kind::kSignal);
  EXPECT_EQ(t.signal, SIGALRM);
  EXPECT_EQ(cpu_.rip, kCode + 0x3b);  // nothing ran
  EXPECT_EQ(cpu_.gpr[7], 5u);
  t = RunAt(0x3b);  // and then it runs
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[7], 0u);
}

TEST_P(UserChildTest, SaysWhetherCpuidFaults) {
  // ARCH_SET_CPUID with 1 (cpuid allowed) changes nothing where the host
  // has CPUID faulting, and fails with ENODEV where it has not.
  const bool host_has_it = syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1) == 0;
  EXPECT_EQ(child_->cpuid_faults(), host_has_it);
  if (host_has_it) {
    static const uint8_t kCpuid[] = {0x0f, 0xa2};  // cpuid
    ASSERT_TRUE(mem_->Write(GuestPhys{kCodeRam + 0x100}, kCpuid).ok());
    MapProgram();
    Trap t = RunAt(0x100);
    EXPECT_EQ(t.signal, SIGSEGV);
    EXPECT_EQ(cpu_.rip, kCode + 0x100);
  }
}

TEST_P(UserChildTest, DestroyingItKillsTheChild) {
  pid_t pid = child_->pid();
  child_.reset();
  EXPECT_NE(kill(pid, 0), 0);
}

TEST_P(UserChildTest, KeepsAllOfRaxAtASyscallAndTakesInt80AsOne) {
  MapProgram();
  cpu_.gpr[0] = 0x123456789abcdef0;
  cpu_.gpr[7] = 1;
  Trap t = RunAt(0x40);
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[0], 0x123456789abcdef0u);
  // int 0x80: the host's entry zero-extends EAX before either transport
  // sees it, so RAX's upper half is lost (runtime/direct/README.md).
  cpu_.gpr[0] = 0xffffffff00000001;
  t = RunAt(0x4b);
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.rip, kCode + 0x4d);  // past int 0x80
  EXPECT_EQ(cpu_.gpr[0], 1u);
}

TEST_P(UserChildTest, TheGuestSetsItsFsAndGsBasesAndDataSelectors) {
  if (!(getauxval(AT_HWCAP2) & 2)) GTEST_SKIP() << "the host does not allow wrfsbase";
  MapProgram();
  cpu_.gpr[7] = 0x1000;       // rdi: the new FS base
  cpu_.gpr[6] = 0x2000;       // rsi: the new GS base
  cpu_.gpr[1] = UserChild::kUserDs;  // ecx: the new DS
  cpu_.gpr[0] = 39;
  Trap t = RunAt(0x4d);
  ASSERT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.seg[kFs].base, 0x1000u);
  EXPECT_EQ(cpu_.seg[kGs].base, 0x2000u);
  EXPECT_EQ(t.selectors[kDs], UserChild::kUserDs);
  EXPECT_EQ(t.selectors[kCs], UserChild::kUserCs64);
  EXPECT_EQ(t.selectors[kSs], UserChild::kUserDs);
  // And the bases given to it stay the guest's in the next run.
  cpu_.seg[kFs].base = kData;
  cpu_.gpr[0] = 39;
  t = RunAt(0x16);  // mov rbx, fs:[8]; mov eax, 39; syscall
  ASSERT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[3], 0x2222u);
}

TEST_P(UserChildTest, FaultsComeWithTheirErrorCodeOverSeccomp) {
  if (GetParam() != Transport::kSeccomp) GTEST_SKIP() << "ptrace does not see the error code";
  MapProgram();
  struct {
    uint64_t at;
    uint64_t error_code;
  } cases[] = {
      {0x44, 0x4},  // read of an unmapped page: user
      {0x28, 0x6},  // write to it: user, write
      {0x2f, 0x7},  // write to a read-only page: present, write, user
      {kUnmapped - kCode, 0x14},  // fetch: user, instruction fetch
  };
  for (const auto& c : cases) {
    Trap t = RunAt(c.at);
    ASSERT_EQ(t.signal, SIGSEGV);
    EXPECT_TRUE(t.has_error_code);
    EXPECT_EQ(t.trapno, 14);
    EXPECT_EQ(t.error_code, c.error_code) << "at " << c.at;
  }
}

TEST_P(UserChildTest, AParkedHandlerSleepsAtOnceAndRunsAgain) {
  if (GetParam() != Transport::kSeccomp) GTEST_SKIP() << "the seccomp transport's handler";
  MapProgram();
  // A spin that would outlast the test: only Park sends the handler to
  // sleep.
  child_->set_spin_pauses(uint64_t{1} << 60);
  cpu_.gpr[7] = 0x100;
  cpu_.seg[kFs].base = kData;
  ASSERT_EQ(RunAt(0).kind, Trap::Kind::kSyscall);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(child_->HandlerSleeps());
  child_->Park();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!child_->HandlerSleeps() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(child_->HandlerSleeps());
  // Woken, it runs the guest as before (and Run has cleared the park).
  cpu_.gpr[7] = 0x100;
  Trap t = RunAt(0);
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[3], 0x1211u);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(child_->HandlerSleeps());
}

TEST_P(UserChildTest, NoHostSyscallRunsForTheGuestNotEvenFromTheStubsPage) {
  if (GetParam() != Transport::kSeccomp) GTEST_SKIP() << "ptrace stops at every syscall";
  MapProgram();
  // getpid at the stub's own syscall instruction (rt_sigreturn's, the last
  // two bytes of its code): outside the few the stub may make, so it traps.
  extern const uint8_t btvm_stub_start[] asm("btvm_stub_start");
  extern const uint8_t btvm_stub_end[] asm("btvm_stub_end");
  cpu_.gpr[3] = child_->stub_base() + static_cast<uint64_t>(btvm_stub_end - btvm_stub_start) - 2;
  cpu_.gpr[0] = 39;
  Trap t = RunAt(0x5b);  // jmp rbx
  EXPECT_EQ(t.kind, Trap::Kind::kSyscall);
  EXPECT_EQ(cpu_.gpr[0], 39u);
  EXPECT_EQ(cpu_.rip, cpu_.gpr[3] + 2);
}

INSTANTIATE_TEST_SUITE_P(Transports, UserChildTest,
                         ::testing::Values(Transport::kPtrace, Transport::kSeccomp),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(TransportName(info.param));
                         });

}  // namespace
}  // namespace btvm::direct
