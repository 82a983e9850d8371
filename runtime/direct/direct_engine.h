#pragma once
// The direct engine (`--engine direct`, DESIGN.md, Direct execution): guest
// kernel code runs translated (a BtEngine), guest 64-bit user code runs on
// the host CPU in a child process whose address space mirrors the guest's
// (UserChild). The child runs until the user code does anything the
// monitor must see: a syscall, a fault, a sensitive instruction, or a
// request from another thread (a timer interrupt due). A fault on a page
// the guest's tables allow is a shadow miss: the page is mapped into the
// child from the guest RAM memfd and the child resumes (a hidden fault).
// Everything else hands the one instruction at RIP to the bt engine, which
// runs it translated with all of its semantics — the syscall's entry into
// the kernel, the exact #PF with its error code and CR2, cpuid's virtual
// values — and the loop comes back here when the guest is in user mode
// again.
//
// The shadow follows TLB semantics (it is a TLB the host's MMU walks): a
// page is mapped only from a walk of the guest tables, writable only once
// the guest PTE is dirty (the first write faults and runs translated,
// which sets D) and never while the page holds translated code. Children
// are cached by CR3 (up to kMaxSpaces): a process switched away from and
// back keeps its shadow, which a TLB flush (a CR3 write among them) only
// marks stale, and which is validated against the guest's tables before
// it runs again; invlpg drops the page from every cached shadow.
//
// The adaptive policy (VMware's), per guest address space (by CR3): each
// trap costs the child a host round trip (two switches between host
// processes), so an address space starts translated and moves to the
// child once its user code traps sparsely: over two windows in a row of
// kWindowNs of its user code's time each (translation excluded), runs of
// kSparseNs or more on average between returns to user mode (a window
// with kDenseEntries returns in less time ends early, dense). In the
// child, an address space whose runs average under kDenseRunNs between
// stops (transport and hidden faults included) goes back to translation
// and is measured afresh (a new process often gets the CR3 of one that
// computed). Where the host lacks CPUID faulting, user code in the child
// sees the host's CPUID and may pick code (AVX) that the virtual CPU does
// not have, and a process forked from it inherits that code: the #UD that
// translated code would raise for such an instruction moves the address
// space back to the child instead, which runs it (or delivers the #UD if
// the host lacks it too), and keeps it there for a while (kMinPinNs,
// doubling with each such move of the address space up to kMaxPinNs). A
// stale shadow none of whose writable pages survive validation (or no
// page, if it had no writable one) is taken for a new process at a reused
// CR3: its address space starts translated again. After a window that
// was not sparse the address space rests for kMinRestWindows windows'
// worth of time, doubling with each such window in a row up to
// kMaxRestWindows: the inline syscalls and sysrets of its translated code
// do not read the TSC (about 18 ns a read on these hosts, twice a system
// call), so only stretches of user code that begin in the runtime (after
// an interrupt or a fault) are timed meanwhile, which is enough to see a
// process that has started computing. The decisions show in --stats.
//
// Not yet: the translated kernel inside the child (no process switch per
// trap), compatibility-mode user code (it runs translated).

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "devices/clock.h"
#include "runtime/bt_engine.h"
#include "runtime/direct/user_child.h"

namespace btvm {

class DirectEngine final : public Engine, private UserRunner, private MmuObserver {
 public:
  DirectEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio, const std::atomic<bool>& stop,
               Counters& counters, InterruptSource* irq = nullptr,
               size_t code_cache_bytes = CodeCache::kDefaultCapacity);
  ~DirectEngine() override;

  const char* name() const override { return "direct"; }
  // How the child's traps reach the monitor (user_child.h); before the
  // first run. The default is the faster, seccomp.
  void set_transport(direct::Transport t) { transport_ = t; }
  // Checks the child's mappings (/proc/PID/maps) against the guest's page
  // tables before each run that follows a TLB flush or invlpg: every
  // page the child maps must be one the tables map at that address to
  // that guest-physical page, for user mode, with no more rights (write
  // only once dirty, execute only without NX). A mismatch ends the run
  // with an error. For tests (--direct-check-maps): it costs a read of
  // /proc and a walk per mapped page.
  void set_check_maps(bool on) { check_maps_ = on; }
  // Where user code runs: by the adaptive policy (the default), or always
  // in the child when it can (for tests of the child).
  enum class Placement { kAdaptive, kChild };
  void set_placement(Placement p) { placement_ = p; }
  EngineExit Run(CpuState& cpu) override;
  void PrintStats(std::FILE* out) const override;
  void PrintSummary(std::FILE* out) const override;
  BtEngine& bt() { return bt_; }

