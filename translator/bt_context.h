#pragma once
// BtContext: the one block of memory translated code addresses, through host
// register r15. It holds the guest CpuState (GPRs that are not live in host
// registers, RIP, system state), the soft TLBs probed inline, and the slots
// the generated sequences use. Every offset translated code uses is pinned
// by a static_assert or taken with offsetof below.

#include <cstddef>
#include <cstdint>

#include "base/cpu_state.h"
#include "base/exception.h"
#include "mmu/soft_tlb.h"

namespace btvm {

class Mmu;
class CodeCache;
struct Block;
struct Counters;

// Why translated code returned to the runtime.
enum class BlockExit : uint32_t {
  kNext = 0,       // RIP holds the next guest instruction to run
  kException = 1,  // RIP holds the faulting instruction; `exception` says what
  kSmc = 2,        // RIP holds a store into translated code: invalidate, then
                   // run that one instruction on its own (smc_phys/smc_size)
  kSti = 3,        // RIP follows an inline sti and an interrupt waits
                   // (irq_waiting): open the sti shadow, then take it
  kAlone = 4,      // RIP holds an instruction the runtime must emulate on
                   // its own (an inline cli/sti found CPL != 0)
  kIrqWindow = 5,  // RIP holds the next instruction; an inline sysret set IF
                   // while an interrupt waits (irq_waiting): take it
};

// The guest-RIP -> host-code lookup translated code does inline for indirect
// branches and for direct branches that leave the block's page (one per
// MmuIndex). Direct-mapped by JumpCacheIndex; an empty slot has a
// non-canonical rip, which no guest RIP can equal. Flushed with the soft TLB
// (its entries are only valid under the translations it saw).
struct JumpCacheEntry {
  uint64_t rip;
  uint64_t code;
};
// 8,192 entries a table: a Linux timer tick alone goes through ~150
// indirect branch targets, and with 1,024 slots about six pairs of them
// shared a slot and evicted each other every tick (the birthday bound).
// Clearing visits only the slots filled since the last clear
// (BtContext::filled), so the size costs a TLB flush nothing.
inline constexpr unsigned kJumpCacheBits = 13;
inline constexpr unsigned kJumpCacheEntries = 1u << kJumpCacheBits;
// BtContext::user_chain_cr3 when no address space is translated for sure
// (bits 52..63 of CR3 are reserved: no CR3 equals it).
inline constexpr uint64_t kNoChainCr3 = ~0ull;
inline constexpr uint64_t kNoRip = 0x8000000000000000ull;
// Fibonacci hashing of RIP's low 32 bits: the top bits of the product
// depend on all of them. (XOR-folding bits 10..19 onto 0..9 made pairs of
// functions a Linux timer tick calls share a slot and evict each other on
// every tick.)
inline constexpr uint32_t kJumpCacheMultiplier = 0x9e3779b1;
inline constexpr unsigned JumpCacheIndex(uint64_t rip) {
  return (static_cast<uint32_t>(rip) * kJumpCacheMultiplier) >> (32 - kJumpCacheBits);
}

// Calls and returns. A guest call pushes the guest return address and then
// makes a host call into the callee, which leaves the address of the
// call's continuation on the host stack; the guest ret pops the guest
// return address into RCX and makes a host ret, which the host CPU's own
// return predictor gets right. The continuation checks RCX against its
// return address; on a mismatch (the guest changed its stack, switched
// stacks, or returned past where translated code was entered: Enter leaves
// a sentinel that catches that) the ret-miss stub (code_cache.cpp) looks
// the target up in the jump cache, else returns to the runtime. Host
// frames are dropped whenever translated code exits (and with them any
// that a TLB flush or a code-cache flush made stale: both happen in the
// runtime), and calls more than kShadowBytes below the entry RSP make none.
inline constexpr int32_t kShadowBytes = 64 * 1024;

// Register conventions inside translated code:
//   GS base      -> BtContext (context_operand.h; set per thread by
//                   CodeCache::Enter)
//   r15          -> guest RSP (kGuestRspHost), for good: pushes, pops,
//                   calls and returns read and move it without a trip
//                   through memory. cpu.gpr[kRsp] is current only outside
//                   translated code (the exit stubs store it).
//   rsp          -> the monitor's own stack (helper calls, compact exits)
//   guest R15    -> cpu.gpr[kR15], loaded into a scratch register by the
//                   instructions that name it
//   every other host GPR holds the guest GPR of the same number, except
//   around one instruction, where scratch registers are spilled to their
//   cpu.gpr slot and reloaded after it.
inline constexpr int kGuestRspHost = 15;

struct alignas(64) BtContext {
  CpuState cpu;
  SoftTlb tlb[2];  // indexed by MmuIndex (kernel, user)

