// Native runner: see native_runner.h for the contract.
//
// Shape of one run:
//   parent: validate the input, build the code image (snippet + int3 filler),
//           map a MAP_SHARED report area, fork.
//   child:  map the code and the regions (MAP_FIXED_NOREPLACE), install
//           signal handlers on an alternate stack, install a seccomp filter,
//           then jump into the snippet through btvm_native_enter.
//   child:  the snippet ends in a signal (the int3 terminator or a fault);
//           the handler copies registers and region contents into the report
//           area and exits.
//   parent: wait (with a timeout), then turn the report into a RunResult.
//
// Between fork() and exit the child only calls async-signal-safe functions
// and never allocates: the caller may be multi-threaded.

#include "tests/native/native_runner.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/cpu_state.h"
#include "base/types.h"
#include "tests/native/native_entry.h"

// Child-only (see native_entry.h): written by the forked child before it
// enters the snippet; the parent never touches it.
extern "C" {
__attribute__((visibility("hidden"))) btvm::native::detail::EntryBlock btvm_native_block;
}

namespace btvm::native {
namespace {

using detail::EntryBlock;

static_assert(offsetof(EntryBlock, fxsave) == BTVM_NATIVE_FXSAVE);
static_assert(offsetof(EntryBlock, gpr) == BTVM_NATIVE_GPR);
static_assert(offsetof(EntryBlock, rflags) == BTVM_NATIVE_RFLAGS);
static_assert(offsetof(EntryBlock, target) == BTVM_NATIVE_TARGET);
static_assert(offsetof(EntryBlock, has_avx) == BTVM_NATIVE_HAS_AVX);
static_assert(sizeof(EntryBlock) == BTVM_NATIVE_BLOCK_SIZE);
static_assert(alignof(EntryBlock) % 16 == 0, "FXRSTOR needs a 16-byte aligned image");

// FXSAVE image layout (SDM Vol. 1 §10.5.1, Table 10-2).
constexpr size_t kFxFcw = 0, kFxFtw = 4, kFxMxcsr = 24, kFxMxcsrMask = 28, kFxXmm = 160;
constexpr uint16_t kFcwReset = 0x37f;           // x87 control word after FNINIT
constexpr uint32_t kDefaultMxcsrMask = 0xffbf;  // SDM Vol. 1 §11.6.6 when FXSAVE reports 0

// The last page below the top of the 47-bit user address space is never
// mappable on Linux.
constexpr uint64_t kUserTop = 0x7ffffffff000;

constexpr uint8_t kInt3 = 0xcc;
constexpr size_t kAltStackSize = 256 * 1024;  // AVX-512 signal frames are ~3 KiB; be generous

constexpr uint64_t kInputFlags = rflags::kArith | rflags::kDF;

// What the child writes into the shared area. The parent reads it only as
// values: a snippet could scribble over it, so nothing in it is used as a
// size or a pointer.
enum class ReportState : uint32_t { kNone = 0, kDone, kSetupFailed };
enum class SetupStep : uint32_t {
  kNone = 0,
  kParentDeath,
  kMapCode,
  kProtectCode,
  kMapRegion,
  kProtectRegion,
  kAltStack,
  kSigaction,
  kSeccomp,
};

struct Report {
  ReportState state;
  int32_t signal;
  SetupStep setup_step;
  int32_t setup_index;
  int32_t setup_errno;
  uint64_t fault_address;
  uint64_t rip, trapno, err;
  uint64_t gpr[16];
  uint64_t rflags;
  alignas(16) uint8_t xmm[16][16];
  uint32_t mxcsr;
};
constexpr size_t kRegionDataOffset = (sizeof(Report) + 63) & ~size_t{63};

// Everything the child needs, computed by the parent before fork() so the
// child does not allocate. The child sees its own copy-on-write copy.
struct ChildPlan {
  pid_t parent;
  const MachineState* initial;
  const uint8_t* code_image;
  uint64_t code_page_base;
  uint64_t code_image_size;
  uint64_t code_address;
  uint64_t code_size;
  Report* report;
  uint8_t* region_out;  // region i's contents go at region_out + region_offset[i]
  const uint64_t* region_offset;
  void* alt_stack;
  bool has_avx;
};

// Child-only: set by the forked child for its signal handler.
const ChildPlan* g_child_plan = nullptr;

constexpr int kCaughtSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};

constexpr int kGregForGpr[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
                                 REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
                                 REG_R12, REG_R13, REG_R14, REG_R15};

int ProtFor(Access access) {
  switch (access) {
    case Access::kReadWrite:
      return PROT_READ | PROT_WRITE;
    case Access::kReadOnly:
      return PROT_READ;
    case Access::kNone:
      return PROT_NONE;
  }
  return PROT_NONE;
}

// Runs on the alternate stack when the snippet stops, so it never touches
// the guest's RSP. It calls only memcpy and _exit and has no stack canary
// (no_stack_protector): nothing in it reads FS, which a snippet could change
// with wrfsbase on hosts that enable FSGSBASE.
__attribute__((no_stack_protector)) void OnSnippetSignal(int sig, siginfo_t* info, void* ctx) {
  // The kernel clears DF and TF for a handler but keeps the snippet's AC,
  // under which memcpy's misaligned accesses would raise #AC. Clear it
  // before any memory access the compiler emits (hence the clobber); the
  // prologue's pushes are aligned.
  asm volatile("pushfq\n\tandq %0, (%%rsp)\n\tpopfq" : : "i"(~rflags::kAC) : "memory", "cc");
  const ChildPlan& plan = *g_child_plan;
  Report& r = *plan.report;
  const auto* uc = static_cast<const ucontext_t*>(ctx);
  const greg_t* g = uc->uc_mcontext.gregs;
  for (int i = 0; i < 16; ++i) r.gpr[i] = static_cast<uint64_t>(g[kGregForGpr[i]]);
  r.rflags = static_cast<uint64_t>(g[REG_EFL]);
  r.rip = static_cast<uint64_t>(g[REG_RIP]);
  r.trapno = static_cast<uint64_t>(g[REG_TRAPNO]);
  r.err = static_cast<uint64_t>(g[REG_ERR]);
  if (uc->uc_mcontext.fpregs != nullptr) {
    std::memcpy(r.xmm, uc->uc_mcontext.fpregs->_xmm, sizeof(r.xmm));
    r.mxcsr = uc->uc_mcontext.fpregs->mxcsr;
  }
  // The terminator int3 right after the snippet: a trap (vector 3) whose
  // return address is one past it.
  const bool at_end =
      sig == SIGTRAP && r.trapno == 3 && r.rip == plan.code_address + plan.code_size + 1;
  r.signal = at_end ? 0 : sig;
  if (sig == SIGSEGV || sig == SIGBUS) r.fault_address = reinterpret_cast<uint64_t>(info->si_addr);

  const MachineState& in = *plan.initial;
  for (size_t i = 0; i < in.memory.size(); ++i) {
    const MemoryRegion& region = in.memory[i];
    // A region without access cannot have changed; reading it would fault.
    const void* from = region.access == Access::kNone
                           ? static_cast<const void*>(region.bytes.data())
                           : reinterpret_cast<const void*>(region.address);
    std::memcpy(plan.region_out + plan.region_offset[i], from, region.bytes.size());
  }
  r.state = ReportState::kDone;
  _exit(0);
}

[[noreturn]] void ChildFail(const ChildPlan& plan, SetupStep step, int index, int err) {
  plan.report->setup_step = step;
  plan.report->setup_index = index;
  plan.report->setup_errno = err;
  plan.report->state = ReportState::kSetupFailed;
  _exit(1);
}

// Maps [address, address + size) fresh, or reports why not. MAP_FIXED_NOREPLACE
// never replaces an existing mapping of the host process: a collision fails
// with EEXIST. Kernels before 4.17 treat the flag as a hint, so a mapping
// placed elsewhere is a collision too.
void* MapFixed(uint64_t address, uint64_t size) {
  void* want = reinterpret_cast<void*>(address);
  void* got = mmap(want, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (got == MAP_FAILED) return nullptr;
  if (got != want) {
    munmap(got, size);
    errno = EEXIST;
    return nullptr;
  }
  return got;
}

// Every system call but exit_group (which the signal handler uses to leave)
// raises SIGSYS, and so does any call through a non-x86-64 ABI (int 0x80).
int InstallSeccomp() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 2),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return static_cast<int>(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
}

[[noreturn]] void ChildMain(const ChildPlan& plan) {
  // Die with the parent, so an endless snippet never outlives the test.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != plan.parent) {
    ChildFail(plan, SetupStep::kParentDeath, -1, errno);
  }
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);  // a crashing child is reported, not dumped

  // Code pages: written through a RW mapping, then made R+X (never W+X).
  void* code = MapFixed(plan.code_page_base, plan.code_image_size);
  if (code == nullptr) ChildFail(plan, SetupStep::kMapCode, -1, errno);
  std::memcpy(code, plan.code_image, plan.code_image_size);
  if (mprotect(code, plan.code_image_size, PROT_READ | PROT_EXEC) != 0) {
    ChildFail(plan, SetupStep::kProtectCode, -1, errno);
  }

  const MachineState& in = *plan.initial;
  for (size_t i = 0; i < in.memory.size(); ++i) {
    const MemoryRegion& region = in.memory[i];
    void* mem = MapFixed(region.address, region.bytes.size());
    if (mem == nullptr) ChildFail(plan, SetupStep::kMapRegion, static_cast<int>(i), errno);
    std::memcpy(mem, region.bytes.data(), region.bytes.size());
    if (region.access != Access::kReadWrite &&
        mprotect(mem, region.bytes.size(), ProtFor(region.access)) != 0) {
      ChildFail(plan, SetupStep::kProtectRegion, static_cast<int>(i), errno);
    }
  }

  // Signals run on the alternate stack: RSP belongs to the snippet.
  stack_t ss{};
  ss.ss_sp = plan.alt_stack;
  ss.ss_size = kAltStackSize;
  if (sigaltstack(&ss, nullptr) != 0) ChildFail(plan, SetupStep::kAltStack, -1, errno);
  g_child_plan = &plan;
  struct sigaction sa {};
  sa.sa_sigaction = OnSnippetSignal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigfillset(&sa.sa_mask);  // nothing interrupts the handler
  for (int sig : kCaughtSignals) {
    if (sigaction(sig, &sa, nullptr) != 0) ChildFail(plan, SetupStep::kSigaction, sig, errno);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the caller's thread may have blocked some

  EntryBlock& block = btvm_native_block;
  std::memset(&block, 0, sizeof(block));
  const uint16_t fcw = kFcwReset;
  std::memcpy(block.fxsave + kFxFcw, &fcw, sizeof(fcw));
  block.fxsave[kFxFtw] = 0;  // abridged tag word: all x87 registers empty
  std::memcpy(block.fxsave + kFxMxcsr, &in.mxcsr, sizeof(in.mxcsr));
  std::memcpy(block.fxsave + kFxXmm, in.xmm, sizeof(in.xmm));
  std::memcpy(block.gpr, in.gpr, sizeof(block.gpr));
  block.rflags = (in.rflags & kInputFlags) | rflags::kFixed1;
  block.target = plan.code_address;
  block.has_avx = plan.has_avx ? 1 : 0;

  // Last: from here on only exit_group is allowed.
  if (InstallSeccomp() != 0) ChildFail(plan, SetupStep::kSeccomp, -1, errno);
  // Raw jump into the snippet. Invariants: the code is mapped R+X at
  // code_address and ends in int3; every signal it can raise is caught on the
  // alternate stack by OnSnippetSignal, which exits; the MXCSR image was
  // validated by the parent.
  btvm_native_enter();
}

