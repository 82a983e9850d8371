#include "runtime/direct/direct_engine.h"

#include <signal.h>
#include <x86intrin.h>

#include <sys/mman.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/format.h"
#include "runtime/descriptors.h"
#include "runtime/emulate.h"

namespace btvm {

namespace {

constexpr uint64_t kPage = 4096;
// The top of the host's 47-bit user range: guest pages at or above it
// cannot be mapped into the child (their accesses run translated).
constexpr uint64_t kHostUserTop = 0x7ffffffff000;
// The signal Interrupt sends the running child; it stops the child for
// the monitor (seccomp: the stub's handler takes it; ptrace: the tracer
// sees it and discards it).
constexpr int kInterruptSignal = SIGALRM;

// Whether the trap is a page fault whose error code the transport saw
// (seccomp: the signal frame's; ptrace does not see it).
bool PageFault(const direct::Trap& t) {
  return t.has_error_code && t.trapno == 14;
}

// The access a page fault's error code names (SDM Vol. 3A §4.7: bit 1
// write, bit 4 instruction fetch).
Access ErrorCodeAccess(uint64_t error_code) {
  return (error_code & 0x10) ? Access::kFetch : (error_code & 0x2) ? Access::kWrite : Access::kRead;
}

// Whether an access at `addr` by the instruction at `rip` can be its
// fetch: the instruction's bytes (up to 15) reach the page of `addr`.
bool MayBeFetch(uint64_t rip, uint64_t addr) {
  const uint64_t page = addr & ~(kPage - 1);
  return (rip & ~(kPage - 1)) == page || ((rip + 14) & ~(kPage - 1)) == page;
}

}  // namespace

DirectEngine::DirectEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio,
                           const std::atomic<bool>& stop, Counters& counters,
                           InterruptSource* irq, size_t code_cache_bytes)
    : memory_(memory),
      bt_(memory, pio, mmio, stop, counters, irq, code_cache_bytes),
      window_tsc_(kWindowNs * HostTscKhz() / 1'000'000),
      sparse_tsc_(kSparseNs * HostTscKhz() / 1'000'000) {
  bt_.mmu().AddObserver(this);
  bt_.set_user_runner(this);
}

DirectEngine::~DirectEngine() {
  bt_.set_user_runner(nullptr);
  bt_.mmu().RemoveObserver(this);
}

EngineExit DirectEngine::Run(CpuState& cpu) { return bt_.Run(cpu); }

void DirectEngine::PrintSummary(std::FILE* out) const {
  std::fprintf(out,
               "  user code in the child: %llu runs, ended by %llu syscalls, %llu interrupts or "
               "requests, %llu page faults delivered to the guest and %llu other instructions "
               "left to translation; %llu faults hidden (shadow pages filled); %llu address "
               "spaces moved to the child, %llu back\n",
               static_cast<unsigned long long>(stats_.runs),
               static_cast<unsigned long long>(stats_.syscalls),
               static_cast<unsigned long long>(stats_.interrupted),
               static_cast<unsigned long long>(stats_.page_faults),
               static_cast<unsigned long long>(stats_.translated > stats_.syscalls
                                                   ? stats_.translated - stats_.syscalls
                                                   : 0),
               static_cast<unsigned long long>(stats_.hidden_faults),
               static_cast<unsigned long long>(stats_.to_child),
               static_cast<unsigned long long>(stats_.to_translated));
}

