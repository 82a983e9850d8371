#include "runtime/bt_engine.h"

#include <x86intrin.h>

#include <algorithm>
#include <cstdio>

#include "devices/clock.h"
#include "translator/block_builder.h"
#include "translator/host_fault.h"

namespace btvm {

namespace {
constexpr uint64_t kHostFlags = rflags::kArith | rflags::kDF;
constexpr uint64_t kDr6SingleStep = 1ull << 14;  // DR6.BS

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

BtEngine::BtEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio,
                   const std::atomic<bool>& stop, Counters& counters, InterruptSource* irq,
                   size_t code_cache_bytes)
    : ctx_(std::make_unique<BtContext>()),
      mmu_(memory, mmio, ctx_->tlb),
      pio_(pio),
      stop_(stop),
      counters_(counters),
      irq_(irq),
      cache_(ctx_.get(), &mmu_, code_cache_bytes),
      emulator_(mmu_, pio, counters) {
  ctx_->mmu = &mmu_;
  ctx_->cache = &cache_;
  ctx_->counters = &counters_;
  InstallHostFaultHandlers();
  if (irq_) timer_ = std::make_unique<DeadlineTimer>([this] { Kick(); });
}

BtEngine::~BtEngine() = default;

void BtEngine::Kick() {
  std::atomic_ref<uint8_t>(ctx_->exit_request).store(1, std::memory_order_seq_cst);
  if (UserRunner* u = user_.load()) u->Interrupt();
}

void BtEngine::set_gdb(GdbStub* gdb) {
  gdb_ = gdb;
  if (gdb_) gdb_->set_kick([this] { Kick(); });
}

void BtEngine::ArmTimer() { timer_->Arm(irq_->NextDeadlineNs()); }

void BtEngine::TraceExit() {
  static const char* const kWhy[] = {
      "next block: a lookup, or a direct exit linked now",  // kNext
      "guest exception",                                    // kException
      "store into translated code",                         // kSmc
      "sti with an interrupt waiting",                      // kSti
      "an instruction the runtime runs alone",              // kAlone
      "sysret with an interrupt waiting",                   // kIrqWindow
  };
  const auto reason = static_cast<size_t>(trace_exit_.reason);
  const uint64_t ns = (__rdtsc() - trace_exit_.tsc) * 1'000'000 / HostTscKhz();
  tracer_->Exit(trace_exit_.rip, trace_exit_.cpl, reason < std::size(kWhy) ? kWhy[reason] : "?",
                ns);
  trace_exit_.pending = false;
}

bool BtEngine::Deliver(const GuestException& e, EventSource source, EngineExit* exit,
                       uint64_t insn_rip, bool from_runner) {
  if (e.vector == kUD && source == EventSource::kException && !from_runner) {
    if (UserRunner* u = user_.load(std::memory_order_relaxed);
        u && ctx_->cpu.Cpl() == 3 && u->TakeInvalidOpcode(ctx_->cpu)) {
      return true;
    }
  }
  if (tracer_ && tracer_->WantsFault(ctx_->cpu.rip, ctx_->cpu.Cpl())) {
    const char* what = source == EventSource::kExternal   ? "interrupt"
                       : source == EventSource::kSoftware ? "software interrupt"
                                                          : "exception";
    tracer_->Event(ctx_->cpu.rip, ctx_->cpu.Cpl(), what, e.vector, e.has_error_code,
                   e.error_code, e.vector == kPF ? e.cr2 : 0);
  }
  ++counters_.exceptions_delivered;
  ++counters_.vectors[e.vector];
  if (e.vector == kPF) ++counters_.page_faults;
  check_irq_ = true;  // delivery changes IF
  irq_shadow_ = false;  // a delivered event ends a shadow
  ctx_->cpu.pending.interrupt_shadow = 0;
  if (DeliverEvent(mmu_, ctx_->cpu, e, source, insn_rip) == DeliveryResult::kTripleFault) {
    exit->kind = EngineExit::kTripleFault;
    exit->message = "triple fault (vector " + std::to_string(e.vector) + " at rip " +
                    Hex(ctx_->cpu.rip) + ")";
    return false;
  }
  return true;
}

bool BtEngine::TakeInterrupt(EngineExit* exit) {
  check_irq_ = false;
  const CpuState& c = ctx_->cpu;
  // Asked even with IF = 0: it brings the timers (and what the guest reads
  // of the PIC) up to now.
  if (!irq_->InterruptPending()) {
    ctx_->irq_waiting = 0;
    ArmTimer();
    return true;
  }
  // IF = 0: held back until the guest sets IF (popf and iret through the
  // runtime, which looks again; an inline sti returns here when it sees
  // irq_waiting).
  if (!(c.rflags & rflags::kIF) || irq_shadow_) {
    ctx_->irq_waiting = 1;
    return true;
  }
  ctx_->irq_waiting = 0;
  uint8_t vector = irq_->AcknowledgeInterrupt();
  ++counters_.interrupts_delivered;
  if (!Deliver(GuestException{vector, false, 0, 0}, EventSource::kExternal, exit)) return false;
  check_irq_ = true;  // another may be waiting behind it
  return true;
}

bool BtEngine::Halt(EngineExit* exit) {
  const uint64_t start = ctx_->timed ? __rdtsc() : 0;
  const bool go_on = HaltUntilInterrupt(ctx_->cpu.rflags & rflags::kIF, irq_, stop_, exit);
  if (start) counters_.time.idle += __rdtsc() - start;
  if (!go_on) return false;
  ++counters_.exits_hlt;
  check_irq_ = true;
  return true;
}

size_t BtEngine::FetchCode(uint64_t rip, uint8_t* buf, size_t len, GuestException* fault) {
  const CpuState& c = ctx_->cpu;
  size_t n = 0;
  // Byte-exact up to the first page that cannot be fetched.
  while (n < len) {
    size_t chunk = std::min<size_t>(len - n, kPageSize - ((rip + n) & (kPageSize - 1)));
    if (!mmu_.ReadVirt(c, GuestVirt(rip + n), buf + n, chunk, MmuIndexFor(c), fault,
                       Access::kFetch)) {
      break;
    }
    n += chunk;
  }
  return n;
}

namespace {
// Emulated instructions that reach no device and cannot raise IF's
// effect on their own (an IF that goes from 0 to 1 is checked apart):
// after them the loop need not ask the interrupt controller again, which
// reads the clock and every timer. Linux's system calls take three of
// them (syscall, sysret and, on CPUs with MDS, verw).
bool LeavesInterruptsAlone(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_SYSCALL: case ZYDIS_MNEMONIC_SYSRET: case ZYDIS_MNEMONIC_SYSENTER:
    case ZYDIS_MNEMONIC_SYSEXIT: case ZYDIS_MNEMONIC_IRETQ: case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRET: case ZYDIS_MNEMONIC_POPFQ: case ZYDIS_MNEMONIC_POPF:
    case ZYDIS_MNEMONIC_POPFD: case ZYDIS_MNEMONIC_CLI: case ZYDIS_MNEMONIC_PUSHFQ:
    case ZYDIS_MNEMONIC_PUSHF: case ZYDIS_MNEMONIC_PUSHFD: case ZYDIS_MNEMONIC_SWAPGS:
    case ZYDIS_MNEMONIC_VERW: case ZYDIS_MNEMONIC_VERR: case ZYDIS_MNEMONIC_LAR:
    case ZYDIS_MNEMONIC_LSL: case ZYDIS_MNEMONIC_CPUID: case ZYDIS_MNEMONIC_RDTSC:
    case ZYDIS_MNEMONIC_RDTSCP: case ZYDIS_MNEMONIC_RDPID: case ZYDIS_MNEMONIC_RDFSBASE:
    case ZYDIS_MNEMONIC_RDGSBASE: case ZYDIS_MNEMONIC_WRFSBASE: case ZYDIS_MNEMONIC_WRGSBASE:
    case ZYDIS_MNEMONIC_INVLPG: case ZYDIS_MNEMONIC_FXSAVE: case ZYDIS_MNEMONIC_FXSAVE64:
    case ZYDIS_MNEMONIC_FXRSTOR: case ZYDIS_MNEMONIC_FXRSTOR64: case ZYDIS_MNEMONIC_XSAVE:
    case ZYDIS_MNEMONIC_XSAVE64: case ZYDIS_MNEMONIC_XRSTOR: case ZYDIS_MNEMONIC_XRSTOR64:
    case ZYDIS_MNEMONIC_SGDT: case ZYDIS_MNEMONIC_SIDT: case ZYDIS_MNEMONIC_SLDT:
    case ZYDIS_MNEMONIC_STR: case ZYDIS_MNEMONIC_SMSW: case ZYDIS_MNEMONIC_CLTS:
      return true;
    default:
      return false;  // I/O, MSRs (the APIC's), CR8, hlt, string copies that may reach MMIO...
  }
}
}  // namespace