uint32_t HostMxcsrMask() {
  alignas(16) uint8_t image[512] = {};
  asm volatile("fxsave64 %0" : "=m"(image));
  uint32_t mask;
  std::memcpy(&mask, image + kFxMxcsrMask, sizeof(mask));
  return mask != 0 ? mask : kDefaultMxcsrMask;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
  return buf;
}

bool Overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

std::string SetupErrorText(const Report& r, const MachineState& in, uint64_t code_page_base,
                           uint64_t code_image_size) {
  const int err = r.setup_errno;
  const size_t index = static_cast<size_t>(r.setup_index);
  const bool region_known = r.setup_index >= 0 && index < in.memory.size();
  const std::string region = region_known ? "memory region " + std::to_string(index) + " at " +
                                                Hex(in.memory[index].address) + " (size " +
                                                Hex(in.memory[index].bytes.size()) + ")"
                                          : "memory region " + std::to_string(r.setup_index);
  const std::string code =
      "code pages at " + Hex(code_page_base) + " (size " + Hex(code_image_size) + ")";
  switch (r.setup_step) {
    case SetupStep::kMapCode:
      if (err == EEXIST) return code + " collide with a host mapping";
      return "cannot map " + code + ": " + std::strerror(err);
    case SetupStep::kMapRegion:
      if (err == EEXIST) return region + " collides with a host mapping";
      return "cannot map " + region + ": " + std::strerror(err);
    case SetupStep::kProtectCode:
      return "cannot protect " + code + ": " + std::strerror(err);
    case SetupStep::kProtectRegion:
      return "cannot protect " + region + ": " + std::strerror(err);
    case SetupStep::kParentDeath:
      return std::string("native child cannot follow its parent: ") + std::strerror(err);
    case SetupStep::kAltStack:
      return std::string("native child cannot set its signal stack: ") + std::strerror(err);
    case SetupStep::kSigaction:
      return std::string("native child cannot catch signal ") + std::to_string(r.setup_index) +
             ": " + std::strerror(err);
    case SetupStep::kSeccomp:
      return std::string("native child cannot install its seccomp sandbox: ") + std::strerror(err);
    case SetupStep::kNone:
      break;
  }
  return "native child failed to set up";
}

