// btvm_native_server: the process in which the native runner runs snippets
// (native_runner.h has the contract, native_protocol.h the wire format).
//
// The runner spawns one server per concurrent caller and keeps it for the
// caller's lifetime. The server is a small static executable, so its address
// space is nearly empty (the binary near 0x400000, its heap, its stack and
// the vDSO near the top) and forking it is cheap, unlike forking the caller.
// Shape of one run:
//   server: read a request from the socket (kServerFd), fork.
//   child:  map the code and the regions (MAP_FIXED_NOREPLACE), install
//           signal handlers on an alternate stack, install a seccomp filter,
//           then jump into the snippet through btvm_native_enter.
//   child:  the snippet ends in a signal (the int3 terminator or a fault);
//           the handler copies registers and region contents into the area
//           shared with the server and exits.
//   server: wait (with the request's timeout), send the report back.
// The server exits when the runner closes its end of the socket (or dies).

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#include "base/cpu_state.h"
#include "tests/native/native_entry.h"
#include "tests/native/native_protocol.h"
#include "tests/native/native_runner.h"

// Child-only (see native_entry.h): written by the forked child before it
// enters the snippet; the server never touches it.
extern "C" {
__attribute__((visibility("hidden"))) btvm::native::detail::EntryBlock btvm_native_block;
}

namespace btvm::native {
namespace {

using detail::EntryBlock;
using protocol::RegionHeader;
using protocol::Report;
using protocol::ReportState;
using protocol::Request;
using protocol::Response;
using protocol::SetupStep;
using protocol::Status;

static_assert(offsetof(EntryBlock, fxsave) == BTVM_NATIVE_FXSAVE);
static_assert(offsetof(EntryBlock, gpr) == BTVM_NATIVE_GPR);
static_assert(offsetof(EntryBlock, rflags) == BTVM_NATIVE_RFLAGS);
static_assert(offsetof(EntryBlock, target) == BTVM_NATIVE_TARGET);
static_assert(offsetof(EntryBlock, has_avx) == BTVM_NATIVE_HAS_AVX);
static_assert(sizeof(EntryBlock) == BTVM_NATIVE_BLOCK_SIZE);
static_assert(alignof(EntryBlock) % 16 == 0, "FXRSTOR needs a 16-byte aligned image");

// FXSAVE image layout (SDM Vol. 1 §10.5.1, Table 10-2).
constexpr size_t kFxFcw = 0, kFxFtw = 4, kFxMxcsr = 24, kFxXmm = 160;
constexpr uint16_t kFcwReset = 0x37f;  // x87 control word after FNINIT

constexpr size_t kAltStackSize = 256 * 1024;  // AVX-512 signal frames are ~3 KiB; be generous
constexpr size_t kRegionDataOffset = (sizeof(Report) + 63) & ~size_t{63};

// One region of the current request, in the server's memory.
struct Region {
  uint64_t address;
  uint64_t size;
  Access access;
  const uint8_t* bytes;  // the initial contents
  uint64_t out_offset;   // where its final contents go, from region_out
};

// Everything the child needs, prepared by the server before fork(). The
// child sees its own copy-on-write copy.
struct ChildPlan {
  pid_t parent;
  const Request* request;
  const Region* regions;
  const uint8_t* code_image;
  Report* report;
  uint8_t* region_out;
  void* alt_stack;
  bool has_avx;
};

// Child-only: set by the forked child for its signal handler.
const ChildPlan* g_child_plan = nullptr;

alignas(64) uint8_t g_alt_stack[kAltStackSize];

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
  const Request& in = *plan.request;
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
      sig == SIGTRAP && r.trapno == 3 && r.rip == in.code_address + in.code_size + 1;
  r.signal = at_end ? 0 : sig;
  if (sig == SIGSEGV || sig == SIGBUS) r.fault_address = reinterpret_cast<uint64_t>(info->si_addr);

  for (uint32_t i = 0; i < in.region_count; ++i) {
    const Region& region = plan.regions[i];
    // A region without access cannot have changed; reading it would fault.
    const void* from = region.access == Access::kNone
                           ? static_cast<const void*>(region.bytes)
                           : reinterpret_cast<const void*>(region.address);
    std::memcpy(plan.region_out + region.out_offset, from, region.size);
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
// never replaces an existing mapping of the server: a collision fails with
// EEXIST. Kernels before 4.17 treat the flag as a hint, so a mapping placed
// elsewhere is a collision too.
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
  // Die with the server, so an endless snippet never outlives it.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != plan.parent) {
    ChildFail(plan, SetupStep::kParentDeath, -1, errno);
  }
  close(protocol::kServerFd);  // the runner's socket is the server's business