void DirectEngine::PrintStats(std::FILE* out) const {
  bt_.PrintStats(out);
  const std::pair<const char*, uint64_t> rows[] = {
      {transport_ == direct::Transport::kPtrace ? "user code runs in a child (ptrace transport)"
                                                : "user code runs in a child (seccomp transport)",
       stats_.runs},
      {"  stopped at a syscall", stats_.syscalls},
      {"  stopped for an interrupt or request", stats_.interrupted},
      {"  hidden faults (shadow pages filled)", stats_.hidden_faults},
      {"  page faults delivered to the guest", stats_.page_faults},
      {"user instructions handed to the bt engine", stats_.translated},
      {"user code left translated (IF 0, IOPL, selectors)", stats_.translated_runs},
      {"cpuid faults in the children", cpuid_faults_ ? 1u : 0u},
      {"adaptive: user code left translated", stats_.adaptive_runs},
      {"adaptive: address spaces moved to the child", stats_.to_child},
      {"adaptive: address spaces moved back", stats_.to_translated},
      {"adaptive: moved to the child by a translated #UD", stats_.ud_to_child},
      {"adaptive: new processes at a reused CR3", stats_.new_processes},
      {"adaptive: dense windows, then untimed system calls", stats_.rests},
      {"code pages dropped for a write from the child", stats_.code_pages_dropped},
      {"children (address spaces with a shadow)", spaces_.size()},
      {"  runs in another child than the last", stats_.space_switches},
      {"  a child given to another address space", stats_.spaces_reused},
      {"TLB flushes that made the shadows stale", stats_.flushes},
      {"  stale shadows validated before a run", stats_.validations},
      {"  pages they kept", stats_.pages_kept},
      {"  pages they dropped or took rights from", stats_.pages_dropped},
      {"whole shadows dropped for too many mappings", stats_.evictions},
      {"child maps checked against the guest tables", stats_.maps_checks},
  };
  for (const auto& [what, n] : rows) {
    std::fprintf(out, "  %-48s %14llu\n", what, static_cast<unsigned long long>(n));
  }
}

UserRunner::Outcome DirectEngine::RunUser(CpuState& cpu, uint8_t* exit_request,
                                          GuestException* exception, std::string* error) {
  // The child runs with IF set and IOPL 0, which pushf shows and popf
  // cannot change (without a fault): user code whose guest flags differ
  // (interrupts off, IOPL above 0) runs translated, as does code whose
  // segment selectors the child cannot show as the guest's. Linux's user
  // mode is IF 1, IOPL 0, Linux's selectors.
  if (!ChildCanRunFlags(cpu)) {
    ++stats_.translated_runs;
    last_cr3_ = ~0ull;  // not the adaptive policy's time
    return Outcome::kTranslate;
  }
  const uint64_t cr3 = cpu.cr3 & ~uint64_t{0xfff};
  // The same translated user code again with no kernel entry since (an
  // exit of its own to the runtime): nothing for the policy to measure.
  if (cr3 == last_cr3_ && bt_.user_entries() == last_entries_ && !last_policy_->in_child) {
    ++stats_.adaptive_runs;
    return Outcome::kTranslate;
  }
  Policy& policy = cr3 == last_cr3_ ? *last_policy_ : policy_[cr3];
  if (placement_ == Placement::kAdaptive && !policy.in_child && !Promote(policy, cr3)) {
    ++stats_.adaptive_runs;
    return Outcome::kTranslate;
  }
  if (!HostLikeGdt(cpu)) {  // (three descriptor reads: only for runs in the child)
    ++stats_.translated_runs;
    last_cr3_ = ~0ull;
    return Outcome::kTranslate;
  }
  last_cr3_ = ~0ull;  // time in the child is no address space's translated time
  Space* space = SpaceFor(cr3, error);
  if (!space) return Outcome::kError;
  if (space != current_) {
    ++stats_.space_switches;
    last_fill_page_ = ~0ull;
    if (current_) current_->child->Park();
    current_ = space;
  }
  space->last_use = ++uses_;
  if (space->stale && !Validate(*space, cpu) && placement_ == Placement::kAdaptive) {
    // Nothing of the old shadow holds: most likely a new process that got
    // the CR3 of one that ran here. It starts translated, as new ones do.
    policy = Policy{};
    ++stats_.new_processes;
    ++stats_.adaptive_runs;
    return Outcome::kTranslate;
  }
  const uint64_t start = clock_.NowNs(), runs = stats_.runs;
  const Outcome outcome = RunInChild(cpu, exit_request, exception, error);
  // The run until the guest's kernel or the loop takes over (hidden faults
  // included: they are the child's cost too).
  if (placement_ == Placement::kAdaptive && stats_.runs != runs && outcome != Outcome::kError) {
    Decide(policy, clock_.NowNs() - start);
  }
  return outcome;
}