  // What the child did, for --stats and tests.
  struct Stats {
    uint64_t runs = 0;           // times the child ran guest code
    uint64_t syscalls = 0;       // stops at a guest syscall
    uint64_t hidden_faults = 0;  // shadow misses filled
    uint64_t page_faults = 0;    // #PF delivered to the guest from a fault in the child
    uint64_t translated = 0;     // instructions handed to the bt engine
    uint64_t translated_runs = 0;  // times user code ran translated instead (flags, selectors)
    uint64_t adaptive_runs = 0;    // times it ran translated by the adaptive policy
    uint64_t to_child = 0;         // adaptive decisions: an address space to the child
    uint64_t to_translated = 0;    // and back to translation
    uint64_t ud_to_child = 0;      // address spaces moved to the child by a translated #UD
    uint64_t new_processes = 0;    // stale shadows wholly invalid: translated afresh
    uint64_t rests = 0;            // dense windows after which inline system calls went untimed
    uint64_t interrupted = 0;    // stops for an interrupt or a request
    uint64_t code_pages_dropped = 0;  // translations dropped for a write from the child
    uint64_t flushes = 0;        // TLB flushes that made the shadows stale
    uint64_t validations = 0;    // stale shadows checked against the tables before a run
    uint64_t pages_kept = 0;     // pages those validations kept mapped
    uint64_t pages_dropped = 0;  // and dropped (or took rights from)
    uint64_t space_switches = 0;  // runs in another address space's child than the last
    uint64_t spaces_reused = 0;  // a cached space's child given to another address space
    uint64_t evictions = 0;      // whole-shadow drops for too many mappings
    uint64_t maps_checks = 0;    // --direct-check-maps: checks of the child's maps
  };
  const Stats& stats() const { return stats_; }

 private:
  // The adaptive policy's state of one guest address space (by CR3).
  static constexpr uint64_t kWindowNs = 1'000'000, kSparseNs = 100'000, kDenseRunNs = 60'000,
                            kMinPinNs = 5'000'000, kMaxPinNs = 1'000'000'000,
                            kMinRestWindows = 16, kMaxRestWindows = 256, kDenseEntries = 100;
  struct Policy {
    bool in_child = false;
    uint64_t window_tsc = 0;      // translated: its user code's time in this window (TSC)
    uint64_t window_entries = 0;  // and its returns to user mode
    int sparse_windows = 0;       // windows in a row that were sparse
    uint64_t mean_run_ns = 2 * kDenseRunNs;  // in the child: moving mean of runs between stops
    uint64_t pinned_until_ns = 0;  // in the child at least until then (a translated #UD)
    uint64_t pin_ns = kMinPinNs;   // the next pin's length
    uint64_t rest_until_tsc = 0;   // translated: inline system calls untimed until then
    uint64_t rest_windows = kMinRestWindows;  // the next rest's length, in windows
  };

  // UserRunner
  Outcome RunUser(CpuState& cpu, uint8_t* exit_request, GuestException* exception,
                  std::string* error) override;
  void Interrupt() override;
  bool TakeInvalidOpcode(const CpuState& cpu) override;
  // MmuObserver
  void OnTlbFlush(bool keep_global) override;
  void OnTlbFlushPage(GuestVirt page) override;
  void OnCodeWrite(GuestPhys, uint64_t) override {}
  void OnCodePageMarked(GuestPhys page) override;

