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
  X(block_entries, "block entries from the dispatcher")               \
  X(block_lookups_missed, "block lookups that translated")            \
  X(tlb_misses, "soft-TLB misses (slow path)")                        \
  X(page_walks, "guest page walks")                                   \
  X(tlb_flushes, "soft-TLB flushes")                                  \
  X(page_faults, "guest page faults raised")                          \
  X(exits_io, "exits for port I/O")                                   \
  X(exits_hlt, "exits for hlt")                                       \
  X(exits_sensitive, "exits for other sensitive instructions")        \
  X(exceptions_delivered, "guest exceptions delivered")               \
  X(cache_flushes, "code-cache flushes")

struct Counters {
#define BTVM_DECLARE_COUNTER(name, text) uint64_t name = 0;
  BTVM_COUNTERS(BTVM_DECLARE_COUNTER)
#undef BTVM_DECLARE_COUNTER

  void Print(std::FILE* out) const {
#define BTVM_PRINT_COUNTER(name, text) \
  std::fprintf(out, "  %-40s %14llu\n", text, static_cast<unsigned long long>(name));
    BTVM_COUNTERS(BTVM_PRINT_COUNTER)
#undef BTVM_PRINT_COUNTER
  }
};

}  // namespace btvm