  uint64_t host_flags = rflags::kFixed1;  // guest arithmetic flags + DF, as host RFLAGS
  uint64_t saved_flags = 0;    // guest flags kept across an inline TLB probe
  uint64_t slow_flags = 0;     // host flags kept across a helper call
  uint64_t slow_result = 0;    // a helper's return value
  uint64_t slow_addr = 0;      // the guest address a slow path asks about
  uint64_t slow_info = 0;      // its size and access kind (emitter.h)
  uint64_t call_save[16] = {};  // host registers the helper stubs keep across a call
  alignas(16) uint8_t helper_xmm[16 * 16] = {};  // and XMM0-15
  uint32_t helper_mxcsr = 0;                     // and MXCSR
  uint32_t pad_helper = 0;
  uint64_t host_rsp = 0;       // the monitor's RSP at entry
  uint64_t shadow_floor = 0;   // host_rsp - kShadowBytes: calls below it make no host frame
  uint64_t helper_rsp = 0;     // RSP around a helper call made 16-byte aligned
  BtContext* self = this;      // for the helper stubs' first argument
  uint64_t entry_target = 0;   // where the entry trampoline jumps
  uint32_t host_mxcsr = 0x1f80;
  uint16_t host_fcw = 0x37f;
  // The x87 state across exits (code_cache.cpp, the entry and exit stubs):
  // translated code that may change it sets x87_dirty (the exit then saves
  // it in full, and sets x87_saved); x87_held is the image's x87 part
  // (FXSAVE bytes 0..159) as the FPU holds it; x87_reload asks the entry
  // to load it.
  uint8_t x87_dirty = 0;
  uint8_t x87_saved = 1;  // (nothing loaded yet)
  uint8_t x87_reload = 1;
  uint8_t pad_x87 = 0;
  alignas(16) uint8_t x87_held[160] = {};
  uint16_t pad0 = 0;
  BlockExit exit_reason = BlockExit::kNext;
  uint32_t pad1 = 0;
  GuestException exception{};

  // Bounce buffer for an access the inline path cannot do on guest RAM in
  // place: one that crosses a page, or one that reaches MMIO. The slow path
  // points the instruction at `bounce` + (guest address % 64), so that the
  // host checks alignment as it would on the guest address (a misaligned
  // movdqa still faults), then writes it back.
  alignas(64) uint8_t bounce[256] = {};  // kMaxAccessSize + 63 and then some
  uint64_t bounce_addr = 0;
  uint32_t bounce_size = 0;
  uint8_t bounce_active = 0;
  uint8_t bounce_write = 0;

  // Set from any thread to make translated code return to the runtime at
  // the next entry check (timer deadlines, stop requests): every loop in
  // translated code passes one (BlockEmitter::EmitEntryCheck).
  alignas(8) uint8_t exit_request = 0;
  // Set by the runtime while an interrupt is pending that IF = 0 holds
  // back: an inline sti then returns to the runtime to take it.
  uint8_t irq_waiting = 0;
  uint8_t pad2[6] = {};
  uint64_t rcx_save = 0;      // guest RCX around flag-free checks (jrcxz)
  uint64_t rax_save = 0;      // guest RAX around lahf/sahf flag saves
  uint64_t jump_target = 0;   // host code an indirect jump goes to
  // A chainable direct exit that returned: the host address of its data
  // (code_cache.cpp, exit stubs), which names the block and the exit.
  uint64_t chain_site = 0;
  uint64_t tlb_hits = 0;      // inline soft-TLB hits, counted only when asked (--stats)
  uint64_t ret_misses = 0;    // counted by the ret-miss stubs
  uint64_t smc_phys = 0;      // kSmc: the guest-physical range written
  uint64_t smc_size = 0;

