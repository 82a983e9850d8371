#pragma once
// The 4-level page walk of x86-64 long mode (SDM Vol. 3 §4.5): 4 KiB, 2 MiB
// and 1 GiB pages, NX, U/S, R/W, CR0.WP, SMEP/SMAP, accessed and dirty bits
// set as hardware sets them, and the #PF error code exactly as hardware
// reports it (SDM Vol. 3 §4.7).

#include <cstdint>

#include "base/types.h"
#include "mmu/guest_memory.h"

namespace btvm {

enum class Access : uint8_t { kRead = 0, kWrite = 1, kFetch = 2 };

// #PF error-code bits (SDM Vol. 3 §4.7).
namespace pf {
inline constexpr uint32_t kPresent = 1u << 0, kWrite = 1u << 1, kUser = 1u << 2,
                          kReserved = 1u << 3, kFetch = 1u << 4;
}

// What the walk needs of the vCPU: the paging registers and who is asking.
struct PagingMode {
  uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
  bool user = false;        // CPL 3 (or an implicit supervisor access: false)
  bool smap_allowed = false;  // RFLAGS.AC set at CPL 0: SMAP does not apply
};

struct Translation {
  GuestPhys phys;       // the translated address (not page-aligned)
  bool writable = false;  // a write would be allowed without a fault now
  bool dirty = false;     // the leaf entry's D bit is set (after this walk)
  bool user = false;      // the page is user-accessible
  bool executable = false;
  bool global = false;    // the leaf entry's G bit (it counts only with CR4.PGE)
};

struct WalkOutcome {
  bool ok = false;
  Translation translation;  // valid if ok
  uint32_t error_code = 0;  // #PF error code if !ok
};

// Physical-address width btvm's virtual CPU reports (CPUID 0x80000008).
inline constexpr unsigned kPhysAddrBits = 40;

// Walks the guest tables in `memory`, setting A (and D on a write) bits.
// A table entry pointing outside RAM is treated like hardware reading
// all-ones from an unclaimed bus: reserved bits set, so a #PF with RSVD.
WalkOutcome WalkPageTables(GuestMemory& memory, const PagingMode& mode, GuestVirt addr,
                           Access access);

inline bool IsCanonical(uint64_t addr) {
  return static_cast<uint64_t>(static_cast<int64_t>(addr << 16) >> 16) == addr;
}

}  // namespace btvm
