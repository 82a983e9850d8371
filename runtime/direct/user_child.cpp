#include "runtime/direct/user_child.h"

#include <asm/prctl.h>
#include <linux/audit.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "base/format.h"

extern "C" {
extern const uint8_t btvm_stub_start[], btvm_stub_end[];
extern const uint8_t btvm_stub_init[], btvm_stub_apply[];
extern const uint8_t btvm_stub_handler[], btvm_stub_restorer[];
}

namespace btvm::direct {

namespace {

constexpr uint64_t kPage = 4096;
// The stub area's part shared with the monitor: the control page and the
// stub's stack, after the code page.
constexpr uint64_t kSharedBytes = UserChild::kStubBytes - kPage;
// How long each side of the seccomp transport spins before it sleeps on
// the futex: about 20 µs of a 2–4 GHz TSC. A wake-up from sleep costs
// several microseconds here (an idle virtual CPU halts), more than most
// guest runs between traps and most of the monitor's work on a trap.
constexpr uint64_t kSpinCycles = 50'000;
// The handler spins longer: while it waits, the child's CPU has nothing
// else to do, and the monitor's work on a guest timer interrupt (the guest
// kernel's tick, translated) takes about 100 µs here, after which a
// sleeping child would cost another wake-up. About 160 µs.
constexpr uint64_t kChildSpinCycles = 400'000;

// The pause instructions that take about kChildSpinCycles (the child
// cannot read the TSC: rdtsc faults there), measured once.
uint64_t SpinPauses() {
  static const uint64_t pauses = [] {
    constexpr uint64_t kProbe = 20'000;
    const uint64_t start = __rdtsc();
    for (uint64_t i = 0; i < kProbe; ++i) _mm_pause();
    const uint64_t cycles = std::max<uint64_t>(__rdtsc() - start, 1);
    return std::clamp<uint64_t>(kChildSpinCycles * kProbe / cycles, 16, 100'000);
  }();
  return pauses;
}

// Kernel ABI values glibc's headers leave out.
constexpr uint64_t kSaRestorer = 0x04000000;  // SA_RESTORER
constexpr unsigned long kHwcap2Fsgsbase = 1ul << 1;  // HWCAP2_FSGSBASE
// The signals the seccomp transport's handler takes: the guest's faults
// and traps, its syscalls (SIGSYS) and the monitor's interrupt request.
constexpr int kHandled[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGALRM};
// The flags user code can change; the others (IF, IOPL, ...) the host
// keeps its own way in the child, so they stay the guest's.
constexpr uint64_t kUserFlags = rflags::kCF | rflags::kPF | rflags::kAF | rflags::kZF |
                                rflags::kSF | rflags::kTF | rflags::kDF | rflags::kOF |
                                rflags::kNT | rflags::kAC | rflags::kID;
constexpr uint64_t kUserCs64 = UserChild::kUserCs64, kUserCs32 = UserChild::kUserCs32,
                   kUserDs = UserChild::kUserDs;

uint64_t StubOffset(const uint8_t* entry) {
  return static_cast<uint64_t>(entry - btvm_stub_start);
}

Error Errno(const std::string& what) {
  return MakeError(what + ": " + std::strerror(errno));
}

// The error for a child that exited or was killed (its wait status).
Error ChildGone(int status) {
  return MakeError(WIFEXITED(status)
                       ? "direct engine: the child exited with status " +
                             std::to_string(WEXITSTATUS(status))
                       : "direct engine: the child was killed by signal " +
                             std::to_string(WTERMSIG(status)));
}

// The kernel's struct sigaction (the raw rt_sigaction's, whose restorer
// glibc would otherwise supply).
struct KernelSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};

// The seccomp transport's filter: a syscall from the stub's code page, one
// of the few the stub makes, is allowed; every other becomes SIGSYS.
// (The stub page is executable in the child, so guest code that jumps
// into it could make these calls too: runtime/direct/README.md.)
long InstallFilter(uint64_t stub_base) {
  const uint32_t hi = static_cast<uint32_t>(stub_base >> 32);
  const uint32_t lo = static_cast<uint32_t>(stub_base);
  constexpr uint32_t kIp = offsetof(seccomp_data, instruction_pointer);
  // Instruction 14 traps, 15 allows; jump offsets count from the next.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),  // 0
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 12),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kIp + 4),  // 2
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, hi, 0, 10),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kIp),  // 4
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo, 0, 8),
      BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, lo + static_cast<uint32_t>(kPage), 7, 0),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),  // 7
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 6, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 5, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 4, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigreturn, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_arch_prctl, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),  // 14
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),  // 15
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0u, &prog);
}

