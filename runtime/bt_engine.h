#pragma once
// The bt engine (`--engine bt`): every guest instruction, kernel and user,
// runs as translated code inside the monitor process (DESIGN.md, The three
// engines). Its loop: take a pending interrupt if the guest allows it, find
// or translate the block at RIP, run it (blocks chain to each other and
// return here only when they must), and handle what it returned for — a
// sensitive instruction to emulate, a guest exception to deliver, a store
// into translated code, or a request from another thread.

#include <array>
#include <atomic>
#include <memory>

#include "base/counters.h"
#include "devices/bus.h"
#include "mmu/mmu.h"
#include "runtime/deadline_timer.h"
#include "runtime/emulate.h"
#include "runtime/gdb_stub.h"
#include "runtime/engine.h"
#include "runtime/interrupts.h"
#include "runtime/trace.h"
#include "translator/bt_context.h"
#include "translator/code_cache.h"

namespace btvm {

// Runs guest user code outside translation (the direct engine's child,
// runtime/direct/): the bt engine's loop hands it the vCPU whenever the
// guest is about to run 64-bit user code, and takes it back when that code
// does something the loop must see to.
class UserRunner {
 public:
  enum class Outcome {
    // Run the instruction at RIP translated, alone: the user code reached
    // one the runner leaves to the bt engine (a syscall, a faulting or
    // sensitive instruction), whose semantics, faults included, are then
    // the bt engine's.
    kTranslateOne,
    // Run the user code translated, as the bt engine does (this time: the
    // loop asks again at its next exit), because the runner cannot run it
    // as the guest would see it.
    kTranslate,
    kInterrupted,  // stopped because exit_request was raised
    kSingleStep,   // the user code set TF (popf) and one instruction later trapped: #DB
    kException,    // a guest exception at RIP (*exception): deliver it
    kError,        // the runner failed (message in *error): a monitor problem
  };
  virtual ~UserRunner() = default;
  // Runs from `cpu` (CPL 3, 64-bit, paging) until one of the outcomes;
  // `cpu` holds the state it stopped in. Returns kInterrupted without
  // running if *exit_request is set once the runner can be interrupted.
  virtual Outcome RunUser(CpuState& cpu, uint8_t* exit_request, GuestException* exception,
                          std::string* error) = 0;
  // Thread-safe: makes a running RunUser return soon (BtEngine::Kick
  // raises exit_request first).
  virtual void Interrupt() = 0;
  // Translated user code at RIP is about to raise #UD (an instruction the
  // virtual CPU does not have): true if the runner takes that user code
  // over, so the loop hands it the vCPU again instead of delivering the
  // #UD (the host CPU may know the instruction; if not, the runner
  // delivers the #UD itself).
  virtual bool TakeInvalidOpcode(const CpuState& cpu) = 0;
};

class BtEngine final : public Engine {
 public:
  // `stop` is raised by the machine (a device asked to stop); the engine
  // checks it after every exit to the runtime. `irq` (may be null: no
  // interrupt controller) is asked about external interrupts.
  BtEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio, const std::atomic<bool>& stop,
           Counters& counters, InterruptSource* irq = nullptr,
           size_t code_cache_bytes = CodeCache::kDefaultCapacity);
  ~BtEngine() override;

  const char* name() const override { return "bt"; }
  EngineExit Run(CpuState& cpu) override;
  void PrintStats(std::FILE* out) const override;
  // Count inline soft-TLB hits (a little slower; for --stats).
  // (--stats: also times where the run goes, Counters::Time.)
  void set_count_tlb_hits(bool on) {
    cache_.set_count_tlb_hits(on);
    ctx_->timed = on;
  }
  // Device-held CPU state (APIC MSRs, CR8): runtime/emulate.h.
  void set_platform(CpuPlatform* platform) { emulator_.set_platform(platform); }
  // Traces blocks as they are translated (runtime/trace.h); null: none.
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  // A debugger attached through the GDB stub (runtime/gdb_stub.h); null:
  // none.
  void set_gdb(GdbStub* gdb);
  Tracer* tracer() const { return tracer_; }
  // --stats' time split (Counters::Time): on, and where it adds up.
  bool timed() const { return ctx_->timed; }
  Counters::Time& time() { return counters_.time; }

  // Thread-safe: makes translated code return to the loop soon.
  void Kick();