UserRunner::Outcome DirectEngine::RunInChild(CpuState& cpu, uint8_t* exit_request,
                                             GuestException* exception, std::string* error) {
  for (;;) {
    // Interrupt's protocol: running_ is set before exit_request is looked
    // at, and Kick raises exit_request before it looks at running_, so
    // either this sees the request or Kick sees the child running.
    running_.store(current_->child->pid(), std::memory_order_seq_cst);
    if (std::atomic_ref<uint8_t>(*exit_request).load(std::memory_order_seq_cst)) {
      running_.store(0);
      ++stats_.interrupted;
      return Outcome::kInterrupted;
    }
    if (check_maps_ && maps_changed_ && !CheckMaps(cpu, error)) {
      running_.store(0);
      return Outcome::kError;
    }
    const uint64_t run_start = bt_.timed() ? __rdtsc() : 0;
    Result<direct::Trap> t = current_->child->Run(cpu);
    if (run_start) bt_.time().child += __rdtsc() - run_start;
    running_.store(0);
    if (!t) {
      *error = t.error().message;
      return Outcome::kError;
    }
    ++stats_.runs;
    if (!TakeSelectors(*t, cpu, error)) return Outcome::kError;
    Tracer* const tracer = bt_.tracer();
    const bool traced = tracer && tracer->WantsFault(cpu.rip, 3);
    const auto trace = [&](const std::string& what) {
      if (traced) tracer->Trap(cpu.rip, what);
    };
    if (t->kind == direct::Trap::Kind::kSyscall) {
      // syscall, sysenter and int 0x80 are two bytes long: the bt engine
      // runs the instruction itself (RCX and R11, which the host's syscall
      // overwrote, are what the guest's sets them to anyway).
      ++stats_.syscalls;
      cpu.rip -= 2;
      trace("syscall: to the guest kernel, translated");
    } else if (t->signal == kInterruptSignal) {
      ++stats_.interrupted;
      trace("stopped for an interrupt or request");
      return Outcome::kInterrupted;
    } else if (t->signal == SIGSEGV && (t->code == SEGV_MAPERR || t->code == SEGV_ACCERR)) {
      if (Fill(cpu, *t, error)) {
        ++stats_.hidden_faults;
        trace("hidden fault at " + Hex(t->address) + ": shadow page filled, the guest sees nothing");
        continue;
      }
      if (!error->empty()) return Outcome::kError;
      // Not a shadow miss: the guest's tables refuse the access, and the
      // walk names the #PF (error code, CR2) without the instruction
      // running translated (the bt engine may not know it: the guest's
      // user code can see the host's CPUID where CPUID faulting is
      // missing). An access they allow (MMIO, a page the child cannot
      // map) runs translated.
      const Access access = PageFault(*t) ? ErrorCodeAccess(t->error_code)
                                          : FaultAccess(cpu, t->address);
      Mmu::Lookup l = bt_.mmu().Translate(cpu, GuestVirt(t->address), access, kMmuUser);
      if (l.kind == Mmu::Lookup::kFault) {
        ++stats_.page_faults;
        trace("page fault at " + Hex(t->address) + ": the guest's own, delivered (error code " +
              Hex(l.fault.error_code) + ")");
        *exception = l.fault;
        return Outcome::kException;
      }
    } else if (t->signal == SIGTRAP && t->code == TRAP_TRACE) {
      // popf set TF, and the instruction after it completed: #DB. (User
      // code that starts with TF set runs translated.)
      trace("single step: #DB delivered");
      return Outcome::kSingleStep;
    } else if (t->signal == SIGTRAP) {
      // int3 (CC) and int 3 (CD 03) trap after themselves: back to the
      // instruction, which the bt engine delivers as #BP.
      uint8_t one = 0, two[2] = {};
      GuestException fault;
      Mmu& mmu = bt_.mmu();
      if (mmu.ReadVirt(cpu, GuestVirt(cpu.rip - 1), &one, 1, kMmuUser, &fault) &&
          (one == 0xcc || one == 0xf1)) {
        cpu.rip -= 1;
      } else if (mmu.ReadVirt(cpu, GuestVirt(cpu.rip - 2), two, 2, kMmuUser, &fault) &&
                 two[0] == 0xcd && two[1] == 0x03) {
        cpu.rip -= 2;
      } else {
        *error = "direct engine: unexpected SIGTRAP (code " + std::to_string(t->code) +
                 ") at " + Hex(cpu.rip);
        return Outcome::kError;
      }
    } else if (t->signal == SIGILL) {
      // A #UD or an integer #DE of the host's is the guest's too (the
      // virtual CPU is a subset of the host's): delivered without the bt
      // engine, which may not know the instruction (AVX, chosen by the
      // host's CPUID where cpuid does not fault).
      trace("#UD delivered");
      *exception = GuestException::Ud();
      return Outcome::kException;
    } else if (t->signal == SIGFPE && (t->code == FPE_INTDIV || t->code == FPE_INTOVF)) {
      trace("#DE delivered");
      *exception = GuestException{kDE, false, 0, 0};
      return Outcome::kException;
    }
    // Anything else (#GP of a sensitive instruction, cpuid and rdtsc,
    // which fault in the child, x87 and SIMD exceptions, an access the
    // guest's tables allow but the child cannot make) stops with RIP at
    // the instruction, which the bt engine runs.
    ++stats_.translated;
    if (t->kind != direct::Trap::Kind::kSyscall) {
      trace("signal " + std::to_string(t->signal) + ": the instruction runs translated");
    }
    return Outcome::kTranslateOne;
  }
}