// The child, between fork and the stub: async-signal-safe calls only (the
// monitor's other threads may hold locks that no longer have owners here).
[[noreturn]] void ChildMain(pid_t parent, Transport transport, int ram_fd, int shared_fd,
                            uint64_t stub_base) {
  // Die with the monitor; it may have died before the prctl.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(101);
  // Default dispositions (the monitor's handlers are about to vanish),
  // nothing blocked (ptrace: the monitor sees every signal first, as the
  // tracer; seccomp: the stub's handler takes the guest's).
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Out of the terminal's process group: Ctrl-C is the monitor's.
  setpgid(0, 0);
  // cpuid and rdtsc fault (SIGSEGV), so the guest's run translated and
  // see btvm's virtual CPU and TSC. CPUID faulting may be missing on the
  // host: then user-mode cpuid shows the host's (runtime/direct/README).
  const bool cpuid_faults = syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) == 0;
  prctl(PR_SET_TSC, PR_TSC_SIGSEGV);

  void* const base = reinterpret_cast<void*>(stub_base);
  void* code = mmap(base, kPage, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (code != base) _exit(102);
  std::memcpy(code, btvm_stub_start, static_cast<size_t>(btvm_stub_end - btvm_stub_start));
  if (mprotect(code, kPage, PROT_READ | PROT_EXEC) != 0) _exit(103);
  void* shared_at = reinterpret_cast<void*>(stub_base + kPage);
  if (mmap(shared_at, kSharedBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
           shared_fd, 0) != shared_at) {
    _exit(104);
  }
  auto* control = static_cast<StubControl*>(shared_at);
  control->cpuid_faults = cpuid_faults ? 1 : 0;
  // Only the RAM memfd stays open.
  if (ram_fd > 0) syscall(SYS_close_range, 0u, static_cast<unsigned>(ram_fd - 1), 0u);
  syscall(SYS_close_range, static_cast<unsigned>(ram_fd + 1), ~0u, 0u);
  // The kernel writes the thread's rseq area, which lives in memory the
  // stub unmaps: unregister it first.
  // The length must be the registered one, which glibc 2.36 does not
  // export: __rseq_size says 20 (the features it uses) where it registered
  // 32 (struct rseq).
  if (__rseq_size > 0) {
    void* area = static_cast<char*>(__builtin_thread_pointer()) + __rseq_offset;
    if (syscall(SYS_rseq, area, __rseq_size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) != 0 &&
        syscall(SYS_rseq, area, 32u, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) != 0) {
      _exit(106);
    }
  }
  if (transport == Transport::kPtrace) {
    if (ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) _exit(105);
    raise(SIGSTOP);  // the monitor sets its ptrace options, then lets us go on
  } else {
    // The stub's handler for the guest's signals, on the stub's stack,
    // with every signal blocked while it runs.
    control->flags = (getauxval(AT_HWCAP2) & kHwcap2Fsgsbase) ? 1 : 0;
    stack_t stack{};
    stack.ss_sp = reinterpret_cast<void*>(stub_base + 2 * kPage);
    stack.ss_size = UserChild::kStubBytes - 2 * kPage;
    if (sigaltstack(&stack, nullptr) != 0) _exit(107);
    KernelSigaction sa{stub_base + StubOffset(btvm_stub_handler),
                       SA_SIGINFO | SA_ONSTACK | kSaRestorer,
                       stub_base + StubOffset(btvm_stub_restorer), ~0ull};
    for (int sig : kHandled) {
      if (syscall(SYS_rt_sigaction, sig, &sa, nullptr, sizeof(sa.mask)) != 0) _exit(108);
    }
    // The last syscall made outside the stub.
    if (InstallFilter(stub_base) != 0) _exit(109);
  }
  // Into the stub's copy, which strips the process and ends in an int3
  // (ptrace: a stop; seccomp: the handler, which says the child is ready).
  // The jump is to code just copied into the stub page (invariant: the
  // stub is position independent and needs no stack).
  const uint64_t init = stub_base + StubOffset(btvm_stub_init);
  asm volatile("jmp *%0" : : "r"(init) : "memory");
  __builtin_unreachable();
}