  const CodeCache& cache() const { return cache_; }
  Mmu& mmu() { return mmu_; }
  // Drops the translations of code on a guest-physical page (which then
  // is no longer write-tracked). Not while translated code runs.
  void InvalidateCodePage(GuestPhys page) { cache_.InvalidateRange(page.value, kPageSize); }
  // Hands 64-bit user code to `runner` (may be null: translate it too).
  // Not while Run runs.
  void set_user_runner(UserRunner* runner) {
    user_ = runner;
    ctx_->count_user_time = runner != nullptr;
    ctx_->user_chain_any = runner == nullptr;
    ctx_->user_chain_cr3 = kNoChainCr3;
  }
  // With a user runner: how many times the guest has gone from kernel to
  // user mode (CPL 0..2 to 3), and the time it has spent in user mode in
  // stretches that have ended (a stretch still running, or one that an
  // untimed syscall ended, is not in it: the sum never goes back), in host
  // TSC cycles (rdtsc: cheaper than a clock read on every change of CPL):
  // what the direct engine's adaptive policy measures user code's traps
  // by. Counted by the loop and by inline syscalls and sysrets
  // (BtContext::user_entries).
  uint64_t user_entries() const { return ctx_->user_entries; }
  uint64_t user_tsc() const { return ctx_->user_tsc; }
  // Whether inline syscalls and sysrets time user mode (with a user
  // runner; BtContext::count_user_time). Untimed, a syscall ends the
  // current stretch and a sysret begins none, so only stretches that the
  // loop begins are timed.
  void set_inline_user_timing(bool on) { ctx_->count_user_time = on && user_ != nullptr; }

 private:
  // Returns false with *exit set when the run must end.
  // `from_runner`: the user runner's exception, not translated code's.
  bool Deliver(const GuestException& e, EventSource source, EngineExit* exit,
               uint64_t insn_rip = 0, bool from_runner = false);
  // Takes a pending external interrupt if RFLAGS.IF and no shadow allow it.
  bool TakeInterrupt(EngineExit* exit);
  // hlt: waits for an interrupt; false with *exit set if none can come.
  bool Halt(EngineExit* exit);
  // Finds or translates the block at the current RIP; false with *exit set
  // when the run must end, or with *block null after delivering a fault or
  // emulating the instruction there.
  // `plain_stack`: the block without a stack window (its window probe
  // missed; emit_stack.cpp).
  bool FetchBlock(bool single, bool plain_stack, Block** block, EngineExit* exit);
  // Emulates the sensitive instruction at RIP (decoded once, kept in the
  // code cache as a code-less block).
  bool EmulateDecoded(const DecodedInsn& d, EngineExit* exit);
  // Reads guest code at rip; returns bytes read, fewer with *fault set.
  size_t FetchCode(uint64_t rip, uint8_t* buf, size_t len, GuestException* fault);
  void ArmTimer();

  std::unique_ptr<BtContext> ctx_;
  Mmu mmu_;
  PioBus& pio_;
  const std::atomic<bool>& stop_;
  Counters& counters_;
  InterruptSource* irq_;
  std::atomic<UserRunner*> user_{nullptr};
  Tracer* tracer_ = nullptr;
  GdbStub* gdb_ = nullptr;
  // --trace exits: the last exit, printed with its cost when translated
  // code runs again.
  struct {
    bool pending = false;
    BlockExit reason = BlockExit::kNext;
    uint64_t rip = 0;
    unsigned cpl = 0;
    uint64_t tsc = 0;
  } trace_exit_;
  void TraceExit();
  // What --trace blocks would have shown of `b`, from its guest bytes as
  // they are now; false if they no longer decode to what it translated.
  bool NotesOf(const Block& b, BlockNotes* notes) const;
  CodeCache cache_;
  Emulator emulator_;
  Decoder decoder_;

  std::array<uint64_t, ZYDIS_MNEMONIC_MAX_VALUE + 1> emulated_{};  // by mnemonic
  bool check_irq_ = true;     // something may have changed INTR or IF
  bool irq_shadow_ = false;   // sti / mov ss: no interrupt before the next instruction

  // Sets exit_request when the next timer event is due (with an interrupt
  // source only). Last: it goes first, before what Kick touches.
  std::unique_ptr<DeadlineTimer> timer_;
};

}  // namespace btvm
