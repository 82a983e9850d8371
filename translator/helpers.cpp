// The slow paths translated code calls: a soft-TLB miss, and the write-back
// of a bounce buffer. Both run on the monitor's stack with the guest state
// parked in BtContext (emit_memory.cpp, CallHelper).

#include <cstring>

#include "base/counters.h"
#include "mmu/mmu.h"
#include "translator/code_cache.h"

namespace btvm {

namespace {
MmuIndex IndexOf(const BtContext* ctx) { return MmuIndexFor(ctx->cpu); }
}  // namespace

// Returns the host address the access may use, or nullptr after recording
// the guest exception in ctx->exception.
extern "C" uint8_t* BtMemSlowPath(BtContext* ctx) {
  Mmu& mmu = *ctx->mmu;
  const uint64_t addr = ctx->slow_addr;
  const unsigned size = ctx->slow_info & 0xff;
  const bool read = ctx->slow_info & kAccessRead;
  const bool write = ctx->slow_info & kAccessWrite;
  const Access access = write ? Access::kWrite : Access::kRead;
  const MmuIndex index = IndexOf(ctx);
  if (ctx->counters) ++ctx->counters->tlb_misses;
  ctx->bounce_active = 0;

  const bool crosses = (addr & (kPageSize - 1)) + size > kPageSize;
  if (!crosses) {
    Mmu::Lookup l = mmu.Translate(ctx->cpu, GuestVirt(addr), access, index);
    if (l.kind == Mmu::Lookup::kRam) return l.host;
    if (l.kind == Mmu::Lookup::kFault) {
      ctx->exception = l.fault;
      if (ctx->counters) ++ctx->counters->page_faults;
      return nullptr;
    }
  }
  // MMIO, or an access crossing into the next page: run the instruction on
  // the bounce buffer. Both pages are translated (and checked) before the
  // instruction runs, so a fault on either leaves the guest untouched.
  GuestException fault;
  if (write) {
    // Probe for write permission without writing (a zero-length check per
    // page): translate each page for write.
    uint64_t first = crosses ? kPageSize - (addr & (kPageSize - 1)) : size;
    for (uint64_t a : {addr, addr + first}) {
      if (a >= addr + size) break;
      Mmu::Lookup l = mmu.Translate(ctx->cpu, GuestVirt(a), Access::kWrite, index);
      if (l.kind == Mmu::Lookup::kFault) {
        ctx->exception = l.fault;
        return nullptr;
      }
    }
  }
  std::memset(ctx->bounce, 0, sizeof(ctx->bounce));
  if (read && !mmu.ReadVirt(ctx->cpu, GuestVirt(addr), ctx->bounce, size, index, &fault)) {
    ctx->exception = fault;
    return nullptr;
  }
  ctx->bounce_addr = addr;
  ctx->bounce_size = size;
  ctx->bounce_write = write;
  ctx->bounce_active = 1;
  return ctx->bounce;
}

extern "C" void BtBounceCommit(BtContext* ctx) {
  if (!ctx->bounce_active) return;
  ctx->bounce_active = 0;
  if (!ctx->bounce_write) return;
  GuestException fault;
  // Cannot fault: both pages were translated for write before the access.
  ctx->mmu->WriteVirt(ctx->cpu, GuestVirt(ctx->bounce_addr), ctx->bounce, ctx->bounce_size,
                      IndexOf(ctx), &fault);
}

}  // namespace btvm