void ToHostRegs(const CpuState& cpu, user_regs_struct* r) {
  std::memset(r, 0, sizeof(*r));
  r->rax = cpu.gpr[0];
  r->rcx = cpu.gpr[1];
  r->rdx = cpu.gpr[2];
  r->rbx = cpu.gpr[3];
  r->rsp = cpu.gpr[4];
  r->rbp = cpu.gpr[5];
  r->rsi = cpu.gpr[6];
  r->rdi = cpu.gpr[7];
  r->r8 = cpu.gpr[8];
  r->r9 = cpu.gpr[9];
  r->r10 = cpu.gpr[10];
  r->r11 = cpu.gpr[11];
  r->r12 = cpu.gpr[12];
  r->r13 = cpu.gpr[13];
  r->r14 = cpu.gpr[14];
  r->r15 = cpu.gpr[15];
  r->rip = cpu.rip;
  r->eflags = cpu.rflags;
  r->orig_rax = ~0ull;  // not in a syscall
  r->cs = cpu.seg[kCs].Long() ? kUserCs64 : kUserCs32;
  r->ss = kUserDs;
  r->ds = cpu.seg[kDs].selector;  // 0 or kUserDs (UserChild::RunsAsIs)
  r->es = cpu.seg[kEs].selector;
  r->fs_base = cpu.seg[kFs].base;
  r->gs_base = cpu.seg[kGs].base;
}

void FromHostRegs(const user_regs_struct& r, CpuState* cpu) {
  cpu->gpr[0] = r.rax;
  cpu->gpr[1] = r.rcx;
  cpu->gpr[2] = r.rdx;
  cpu->gpr[3] = r.rbx;
  cpu->gpr[4] = r.rsp;
  cpu->gpr[5] = r.rbp;
  cpu->gpr[6] = r.rsi;
  cpu->gpr[7] = r.rdi;
  cpu->gpr[8] = r.r8;
  cpu->gpr[9] = r.r9;
  cpu->gpr[10] = r.r10;
  cpu->gpr[11] = r.r11;
  cpu->gpr[12] = r.r12;
  cpu->gpr[13] = r.r13;
  cpu->gpr[14] = r.r14;
  cpu->gpr[15] = r.r15;
  cpu->rip = r.rip;
  cpu->rflags = (cpu->rflags & ~kUserFlags) | (r.eflags & kUserFlags);
  cpu->seg[kFs].base = r.fs_base;
  cpu->seg[kGs].base = r.gs_base;
}

}  // namespace

bool UserChild::RunsAsIs(const CpuState& cpu) {
  auto data_ok = [&](int seg) {
    return cpu.seg[seg].selector == 0 || cpu.seg[seg].selector == kUserDs;
  };
  return cpu.seg[kCs].selector == kUserCs64 && cpu.seg[kCs].Long() &&
         cpu.seg[kSs].selector == kUserDs && data_ok(kDs) && data_ok(kEs) &&
         cpu.seg[kFs].selector == 0 && cpu.seg[kGs].selector == 0;
}

const char* TransportName(Transport t) {
  return t == Transport::kPtrace ? "ptrace" : "seccomp";
}

