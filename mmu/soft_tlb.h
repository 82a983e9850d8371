#pragma once
// The soft TLB that translated code probes inline (DESIGN.md, Software MMU).
// Direct-mapped, indexed by guest-virtual page number. An entry caches one
// guest page's host page and which accesses may use it without a walk:
//   hit  <=>  ((addr ^ tag) <= kPageSize - size)
// which checks the page and that the access does not cross it in one
// compare. An invalid entry's tag carries index bits different from its own
// slot, so no address can ever hit it.

#include <cstddef>
#include <cstdint>

#include "base/types.h"

namespace btvm {

struct TlbEntry {
  uint64_t read_tag;   // page base if reads may use host_page
  uint64_t write_tag;  // page base if writes may (writable, D already set)
  uint64_t host_page;  // host address of the guest page (inside guest RAM)
  uint64_t fetch_tag;  // page base if instruction fetch may
};
static_assert(sizeof(TlbEntry) == 32);

struct SoftTlb {
  static constexpr unsigned kBits = 10;
  static constexpr unsigned kEntries = 1u << kBits;

  TlbEntry entries[kEntries];
  // Entries for global pages (PTE.G with CR4.PGE): a CR3 write keeps them
  // (SDM Vol. 3 §4.10.4.1). Not read by translated code.
  bool global[kEntries];
  // A copy of the entry of the page the guest stack was last found in,
  // which push, pop, call, ret and stack windows probe first: a fixed
  // address, so no slot index to compute. Translated code fills it from
  // entries[stack_offset / sizeof(TlbEntry)] after a hit there; anything
  // that drops that entry drops the copy. Its empty state has a
  // non-canonical tag and a null host page: only a non-canonical address,
  // which must fault anyway, can hit it, and the access then faults on
  // the host at an address below one page, which the host-fault handler
  // turns into the guest's #SS(0).
  TlbEntry stack;
  static constexpr uint64_t kNoStackTag = 0x8000000000000000ull;
  static constexpr uint64_t kNoStackOffset = ~0ull;
  uint64_t stack_offset = kNoStackOffset;

  SoftTlb() {
    ResetStack();
    Flush();
  }

  static unsigned Index(uint64_t vaddr) { return (vaddr >> 12) & (kEntries - 1); }
  static uint64_t InvalidTag(unsigned index) {
    return static_cast<uint64_t>((index + 1) & (kEntries - 1)) << 12;
  }
  void Invalidate(unsigned index) {
    uint64_t t = InvalidTag(index);
    entries[index] = {t, t, 0, t};
    global[index] = false;
    if (stack_offset == index * sizeof(TlbEntry)) ResetStack();
  }
  void ResetStack() {
    stack = {kNoStackTag, kNoStackTag, 0, kNoStackTag};
    stack_offset = kNoStackOffset;
  }
  void Flush() {
    for (unsigned i = 0; i < kEntries; ++i) Invalidate(i);
  }
  void FlushNonGlobal() {
    for (unsigned i = 0; i < kEntries; ++i) {
      if (!global[i]) Invalidate(i);
    }
  }
  void FlushPage(GuestVirt page) { Invalidate(Index(page.value)); }

  // The same test translated code performs inline.
  static bool Hits(uint64_t tag, uint64_t vaddr, unsigned size) {
    return (vaddr ^ tag) <= kPageSize - size;
  }
};

}  // namespace btvm
