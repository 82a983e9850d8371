#pragma once
// A direct-execution child (DESIGN.md, Direct execution): a host process
// that holds one guest address space, guest RAM pages mapped from the RAM
// memfd at their guest-virtual addresses, and runs guest user code on the
// host CPU until it traps. Besides the guest's mappings it keeps only the
// stub area (stub.S: a page of code, then a control page and a stack
// shared with the monitor) and [vsyscall], which lies above the user range.
// Mapping changes are batched in the control page and applied by the stub.
//
// Two transports bring the child's traps to the monitor (Transport):
// - ptrace, the simple one: the monitor traces the child and runs it with
//   PTRACE_SYSEMU, so a guest `syscall` stops it at the host's syscall
//   entry without the host kernel running it, and a fault stops it with
//   the signal it raised, which the monitor then discards. Each trap costs
//   a stop and half a dozen ptrace calls.
// - seccomp, the fast one: the child is not traced. A seccomp filter turns
//   every syscall made outside the stub's code into SIGSYS, and every
//   signal (SIGSYS, a fault's, the monitor's interrupt request) enters the
//   stub's handler, which hands the signal frame (the guest's registers,
//   in the shared stack) to the monitor through a futex and waits. A trap
//   costs a signal frame and two hand-overs; each side spins briefly
//   before it sleeps, so a hand-over within that time needs no wake-up.

#include <sys/types.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/cpu_state.h"
#include "base/result.h"

namespace btvm::direct {

// One mapping change for the stub (stub.S reads these offsets).
struct StubOp {
  enum Kind : uint32_t { kMap = 1, kUnmap = 2, kProtect = 3 };
  uint32_t kind;
  uint32_t prot;    // PROT_* (kMap, kProtect)
  uint64_t addr;    // guest-virtual, page-aligned
  uint64_t len;     // a multiple of the page size
  uint64_t offset;  // kMap: offset in the RAM memfd
};
static_assert(sizeof(StubOp) == 32);

// The control page shared with the stub.
struct StubControl {
  uint64_t count;        // operations to apply
  int64_t error;         // 0, or the -errno of the operation that failed
  uint64_t error_index;  // its index
  uint64_t ram_fd;       // the RAM memfd's descriptor in the child
  uint64_t cpuid_faults;  // 1: cpuid in the child faults (CPUID faulting is on)
  // The seccomp transport's hand-over (stub.S, btvm_stub_handler).
  enum : uint32_t { kStopped = 1, kGo = 2 };  // state
  enum : uint32_t { kRun = 1, kApply = 2 };   // command
  uint32_t state;     // futex word: kStopped (the child's turn is over) or kGo
  uint32_t command;   // with kGo
  uint64_t flags;     // bit 0: the child may use rdfsbase/wrfsbase (HWCAP2_FSGSBASE)
  uint64_t signal;    // the signal the handler took
  uint64_t info;      // its siginfo and ucontext, at the child's addresses
  uint64_t ucontext;
  uint64_t fs_base;   // the guest's FS and GS bases (not in the signal frame)
  uint64_t gs_base;
  uint16_t ds, es, fs, gs;  // and its data segment selectors
  // Each side spins a while before it sleeps on `state` (the handler for
  // spin_pauses pause instructions, longer than the monitor's spin), and
  // says so here: the other wakes it only then. The monitor sets
  // spin_stop when it goes on with another child: the handler then sleeps
  // at once instead of taking a CPU the other child may need.
  uint32_t monitor_sleeps;
  uint32_t child_sleeps;
  uint64_t spin_pauses;
  uint32_t spin_stop;
  uint32_t reserved32;
  uint64_t reserved[16];
  StubOp ops[(4096 - 256) / sizeof(StubOp)];
};
static_assert(offsetof(StubControl, count) == 0 && offsetof(StubControl, error) == 8 &&
              offsetof(StubControl, error_index) == 16 && offsetof(StubControl, ram_fd) == 24 &&
              offsetof(StubControl, state) == 40 && offsetof(StubControl, command) == 44 &&
              offsetof(StubControl, flags) == 48 && offsetof(StubControl, signal) == 56 &&
              offsetof(StubControl, info) == 64 && offsetof(StubControl, ucontext) == 72 &&
              offsetof(StubControl, fs_base) == 80 && offsetof(StubControl, gs_base) == 88 &&
              offsetof(StubControl, ds) == 96 && offsetof(StubControl, gs) == 102 &&
              offsetof(StubControl, monitor_sleeps) == 104 &&
              offsetof(StubControl, child_sleeps) == 108 &&
              offsetof(StubControl, spin_pauses) == 112 &&
              offsetof(StubControl, spin_stop) == 120 &&
              offsetof(StubControl, ops) == 256 && sizeof(StubControl) == 4096);

// How the child's traps reach the monitor (see the top of this file).
enum class Transport { kPtrace, kSeccomp };
const char* TransportName(Transport t);

// Why guest code stopped running in the child.
struct Trap {
  enum class Kind {
    kSyscall,  // a syscall instruction (or int 0x80, sysenter): not run by the host
    kSignal,   // a fault or trap the host turned into a signal
  };
  Kind kind = Kind::kSyscall;
  int signal = 0;        // kSignal: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, ...
  int code = 0;          // kSignal: si_code
  uint64_t address = 0;  // kSignal: si_addr (the faulting address for SIGSEGV/SIGBUS)
  // kSignal, seccomp transport: the exception's vector and error code as
  // the signal frame has them (trapno, err); a page fault's error code
  // says read, write or fetch. The ptrace transport does not see them.
  bool has_error_code = false;
  int trapno = 0;
  uint64_t error_code = 0;
  // The child's segment selectors when it stopped (SegIndex order): user
  // code may have changed them (a far jump, mov to DS), to the host's
  // selectors, whose descriptors RunsAsIs checked the guest's match.
  uint16_t selectors[kSegCount] = {};
};

class UserChild {
 public:
  // The stub area at `stub_base`, which guest mappings must leave alone:
  // the stub's code page, the control page and the stub's stack (stub.S).
  // Below the top of the 47-bit user range.
  static constexpr uint64_t kDefaultStubBase = 0x7ffffffe0000;
  static constexpr uint64_t kStubBytes = 0x10000;