Result<std::unique_ptr<UserChild>> UserChild::Spawn(int ram_fd, Transport transport,
                                                    uint64_t stub_base) {
  BTVM_CHECK(btvm_stub_end - btvm_stub_start <= static_cast<ptrdiff_t>(kPage));
  if (stub_base % kStubBytes != 0 || stub_base + kStubBytes > 0x7ffffffff000) {
    return MakeError("direct engine: bad stub address " + Hex(stub_base));
  }
  int shared_fd = memfd_create("btvm-stub", MFD_CLOEXEC);
  if (shared_fd < 0) return Errno("direct engine: memfd_create");
  if (ftruncate(shared_fd, kSharedBytes) != 0) {
    close(shared_fd);
    return Errno("direct engine: ftruncate");
  }
  void* shared =
      mmap(nullptr, kSharedBytes, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd, 0);
  if (shared == MAP_FAILED) {
    close(shared_fd);
    return Errno("direct engine: mmap of the stub's control page");
  }
  // seccomp: the child's turn until its handler first says it stopped.
  static_cast<StubControl*>(shared)->state = StubControl::kGo;
  static_cast<StubControl*>(shared)->spin_pauses = SpinPauses();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) ChildMain(parent, transport, ram_fd, shared_fd, stub_base);
  close(shared_fd);
  if (pid < 0) {
    munmap(shared, kSharedBytes);
    return Errno("direct engine: fork");
  }
  std::unique_ptr<UserChild> child(
      new UserChild(pid, transport, stub_base, static_cast<StubControl*>(shared)));
  if (transport == Transport::kSeccomp) {
    // The stub's int3 enters the handler, which stops there.
    if (Status s = child->Handover(0); !s) return s.error();
    const auto* uc = reinterpret_cast<const ucontext_t*>(
        child->Shared(child->control_->ucontext, offsetof(ucontext_t, uc_sigmask)));
    const uint64_t rip = uc ? static_cast<uint64_t>(uc->uc_mcontext.gregs[REG_RIP]) : 0;
    if (child->control_->signal != SIGTRAP || rip < stub_base || rip >= stub_base + kPage) {
      return MakeError("direct engine: the child's stub did not start (signal " +
                       std::to_string(child->control_->signal) + " at " + Hex(rip) + ")");
    }
    child->control_->ram_fd = static_cast<uint64_t>(ram_fd);
    return child;
  }
  Result<int> st = child->WaitStop();
  if (!st) return st.error();
  if ((*st & 0xff) != SIGSTOP) {
    return MakeError("direct engine: the child stopped with signal " +
                     std::to_string((*st & 0xff)) + " while starting");
  }
  if (ptrace(PTRACE_SETOPTIONS, pid, nullptr,
             reinterpret_cast<void*>(PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD)) != 0) {
    return Errno("direct engine: PTRACE_SETOPTIONS");
  }
  if (ptrace(PTRACE_CONT, pid, nullptr, nullptr) != 0) return Errno("direct engine: PTRACE_CONT");
  st = child->WaitStop();
  if (!st) return st.error();
  user_regs_struct r;
  if (ptrace(PTRACE_GETREGS, pid, nullptr, &r) != 0) return Errno("direct engine: PTRACE_GETREGS");
  if ((*st & 0xff) != SIGTRAP || r.rip < stub_base || r.rip >= stub_base + kPage) {
    return MakeError("direct engine: the child's stub did not start (signal " +
                     std::to_string((*st & 0xff)) + " at " + Hex(r.rip) + ")");
  }
  child->control_->ram_fd = static_cast<uint64_t>(ram_fd);
  return child;
}

UserChild::~UserChild() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    while (waitpid(pid_, &status, __WALL) < 0 && errno == EINTR) {
    }
  }
  if (control_) munmap(control_, kSharedBytes);
}

uint8_t* UserChild::Shared(uint64_t child_addr, uint64_t len) const {
  const uint64_t start = stub_base_ + kPage;
  if (child_addr < start || child_addr - start > kSharedBytes ||
      len > kSharedBytes - (child_addr - start)) {
    return nullptr;
  }
  return reinterpret_cast<uint8_t*>(control_) + (child_addr - start);
}

