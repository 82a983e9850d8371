#include "runtime/direct/user_child.h"

#include <asm/prctl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/format.h"

extern "C" {
extern const uint8_t btvm_stub_start[], btvm_stub_end[];
extern const uint8_t btvm_stub_init[], btvm_stub_apply[];
}

namespace btvm::direct {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kUserCs64 = UserChild::kUserCs64, kUserCs32 = UserChild::kUserCs32,
                   kUserDs = UserChild::kUserDs;

uint64_t StubOffset(const uint8_t* entry) {
  return static_cast<uint64_t>(entry - btvm_stub_start);
}

Error Errno(const std::string& what) {
  return MakeError(what + ": " + std::strerror(errno));
}

// The child, between fork and the stub: async-signal-safe calls only (the
// monitor's other threads may hold locks that no longer have owners here).
[[noreturn]] void ChildMain(pid_t parent, int ram_fd, int control_fd, uint64_t stub_base) {
  // Die with the monitor; it may have died before the prctl.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(101);
  // Default dispositions (the monitor's handlers are about to vanish),
  // nothing blocked: the monitor sees every signal first, as the tracer.
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
  void* control_at = reinterpret_cast<void*>(stub_base + kPage);
  if (mmap(control_at, kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
           control_fd, 0) != control_at) {
    _exit(104);
  }
  static_cast<StubControl*>(control_at)->cpuid_faults = cpuid_faults ? 1 : 0;
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
  if (ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != 0) _exit(105);
  raise(SIGSTOP);  // the monitor sets its ptrace options, then lets us go on
  // Into the stub's copy, which strips the process and stops at its int3.
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
  // The flags user code can change; the others (IF, IOPL, ...) the host
  // keeps its own way in the child, so they stay the guest's.
  constexpr uint64_t kUserFlags = rflags::kCF | rflags::kPF | rflags::kAF | rflags::kZF |
                                  rflags::kSF | rflags::kTF | rflags::kDF | rflags::kOF |
                                  rflags::kNT | rflags::kAC | rflags::kID;
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

Result<std::unique_ptr<UserChild>> UserChild::Spawn(int ram_fd, uint64_t stub_base) {
  BTVM_CHECK(btvm_stub_end - btvm_stub_start <= static_cast<ptrdiff_t>(kPage));
  if (stub_base % kPage != 0 || stub_base + kStubBytes > 0x7ffffffff000) {
    return MakeError("direct engine: bad stub address " + Hex(stub_base));
  }
  int control_fd = memfd_create("btvm-stub-control", MFD_CLOEXEC);
  if (control_fd < 0) return Errno("direct engine: memfd_create");
  if (ftruncate(control_fd, kPage) != 0) {
    close(control_fd);
    return Errno("direct engine: ftruncate");
  }
  void* control = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, control_fd, 0);
  if (control == MAP_FAILED) {
    close(control_fd);
    return Errno("direct engine: mmap of the stub's control page");
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) ChildMain(parent, ram_fd, control_fd, stub_base);
  close(control_fd);
  if (pid < 0) {
    munmap(control, kPage);
    return Errno("direct engine: fork");
  }
  std::unique_ptr<UserChild> child(
      new UserChild(pid, stub_base, static_cast<StubControl*>(control)));
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
  if (control_) munmap(control_, kPage);
}

Result<int> UserChild::WaitStop() {
  int status = 0;
  for (;;) {
    if (waitpid(pid_, &status, __WALL) >= 0) break;
    if (errno != EINTR) return Errno("direct engine: waitpid");
  }
  if (WIFEXITED(status) || WIFSIGNALED(status)) {
    pid_ = -1;  // reaped
    return MakeError(WIFEXITED(status)
                         ? "direct engine: the child exited with status " +
                               std::to_string(WEXITSTATUS(status))
                         : "direct engine: the child was killed by signal " +
                               std::to_string(WTERMSIG(status)));
  }
  BTVM_CHECK(WIFSTOPPED(status));
  return status >> 8;  // WSTOPSIG's byte, with PTRACE_EVENT bits above it
}

Status UserChild::RunStub(uint64_t entry) {
  user_regs_struct r;
  if (ptrace(PTRACE_GETREGS, pid_, nullptr, &r) != 0) return Errno("direct engine: PTRACE_GETREGS");
  r.rip = stub_base_ + entry;
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
  Status s = RunStub(StubOffset(btvm_stub_apply));
  const uint64_t count = control_->count;
  control_->count = 0;
  if (!s) return s;
  if (control_->error != 0) {
    const StubOp& op = control_->ops[control_->error_index < count ? control_->error_index : 0];
    return MakeError("direct engine: guest mapping " + HexRange(op.addr, op.addr + op.len) + " failed: " +
                     std::strerror(static_cast<int>(-control_->error)));
  }
  return Ok{};
}

Result<Trap> UserChild::Run(CpuState& cpu) {
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

}  // namespace btvm::direct