Access DirectEngine::FaultAccess(const CpuState& cpu, uint64_t addr) {
  uint8_t bytes[ZYDIS_MAX_INSTRUCTION_LENGTH];
  GuestException fault;
  // The bytes up to the end of RIP's page, then the rest if readable.
  size_t len = std::min<uint64_t>(sizeof bytes, kPage - (cpu.rip & (kPage - 1)));
  if (!bt_.mmu().ReadVirt(cpu, GuestVirt(cpu.rip), bytes, len, kMmuUser, &fault,
                          Access::kFetch)) {
    return Access::kFetch;
  }
  if (len < sizeof bytes &&
      bt_.mmu().ReadVirt(cpu, GuestVirt(cpu.rip + len), bytes + len, sizeof bytes - len,
                         kMmuUser, &fault, Access::kFetch)) {
    len = sizeof bytes;
  }
  // Zydis itself, not the translator's Decoder: the user code may use
  // what the host's CPUID offers and btvm's virtual CPU does not (AVX).
  ZydisDecoder zydis;
  ZydisDecoderInit(&zydis, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
  struct {
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  } d;
  if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&zydis, bytes, len, &d.insn, d.ops))) {
    return addr - cpu.rip < sizeof bytes ? Access::kFetch : Access::kRead;
  }
  if (addr - cpu.rip < d.insn.length) return Access::kFetch;
  // The memory operands whose bytes (give or take a push's 8) lie in the
  // page of `addr`; if none does (an address Zydis cannot work out), any.
  ZydisRegisterContext regs{};
  for (int g = 0; g < 16; ++g) regs.values[ZYDIS_REGISTER_RAX + g] = cpu.gpr[g];
  regs.values[ZYDIS_REGISTER_RIP] = cpu.rip;
  const uint64_t page = addr & ~(kPage - 1);
  bool matched = false, matched_write = false, any_write = false;
  for (unsigned i = 0; i < d.insn.operand_count; ++i) {
    const ZydisDecodedOperand& op = d.ops[i];
    if (op.type != ZYDIS_OPERAND_TYPE_MEMORY || op.mem.type != ZYDIS_MEMOP_TYPE_MEM) continue;
    // A read-modify-write faults as a write (its first access is one).
    const bool writes = op.actions & ZYDIS_OPERAND_ACTION_MASK_WRITE;
    any_write |= writes;
    ZyanU64 ea;
    if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddressEx(&d.insn, &op, cpu.rip, &regs, &ea))) continue;
    if (op.mem.segment == ZYDIS_REGISTER_FS) ea += cpu.seg[kFs].base;
    if (op.mem.segment == ZYDIS_REGISTER_GS) ea += cpu.seg[kGs].base;
    const uint64_t size = std::max<uint64_t>(op.size / 8, 1);
    for (uint64_t at : {ea - 8, ea, ea + size - 1}) {
      if ((at & ~(kPage - 1)) == page) {
        matched = true;
        matched_write |= writes;
      }
    }
  }
  return (matched ? matched_write : any_write) ? Access::kWrite : Access::kRead;
}

bool DirectEngine::HostLikeGdt(const CpuState& cpu) {
  // Flat, present, DPL 3: 64-bit code at 0x33, 32-bit code at 0x23, and
  // writable data at 0x2b, as the host's GDT has them.
  struct Want {
    uint16_t selector;
    bool (*ok)(const Descriptor&);
  };
  static constexpr Want kWant[] = {
      {direct::UserChild::kUserCs64, [](const Descriptor& d) { return d.Code64(); }},
      {direct::UserChild::kUserCs32,
       [](const Descriptor& d) { return d.Code() && !d.Long() && d.Db() && d.Limit() == ~0u; }},
      {direct::UserChild::kUserDs,
       [](const Descriptor& d) { return d.Writable() && d.Db() && d.Limit() == ~0u; }},
  };
  for (const Want& w : kWant) {
    Descriptor d;
    GuestException fault;
    if (!ReadDescriptor(bt_.mmu(), cpu, w.selector, false, &d, &fault) || !d.Present() ||
        d.Dpl() != 3 || d.Base() != 0 || !w.ok(d)) {
      return false;
    }
  }
  return true;
}