Status UserChild::Handover(uint32_t command) {
  std::atomic_ref<uint32_t> state(control_->state);
  std::atomic_ref<uint32_t> monitor_sleeps(control_->monitor_sleeps);
  std::atomic_ref<uint32_t> child_sleeps(control_->child_sleeps);
  if (command != 0) {
    control_->command = command;
    state.store(StubControl::kGo, std::memory_order_seq_cst);
    if (child_sleeps.load(std::memory_order_seq_cst)) {
      syscall(SYS_futex, &control_->state, FUTEX_WAKE, 1, nullptr, nullptr, 0);
    }
  }
  // Spin first (a futex wake-up from sleep costs several microseconds on
  // these hosts, more than a short guest run), then sleep.
  const uint64_t deadline = __rdtsc() + kSpinCycles;
  while (state.load(std::memory_order_acquire) == StubControl::kGo && __rdtsc() < deadline) {
    _mm_pause();
  }
  while (state.load(std::memory_order_seq_cst) == StubControl::kGo) {
    monitor_sleeps.store(1, std::memory_order_seq_cst);
    if (state.load(std::memory_order_seq_cst) != StubControl::kGo) break;
    // The child runs guest code: as long as it likes, but it may also die
    // (killed from outside, or a fault in the stub), which no futex says.
    timespec timeout{0, 200'000'000};
    if (syscall(SYS_futex, &control_->state, FUTEX_WAIT, StubControl::kGo, &timeout, nullptr,
                0) == 0 ||
        errno != ETIMEDOUT) {
      continue;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;  // reaped
      monitor_sleeps.store(0);
      return ChildGone(status);
    }
  }
  monitor_sleeps.store(0, std::memory_order_relaxed);
  return Ok{};
}

Result<int> UserChild::WaitStop() {
  int status = 0;
  for (;;) {
    if (waitpid(pid_, &status, __WALL) >= 0) break;
    if (errno != EINTR) return Errno("direct engine: waitpid");
  }
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    pid_ = -1;  // reaped
    return ChildGone(status);
  }
  BTVM_CHECK(WIFSTOPPED(status));
  return status >> 8;  // WSTOPSIG's byte, with PTRACE_EVENT bits above it
}

Status UserChild::RunStub(uint64_t entry) {
  user_regs_struct r;
  if (ptrace(PTRACE_GETREGS, pid_, nullptr, &r) != 0) return Errno("direct engine: PTRACE_GETREGS");
  r.rip = stub_base_ + entry;
  r.rsp = stub_base_ + kStubBytes;  // the top of the stub's stack
  r.orig_rax = ~0ull;  // no syscall to restart
  r.cs = kUserCs64;    // the stub is 64-bit code; the guest may have left compatibility mode on
  r.ss = kUserDs;
  if (ptrace(PTRACE_SETREGS, pid_, nullptr, &r) != 0) return Errno("direct engine: PTRACE_SETREGS");
  for (;;) {
    if (ptrace(PTRACE_CONT, pid_, nullptr, nullptr) != 0) {
      return Errno("direct engine: PTRACE_CONT");
    }
    Result<int> st = WaitStop();
    if (!st) return st.error();
    const int sig = *st & 0xff;
    if (sig == SIGTRAP) return Ok{};
    if (sig == SIGALRM || sig == SIGURG || sig == SIGWINCH || sig == SIGCHLD) {
      // A signal sent to the child (an interrupt request) while the stub
      // ran: discarded, and reported by Run as if the guest had been
      // stopped by it before it ran.
      pending_signal_ = sig;
      continue;
    }
    siginfo_t si{};
    ptrace(PTRACE_GETSIGINFO, pid_, nullptr, &si);
    ptrace(PTRACE_GETREGS, pid_, nullptr, &r);
    return MakeError("direct engine: the child's stub stopped with signal " + std::to_string(sig) +
                     " at " + Hex(r.rip) + " (address " +
                     Hex(reinterpret_cast<uint64_t>(si.si_addr)) + ", code " +
                     std::to_string(si.si_code) + ")");
  }
}