bool BtEngine::EmulateDecoded(const DecodedInsn& d, EngineExit* exit) {
  CpuState& c = ctx_->cpu;
  bool tf = c.rflags & rflags::kTF;
  const bool interrupts_were_off = !(c.rflags & rflags::kIF);
  ++emulated_[d.insn.mnemonic];
  EmulateOutcome o = emulator_.Emulate(c, d);
  if (!LeavesInterruptsAlone(d.insn.mnemonic) ||
      (interrupts_were_off && (c.rflags & rflags::kIF))) {
    check_irq_ = true;
  }
  switch (o.kind) {
    case EmulateOutcome::kDone:
      if (o.shadow != InterruptShadow::kNone) irq_shadow_ = true;
      // syscall and sysret trap by the TF they leave, at once: a kernel
      // whose FMASK clears TF is not stepped into, and TF set by sysret
      // traps before the first user instruction (as QEMU does; Linux's
      // entry code counts on it).
      if (d.insn.mnemonic == ZYDIS_MNEMONIC_SYSCALL || d.insn.mnemonic == ZYDIS_MNEMONIC_SYSRET) {
        tf = c.rflags & rflags::kTF;
      }
      if (tf) {
        c.dr[6] |= kDr6SingleStep;
        return Deliver(GuestException{kDB, false, 0, 0}, EventSource::kException, exit);
      }
      return true;
    case EmulateOutcome::kFault:
      return Deliver(o.exception, EventSource::kException, exit);
    case EmulateOutcome::kSoftwareInt:
      return Deliver(o.exception, EventSource::kSoftware, exit, d.rip);
    case EmulateOutcome::kHalt:
      return Halt(exit);
    case EmulateOutcome::kUnsupported:
      exit->kind = EngineExit::kError;
      exit->message = o.message + " at rip " + Hex(c.rip);
      return false;
  }
  return true;
}

