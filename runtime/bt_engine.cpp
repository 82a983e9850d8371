#include "runtime/bt_engine.h"

#include <cstdio>

#include "translator/block_builder.h"

namespace btvm {

namespace {
constexpr uint64_t kHostFlags = rflags::kArith | rflags::kDF;

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

BtEngine::BtEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio,
                   const std::atomic<bool>& stop, Counters& counters)
    : ctx_(std::make_unique<BtContext>()),
      mmu_(memory, mmio, ctx_->tlb),
      pio_(pio),
      stop_(stop),
      counters_(counters),
      emulator_(mmu_, pio, counters) {
  ctx_->mmu = &mmu_;
  ctx_->counters = &counters_;
}

BtEngine::~BtEngine() = default;

bool BtEngine::Deliver(const GuestException& e, EventSource source, EngineExit* exit) {
  ++counters_.exceptions_delivered;
  if (DeliverEvent(mmu_, ctx_->cpu, e, source) == DeliveryResult::kTripleFault) {
    exit->kind = EngineExit::kTripleFault;
    exit->message = "triple fault (vector " + std::to_string(e.vector) + " at rip " +
                    Hex(ctx_->cpu.rip) + ")";
    return false;
  }
  return true;
}

EngineExit BtEngine::Run(CpuState& cpu) {
  BtContext& ctx = *ctx_;
  ctx.cpu = cpu;
  mmu_.FlushTlb();
  EngineExit exit;
  const auto fetch = [this](uint64_t rip, uint8_t* buf, size_t len, GuestException* fault) {
    size_t n = 0;
    // Byte-exact up to the first page that cannot be fetched.
    while (n < len) {
      size_t chunk = std::min<size_t>(len - n, kPageSize - ((rip + n) & (kPageSize - 1)));
      if (!mmu_.ReadVirt(ctx_->cpu, GuestVirt(rip + n), buf + n, chunk,
                         MmuIndexFor(ctx_->cpu), fault, Access::kFetch)) {
        break;
      }
      n += chunk;
    }
    return n;
  };

  for (;;) {
    if (stop_.load(std::memory_order_relaxed)) break;
    CpuState& c = ctx.cpu;
    // Find the block: keyed by RIP, the physical page it was fetched from,
    // and the privilege it runs at.
    Mmu::Lookup where = mmu_.Translate(c, GuestVirt(c.rip), Access::kFetch, MmuIndexFor(c));
    if (where.kind == Mmu::Lookup::kFault) {
      if (!Deliver(where.fault, EventSource::kException, &exit)) break;
      continue;
    }
    if (where.kind == Mmu::Lookup::kMmio) {
      exit.kind = EngineExit::kError;
      exit.message = "guest executes from MMIO at rip " + Hex(c.rip);
      break;
    }
    unsigned index = MmuIndexFor(c);
    BlockKey key{c.rip, where.phys.value, index};
    void* code = cache_.Find(key);
    if (!code) {
      BuildResult b = BuildBlock(cache_, index, c.rip, fetch);
      if (b.kind == BuildResult::kFault) {
        if (!Deliver(b.fault, EventSource::kException, &exit)) break;
        continue;
      }
      if (b.kind == BuildResult::kUndefined) {
        if (!Deliver(GuestException::Ud(), EventSource::kException, &exit)) break;
        continue;
      }
      if (b.kind == BuildResult::kUnsupported) {
        exit.kind = EngineExit::kError;
        exit.message = b.message + " at rip " + Hex(c.rip);
        break;
      }
      if (b.kind == BuildResult::kEmulate) {
        uint8_t bytes[ZYDIS_MAX_INSTRUCTION_LENGTH];
        GuestException fault;
        size_t n = fetch(c.rip, bytes, sizeof(bytes), &fault);
        DecodedInsn d;
        if (!decoder_.Decode(bytes, n, c.rip, &d)) {
          if (!Deliver(n < sizeof(bytes) ? fault : GuestException::Ud(),
                       EventSource::kException, &exit)) {
            break;
          }
          continue;
        }
        EmulateOutcome o = emulator_.Emulate(c, d);
        switch (o.kind) {
          case EmulateOutcome::kDone: break;
          case EmulateOutcome::kFault:
            if (!Deliver(o.exception, EventSource::kException, &exit)) goto out;
            break;
          case EmulateOutcome::kSoftwareInt:
            if (!Deliver(o.exception, EventSource::kSoftware, &exit)) goto out;
            break;
          case EmulateOutcome::kHalt:
            // No interrupt controller or timer exists yet (the Linux boot
            // issue adds them), so nothing could ever wake this vCPU.
            exit.kind = EngineExit::kHalt;
            exit.message = (c.rflags & rflags::kIF)
                               ? "guest halted; this machine has no interrupt sources yet"
                               : "guest halted with interrupts disabled";
            goto out;
          case EmulateOutcome::kUnsupported:
            exit.kind = EngineExit::kError;
            exit.message = o.message + " at rip " + Hex(c.rip);
            goto out;
        }
        continue;
      }
      ++counters_.blocks_translated;
      counters_.guest_insns_translated += b.guest_insns;
      counters_.host_code_bytes += b.host_bytes;
      code = b.code;
      cache_.Insert(key, code);
    }

    ++counters_.block_entries;
    ctx.host_flags = c.rflags & kHostFlags;
    ctx.exit_reason = BlockExit::kNext;
    // Invariant: `code` came from this cache and ends in a jump to its exit
    // stub; it reaches memory only through soft-TLB entries into guest RAM.
    cache_.Enter(&ctx, code);
    c.rflags = (c.rflags & ~kHostFlags) | (ctx.host_flags & kHostFlags) | rflags::kFixed1;
    if (ctx.exit_reason == BlockExit::kException) {
      if (!Deliver(ctx.exception, EventSource::kException, &exit)) break;
    }
  }
out:
  cpu = ctx.cpu;
  return exit;
}

}  // namespace btvm