Status UserChild::Queue(const StubOp& op) {
  if (op.addr % kPage != 0 || op.len % kPage != 0 || op.len == 0 ||
      op.addr + op.len > 0x7ffffffff000 || op.addr + op.len < op.addr) {
    return MakeError("direct engine: bad guest mapping " + HexRange(op.addr, op.addr + op.len));
  }
  if (op.addr < stub_base_ + kStubBytes && stub_base_ < op.addr + op.len) {
    return MakeError("direct engine: guest mapping " + HexRange(op.addr, op.addr + op.len) +
                     " overlaps the stub");
  }
  if (control_->count == std::size(control_->ops)) {
    if (Status s = Flush(); !s) return s;
  }
  control_->ops[control_->count++] = op;
  return Ok{};
}

Status UserChild::Map(uint64_t addr, uint64_t len, int prot, uint64_t ram_offset) {
  return Queue({StubOp::kMap, static_cast<uint32_t>(prot), addr, len, ram_offset});
}

Status UserChild::Unmap(uint64_t addr, uint64_t len) {
  return Queue({StubOp::kUnmap, 0, addr, len, 0});
}

Status UserChild::Protect(uint64_t addr, uint64_t len, int prot) {
  return Queue({StubOp::kProtect, static_cast<uint32_t>(prot), addr, len, 0});
}

Status UserChild::Flush() {
  if (control_->count == 0) return Ok{};
  Status s = transport_ == Transport::kPtrace ? RunStub(StubOffset(btvm_stub_apply))
                                              : Handover(StubControl::kApply);
  const uint64_t count = control_->count;
  control_->count = 0;
  if (!s) return s;
  return CheckApplied(count);
}

Status UserChild::CheckApplied(uint64_t count) {
  if (control_->error == 0) return Ok{};
  const StubOp& op = control_->ops[control_->error_index < count ? control_->error_index : 0];
  const int err = static_cast<int>(-control_->error);
  control_->error = 0;
  return MakeError("direct engine: guest mapping " + HexRange(op.addr, op.addr + op.len) +
                   " failed: " + std::strerror(err));
}

Result<Trap> UserChild::Run(CpuState& cpu) {
  return transport_ == Transport::kPtrace ? RunPtrace(cpu) : RunSeccomp(cpu);
}

Result<Trap> UserChild::RunPtrace(CpuState& cpu) {
  if (Status s = Flush(); !s) return s.error();
  if (pending_signal_) {
    Trap trap;
    trap.kind = Trap::Kind::kSignal;
    trap.signal = pending_signal_;
    pending_signal_ = 0;
    for (int seg = 0; seg < kSegCount; ++seg) trap.selectors[seg] = cpu.seg[seg].selector;
    return trap;
  }
  user_regs_struct r;
  ToHostRegs(cpu, &r);
  if (ptrace(PTRACE_SETREGS, pid_, nullptr, &r) != 0) return Errno("direct engine: PTRACE_SETREGS");
  user_fpregs_struct fp;
  static_assert(sizeof(fp) == 512);
  std::memcpy(&fp, cpu.xsave.bytes, sizeof(fp));
  if (ptrace(PTRACE_SETFPREGS, pid_, nullptr, &fp) != 0) {
    return Errno("direct engine: PTRACE_SETFPREGS");
  }
  // PTRACE_SYSEMU: a syscall stops at the host's entry and is not run.
  if (ptrace(PTRACE_SYSEMU, pid_, nullptr, nullptr) != 0) return Errno("direct engine: PTRACE_SYSEMU");
  Result<int> st = WaitStop();
  if (!st) return st.error();
  if (ptrace(PTRACE_GETREGS, pid_, nullptr, &r) != 0) return Errno("direct engine: PTRACE_GETREGS");
  if (ptrace(PTRACE_GETFPREGS, pid_, nullptr, &fp) != 0) {
    return Errno("direct engine: PTRACE_GETFPREGS");
  }
  FromHostRegs(r, &cpu);
  std::memcpy(cpu.xsave.bytes, &fp, sizeof(fp));
  Trap trap;
  trap.selectors[kEs] = static_cast<uint16_t>(r.es);
  trap.selectors[kCs] = static_cast<uint16_t>(r.cs);
  trap.selectors[kSs] = static_cast<uint16_t>(r.ss);
  trap.selectors[kDs] = static_cast<uint16_t>(r.ds);
  trap.selectors[kFs] = static_cast<uint16_t>(r.fs);
  trap.selectors[kGs] = static_cast<uint16_t>(r.gs);
  if ((*st & 0xff) == (SIGTRAP | 0x80)) {
    // The host's syscall entry put -ENOSYS in RAX; the guest's value is
    // in orig_rax.
    cpu.gpr[0] = r.orig_rax;
    trap.kind = Trap::Kind::kSyscall;
    return trap;
  }
  siginfo_t si;
  if (ptrace(PTRACE_GETSIGINFO, pid_, nullptr, &si) != 0) {
    return Errno("direct engine: PTRACE_GETSIGINFO");
  }
  trap.kind = Trap::Kind::kSignal;
  trap.signal = si.si_signo;
  trap.code = si.si_code;
  trap.address = reinterpret_cast<uint64_t>(si.si_addr);
  return trap;  // the next PTRACE_SYSEMU discards the signal
}