bool BtEngine::FetchBlock(bool single, bool plain_stack, Block** block, EngineExit* exit) {
  *block = nullptr;
  CpuState& c = ctx_->cpu;
  const MmuIndex index = MmuIndexFor(c);
  Mmu::Lookup where = mmu_.Translate(c, GuestVirt(c.rip), Access::kFetch, index);
  if (where.kind == Mmu::Lookup::kFault) return Deliver(where.fault, EventSource::kException, exit);
  if (where.kind == Mmu::Lookup::kMmio) {
    exit->kind = EngineExit::kError;
    exit->message = "guest executes from MMIO at rip " + Hex(c.rip);
    return false;
  }
  // The code mode comes from CS (SDM Vol. 3 §5.2.1): a 32-bit code segment
  // is compatibility mode; a 16-bit one, and a code segment with a base
  // (EIP would not be the linear address the blocks are keyed by), are
  // not translated.
  uint32_t flags = single ? kBlockSingle : plain_stack ? kBlockPlainStack : 0u;
  if (!c.seg[kCs].Long()) {
    if (!c.seg[kCs].Db() || c.seg[kCs].base != 0) {
      exit->kind = EngineExit::kError;
      exit->message = std::string(c.seg[kCs].Db() ? "a 32-bit code segment with a nonzero base"
                                                  : "a 16-bit code segment") +
                      " is not supported (cs " + Hex(c.seg[kCs].selector) + ", rip " +
                      Hex(c.rip) + ")";
      return false;
    }
    flags |= kBlockCompat;
  }
  if (index == kMmuKernel && where.global) flags |= kBlockGlobal;
  const BlockKey key{c.rip, where.phys.value, index, flags};
  const auto phys_of = [&](uint64_t vpage) -> uint64_t {
    Mmu::Lookup l = mmu_.Translate(c, GuestVirt(vpage), Access::kFetch, index);
    return l.kind == Mmu::Lookup::kFault ? ~uint64_t{0} : l.phys.value;
  };
  Block* b = cache_.Find(key);
  if (b && b->emulated) return EmulateDecoded(*b->emulated, exit);
  if (single) b = nullptr;
  // A block reaching into a second page is only valid while that page maps
  // where it did.
  if (b && b->spans_pages && phys_of((c.rip & kPageMask) + kPageSize) != b->phys2) b = nullptr;
  if (b) {
    *block = b;
    return true;
  }

  const auto fetch = [this](uint64_t rip, uint8_t* buf, size_t len, GuestException* fault) {
    return FetchCode(rip, buf, len, fault);
  };
  // Translating user code is not user code's time (user_tsc): a process
  // that runs new code is not computing.
  const uint64_t build_start = ctx_->user_since ? __rdtsc() : 0;
  const bool traced = tracer_ && tracer_->WantsBlock(c.rip, c.Cpl());
  const uint64_t translate_start = ctx_->timed ? __rdtsc() : 0;
  BlockNotes notes;
  BuildResult r = BuildBlock(cache_, key, fetch, phys_of, traced ? &notes : nullptr);
  if (r.kind == BuildResult::kCacheFull) {
    cache_.Flush();
    ++counters_.cache_flushes;
    r = BuildBlock(cache_, key, fetch, phys_of, traced ? &notes : nullptr);
  }
  if (build_start) ctx_->user_since += __rdtsc() - build_start;
  if (translate_start) counters_.time.translator += __rdtsc() - translate_start;
  if (traced && r.kind == BuildResult::kOk) {
    tracer_->Block(*r.block, notes, cache_.EmitEnvFor(key.mmu_index), c.Cpl());
  }
  if (traced && r.kind == BuildResult::kEmulate) tracer_->Emulated(r.emulate, c.Cpl());
  switch (r.kind) {
    case BuildResult::kOk: break;
    case BuildResult::kEmulate:
      if (r.emulate.insn.length <= kPageSize - (c.rip & (kPageSize - 1))) {
        return EmulateDecoded(*cache_.InstallEmulated(key, r.emulate)->emulated, exit);
      }
      return EmulateDecoded(r.emulate, exit);  // across a page: not kept
    case BuildResult::kFault: return Deliver(r.fault, EventSource::kException, exit);
    case BuildResult::kUndefined:
      return Deliver(GuestException::Ud(), EventSource::kException, exit);
    case BuildResult::kUnsupported:
      exit->kind = EngineExit::kError;
      exit->message = r.message + " at rip " + Hex(c.rip);
      return false;
    case BuildResult::kCacheFull:
      exit->kind = EngineExit::kError;
      exit->message = "a block does not fit the empty code cache at rip " + Hex(c.rip);
      return false;
  }
  if (single) {
    ++counters_.single_blocks;
  } else {
    ++counters_.blocks_translated;
  }
  counters_.guest_insns_translated += r.guest_insns;
  counters_.host_code_bytes += r.host_bytes;
  counters_.host_main_bytes += r.host_main_bytes;
  counters_.host_cold_bytes += r.host_bytes - r.host_main_bytes;
  *block = r.block;
  return true;
}