  // Forks a child, strips it to the stub and waits for it. `ram_fd`: the
  // guest RAM memfd, which kMap operations map from.
  static Result<std::unique_ptr<UserChild>> Spawn(int ram_fd,
                                                  Transport transport = Transport::kSeccomp,
                                                  uint64_t stub_base = kDefaultStubBase);
  ~UserChild();  // kills and reaps the child
  UserChild(const UserChild&) = delete;
  UserChild& operator=(const UserChild&) = delete;

  pid_t pid() const { return pid_; }
  Transport transport() const { return transport_; }
  // Whether cpuid in the child faults (the host has CPUID faulting), so
  // that user code sees btvm's virtual CPU. Where it does not, user code
  // that ran here may have picked code by the host's CPUID (AVX) that
  // only the host CPU runs, not the bt engine.
  bool cpuid_faults() const { return control_->cpuid_faults == 1; }
  uint64_t stub_base() const { return stub_base_; }

  // Mapping changes, queued; applied in order by Flush (and by Run, before
  // the guest runs). A full queue flushes itself.
  Status Map(uint64_t addr, uint64_t len, int prot, uint64_t ram_offset);
  Status Unmap(uint64_t addr, uint64_t len);
  Status Protect(uint64_t addr, uint64_t len, int prot);
  Status Flush();

  // The host's user selectors (arch/x86/include/asm/segment.h), which the
  // child runs with: 64-bit code, compatibility-mode code, data and stack.
  static constexpr uint16_t kUserCs64 = 0x33, kUserCs32 = 0x23, kUserDs = 0x2b;

  // Whether user code with `cpu`'s segment registers runs in the child as
  // the guest sees it: the child's selectors are the host's, which user
  // code can read (mov from a segment register traps nowhere), so they
  // must be the guest's: CS 0x33 (64-bit), SS 0x2b, DS and ES null or
  // 0x2b, FS and GS null (their bases are the guest's) — Linux's own
  // layout. (The caller also checks that the guest's descriptors for
  // those selectors are what the host's are.) Other user code runs
  // translated.
  static bool RunsAsIs(const CpuState& cpu);

  // Runs guest user code from `cpu` (GPRs, RIP, RFLAGS, FS and GS bases,
  // the FXSAVE region of the XSAVE area; 64-bit code, or compatibility
  // mode if CS is not a long-mode segment) until it traps, and stores the
  // state it trapped with back into `cpu`. Of RFLAGS only what user code
  // can change comes back (arithmetic flags, DF, NT, AC, ID): the child
  // always runs with IF set and IOPL 0. For a kSyscall trap RIP is past
  // the instruction and RAX what the guest put there; RCX and R11 are what
  // the host's syscall instruction left in them (the return RIP and
  // RFLAGS), as the guest's would.
  // A signal sent to the child while it applied mapping changes comes back
  // as a kSignal trap before the guest runs (the seccomp transport: once
  // the guest is back in the child, before its first instruction).
  // An error means the child is gone or refused the state: the monitor's
  // problem, not the guest's.
  Result<Trap> Run(CpuState& cpu);
  // The seccomp transport: the stopped child stops spinning and sleeps
  // (the monitor goes on with another child); Run undoes it.
  void Park() { std::atomic_ref<uint32_t>(control_->spin_stop).store(1, std::memory_order_relaxed); }
  // The seccomp transport: whether the stopped handler sleeps on the futex
  // (it spins first); and how long it spins, in pause instructions (for
  // tests: the default is measured at start, about 160 µs).
  bool HandlerSleeps() const {
    return std::atomic_ref<uint32_t>(control_->child_sleeps).load(std::memory_order_seq_cst) != 0;
  }
  void set_spin_pauses(uint64_t pauses) { control_->spin_pauses = std::max<uint64_t>(pauses, 1); }

 private:
  UserChild(pid_t pid, Transport transport, uint64_t stub_base, StubControl* control)
      : pid_(pid), transport_(transport), stub_base_(stub_base), control_(control) {}
  Status Queue(const StubOp& op);
  Status CheckApplied(uint64_t count);
  // ptrace: runs the stub entry at `entry` (an offset in the stub page) to
  // its int3.
  Status RunStub(uint64_t entry);
  // ptrace: waits for the child's next stop; its status.
  Result<int> WaitStop();
  Result<Trap> RunPtrace(CpuState& cpu);
  // seccomp: tells the stopped handler `command`, waits until it stops again.
  Status Handover(uint32_t command);
  Result<Trap> RunSeccomp(CpuState& cpu);
  // seccomp: the signal frame the handler stopped on (its ucontext and FPU
  // state, at the monitor's addresses); an error if it lies outside the
  // shared stack.
  Status Frame(ucontext_t** uc, uint8_t** fx) const;
  // seccomp: the monitor's address of a child address in the shared part
  // of the stub area (control page and stack), or null if it is outside.
  uint8_t* Shared(uint64_t child_addr, uint64_t len) const;

  pid_t pid_ = -1;
  Transport transport_;
  uint64_t stub_base_ = 0;
  StubControl* control_ = nullptr;  // the monitor's mapping of the shared part
  int pending_signal_ = 0;          // ptrace: a request signal that arrived while the stub ran
};

}  // namespace btvm::direct
