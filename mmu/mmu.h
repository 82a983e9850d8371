#pragma once
// The software MMU: guest-virtual accesses through the page walker and the
// soft TLBs (one per privilege: kernel and user accesses see different
// permissions), with guest-physical addresses outside RAM routed to MMIO.

#include <cstdint>
#include <vector>

#include "base/cpu_state.h"
#include "base/exception.h"
#include "base/types.h"
#include "devices/bus.h"
#include "mmu/guest_memory.h"
#include "mmu/page_walker.h"
#include "mmu/soft_tlb.h"

namespace btvm {

enum MmuIndex : unsigned { kMmuKernel = 0, kMmuUser = 1, kMmuCount = 2 };

inline PagingMode PagingModeOf(const CpuState& cpu, bool user) {
  PagingMode m;
  m.cr0 = cpu.cr0;
  m.cr3 = cpu.cr3;
  m.cr4 = cpu.cr4;
  m.efer = cpu.efer;
  m.user = user;
  m.smap_allowed = cpu.rflags & rflags::kAC;
  return m;
}

// Told about what makes translated code or cached lookups stale: the
// translator's code cache listens.
class MmuObserver {
 public:
  virtual ~MmuObserver() = default;
  // Every translation dropped, or (keep_global) all but those of global pages.
  virtual void OnTlbFlush(bool keep_global) = 0;
  virtual void OnTlbFlushPage(GuestVirt page) = 0;  // one page's translation dropped
  // The runtime (not translated code) wrote [addr, addr+size) of a page
  // that holds translated code.
  virtual void OnCodeWrite(GuestPhys addr, uint64_t size) = 0;
  // A page became a code page (MarkCodePage): writes to it must be seen.
  virtual void OnCodePageMarked(GuestPhys /*page*/) {}
};

class Mmu {
 public:
  // `tlbs` is an array of kMmuCount TLBs that outlives the Mmu (translated
  // code reads them at a fixed offset from its context).
  Mmu(GuestMemory& memory, MmioBus& mmio, SoftTlb* tlbs);

  struct Lookup {
    enum Kind : uint8_t { kRam, kMmio, kFault } kind = kFault;
    uint8_t* host = nullptr;  // kRam: host address of the byte
    GuestPhys phys;           // kRam, kMmio
    GuestException fault;     // kFault
    bool global = false;      // kRam: a global page (PTE.G, CR4.PGE): kept across CR3 writes
  };

  // Translates one access that does not cross a page, filling the TLB of
  // `index` on success. Non-canonical addresses give #GP(0).
  Lookup Translate(const CpuState& cpu, GuestVirt addr, Access access, MmuIndex index);

  // Copies between guest-virtual memory and the monitor, across pages and
  // MMIO; on a fault, nothing is written and *fault says why.
  bool ReadVirt(const CpuState& cpu, GuestVirt addr, void* out, uint64_t size, MmuIndex index,
                GuestException* fault, Access access = Access::kRead);
  bool WriteVirt(const CpuState& cpu, GuestVirt addr, const void* in, uint64_t size,
                 MmuIndex index, GuestException* fault);

  // After a write into guest RAM at `phys` made around the MMU (a
  // debugger's): the observers hear of it if translated code lies there.
  void NoteWrite(GuestPhys phys, uint64_t size);

  void ReadMmio(GuestPhys phys, uint8_t* dst, uint64_t size);
  void WriteMmio(GuestPhys phys, const uint8_t* src, uint64_t size);

  // kAll: every translation (CR4 and CR0 paging changes, EFER.NXE); kNonGlobal:
  // all but those of global pages (a CR3 write with CR4.PGE set).
  enum class Flush : uint8_t { kAll, kNonGlobal };
  void FlushTlb(Flush kind = Flush::kAll);
  void FlushPage(GuestVirt addr);

  // Pages holding translated code are write-tracked: no soft-TLB entry lets
  // a write to them through inline, so every write reaches a slow path that
  // can invalidate the code (DESIGN.md, Self-modifying code).
  void MarkCodePage(GuestPhys page);
  void UnmarkCodePage(GuestPhys page);
  void UnmarkAllCodePages();
  bool IsCodePage(GuestPhys addr) const {
    uint64_t n = addr.value >> 12;
    return n < code_pages_.size() * 64 && (code_pages_[n / 64] >> (n % 64)) & 1;
  }
  // Observers (the code cache, the direct engine's shadow address space)
  // hear of flushes and code writes, in the order they were added.
  void AddObserver(MmuObserver* observer) { observers_.push_back(observer); }
  void RemoveObserver(MmuObserver* observer) { std::erase(observers_, observer); }

  // The rights the soft TLB of `index` holds for the page of `addr`, which
  // a Translate of it just filled or hit: writes (writable, dirty and no
  // translated code on it) and instruction fetches.
  struct PageRights {
    bool write = false, fetch = false;
  };
  PageRights TlbRights(GuestVirt addr, MmuIndex index) const;

  GuestMemory& memory() { return memory_; }
  MmioBus& mmio() { return mmio_; }
  SoftTlb& tlb(MmuIndex index) { return tlbs_[index]; }

  uint64_t walks = 0;
  uint64_t flushes = 0;

 private:
  GuestMemory& memory_;
  MmioBus& mmio_;
  SoftTlb* tlbs_;
  std::vector<MmuObserver*> observers_;
  std::vector<uint64_t> code_pages_;  // bitmap by guest-physical page number
};

inline MmuIndex MmuIndexFor(const CpuState& cpu) { return cpu.Cpl() == 3 ? kMmuUser : kMmuKernel; }

}  // namespace btvm