EngineExit BtEngine::Run(CpuState& cpu) {
  BtContext& ctx = *ctx_;
  ctx.cpu = cpu;
  mmu_.FlushTlb();
  EngineExit exit;
  HostFaultScope fault_scope(&ctx, &cache_);
  // The direct exit that brought us here, to link it to the block it wants.
  Block* link_from = nullptr;
  uint32_t link_exit = 0;
  uint64_t link_epoch = 0;
  bool store_alone = false;  // the next instruction stored into code: run it alone
  bool after_block = false;  // a block just left for the next one (for the exit counters)
  check_irq_ = true;

  while (!stop_.load(std::memory_order_relaxed)) {
    CpuState& c = ctx.cpu;
    if (std::atomic_ref<uint8_t>(ctx.exit_request).exchange(0, std::memory_order_relaxed)) {
      check_irq_ = true;
    }
    bool single = store_alone || (c.rflags & rflags::kTF);
    if (irq_shadow_) {
      // One instruction runs before an interrupt may be taken
      // (runtime/emulate.h, the interrupt-shadow contract).
      irq_shadow_ = false;
      c.pending.interrupt_shadow = 0;
      if (irq_ && (c.rflags & rflags::kIF) && irq_->InterruptPending()) single = true;
      check_irq_ = true;
    } else if (irq_ && check_irq_) {
      if (!TakeInterrupt(&exit)) break;
    }
    store_alone = false;

    // gdb: stop here if it is due; while breakpoints are set, nothing
    // chains, so every block boundary comes through here.
    if (gdb_) {
      if (gdb_->TakeBreakpointsChanged()) {
        cache_.Flush();
        ++counters_.cache_flushes;
        link_from = nullptr;
      }
      if (gdb_->ShouldStop(c.rip)) {
        const GdbStub::Resume r = gdb_->Stopped(c, mmu_);
        if (r == GdbStub::Resume::kKill) {
          exit = {EngineExit::kError, "the run was ended from gdb"};
          break;
        }
        store_alone = r == GdbStub::Resume::kStep;  // one instruction, alone
        link_from = nullptr;
        after_block = false;
        mmu_.FlushTlb();  // gdb may have written page tables or registers
        continue;  // (breakpoints it changed flush the cache up there)
      }
    }

    const bool user = c.Cpl() == 3;
    UserRunner* const u = user_.load(std::memory_order_relaxed);
    if (u && user != (ctx.user_since != 0)) {
      // Every change of CPL but an inline syscall's or sysret's (which
      // count for themselves) passes here: events and the other
      // instructions that change it leave translated code.
      const uint64_t now = __rdtsc();
      if (user) {
        ++ctx.user_entries;
        ctx.user_since = now;
      } else {
        ctx.user_tsc += now - ctx.user_since;
        ctx.user_since = 0;
      }
    }
    if (u && !single && user && c.LongMode() && c.seg[kCs].Long() &&
        !(gdb_ && gdb_->attached())) {
      if (trace_exit_.pending) TraceExit();
      std::string error;
      GuestException exception;
      const UserRunner::Outcome o = u->RunUser(c, &ctx.exit_request, &exception, &error);
      // Translated user code of this address space: inline sysrets may
      // return to it without asking the runner (until CR3 changes).
      ctx.user_chain_cr3 = o == UserRunner::Outcome::kTranslate ? c.cr3 : kNoChainCr3;
      if (o != UserRunner::Outcome::kTranslate) {
        switch (o) {
          case UserRunner::Outcome::kTranslate: break;
          case UserRunner::Outcome::kTranslateOne: store_alone = true; break;
          case UserRunner::Outcome::kInterrupted: check_irq_ = true; break;
          case UserRunner::Outcome::kSingleStep:
            c.dr[6] |= kDr6SingleStep;
            if (!Deliver(GuestException{kDB, false, 0, 0}, EventSource::kException, &exit)) {
              goto out;
            }
            break;
          case UserRunner::Outcome::kException:
            if (!Deliver(exception, EventSource::kException, &exit, 0, true)) goto out;
            break;
          case UserRunner::Outcome::kError:
            exit = {EngineExit::kError, error};
            goto out;
        }
        link_from = nullptr;
        after_block = false;
        continue;
      }
    }

    // A window block whose entry probe missed asks for its plain variant
    // (unless an interrupt moved RIP meanwhile).
    const bool plain_stack = link_from && link_from->exits[link_exit].flags &&
                             link_from->exits[link_exit].target == c.rip;
    Block* b = nullptr;
    if (!FetchBlock(single, plain_stack, &b, &exit)) break;
    if (b && !single && gdb_ && gdb_->has_breakpoints() &&
        gdb_->BreakpointIn(b->key.rip + 1, b->key.rip + b->guest_size)) {
      // A breakpoint inside: one instruction at a time up to it.
      single = true;
      if (!FetchBlock(true, plain_stack, &b, &exit)) break;
    }
    if (!b) {
      link_from = nullptr;
      continue;
    }
    const bool debugging = gdb_ && gdb_->has_breakpoints();
    if (link_from && !debugging && link_epoch == cache_.flushes() && link_from->valid &&
        link_from->exits[link_exit].target == b->key.rip &&
        CodeCache::CanLink(*link_from, link_exit, *b)) {
      cache_.Link(link_from, link_exit, b);
      ++counters_.chain_links;
    } else if (link_from) {
      ++counters_.exits_unlinked;
    } else if (after_block) {
      ++counters_.exits_lookup;
    }
    after_block = false;
    link_from = nullptr;
    if (!debugging) cache_.RememberLookup(*b);

    ++counters_.block_entries;
    const bool tf = c.rflags & rflags::kTF;
    ctx.host_flags = c.rflags & kHostFlags;
    ctx.exit_reason = BlockExit::kNext;
    ctx.chain_site = 0;
    // Invariant: b's code lies in the cache and leaves it only through the
    // exit stubs; it reaches memory only through soft-TLB entries into
    // guest RAM.
    if (trace_exit_.pending) TraceExit();
    if (ctx.timed) {
      // Translated code's time, without the slow paths' and devices' in it.
      Counters::Time& t = counters_.time;
      const uint64_t start = __rdtsc(), inside = t.mmu + t.devices;
      const bool kernel = c.Cpl() != 3;
      cache_.Enter(&ctx, *b);
      const uint64_t spent = __rdtsc() - start - (t.mmu + t.devices - inside);
      (kernel ? t.kernel_code : t.user_code) += spent;
    } else {
      cache_.Enter(&ctx, *b);
    }
    ++counters_.exits_to_runtime;
    if (tracer_ && tracer_->WantsExit(c.rip, c.Cpl())) {
      trace_exit_ = {true, ctx.exit_reason, c.rip, c.Cpl(), __rdtsc()};
    }
    after_block = ctx.exit_reason == BlockExit::kNext;
    c.rflags = (c.rflags & ~kHostFlags) | (ctx.host_flags & kHostFlags) | rflags::kFixed1;
    switch (ctx.exit_reason) {
      case BlockExit::kNext:
        if (ctx.chain_site && cache_.FindExit(ctx.chain_site, &link_from, &link_exit)) {
          link_epoch = cache_.flushes();
        }
        if (single && tf) {  // the instruction completed: single-step trap
          c.dr[6] |= kDr6SingleStep;
          if (!Deliver(GuestException{kDB, false, 0, 0}, EventSource::kException, &exit)) {
            goto out;
          }
        }
        break;
      case BlockExit::kException:
        if (!Deliver(ctx.exception, EventSource::kException, &exit)) goto out;
        break;
      case BlockExit::kSmc:
        cache_.InvalidateRange(ctx.smc_phys, ctx.smc_size);
        store_alone = true;
        break;
      case BlockExit::kSti:
        // An inline sti with an interrupt waiting: one more instruction
        // runs before it is taken (runtime/emulate.h's shadow contract).
        irq_shadow_ = true;
        c.pending.interrupt_shadow = 1;
        check_irq_ = true;
        break;
      case BlockExit::kAlone:
        store_alone = true;  // a single-instruction block: the runtime emulates it
        break;
      case BlockExit::kIrqWindow:
        check_irq_ = true;  // (no shadow: sysret opens none)
        break;
    }
  }
out:
  if (trace_exit_.pending) TraceExit();
  counters_.tlb_hits += ctx.tlb_hits;
  ctx.tlb_hits = 0;
  counters_.ret_misses += ctx.ret_misses;
  ctx.ret_misses = 0;
  counters_.page_walks += mmu_.walks;
  mmu_.walks = 0;
  counters_.tlb_flushes += mmu_.flushes;
  mmu_.flushes = 0;
  cpu = ctx.cpu;
  return exit;
}

