#pragma once
// Counters, declared once in the X-macro list below (blink's habit) and
// printed by `btvm run --stats`.

#include <cstdint>
#include <cstdio>

namespace btvm {

#define BTVM_COUNTERS(X)                                              \
  X(blocks_translated, "guest blocks translated")                     \
  X(guest_insns_translated, "guest instructions translated")          \
  X(host_code_bytes, "host code bytes emitted")                       \
  X(host_main_bytes, "  in the blocks' main paths")                  \
  X(host_cold_bytes, "  after them (slow paths, exit stubs)")         \
  X(block_entries, "block entries from the dispatcher")               \
  X(tlb_hits, "soft-TLB hits inline (counted with --stats)")         \
  X(tlb_misses, "soft-TLB misses (slow path calls)")                  \
  X(bounce_commits, "page-crossing or MMIO stores written back")      \
  X(string_ops, "movs/stos/lods helper calls")                        \
  X(page_walks, "guest page walks")                                   \
  X(tlb_flushes, "soft-TLB flushes")                                  \
  X(page_faults, "guest page faults raised")                          \
  X(exits_io, "exits for port I/O")                                   \
  X(exits_hlt, "exits for hlt")                                       \
  X(exits_sensitive, "exits for other sensitive instructions")        \
  X(exceptions_delivered, "guest exceptions delivered")               \
  X(cache_flushes, "code-cache flushes")                              \
  X(chain_links, "direct exits chained block to block")               \
  X(exits_to_runtime, "exits from translated code to the runtime")   \
  X(exits_unlinked, "  to a block a direct exit could not link to")  \
  X(exits_lookup, "  to a block no inline lookup found")             \
  X(ret_misses, "returns that missed their call's host return")      \
  X(smc_stores, "stores into translated code (block invalidated)")    \
  X(single_blocks, "one-instruction blocks (TF, shadows, SMC)")       \
  X(host_faults, "host faults mapped to guest exceptions")            \
  X(interrupts_delivered, "external interrupts delivered")

struct Counters {
#define BTVM_DECLARE_COUNTER(name, text) uint64_t name = 0;
  BTVM_COUNTERS(BTVM_DECLARE_COUNTER)
#undef BTVM_DECLARE_COUNTER
  uint64_t vectors[256] = {};  // exceptions and interrupts delivered, by vector

  // Where the time went (host TSC cycles), measured only with --stats:
  // each part excludes the ones listed after it that happen inside it.
  struct Time {
    uint64_t kernel_code = 0;  // translated guest code at CPL 0-2
    uint64_t user_code = 0;    // translated guest code at CPL 3
    uint64_t child = 0;        // guest user code run directly (the direct engine's child)
    uint64_t translator = 0;   // decoding and emitting blocks
    uint64_t mmu = 0;          // soft-TLB misses: page walks, fills (the slow path)
    uint64_t devices = 0;      // port I/O and MMIO handled by the devices
    uint64_t idle = 0;         // hlt: waiting for an interrupt
  } time;

  void Print(std::FILE* out) const {
#define BTVM_PRINT_COUNTER(name, text) \
  std::fprintf(out, "  %-48s %14llu\n", text, static_cast<unsigned long long>(name));
    BTVM_COUNTERS(BTVM_PRINT_COUNTER)
#undef BTVM_PRINT_COUNTER
    for (unsigned v = 0; v < 256; ++v) {
      if (vectors[v] == 0) continue;
      std::fprintf(out, "  delivered, vector %-3u%*s %14llu\n", v, 30, "",
                   static_cast<unsigned long long>(vectors[v]));
    }
  }
};

}  // namespace btvm