namespace {

// The general registers in the signal frame (mcontext gregs) by CpuState's
// order, RAX..R15.
constexpr int kFrameGpr[16] = {REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
                               REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
                               REG_R12, REG_R13, REG_R14, REG_R15};
// The FXSAVE bytes the guest's state occupies (x87 and SSE, up to XMM15);
// bytes 416..511 are the host kernel's (its XSAVE frame marker lies at 464).
constexpr size_t kFxBytes = 416;
constexpr uint32_t kXstateMagic1 = 0x46505853;  // FP_XSTATE_MAGIC1
constexpr uint64_t kUcSigcontextSs = 0x2, kUcStrictRestoreSs = 0x4;
constexpr int kSysSeccomp = 1;  // SIGSYS's si_code from a seccomp filter

}  // namespace

Status UserChild::Frame(ucontext_t** uc, uint8_t** fx) const {
  *uc = reinterpret_cast<ucontext_t*>(
      Shared(control_->ucontext, offsetof(ucontext_t, uc_sigmask) + 8));
  *fx = *uc ? Shared(reinterpret_cast<uint64_t>((*uc)->uc_mcontext.fpregs), 512 + 64) : nullptr;
  if (!*fx) return MakeError("direct engine: the child's signal frame is outside its stack");
  return Ok{};
}

namespace {

// The XSAVE header's XSTATE_BV in a signal frame's FPU state, or null if
// the frame holds the FXSAVE image alone (no FP_XSTATE_MAGIC1 in the
// bytes the kernel keeps for itself at 464).
uint8_t* XstateBv(uint8_t* fx) {
  uint32_t magic;
  std::memcpy(&magic, fx + 464, 4);
  return magic == kXstateMagic1 ? fx + 512 : nullptr;
}

}  // namespace

