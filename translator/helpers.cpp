// The slow paths translated code calls: a soft-TLB miss, and the write-back
// of a bounce buffer. Both run on the monitor's stack with the guest state
// parked in BtContext (emit_memory.cpp, CallHelper).

#include <x86intrin.h>

#include <cstring>

#include "base/counters.h"
#include "mmu/mmu.h"
#include "translator/code_cache.h"

namespace btvm {

namespace {
MmuIndex IndexOf(const BtContext* ctx) { return MmuIndexFor(ctx->cpu); }

uint8_t* Fault(BtContext* ctx, const GuestException& e) {
  ctx->exception = e;
  ctx->exit_reason = BlockExit::kException;
  return nullptr;
}

// A non-canonical stack reference is #SS(0), not #GP(0).
GuestException StackFault(const BtContext* ctx, uint64_t addr, const GuestException& e) {
  if ((ctx->slow_info & kAccessStack) && e.vector == kGP && !IsCanonical(addr)) {
    return {kSS, true, 0, 0};
  }
  return e;
}

// A store into bytes some block was translated from: the block (maybe the
// one running) is stale. Nothing is written; the runtime invalidates and
// runs the store as a block of its own (code_cache.h, kBlockSingle).
bool StoresIntoCode(BtContext* ctx, const Mmu::Lookup& l, uint64_t size) {
  if (l.kind != Mmu::Lookup::kRam || !ctx->mmu->IsCodePage(l.phys)) return false;
  if (!ctx->cache || !ctx->cache->Overlaps(l.phys.value, size)) return false;
  ctx->smc_phys = l.phys.value;
  ctx->smc_size = size;
  ctx->exit_reason = BlockExit::kSmc;
  if (ctx->counters) ++ctx->counters->smc_stores;
  return true;
}
}  // namespace

// Returns the host address the access may use, or nullptr after recording
// the guest exception in ctx->exception.
namespace {
uint8_t* MemSlowPath(BtContext* ctx);
}  // namespace

// --stats times the slow path (without the device accesses it makes).
extern "C" uint8_t* BtMemSlowPath(BtContext* ctx) {
  if (!ctx->timed || !ctx->counters) return MemSlowPath(ctx);
  Counters::Time& t = ctx->counters->time;
  const uint64_t start = __rdtsc(), devices = t.devices;
  uint8_t* r = MemSlowPath(ctx);
  t.mmu += __rdtsc() - start - (t.devices - devices);
  return r;
}

namespace {
uint8_t* MemSlowPath(BtContext* ctx) {
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
    if (l.kind == Mmu::Lookup::kFault) return Fault(ctx, StackFault(ctx, addr, l.fault));
    if (write && StoresIntoCode(ctx, l, size)) return nullptr;
    if (l.kind == Mmu::Lookup::kRam) return l.host;
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
      if (l.kind == Mmu::Lookup::kFault) return Fault(ctx, StackFault(ctx, a, l.fault));
      uint64_t n = a == addr ? first : size - first;
      if (StoresIntoCode(ctx, l, n)) return nullptr;
    }
  }
  std::memset(ctx->bounce, 0, sizeof(ctx->bounce));
  uint8_t* data = ctx->bounce + (addr & 63);
  if (read && !mmu.ReadVirt(ctx->cpu, GuestVirt(addr), data, size, index, &fault)) {
    return Fault(ctx, StackFault(ctx, addr, fault));
  }
  ctx->bounce_addr = addr;
  ctx->bounce_size = size;
  ctx->bounce_write = write;
  ctx->bounce_active = 1;
  return data;
}
}  // namespace

extern "C" void BtBounceCommit(BtContext* ctx) {
  if (!ctx->bounce_active) return;
  ctx->bounce_active = 0;
  if (!ctx->bounce_write) return;
  if (ctx->counters) ++ctx->counters->bounce_commits;
  GuestException fault;
  // Cannot fault: both pages were translated for write before the access.
  ctx->mmu->WriteVirt(ctx->cpu, GuestVirt(ctx->bounce_addr),
                      ctx->bounce + (ctx->bounce_addr & 63), ctx->bounce_size,
                      IndexOf(ctx), &fault);
}

}  // namespace btvm