bool DirectEngine::TakeSelectors(const direct::Trap& t, CpuState& cpu, std::string* error) {
  // User code may have loaded the host's selectors (a far jump or return,
  // mov to DS): the guest's descriptors for them, which HostLikeGdt
  // checked match the host's.
  for (int seg = 0; seg < kSegCount; ++seg) {
    const uint16_t sel = t.selectors[seg];
    if (sel == cpu.seg[seg].selector) continue;
    if (IsNullSelector(sel)) {
      cpu.seg[seg] = SegmentReg{};
      cpu.seg[seg].selector = sel;
      continue;
    }
    Descriptor d;
    GuestException fault;
    if (!ReadDescriptor(bt_.mmu(), cpu, sel, false, &d, &fault)) {
      *error = "direct engine: the child loaded selector " + Hex(sel) +
               ", which the guest's GDT does not have";
      return false;
    }
    const uint64_t base = cpu.seg[seg].base;
    cpu.seg[seg] = d.ToSegment(sel);
    if (seg == kFs || seg == kGs) cpu.seg[seg].base = base;  // the child's, as it ran
  }
  return true;
}

bool DirectEngine::ChildCanRunFlags(const CpuState& cpu) {
  return (cpu.rflags & (rflags::kIF | rflags::kIOPL)) == rflags::kIF &&
         direct::UserChild::RunsAsIs(cpu);
}

bool DirectEngine::ChildCanRun(const CpuState& cpu) {
  return ChildCanRunFlags(cpu) && HostLikeGdt(cpu);
}

bool DirectEngine::TakeInvalidOpcode(const CpuState& cpu) {
  if (placement_ != Placement::kAdaptive || !cpu.LongMode() || !cpu.seg[kCs].Long() ||
      !ChildCanRun(cpu)) {
    return false;
  }
  Policy& policy = policy_[cpu.cr3 & ~uint64_t{0xfff}];
  if (policy.in_child) return false;  // it ran translated for another reason
  policy.in_child = true;
  policy.mean_run_ns = 2 * kDenseRunNs;
  // User code that needs the host's CPU (it saw the host's CPUID) stays
  // in the child for a while, however densely it traps.
  policy.pinned_until_ns = clock_.NowNs() + policy.pin_ns;
  policy.pin_ns = std::min(2 * policy.pin_ns, kMaxPinNs);
  ++stats_.ud_to_child;
  return true;
}

bool DirectEngine::Promote(Policy& policy, uint64_t cr3) {
  const uint64_t user_tsc = bt_.user_tsc(), entries = bt_.user_entries();
  // The user code that ran (and ended) since the last call was the last
  // address space's (every stretch of user code in another address space
  // begins with a call here); this call is a return to user mode of this
  // one.
  if (last_cr3_ != ~0ull) last_policy_->window_tsc += user_tsc - last_user_tsc_;
  policy.window_entries += cr3 == last_cr3_ ? entries - last_entries_ : 1;
  last_cr3_ = cr3;
  last_policy_ = &policy;  // (references into an unordered_map stay valid)
  last_user_tsc_ = user_tsc;
  last_entries_ = entries;
  // Resting, only the stretches the loop begins are timed (and counted):
  // enough to see a process that has started computing.
  const uint64_t now = __rdtsc();
  bt_.set_inline_user_timing(now >= policy.rest_until_tsc);
  // A window ends after kWindowNs of user time, or sooner, dense, after
  // kDenseEntries returns to user mode in less (it could not be sparse
  // before 100 times kSparseNs): a process of dense system calls then
  // starts resting within a timer tick or so, not after 20,000 of them.
  if (policy.window_tsc < window_tsc_ && policy.window_entries < kDenseEntries) return false;
  const bool sparse = policy.window_tsc > policy.window_entries * sparse_tsc_;
  policy.window_tsc = policy.window_entries = 0;
  policy.sparse_windows = sparse ? policy.sparse_windows + 1 : 0;
  if (sparse) {
    policy.rest_windows = kMinRestWindows;
  } else {
    policy.rest_until_tsc = now + policy.rest_windows * window_tsc_;
    policy.rest_windows = std::min(2 * policy.rest_windows, kMaxRestWindows);
    ++stats_.rests;
  }
  if (policy.sparse_windows < 2) return false;
  policy.sparse_windows = 0;
  policy.in_child = true;
  policy.mean_run_ns = 2 * kDenseRunNs;
  ++stats_.to_child;
  return true;
}