Result<Trap> UserChild::RunSeccomp(CpuState& cpu) {
  ucontext_t* uc;
  uint8_t* fx;
  if (Status s = Frame(&uc, &fx); !s) return s.error();
  greg_t* g = uc->uc_mcontext.gregs;
  // The guest's registers into the frame, which rt_sigreturn loads.
  for (int i = 0; i < 16; ++i) g[kFrameGpr[i]] = static_cast<greg_t>(cpu.gpr[i]);
  g[REG_RIP] = static_cast<greg_t>(cpu.rip);
  g[REG_EFL] = static_cast<greg_t>((cpu.rflags & kUserFlags) | rflags::kIF | 0x2);
  const uint64_t cs = cpu.seg[kCs].Long() ? kUserCs64 : kUserCs32;
  g[REG_CSGSFS] = static_cast<greg_t>(cs | (uint64_t{kUserDs} << 48));  // cs, gs, fs, ss
  uc->uc_flags |= kUcSigcontextSs | kUcStrictRestoreSs;
  std::memset(&uc->uc_sigmask, 0, 8);  // nothing blocked in the guest
  std::memcpy(fx, cpu.xsave.bytes, kFxBytes);
  if (uint8_t* bv = XstateBv(fx)) {
    // XRSTOR takes x87 and SSE from the frame only if the header says so.
    uint64_t xstate_bv;
    std::memcpy(&xstate_bv, bv, 8);
    xstate_bv |= 3;
    std::memcpy(bv, &xstate_bv, 8);
  }
  control_->fs_base = cpu.seg[kFs].base;
  control_->gs_base = cpu.seg[kGs].base;
  control_->ds = cpu.seg[kDs].selector;  // 0 or kUserDs (UserChild::RunsAsIs)
  control_->es = cpu.seg[kEs].selector;

  const uint64_t count = control_->count;
  std::atomic_ref<uint32_t>(control_->spin_stop).store(0, std::memory_order_relaxed);
  Status s = Handover(StubControl::kRun);
  control_->count = 0;
  if (!s) return s.error();
  if (Status a = CheckApplied(count); !a) return a.error();

  // The state it stopped in: a new frame (the same place, as a rule).
  if (Status f = Frame(&uc, &fx); !f) return f.error();
  g = uc->uc_mcontext.gregs;
  const auto* si = reinterpret_cast<const siginfo_t*>(Shared(control_->info, sizeof(siginfo_t)));
  if (!si) return MakeError("direct engine: the child's signal frame is outside its stack");
  for (int i = 0; i < 16; ++i) cpu.gpr[i] = static_cast<uint64_t>(g[kFrameGpr[i]]);
  cpu.rip = static_cast<uint64_t>(g[REG_RIP]);
  cpu.rflags = (cpu.rflags & ~kUserFlags) | (static_cast<uint64_t>(g[REG_EFL]) & kUserFlags);
  std::memcpy(cpu.xsave.bytes, fx, kFxBytes);
  if (const uint8_t* bv = XstateBv(fx)) {
    // Components in their initial configuration may not be in the frame.
    uint64_t xstate_bv;
    std::memcpy(&xstate_bv, bv, 8);
    if (!(xstate_bv & 2)) std::memset(cpu.xsave.bytes + 160, 0, kFxBytes - 160);
    if (!(xstate_bv & 1)) {
      std::memset(cpu.xsave.bytes, 0, 24);
      cpu.xsave.bytes[0] = 0x7f;  // FCW 0x37f
      cpu.xsave.bytes[1] = 0x03;
      std::memset(cpu.xsave.bytes + 32, 0, 128);
    }
  }
  cpu.seg[kFs].base = control_->fs_base;
  cpu.seg[kGs].base = control_->gs_base;
  Trap trap;
  const uint64_t csgsfs = static_cast<uint64_t>(g[REG_CSGSFS]);
  trap.selectors[kCs] = static_cast<uint16_t>(csgsfs);
  trap.selectors[kSs] = static_cast<uint16_t>(csgsfs >> 48);
  trap.selectors[kDs] = control_->ds;
  trap.selectors[kEs] = control_->es;
  trap.selectors[kFs] = control_->fs;
  trap.selectors[kGs] = control_->gs;
  if (control_->signal == SIGSYS && si->si_code == kSysSeccomp) {
    // A syscall the filter refused, not run: RIP past it, RAX the guest's
    // (the kernel rolls the frame back to the registers the syscall saw).
    trap.kind = Trap::Kind::kSyscall;
    return trap;
  }
  trap.kind = Trap::Kind::kSignal;
  trap.signal = static_cast<int>(control_->signal);
  trap.code = si->si_code;
  trap.address = reinterpret_cast<uint64_t>(si->si_addr);
  trap.has_error_code = true;
  trap.trapno = static_cast<int>(g[REG_TRAPNO]);
  trap.error_code = static_cast<uint64_t>(g[REG_ERR]);
  return trap;
}

}  // namespace btvm::direct