// Owns a mapping of the parent.
class Mapping {
 public:
  explicit Mapping(size_t size)
      : size_(size),
        p_(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)) {}
  ~Mapping() {
    if (ok()) munmap(p_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool ok() const { return p_ != MAP_FAILED; }
  uint8_t* data() const { return static_cast<uint8_t*>(p_); }

 private:
  size_t size_;
  void* p_;
};

enum class WaitOutcome { kExited, kTimedOut, kFailed };

// Waits until `pid` exits or `timeout` passes; reaps it unless timed out.
WaitOutcome WaitForChild(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  // A pidfd becomes readable when the child exits. The child is not reaped
  // yet, so its pid cannot have been reused.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  for (;;) {
    const pid_t done = waitpid(pid, status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      if (pidfd >= 0) close(pidfd);
      return WaitOutcome::kFailed;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      if (pidfd >= 0) close(pidfd);
      return WaitOutcome::kTimedOut;
    }
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
    } else {
      // No pidfd (kernel before 5.3, or filtered): poll the child every ms.
      const timespec ms{0, 1000000};
      nanosleep(&ms, nullptr);
    }
  }
  if (pidfd >= 0) close(pidfd);
  return WaitOutcome::kExited;
}

}  // namespace

Result<RunResult> RunNative(std::span<const uint8_t> code, const MachineState& initial,
                            uint64_t code_address, std::chrono::milliseconds timeout) {
  // --- Validate the input: everything the child could trip on.
  if (timeout.count() <= 0) return MakeError("timeout must be positive");
  const uint64_t code_page_base = code_address & kPageMask;
  if (code_address >= kUserTop || code.size() >= kUserTop - code_address) {
    return MakeError("code at " + Hex(code_address) + " does not fit in user space");
  }
  const uint64_t code_image_size =
      (code_address - code_page_base + code.size() + 1 + kPageSize - 1) & kPageMask;
  if (code_page_base + code_image_size > kUserTop) {
    return MakeError("code at " + Hex(code_address) + " does not fit in user space");
  }
  const uint32_t mxcsr_mask = HostMxcsrMask();
  if ((initial.mxcsr & ~mxcsr_mask) != 0) {
    return MakeError("mxcsr " + Hex(initial.mxcsr) + " sets bits reserved on this host (mask " +
                     Hex(mxcsr_mask) + ")");
  }
  const auto& regions = initial.memory;
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& r = regions[i];
    const std::string name = "memory region " + std::to_string(i) + " at " + Hex(r.address);
    if ((r.address & ~kPageMask) != 0) return MakeError(name + " is not page-aligned");
    if (r.bytes.empty() || (r.bytes.size() & ~kPageMask) != 0) {
      return MakeError(name + " has size " + Hex(r.bytes.size()) +
                       ", not a non-zero multiple of 4096");
    }
    if (r.address >= kUserTop || r.bytes.size() > kUserTop - r.address) {
      return MakeError(name + " does not fit in user space");
    }
    if (Overlaps(r.address, r.bytes.size(), code_page_base, code_image_size)) {
      return MakeError(name + " overlaps the code pages at " + Hex(code_page_base));
    }
    for (size_t j = 0; j < i; ++j) {
      if (Overlaps(r.address, r.bytes.size(), regions[j].address, regions[j].bytes.size())) {
        return MakeError(name + " overlaps memory region " + std::to_string(j));
      }
    }
  }

  // --- Prepare everything the child needs; it must not allocate.
  std::vector<uint8_t> code_image(code_image_size, kInt3);
  std::copy(code.begin(), code.end(), code_image.begin() + (code_address - code_page_base));
  std::vector<uint64_t> region_offset(regions.size());
  size_t shared_size = kRegionDataOffset;
  for (size_t i = 0; i < regions.size(); ++i) {
    region_offset[i] = shared_size - kRegionDataOffset;
    shared_size += regions[i].bytes.size();
  }
  Mapping shared(shared_size);
  if (!shared.ok())
    return MakeError("cannot map the report area: " + std::string(std::strerror(errno)));
  // Anonymous memory is zero-filled: state starts at kNone. The parent's
  // heap pages below are copied on write into the child.
  std::vector<uint8_t> alt_stack(kAltStackSize);
  const ChildPlan plan{
      .parent = getpid(),
      .initial = &initial,
      .code_image = code_image.data(),
      .code_page_base = code_page_base,
      .code_image_size = code_image_size,
      .code_address = code_address,
      .code_size = code.size(),
      .report = reinterpret_cast<Report*>(shared.data()),
      .region_out = shared.data() + kRegionDataOffset,
      .region_offset = region_offset.data(),
      .alt_stack = alt_stack.data(),
      .has_avx = __builtin_cpu_supports("avx") != 0,
  };

  const pid_t pid = fork();
  if (pid < 0)
    return MakeError("cannot fork the native child: " + std::string(std::strerror(errno)));
  if (pid == 0) ChildMain(plan);  // never returns

  int status = 0;
  switch (WaitForChild(pid, timeout, &status)) {
    case WaitOutcome::kExited:
      break;
    case WaitOutcome::kTimedOut:
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return MakeError("snippet timed out");
    case WaitOutcome::kFailed:
      return MakeError("cannot wait for the native child: " + std::string(std::strerror(errno)));
  }

  // The child has exited: the report is stable. Copy it out as values.
  Report report;
  std::memcpy(&report, shared.data(), sizeof(report));
  if (report.state == ReportState::kSetupFailed) {
    return MakeError(SetupErrorText(report, initial, code_page_base, code_image_size));
  }
  if (WIFSIGNALED(status)) {
    return MakeError("native child crashed with signal " + std::to_string(WTERMSIG(status)) + " (" +
                     strsignal(WTERMSIG(status)) + ")");
  }
  if (report.state != ReportState::kDone || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return MakeError("native child exited with status " +
                     std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
                     " without a report");
  }

  RunResult result;
  MachineState& out = result.final;
  std::memcpy(out.gpr, report.gpr, sizeof(out.gpr));
  out.rflags = report.rflags;
  std::memcpy(out.xmm, report.xmm, sizeof(out.xmm));
  out.mxcsr = report.mxcsr;
  out.memory.reserve(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    const uint8_t* data = shared.data() + kRegionDataOffset + region_offset[i];
    out.memory.push_back(MemoryRegion{
        .address = regions[i].address,
        .bytes = std::vector<uint8_t>(data, data + regions[i].bytes.size()),
        .access = regions[i].access,
    });
  }
  result.signal = report.signal;
  result.fault_address = report.fault_address;
  if (report.signal == 0) {
    result.rip = code_address + code.size();  // not the terminator's return address
  } else {
    result.rip = report.rip;
    result.trap_number = report.trapno;
    result.error_code = report.err;
  }
  result.fault_rip_offset = result.rip - code_address;
  return result;
}

}  // namespace btvm::native