void DirectEngine::Decide(Policy& policy, uint64_t run_ns) {
  // A moving mean over about the last four runs.
  policy.mean_run_ns = (3 * policy.mean_run_ns + run_ns) / 4;
  if (policy.mean_run_ns < kDenseRunNs && clock_.NowNs() >= policy.pinned_until_ns) {
    policy.in_child = false;  // measured afresh, translated
    ++stats_.to_translated;
  }
}

void DirectEngine::Interrupt() {
  const pid_t pid = running_.load(std::memory_order_seq_cst);
  if (pid > 0) kill(pid, kInterruptSignal);
}

bool DirectEngine::RamOffset(GuestPhys page, uint64_t* offset) const {
  for (const RamRegion& r : memory_.regions()) {
    if (page.value >= r.base.value && page.value + kPage <= r.base.value + r.size) {
      *offset = r.fd_offset + (page.value - r.base.value);
      return true;
    }
  }
  return false;
}

bool DirectEngine::Fill(const CpuState& cpu, const direct::Trap& t, std::string* error) {
  const uint64_t addr = t.address;
  const uint64_t page = addr & ~(kPage - 1);
  Space& space = *current_;
  const uint64_t stub = space.child->stub_base();
  if (page + kPage > kHostUserTop ||
      (page < stub + direct::UserChild::kStubBytes && stub < page + kPage)) {
    return false;  // not mappable into the child: translated
  }
  // The access the fault stands for: its error code's, where the
  // transport saw it. Else: not mapped, a read (a write then faults again,
  // on a read-only page); mapped, a write, or a fetch from a page mapped
  // without execute.
  Access access = Access::kRead;
  auto it = space.pages.find(page);
  if (PageFault(t)) {
    access = ErrorCodeAccess(t.error_code);
  } else if (t.code == SEGV_ACCERR && it != space.pages.end()) {
    access = !(it->second.prot & PROT_EXEC) && MayBeFetch(cpu.rip, addr) ? Access::kFetch
                                                                           : Access::kWrite;
  }
  // The same fault again right after a fill: the guest's tables do not
  // allow what the instruction does (or something changed): translated.
  const uint64_t key = page | static_cast<uint64_t>(access);
  if (key == last_fill_page_ && cpu.rip == last_fill_rip_) {
    last_fill_page_ = ~0ull;
    return false;
  }
  Mmu& mmu = bt_.mmu();
  // A walk of the guest's tables, as the hardware's TLB fill: sets A (and
  // D for a write, which is about to happen).
  Mmu::Lookup l = mmu.Translate(cpu, GuestVirt(addr), access, kMmuUser);
  if (l.kind != Mmu::Lookup::kRam) return false;  // a guest fault, or MMIO
  Mmu::PageRights rights = mmu.TlbRights(GuestVirt(addr), kMmuUser);
  if (access == Access::kWrite && !rights.write && mmu.IsCodePage(l.phys)) {
    // A write to a page with translated code: the child's writes would go
    // unseen, so the translations go (as a store into them would drop
    // them), and the page is written as any other.
    ++stats_.code_pages_dropped;
    bt_.InvalidateCodePage(l.phys.PageBase());
    l = mmu.Translate(cpu, GuestVirt(addr), access, kMmuUser);
    if (l.kind != Mmu::Lookup::kRam) return false;
    rights = mmu.TlbRights(GuestVirt(addr), kMmuUser);
  }
  if ((access == Access::kWrite && !rights.write) || (access == Access::kFetch && !rights.fetch)) {
    return false;  // e.g. a write to a page with translated code: the bt engine sees it
  }
  uint64_t offset;
  const GuestPhys phys = l.phys.PageBase();
  if (!RamOffset(phys, &offset)) return false;
  if (space.pages.size() >= kMaxShadowPages) {
    // Scattered guest pages do not merge into fewer host mappings, and a
    // process may have at most vm.max_map_count (65530) of them: past a
    // quarter of that, the shadow starts afresh (as a TLB flush would).
    ++stats_.evictions;
    DropShadow(space);
  }
  const int prot = PROT_READ | (rights.write ? PROT_WRITE : 0) | (rights.fetch ? PROT_EXEC : 0);
  if (Status s = space.child->Map(page, kPage, prot, offset); !s) {
    *error = s.error().message;
    return false;
  }
  space.pages[page] = {phys.value, prot};
  last_fill_page_ = key;
  last_fill_rip_ = cpu.rip;
  return true;
}