bool BtEngine::NotesOf(const Block& b, BlockNotes* notes) const {
  // Its guest bytes as they are now, from the page(s) it was translated
  // from; decoded again in its mode.
  std::vector<uint8_t> bytes(b.guest_size);
  const uint64_t first = std::min<uint64_t>(b.guest_size, kPageSize - (b.key.phys & (kPageSize - 1)));
  const GuestMemory& memory = const_cast<Mmu&>(mmu_).memory();
  const uint8_t* p = memory.HostPointer(GuestPhys{b.key.phys}, first);
  if (!p) return false;
  std::memcpy(bytes.data(), p, first);
  if (first < b.guest_size) {
    const uint8_t* q = memory.HostPointer(GuestPhys{b.phys2}, b.guest_size - first);
    if (!q) return false;
    std::memcpy(bytes.data() + first, q, b.guest_size - first);
  }
  const Decoder decoder((b.key.flags & kBlockCompat) ? CodeMode::kCompat32 : CodeMode::k64);
  size_t at = 0;
  for (uint32_t i = 0; i < b.guest_insns; ++i) {
    DecodedInsn d;
    if (at >= bytes.size() || !decoder.Decode(bytes.data() + at, bytes.size() - at, b.key.rip + at, &d)) {
      return false;
    }
    // Inside a block, an instruction the runtime would emulate alone ran
    // inline (the block builder chose so).
    if (d.cls == InsnClass::kRuntime) d.cls = InsnClass::kSystem;
    at += d.insn.length;
    notes->insns.push_back(d);
  }
  return at == b.guest_size;
}