  // One guest address space's shadow: a child and the guest pages mapped
  // in it, page -> (guest-physical page, PROT_*).
  struct Shadow {
    uint64_t phys;
    int prot;
  };
  struct Space {
    uint64_t cr3 = ~0ull;
    std::unique_ptr<direct::UserChild> child;
    std::unordered_map<uint64_t, Shadow> pages;
    bool stale = false;     // a TLB flush since it last ran: Validate first
    uint64_t last_use = 0;  // for the choice of a space to reuse
  };
  // At most this many address spaces keep a child each.
  static constexpr size_t kMaxSpaces = 4;
  // The space of `cr3`: cached, or a new one (the least recently used
  // one's child, emptied, once there are kMaxSpaces); null with *error set
  // if a child cannot be made.
  Space* SpaceFor(uint64_t cr3, std::string* error);
  // After a TLB flush: keeps of `space`'s pages only what a fresh walk of
  // `cpu`'s tables (its CR3's) would map, with no more rights (an
  // accessed, user page, at the same guest-physical page; writable only
  // if dirty), as a TLB refilled from the tables would.
  // False if it looks like another process's now: none of its writable
  // pages survived (none at all, if it had no writable page).
  bool Validate(Space& space, const CpuState& cpu);

  // A shadow miss (a SIGSEGV for a missing mapping or missing rights):
  // maps the page if the guest's tables allow the access the fault
  // implies. False: run it translated.
  bool Fill(const CpuState& cpu, const direct::Trap& t, std::string* error);
  // Unmaps every guest page from the space's child.
  void DropShadow(Space& space);
  // set_check_maps's check; false with *error set on a mismatch.
  bool CheckMaps(const CpuState& cpu, std::string* error);
  // At most this many guest pages mapped in the child at once (a quarter
  // of vm.max_map_count's default: each may be a mapping of its own).
  static constexpr size_t kMaxShadowPages = 16384;
  // The access of the instruction at RIP that faulted at `addr` in the
  // child: a fetch if `addr` is among its bytes (or they cannot be read),
  // a write if a memory operand it writes covers `addr`, else a read.
  Access FaultAccess(const CpuState& cpu, uint64_t addr);
  // Whether user code with `cpu`'s state can run in the child at all:
  // its flags and selectors (cheap), and the guest's GDT too.
  static bool ChildCanRunFlags(const CpuState& cpu);
  bool ChildCanRun(const CpuState& cpu);
  // Whether the guest's GDT has the host's user descriptors at the host's
  // user selectors (user code in the child may load those selectors).
  bool HostLikeGdt(const CpuState& cpu);
  // Takes the segment registers the child stopped with into `cpu`.
  bool TakeSelectors(const direct::Trap& t, CpuState& cpu, std::string* error);
  // The adaptive policy, for translated user code about to run: true if
  // the address space moves to the child now.
  bool Promote(Policy& policy, uint64_t cr3);
  // The adaptive policy after a run in the child of `run_ns` (round trip
  // included).
  void Decide(Policy& policy, uint64_t run_ns);
  // RunUser's part in the child, with the child spawned.
  Outcome RunInChild(CpuState& cpu, uint8_t* exit_request, GuestException* exception,
                     std::string* error);
  // The RAM memfd offset of a guest-physical page, or false (not RAM).
  bool RamOffset(GuestPhys page, uint64_t* offset) const;

  GuestMemory& memory_;
  BtEngine bt_;
  direct::Transport transport_ = direct::Transport::kSeccomp;
  bool cpuid_faults_ = false;  // in the children (the host has CPUID faulting)
  bool check_maps_ = false;
  bool maps_changed_ = false;  // a flush or invlpg since the last check
  std::vector<std::unique_ptr<Space>> spaces_;
  Space* current_ = nullptr;  // the space whose child runs (ran last)
  uint64_t uses_ = 0;         // Space::last_use's clock
  std::atomic<pid_t> running_{0};  // the child's pid while it runs guest code
  std::unordered_map<uint64_t, Policy> policy_;
  Placement placement_ = Placement::kAdaptive;
  HostClock clock_;  // the policy's runs and pins
  // Promote's clock: the address space translated user code last ran in,
  // and the bt engine's user time (TSC cycles) and count of returns to
  // user mode then.
  uint64_t last_cr3_ = ~0ull, last_user_tsc_ = 0, last_entries_ = 0;
  // kWindowNs and kSparseNs in TSC cycles.
  uint64_t window_tsc_ = 0, sparse_tsc_ = 0;
  Policy* last_policy_ = nullptr;  // last_cr3_'s
  // The last fault filled (page, RIP): the same again runs translated.
  uint64_t last_fill_page_ = ~0ull, last_fill_rip_ = ~0ull;
  Stats stats_;
};

}  // namespace btvm