namespace {

// What a walk of the guest's 4-level tables gives for a user access,
// without setting A or D (the check must not change what it checks).
struct PeekedPage {
  bool user = false;  // present at every level, user at every level
  uint64_t phys = 0;  // the page's guest-physical address
  bool write = false, dirty = false, exec = false;
  bool accessed = false;  // the leaf entry's A bit
};

PeekedPage PeekWalk(const GuestMemory& memory, const CpuState& cpu, uint64_t va) {
  constexpr uint64_t kFrame = 0x000ffffffffff000;
  PeekedPage p{true, 0, true, false, true, false};
  uint64_t table = cpu.cr3 & kFrame;
  for (int level = 4; level >= 1; --level) {
    const int shift = 12 + 9 * (level - 1);
    uint64_t entry;
    if (!memory.ReadValue(GuestPhys{table + ((va >> shift) & 511) * 8}, &entry) || !(entry & 1)) {
      return PeekedPage{};
    }
    p.user &= (entry >> 2) & 1;
    p.write &= (entry >> 1) & 1;
    if ((cpu.efer & efer::kNXE) && (entry >> 63)) p.exec = false;
    if (level == 1 || (level <= 3 && (entry & 0x80))) {
      const uint64_t size = uint64_t{1} << shift;
      p.phys = ((entry & kFrame & ~(size - 1)) + (va & (size - 1))) & ~uint64_t{0xfff};
      p.dirty = (entry >> 6) & 1;
      p.accessed = (entry >> 5) & 1;
      return p;
    }
    table = entry & kFrame;
  }
  return PeekedPage{};
}

}  // namespace

bool DirectEngine::CheckMaps(const CpuState& cpu, std::string* error) {
  maps_changed_ = false;
  ++stats_.maps_checks;
  const direct::UserChild& child = *current_->child;
  if (Status s = current_->child->Flush(); !s) {
    *error = s.error().message;
    return false;
  }
  std::ifstream maps("/proc/" + std::to_string(child.pid()) + "/maps");
  if (!maps) {
    *error = "direct engine: cannot read the child's /proc/PID/maps";
    return false;
  }
  const uint64_t stub = child.stub_base();
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset_text, dev, inode, name;
    in >> range >> perms >> offset_text >> dev >> inode >> name;
    const uint64_t start = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    const uint64_t end = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    if (start >= stub && end <= stub + direct::UserChild::kStubBytes) continue;
    if (name == "[vsyscall]") continue;
    if (name != "/memfd:btvm-guest-ram") {
      *error = "direct engine: the child maps " + line + ", which is not guest RAM";
      return false;
    }
    const uint64_t offset = std::stoull(offset_text, nullptr, 16);
    for (uint64_t va = start; va < end; va += kPage) {
      // The guest-physical page the child's mapping shows at va.
      const uint64_t at = offset + (va - start);
      uint64_t phys = ~0ull;
      for (const RamRegion& r : memory_.regions()) {
        if (at >= r.fd_offset && at < r.fd_offset + r.size) phys = r.base.value + (at - r.fd_offset);
      }
      const PeekedPage p = PeekWalk(memory_, cpu, va);
      const char* wrong = !p.user                       ? "not a user page in the guest's tables"
                          : p.phys != phys              ? "another physical page in the guest's tables"
                          : perms[1] == 'w' && !p.write ? "read-only in the guest's tables"
                          : perms[1] == 'w' && !p.dirty ? "writable but not dirty in the guest's tables"
                          : perms[2] == 'x' && !p.exec  ? "no-execute in the guest's tables"
                                                        : nullptr;
      if (wrong) {
        *error = "direct engine: the child maps " + Hex(va) + " (" + perms + ", guest-physical " +
                 Hex(phys) + "), " + wrong + " (CR3 " + Hex(cpu.cr3) + ")";
        return false;
      }
    }
  }
  return true;
}

