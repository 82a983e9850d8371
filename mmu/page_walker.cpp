#include "mmu/page_walker.h"

#include <atomic>

#include "base/cpu_state.h"

namespace btvm {
namespace {

constexpr uint64_t kP = 1ull << 0, kRW = 1ull << 1, kUS = 1ull << 2, kA = 1ull << 5,
                   kD = 1ull << 6, kPS = 1ull << 7, kNX = 1ull << 63;
constexpr uint64_t kAddrMask = ((1ull << kPhysAddrBits) - 1) & ~0xfffull;
// Bits 51:MAXPHYADDR are reserved in every paging-structure entry.
constexpr uint64_t kHighReserved = ((1ull << 52) - 1) & ~((1ull << kPhysAddrBits) - 1);

// Sets `bits` in the entry at `entry` atomically, as the CPU's locked
// read-modify-write does (another vCPU may edit the same entry).
void SetBits(uint64_t* entry, uint64_t bits) {
  if ((*entry & bits) != bits) {
    std::atomic_ref<uint64_t>(*entry).fetch_or(bits, std::memory_order_relaxed);
  }
}

}  // namespace

WalkOutcome WalkPageTables(GuestMemory& memory, const PagingMode& mode, GuestVirt addr,
                           Access access) {
  WalkOutcome out;
  const bool write = access == Access::kWrite;
  const bool fetch = access == Access::kFetch;
  const bool nxe = mode.efer & efer::kNXE;
  uint32_t base_code = (write ? pf::kWrite : 0) | (mode.user ? pf::kUser : 0) |
                       (fetch && (nxe || (mode.cr4 & cr4::kSMEP)) ? pf::kFetch : 0);

  if (!(mode.cr0 & cr0::kPG)) {  // paging off: identity
    out.ok = true;
    out.translation = {GuestPhys(addr.value), true, true, true, true};
    return out;
  }

  const uint64_t reserved_nx = nxe ? 0 : kNX;
  uint64_t table = mode.cr3 & kAddrMask;
  uint64_t* entries[4] = {};
  bool user_ok = true, write_ok = true, exec_ok = true;
  int level = 4;
  uint64_t entry = 0;
  uint64_t page_size = 0;
  for (; level >= 1; --level) {
    unsigned shift = 12 + 9 * (level - 1);
    uint64_t index = (addr.value >> shift) & 0x1ff;
    uint64_t* p = reinterpret_cast<uint64_t*>(memory.HostPointer(GuestPhys(table + index * 8), 8));
    if (!p) {  // table outside RAM: reads as all ones
      out.error_code = base_code | pf::kPresent | pf::kReserved;
      return out;
    }
    entry = std::atomic_ref<uint64_t>(*p).load(std::memory_order_relaxed);
    entries[4 - level] = p;
    if (!(entry & kP)) {
      out.error_code = base_code;
      return out;
    }
    uint64_t reserved = kHighReserved | reserved_nx;
    if (level == 4) reserved |= kPS;                        // no 512 GiB pages
    if (level == 3 && (entry & kPS)) reserved |= 0x3fffe000;  // 1 GiB: bits 29:13
    if (level == 2 && (entry & kPS)) reserved |= 0x1fe000;    // 2 MiB: bits 20:13
    if (entry & reserved) {
      out.error_code = base_code | pf::kPresent | pf::kReserved;
      return out;
    }
    user_ok &= (entry & kUS) != 0;
    write_ok &= (entry & kRW) != 0;
    exec_ok &= !(nxe && (entry & kNX));
    if (level == 1 || (level <= 3 && (entry & kPS))) {
      page_size = 1ull << shift;
      break;
    }
    table = entry & kAddrMask;
  }

  // Permission checks (SDM Vol. 3 §4.6).
  bool allowed = true;
  bool wp = mode.cr0 & cr0::kWP;
  if (mode.user) {
    allowed = user_ok && (!write || write_ok) && (!fetch || exec_ok);
  } else {
    if (write && !write_ok && wp) allowed = false;
    if (fetch && !exec_ok) allowed = false;
    if (fetch && user_ok && (mode.cr4 & cr4::kSMEP)) allowed = false;
    if (!fetch && user_ok && (mode.cr4 & cr4::kSMAP) && !mode.smap_allowed) allowed = false;
  }
  if (!allowed) {
    out.error_code = base_code | pf::kPresent;
    return out;
  }

  // Accessed bits on every level used, dirty on the leaf for a write.
  int levels_used = 4 - level + 1;
  for (int i = 0; i < levels_used; ++i) SetBits(entries[i], kA);
  uint64_t* leaf = entries[levels_used - 1];
  if (write) SetBits(leaf, kD);
  uint64_t leaf_value = std::atomic_ref<uint64_t>(*leaf).load(std::memory_order_relaxed);

  uint64_t frame = entry & kAddrMask & ~(page_size - 1);
  out.ok = true;
  out.translation.phys = GuestPhys(frame | (addr.value & (page_size - 1)));
  out.translation.dirty = leaf_value & kD;
  out.translation.user = user_ok;
  out.translation.executable = exec_ok;
  out.translation.global = leaf_value & (1ull << 8);  // G (SDM Vol. 3 §4.10.2.4)
  out.translation.writable =
      mode.user ? (user_ok && write_ok) : (write_ok || !wp);
  return out;
}

}  // namespace btvm
