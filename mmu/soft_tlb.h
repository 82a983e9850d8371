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

  SoftTlb() { Flush(); }

  static unsigned Index(uint64_t vaddr) { return (vaddr >> 12) & (kEntries - 1); }
  static uint64_t InvalidTag(unsigned index) {
    return static_cast<uint64_t>((index + 1) & (kEntries - 1)) << 12;
  }
  void Invalidate(unsigned index) {
    uint64_t t = InvalidTag(index);
    entries[index] = {t, t, 0, t};
    global[index] = false;
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