void DirectEngine::OnTlbFlush(bool /*keep_global*/) {
  // Every shadow is checked against the tables before it runs again
  // (global user pages are rare: they are checked too).
  bool any = false;
  for (auto& space : spaces_) {
    if (!space->pages.empty() && !space->stale) {
      space->stale = true;
      any = true;
    }
  }
  if (any) {
    ++stats_.flushes;
    maps_changed_ = true;
  }
}

void DirectEngine::DropShadow(Space& space) {
  last_fill_page_ = ~0ull;
  maps_changed_ = true;
  const uint64_t stub = space.child->stub_base();
  if (space.pages.size() > 16) {
    // Two operations for the whole user range around the stub.
    (void)space.child->Unmap(0, stub);
    const uint64_t above = stub + direct::UserChild::kStubBytes;
    if (above < kHostUserTop) (void)space.child->Unmap(above, kHostUserTop - above);
  } else {
    for (const auto& [page, s] : space.pages) (void)space.child->Unmap(page, kPage);
  }
  space.pages.clear();
  space.stale = false;
}

DirectEngine::Space* DirectEngine::SpaceFor(uint64_t cr3, std::string* error) {
  Space* lru = nullptr;
  for (auto& space : spaces_) {
    if (space->cr3 == cr3) return space.get();
    if (!lru || space->last_use < lru->last_use) lru = space.get();
  }
  if (spaces_.size() < kMaxSpaces) {
    Result<std::unique_ptr<direct::UserChild>> c =
        direct::UserChild::Spawn(memory_.fd(), transport_);
    if (!c) {
      *error = c.error().message;
      return nullptr;
    }
    auto space = std::make_unique<Space>();
    space->child = std::move(*c);
    cpuid_faults_ = space->child->cpuid_faults();
    spaces_.push_back(std::move(space));
    lru = spaces_.back().get();
  } else {
    ++stats_.spaces_reused;
    DropShadow(*lru);
  }
  lru->cr3 = cr3;
  lru->stale = false;
  return lru;
}

bool DirectEngine::Validate(Space& space, const CpuState& cpu) {
  ++stats_.validations;
  space.stale = false;
  // A process's writable pages are its own (private): when none of them
  // survives, nor anything else, the address space is a new one (pages of
  // a shared binary's text may still map the same frames).
  bool any_kept = space.pages.empty(), had_writable = false, writable_kept = false;
  for (auto it = space.pages.begin(); it != space.pages.end();) {
    const uint64_t va = it->first;
    Shadow& s = it->second;
    const PeekedPage p = PeekWalk(memory_, cpu, va);
    int prot = 0;
    if (p.user && p.accessed && p.phys == s.phys) {
      prot = PROT_READ | (p.write && p.dirty ? s.prot & PROT_WRITE : 0) |
             (p.exec ? s.prot & PROT_EXEC : 0);
    }
    any_kept |= prot != 0;
    had_writable |= (s.prot & PROT_WRITE) != 0;
    writable_kept |= (s.prot & PROT_WRITE) && prot != 0;
    if (prot == s.prot) {
      ++stats_.pages_kept;
      ++it;
      continue;
    }
    ++stats_.pages_dropped;
    if (prot == 0) {
      (void)space.child->Unmap(va, kPage);
      it = space.pages.erase(it);
    } else {
      (void)space.child->Protect(va, kPage, prot);
      s.prot = prot;
      ++it;
    }
  }
  return had_writable ? writable_kept : any_kept;
}

void DirectEngine::OnTlbFlushPage(GuestVirt page) {
  // invlpg: the current address space's, but which one that is the
  // observer does not hear; every cached space drops the page.
  for (auto& space : spaces_) {
    auto it = space->pages.find(page.value);
    if (it == space->pages.end()) continue;
    (void)space->child->Unmap(page.value, kPage);
    space->pages.erase(it);
    maps_changed_ = true;
  }
  last_fill_page_ = ~0ull;
}

void DirectEngine::OnCodePageMarked(GuestPhys page) {
  // The children's writes to the page must reach the bt engine, which
  // invalidates the code they hit.
  for (auto& space : spaces_) {
    for (auto& [va, s] : space->pages) {
      if (s.phys == page.value && (s.prot & PROT_WRITE)) {
        s.prot &= ~PROT_WRITE;
        (void)space->child->Protect(va, kPage, s.prot);
      }
    }
  }
}

}  // namespace btvm
