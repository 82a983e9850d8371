#pragma once
// A direct-execution child (DESIGN.md, Direct execution): a host process
// that holds one guest address space, guest RAM pages mapped from the RAM
// memfd at their guest-virtual addresses, and runs guest user code on the
// host CPU until it traps. Besides the guest's mappings it keeps only the
// stub (stub.S: two pages, code and a control page shared with the
// monitor) and [vsyscall], which lies above the user range.
//
// This is the ptrace transport, the simple one: the monitor traces the
// child, runs it with PTRACE_SYSEMU, so a guest `syscall` stops it at the
// host's syscall entry without the host kernel running it, and a fault
// stops it with the signal it raised, which the monitor then discards.
// Mapping changes are batched in the control page and applied by the stub
// in one stop.

#include <sys/types.h>

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
  uint64_t reserved[3];
  StubOp ops[(4096 - 64) / sizeof(StubOp)];
};
static_assert(offsetof(StubControl, count) == 0 && offsetof(StubControl, error) == 8 &&
              offsetof(StubControl, error_index) == 16 && offsetof(StubControl, ram_fd) == 24 &&
              offsetof(StubControl, ops) == 64 && sizeof(StubControl) == 4096);

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
  // The child's segment selectors when it stopped (SegIndex order): user
  // code may have changed them (a far jump, mov to DS), to the host's
  // selectors, whose descriptors RunsAsIs checked the guest's match.
  uint16_t selectors[kSegCount] = {};
};

class UserChild {
 public:
  // The stub area: two pages at `stub_base`, which guest mappings must
  // leave alone. Below the top of the 47-bit user range.
  static constexpr uint64_t kDefaultStubBase = 0x7ffffffe0000;
  static constexpr uint64_t kStubBytes = 2 * 4096;

  // Forks a child, strips it to the stub and waits for it. `ram_fd`: the
  // guest RAM memfd, which kMap operations map from.
  static Result<std::unique_ptr<UserChild>> Spawn(int ram_fd,
                                                  uint64_t stub_base = kDefaultStubBase);
  ~UserChild();  // kills and reaps the child
  UserChild(const UserChild&) = delete;
  UserChild& operator=(const UserChild&) = delete;

  pid_t pid() const { return pid_; }
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
  // as a kSignal trap before the guest runs.
  // An error means the child is gone or refused the state: the monitor's
  // problem, not the guest's.
  Result<Trap> Run(CpuState& cpu);

 private:
  UserChild(pid_t pid, uint64_t stub_base, StubControl* control)
      : pid_(pid), stub_base_(stub_base), control_(control) {}
  Status Queue(const StubOp& op);
  // Runs the stub entry at `entry` (an offset in the stub page) to its int3.
  Status RunStub(uint64_t entry);
  // Waits for the child's next stop; its status.
  Result<int> WaitStop();

  pid_t pid_ = -1;
  uint64_t stub_base_ = 0;
  StubControl* control_ = nullptr;  // the monitor's mapping of the control page
  int pending_signal_ = 0;          // a request signal that arrived while the stub ran
};

}  // namespace btvm::direct