  // Code pages: written through a RW mapping, then made R+X (never W+X).
  const Request& in = *plan.request;
  void* code = MapFixed(in.code_page_base, in.code_image_size);
  if (code == nullptr) ChildFail(plan, SetupStep::kMapCode, -1, errno);
  std::memcpy(code, plan.code_image, in.code_image_size);
  if (mprotect(code, in.code_image_size, PROT_READ | PROT_EXEC) != 0) {
    ChildFail(plan, SetupStep::kProtectCode, -1, errno);
  }

  for (uint32_t i = 0; i < in.region_count; ++i) {
    const Region& region = plan.regions[i];
    void* mem = MapFixed(region.address, region.size);
    if (mem == nullptr) ChildFail(plan, SetupStep::kMapRegion, static_cast<int>(i), errno);
    std::memcpy(mem, region.bytes, region.size);
    if (region.access != Access::kReadWrite &&
        mprotect(mem, region.size, ProtFor(region.access)) != 0) {
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
  sigprocmask(SIG_SETMASK, &none, nullptr);

  EntryBlock& block = btvm_native_block;
  std::memset(&block, 0, sizeof(block));
  const uint16_t fcw = kFcwReset;
  std::memcpy(block.fxsave + kFxFcw, &fcw, sizeof(fcw));
  block.fxsave[kFxFtw] = 0;  // abridged tag word: all x87 registers empty
  std::memcpy(block.fxsave + kFxMxcsr, &in.mxcsr, sizeof(in.mxcsr));
  std::memcpy(block.fxsave + kFxXmm, in.xmm, sizeof(in.xmm));
  std::memcpy(block.gpr, in.gpr, sizeof(block.gpr));
  // The runner reduced RFLAGS already; again here, as the entry stub's
  // invariant (TF or AC would make the host trap) rests on it.
  block.rflags = (in.rflags & (rflags::kArith | rflags::kDF)) | rflags::kFixed1;
  block.target = in.code_address;
  block.has_avx = plan.has_avx ? 1 : 0;

  // Last: from here on only exit_group is allowed.
  if (InstallSeccomp() != 0) ChildFail(plan, SetupStep::kSeccomp, -1, errno);
  // Raw jump into the snippet. Invariants: the code is mapped R+X at
  // code_address and ends in int3; every signal it can raise is caught on the
  // alternate stack by OnSnippetSignal, which exits; the runner validated
  // the MXCSR image; RFLAGS holds only bits that do not trap.
  btvm_native_enter();
}

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

// The area shared with the children: a Report, then the regions' final
// contents. Kept across requests and grown when a request needs more.
class SharedArea {
 public:
  ~SharedArea() {
    if (p_ != nullptr) munmap(p_, size_);
  }
  // Makes the area at least `size` bytes; false (errno set) if it cannot.
  bool Reserve(size_t size) {
    if (size <= size_) return true;
    if (p_ != nullptr) munmap(p_, size_);
    p_ = nullptr;
    size_ = 0;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    p_ = static_cast<uint8_t*>(p);
    size_ = size;
    return true;
  }
  uint8_t* data() const { return p_; }

 private:
  uint8_t* p_ = nullptr;
  size_t size_ = 0;
};

enum class Io { kOk, kEof, kError };

Io ReadFull(void* buffer, size_t size) {
  auto* p = static_cast<uint8_t*>(buffer);
  for (size_t done = 0; done < size;) {
    const ssize_t n = read(protocol::kServerFd, p + done, size - done);
    if (n == 0) return done == 0 ? Io::kEof : Io::kError;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Io::kError;
    }
    done += static_cast<size_t>(n);
  }
  return Io::kOk;
}

bool WriteFull(const void* buffer, size_t size) {
  const auto* p = static_cast<const uint8_t*>(buffer);
  for (size_t done = 0; done < size;) {
    const ssize_t n = send(protocol::kServerFd, p + done, size - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

Response ServerError(const char* what, int err) {
  Response r{};
  r.status = Status::kServerError;
  std::snprintf(r.message, sizeof(r.message), "native server: %s: %s", what, std::strerror(err));
  return r;
}

class Server {
 public:
  // Serves requests until the runner closes the socket. Returns the exit
  // status: 0 on a clean close, 1 if the conversation broke.
  int Serve() {
    for (;;) {
      Request request;
      switch (ReadFull(&request, sizeof(request))) {
        case Io::kOk:
          break;
        case Io::kEof:
          return 0;
        case Io::kError:
          return 1;
      }
      if (!ReadPayload(request)) return 1;
      const Response response = RunOne(request);
      if (!WriteFull(&response, sizeof(response))) return 1;
      if (response.status == Status::kDone &&
          !WriteFull(area_.data() + kRegionDataOffset, region_bytes_)) {
        return 1;
      }
    }
  }

 private:
  // Reads the region headers, the code image and the region contents. The
  // sizes are bounded first: a request that breaks them ends the server.
  bool ReadPayload(const Request& request) {
    if (request.region_count > protocol::kMaxRegions) return false;
    std::vector<RegionHeader> headers(request.region_count);
    if (ReadFull(headers.data(), headers.size() * sizeof(RegionHeader)) != Io::kOk) return false;
    uint64_t total = request.code_image_size;
    if (total > protocol::kMaxBytes) return false;
    for (const RegionHeader& h : headers) {
      if (h.size > protocol::kMaxBytes - total || h.access > static_cast<uint32_t>(Access::kNone)) return false;
      total += h.size;
    }
    payload_.resize(total);
    if (ReadFull(payload_.data(), payload_.size()) != Io::kOk) return false;

    regions_.clear();
    uint64_t in_offset = request.code_image_size, out_offset = 0;
    for (const RegionHeader& h : headers) {
      regions_.push_back(Region{
          .address = h.address,
          .size = h.size,
          .access = static_cast<Access>(h.access),
          .bytes = payload_.data() + in_offset,
          .out_offset = out_offset,
      });
      in_offset += h.size;
      out_offset += h.size;
    }
    region_bytes_ = out_offset;
    return true;
  }

  Response RunOne(const Request& request) {
    if (!area_.Reserve(kRegionDataOffset + region_bytes_)) {
      return ServerError("cannot map the report area", errno);
    }
    std::memset(area_.data(), 0, sizeof(Report));  // state kNone
    const ChildPlan plan{
        .parent = getpid(),
        .request = &request,
        .regions = regions_.data(),
        .code_image = payload_.data(),
        .report = reinterpret_cast<Report*>(area_.data()),
        .region_out = area_.data() + kRegionDataOffset,
        .alt_stack = g_alt_stack,
        .has_avx = has_avx_,
    };

    const pid_t pid = fork();
    if (pid < 0) return ServerError("cannot fork the native child", errno);
    if (pid == 0) ChildMain(plan);  // never returns

    Response response{};
    int status = 0;
    switch (WaitForChild(pid, std::chrono::milliseconds(request.timeout_ms), &status)) {
      case WaitOutcome::kExited:
        break;
      case WaitOutcome::kTimedOut:
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        response.status = Status::kTimedOut;
        return response;
      case WaitOutcome::kFailed:
        return ServerError("cannot wait for the native child", errno);
    }

    // The child has exited: the report is stable. Copy it out as values.
    std::memcpy(&response.report, area_.data(), sizeof(Report));
    response.wait_status = status;
    if (response.report.state == ReportState::kSetupFailed) {
      response.status = Status::kSetupFailed;
    } else if (response.report.state == ReportState::kDone && WIFEXITED(status) &&
               WEXITSTATUS(status) == 0) {
      response.status = Status::kDone;
    } else {
      response.status = Status::kNoReport;
    }
    return response;
  }

  const bool has_avx_ = __builtin_cpu_supports("avx") != 0;
  SharedArea area_;
  std::vector<uint8_t> payload_;  // the code image, then the regions' initial contents
  std::vector<Region> regions_;
  uint64_t region_bytes_ = 0;
};

}  // namespace
}  // namespace btvm::native

int main() {
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);  // inherited: a crashing child is reported, not dumped
  btvm::native::Server server;
  return server.Serve();
}
