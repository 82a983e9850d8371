// movs, stos and lods (with or without rep) in translated code: one helper
// call that works a page at a time on host pointers from the MMU, instead
// of a return to the runtime and one translation per element. Faults stop
// it part-way with RCX/RSI/RDI counted as far as it got (SDM Vol. 2 REP),
// as does a request from the runtime (a pending interrupt), and a store
// into translated code returns to the runtime like any such store.

#include <atomic>
#include <cstring>

#include "base/counters.h"
#include "mmu/mmu.h"
#include "translator/code_cache.h"
#include "translator/emitter.h"

namespace btvm {

using namespace asmjit;

namespace {
// slow_info for BtStringOp.
enum StringKind : uint64_t { kMovs = 0, kStos = 1, kLods = 2 };
constexpr uint64_t kInfoRep = 1u << 8;
constexpr unsigned kInfoKindShift = 12, kInfoSegShift = 16;  // seg: 0 none, 1 fs, 2 gs
// BtStringOp results.
constexpr uint64_t kStringDone = 0, kStringExit = 1, kStringPaused = 2;

StringKind KindOf(ZydisMnemonic m) {
  switch (m) {
    case ZYDIS_MNEMONIC_STOSB: case ZYDIS_MNEMONIC_STOSW: case ZYDIS_MNEMONIC_STOSD:
    case ZYDIS_MNEMONIC_STOSQ:
      return kStos;
    case ZYDIS_MNEMONIC_LODSB: case ZYDIS_MNEMONIC_LODSW: case ZYDIS_MNEMONIC_LODSD:
    case ZYDIS_MNEMONIC_LODSQ:
      return kLods;
    default:
      return kMovs;
  }
}

// Elements of `size` bytes that fit in the page of `addr`, moving up or
// down from it (0 if the first one crosses the page).
uint64_t Room(uint64_t addr, unsigned size, bool down) {
  uint64_t off = addr & (kPageSize - 1);
  if (off + size > kPageSize) return 0;
  return down ? off / size + 1 : (kPageSize - off) / size;
}
}  // namespace

bool BlockEmitter::EmitString(const DecodedInsn& d) {
  Materialize();  // the helper works on every guest register and the flags
  unsigned size = d.insn.operand_width / 8;
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_MOVSB || d.insn.mnemonic == ZYDIS_MNEMONIC_STOSB ||
      d.insn.mnemonic == ZYDIS_MNEMONIC_LODSB) {
    size = 1;
  }
  bool rep = d.insn.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE |
                                  ZYDIS_ATTRIB_HAS_REPNE);
  uint64_t seg = (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_FS)   ? 1
                 : (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_GS) ? 2
                                                                      : 0;
  uint64_t info = size | (rep ? kInfoRep : 0) |
                  (static_cast<uint64_t>(KindOf(d.insn.mnemonic)) << kInfoKindShift) |
                  (seg << kInfoSegShift);
  a_.mov(CtxPtr(offsetof(BtContext, slow_info), 8), static_cast<int32_t>(info));
  CallHelper(env_.string_op);
  Label out = a_.newLabel();
  a_.cmp(CtxPtr(offsetof(BtContext, slow_result), 8), 0);
  a_.jne(out);
  RestoreFlags(offsetof(BtContext, slow_flags));
  uint64_t rip = d.rip;
  out_of_line_.push_back([this, out, rip] {
    Label paused = a_.newLabel();
    a_.bind(out);
    a_.cmp(CtxPtr(offsetof(BtContext, slow_result), 8), kStringPaused);
    a_.je(paused);
    // A fault or a store into code: the helper set exit_reason.
    RestoreFlags(offsetof(BtContext, slow_flags));
    EmitCompactExit(env_.exit_rip, rip);
    // Paused for the runtime: the instruction goes on from where it is.
    a_.bind(paused);
    RestoreFlags(offsetof(BtContext, slow_flags));
    EmitExit(rip, BlockExit::kNext);
  });
  return true;
}