void BtEngine::PrintStats(std::FILE* out) const {
  if (const uint64_t n = cache_.executed_insns()) {
    std::fprintf(out, "  %-48s %14llu\n", "guest instructions run translated (block entries)",
                 static_cast<unsigned long long>(n));
  }
  if (std::vector<const Block*> hot = cache_.HottestBlocks(10); !hot.empty()) {
    std::fprintf(out, "  hottest blocks (guest RIP: instructions x entries):\n");
    for (const Block* b : hot) {
      std::fprintf(out, "    %-28s %5u x %14llu\n", Hex(b->key.rip).c_str(), b->guest_insns,
                   static_cast<unsigned long long>(b->executions));
    }
    // And their code, as --trace blocks shows it.
    Tracer code_of(TraceOptions{}, out);
    for (const Block* b : hot) {
      std::fprintf(out, "  hottest block %s, entered %llu times:\n", Hex(b->key.rip).c_str(),
                   static_cast<unsigned long long>(b->executions));
      if (BlockNotes notes; NotesOf(*b, &notes)) {
        code_of.Block(*b, notes, cache_.EmitEnvFor(b->key.mmu_index),
                      b->key.mmu_index == kMmuUser ? 3 : 0);
      } else {
        std::fprintf(out, "    (its guest code has changed since)\n");
      }
    }
  }
  std::fprintf(out, "  %-48s %14zu\n", "code cache bytes in use", cache_.used_bytes());
  std::fprintf(out, "  %-48s %14zu\n", "code cache capacity", cache_.capacity());
  std::vector<std::pair<uint64_t, int>> top;
  for (int m = 0; m <= ZYDIS_MNEMONIC_MAX_VALUE; ++m) {
    if (emulated_[m]) top.emplace_back(emulated_[m], m);
  }
  std::sort(top.rbegin(), top.rend());
  if (!top.empty()) std::fprintf(out, "  instructions emulated by the runtime:\n");
  for (size_t i = 0; i < top.size() && i < 16; ++i) {
    std::fprintf(out, "    %-46s %14llu\n",
                 ZydisMnemonicGetString(static_cast<ZydisMnemonic>(top[i].second)),
                 static_cast<unsigned long long>(top[i].first));
  }
}

}  // namespace btvm
