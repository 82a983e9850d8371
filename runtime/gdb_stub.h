#pragma once
// A GDB remote stub (`btvm run --gdb tcp::PORT [--gdb-wait]`): gdb's remote
// serial protocol over TCP, as QEMU's -gdb gives it. What it offers:
// general, segment, flags, x87, SSE and segment-base registers (read and
// write) and the control registers and EFER (read), described to gdb by a
// target description (qXfer:features:read); memory by
// guest-virtual address (through the guest's page tables), software and
// hardware breakpoints (both kept by btvm: guest memory is not patched),
// single-step, continue, Ctrl-C, and the guest's exit status.
//
// The engine asks the stub at every block boundary while it is attached
// (BtEngine::Run): whether to stop (a breakpoint, a finished step, Ctrl-C),
// and when it stops, the stub talks to gdb until gdb lets the guest run
// again. While breakpoints are set the engine neither chains blocks nor
// fills the jump cache, so every block boundary passes through it, and it
// runs a block with a breakpoint inside one instruction at a time. Guest
// user code runs translated while gdb is attached (the direct engine's
// child would not stop).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "base/cpu_state.h"
#include "base/result.h"
#include "mmu/mmu.h"

namespace btvm {

class GdbStub {
 public:
  // "tcp::PORT" or "tcp:HOST:PORT" (PORT 0: any free port). Listens.
  static Result<std::unique_ptr<GdbStub>> Listen(const std::string& spec);
  ~GdbStub();

  uint16_t port() const { return port_; }
  // Waits for gdb to connect; the guest then starts stopped (--gdb-wait).
  Status Accept();

  // Engine side. `kick` makes the engine come back to its loop soon (for
  // Ctrl-C while the guest runs).
  void set_kick(std::function<void()> kick) { kick_ = std::move(kick); }
  bool attached() const { return fd_ >= 0; }
  bool listening() const { return listen_fd_ >= 0; }
  bool has_breakpoints() const { return !breakpoints_.empty(); }
  bool BreakpointIn(uint64_t lo, uint64_t hi) const;  // any in [lo, hi)
  // Whether the engine must stop before running the instruction at `rip`
  // (the step it was asked for is done, a breakpoint, Ctrl-C).
  bool ShouldStop(uint64_t rip);
  // The engine stopped: talks to gdb until it resumes; guest memory goes
  // through `mmu` (whose observers drop code gdb writes over). Returns how
  // to go on.
  enum class Resume { kContinue, kStep, kKill };
  Resume Stopped(CpuState& cpu, Mmu& mmu);
  // The guest ended (status as btvm exits with): gdb hears W.
  void Exited(int status);
  // Breakpoints changed since the engine last asked (it drops its links).
  bool TakeBreakpointsChanged() { return std::exchange(breakpoints_changed_, false); }

 private:
  GdbStub() = default;
  // A packet's payload, or nullopt when gdb went away; a lone Ctrl-C byte
  // comes back as "\x03".
  bool ReadPacket(std::string* payload);
  void Send(const std::string& payload);
  void Watch();  // while the guest runs: Ctrl-C
  void StopWatching();
  std::string Handle(const std::string& p, CpuState& cpu, Mmu& mmu, Resume* resume);

  int listen_fd_ = -1, fd_ = -1;
  uint16_t port_ = 0;
  std::string in_;  // bytes read but not yet a packet
  std::set<uint64_t> breakpoints_;
  bool breakpoints_changed_ = false;
  int step_ = 0;  // looks left before a step stops
  uint64_t polls_ = 0;  // ShouldStop calls while not attached
  bool stopped_before_ = false;
  uint64_t resume_rip_ = ~0ull;  // a breakpoint here does not stop the first time
  std::atomic<bool> interrupt_{false};
  std::atomic<bool> watching_{false};
  std::thread watcher_;
  std::function<void()> kick_;
};

}  // namespace btvm