extern "C" uint64_t BtStringOp(BtContext* ctx) {
  CpuState& c = ctx->cpu;
  Mmu& mmu = *ctx->mmu;
  const unsigned size = ctx->slow_info & 0xff;
  const bool rep = ctx->slow_info & kInfoRep;
  const auto kind = static_cast<StringKind>((ctx->slow_info >> kInfoKindShift) & 3);
  const unsigned seg = (ctx->slow_info >> kInfoSegShift) & 3;
  const uint64_t src_base = seg == 1 ? c.seg[kFs].base : seg == 2 ? c.seg[kGs].base : 0;
  const bool down = ctx->slow_flags & rflags::kDF;
  const int64_t step = down ? -static_cast<int64_t>(size) : static_cast<int64_t>(size);
  const MmuIndex index = MmuIndexFor(c);
  const uint64_t size_mask = size == 8 ? ~0ull : (1ull << (8 * size)) - 1;
  if (ctx->counters) ++ctx->counters->string_ops;

  uint64_t count = rep ? c.gpr[kRcx] : 1;
  bool first = true;
  while (count > 0) {
    // Between pages, a long rep yields to a pending interrupt.
    if (!first && std::atomic_ref<uint8_t>(ctx->exit_request).load(std::memory_order_relaxed)) {
      return kStringPaused;
    }
    first = false;
    const uint64_t rdi = c.gpr[kRdi], rsi = src_base + c.gpr[kRsi];
    uint64_t n = count;
    if (kind != kLods) n = std::min(n, Room(rdi, size, down));
    if (kind != kStos) n = std::min(n, Room(rsi, size, down));

    uint8_t* dst = nullptr;
    const uint8_t* src = nullptr;
    if (n > 0 && kind != kLods) {
      Mmu::Lookup l = mmu.Translate(c, GuestVirt(rdi), Access::kWrite, index);
      if (l.kind == Mmu::Lookup::kFault) {
        ctx->exception = l.fault;
        ctx->exit_reason = BlockExit::kException;
        return kStringExit;
      }
      // The bytes this chunk writes, lowest first.
      uint64_t lo = down ? rdi - (n - 1) * size : rdi;
      uint64_t phys_lo = l.phys.value - (rdi - lo);
      if (l.kind == Mmu::Lookup::kRam && mmu.IsCodePage(l.phys) && ctx->cache &&
          ctx->cache->Overlaps(phys_lo, n * size)) {
        ctx->smc_phys = phys_lo;
        ctx->smc_size = n * size;
        ctx->exit_reason = BlockExit::kSmc;
        if (ctx->counters) ++ctx->counters->smc_stores;
        return kStringExit;
      }
      if (l.kind == Mmu::Lookup::kRam) dst = l.host;
      else n = 1;  // MMIO: one element at a time, below
    }
    if (n > 0 && kind != kStos) {
      Mmu::Lookup l = mmu.Translate(c, GuestVirt(rsi), Access::kRead, index);
      if (l.kind == Mmu::Lookup::kFault) {
        ctx->exception = l.fault;
        ctx->exit_reason = BlockExit::kException;
        return kStringExit;
      }
      if (l.kind == Mmu::Lookup::kRam) src = l.host;
      else n = 1;
    }

    const uint64_t bytes = n * size;
    if (n > 0 && dst && kind == kStos && !down && size == 1) {
      std::memset(dst, static_cast<uint8_t>(c.gpr[kRax]), bytes);  // rep stosb
    } else if (n > 0 && dst && kind == kStos && !down && (c.gpr[kRax] & size_mask) == 0) {
      std::memset(dst, 0, bytes);  // clearing: rep stosq of 0 (clear_page)
    } else if (n > 0 && dst && src && kind == kMovs && !down &&
               (dst <= src || dst >= src + bytes)) {
      // Forward without the destination overtaking the source: what the
      // element-by-element copy does is what memmove does.
      std::memmove(dst, src, bytes);
    } else if (n > 0 && (dst || kind == kLods) && (src || kind == kStos)) {
      // Element by element, as the CPU does: an overlapping movs repeats
      // the pattern rather than behaving like memmove.
      for (uint64_t i = 0; i < n; ++i) {
        int64_t off = static_cast<int64_t>(i) * step;
        uint64_t v = c.gpr[kRax];
        if (kind != kStos) std::memcpy(&v, src + off, size);
        if (kind == kLods) {
          c.gpr[kRax] = size == 4 ? (v & size_mask) : (c.gpr[kRax] & ~size_mask) | (v & size_mask);
        } else {
          std::memcpy(dst + off, &v, size);
        }
      }
    } else {
      // An element crossing a page, or MMIO: through the MMU, one element.
      n = 1;
      uint64_t v = c.gpr[kRax];
      GuestException fault;
      if (kind != kStos && !mmu.ReadVirt(c, GuestVirt(rsi), &v, size, index, &fault)) {
        ctx->exception = fault;
        ctx->exit_reason = BlockExit::kException;
        return kStringExit;
      }
      if (kind == kLods) {
        c.gpr[kRax] = size == 4 ? (v & size_mask) : (c.gpr[kRax] & ~size_mask) | (v & size_mask);
      } else if (!mmu.WriteVirt(c, GuestVirt(rdi), &v, size, index, &fault)) {
        ctx->exception = fault;
        ctx->exit_reason = BlockExit::kException;
        return kStringExit;
      }
    }
    const uint64_t moved = n * static_cast<uint64_t>(step);
    if (kind != kLods) c.gpr[kRdi] += moved;
    if (kind != kStos) c.gpr[kRsi] += moved;
    if (rep) c.gpr[kRcx] -= n;
    count -= n;
  }
  return kStringDone;
}

}  // namespace btvm