  // System calls inline (emit_syscall.cpp). User time, counted for the
  // direct engine's policy (BtEngine::user_tsc): the returns to user mode,
  // the host TSC when the current stretch of user mode began (0 in kernel
  // mode, or untimed), and the TSC cycles of the stretches before it. The
  // runtime's loop keeps them across the changes of CPL it makes itself;
  // an inline syscall or sysret keeps them too when count_user_time.
  uint64_t user_entries = 0;
  uint64_t user_since = 0;
  uint64_t user_tsc = 0;
  // An inline sysret goes on into translated user code only if
  // user_chain_any, or if CR3 is user_chain_cr3 (the address space the
  // direct engine last chose to translate); else it returns to the
  // runtime, whose loop offers the user code to the direct engine.
  uint64_t user_chain_cr3 = kNoChainCr3;
  uint8_t user_chain_any = 1;  // (no direct engine: all user code is translated)
  uint8_t count_user_time = 0;
  uint8_t pad3[6] = {};
  uint64_t sys_save[3] = {};  // guest RAX, RDX and new host flags around the sequence

  alignas(64) JumpCacheEntry jump_cache[2][kJumpCacheEntries];
  // The slots of each table the runtime filled since it was last cleared
  // (repeats allowed), up to kFilledMax; past that, a clear or a page's
  // invalidation visits the whole table.
  static constexpr uint32_t kFilledMax = 2048;
  uint32_t filled_count[2] = {kFilledMax + 1, kFilledMax + 1};  // (all: unknown)
  uint16_t filled[2][kFilledMax];
  // Set by the runtime when a kernel jump-cache entry may name code from a
  // page that is not global.
  uint8_t kernel_local_lookups = 0;

  Mmu* mmu = nullptr;
  CodeCache* cache = nullptr;
  Counters* counters = nullptr;
  // --stats: the slow path times itself into counters->time.mmu.
  bool timed = false;

  BtContext() { ClearLookups(); }
  // Translated code and `self` know it by its address.
  BtContext(const BtContext&) = delete;
  BtContext& operator=(const BtContext&) = delete;
  // Forgets every cached guest-RIP -> host-code mapping (a TLB flush or a
  // code-cache flush makes them stale); with `keep_global`, only the user
  // ones, unless the kernel's hold code from a page that is not global
  // (kernel_local_lookups): a CR3 write keeps global pages' translations.
  void ClearLookups(bool keep_global = false) {
    if (kernel_local_lookups) keep_global = false;
    if (jump_cache_used) {
      for (unsigned i = keep_global ? 1 : 0; i < 2; ++i) {
        ForEachLookup(i, [](JumpCacheEntry& e) { e = {kNoRip, 0}; });
        filled_count[i] = 0;
      }
      if (!keep_global) jump_cache_used = false;
    }
    if (!keep_global) kernel_local_lookups = 0;
  }
  // Records a lookup the runtime makes (CodeCache::RememberLookup).
  void FillLookup(unsigned table, uint64_t rip, uint64_t code) {
    const unsigned slot = JumpCacheIndex(rip);
    jump_cache[table][slot] = {rip, code};
    jump_cache_used = true;
    if (filled_count[table] < kFilledMax) {
      filled[table][filled_count[table]++] = static_cast<uint16_t>(slot);
    } else {
      filled_count[table] = kFilledMax + 1;
    }
  }
  // Calls f on every entry of `table` that may be filled.
  template <typename F>
  void ForEachLookup(unsigned table, F f) {
    if (filled_count[table] > kFilledMax) {
      for (auto& e : jump_cache[table]) f(e);
    } else {
      for (uint32_t k = 0; k < filled_count[table]; ++k) f(jump_cache[table][filled[table][k]]);
    }
  }
  bool jump_cache_used = true;  // entries may be filled (the runtime fills them)
};

static_assert(offsetof(BtContext, cpu) == 0, "translated code addresses cpu at gs:0");
static_assert(offsetof(BtContext, tlb) % 64 == 0);

inline constexpr int32_t GprOffset(int reg) {
  return static_cast<int32_t>(offsetof(BtContext, cpu) + offsetof(CpuState, gpr) + 8 * reg);
}
// The base of segment register `seg` (SegIndex) in CpuState.
inline constexpr int32_t SegBaseOffset(int seg) {
  return static_cast<int32_t>(offsetof(BtContext, cpu) + offsetof(CpuState, seg) +
                              seg * sizeof(SegmentReg) + offsetof(SegmentReg, base));
}
inline constexpr int32_t kRipOffset =
    static_cast<int32_t>(offsetof(BtContext, cpu) + offsetof(CpuState, rip));

}  // namespace btvm
