#include "mmu/mmu.h"

#include <algorithm>
#include <cstring>

namespace btvm {

namespace {
bool IsAccessSize(uint64_t n) { return n == 1 || n == 2 || n == 4 || n == 8; }
}  // namespace

// MMIO accesses keep their size (a 4-byte register write is one write), as
// long as it is a natural access size; anything else goes byte by byte.
void Mmu::ReadMmio(GuestPhys phys, uint8_t* dst, uint64_t size) {
  if (IsAccessSize(size)) {
    uint64_t v = mmio_.Read(phys, static_cast<unsigned>(size));
    std::memcpy(dst, &v, size);
    return;
  }
  for (uint64_t i = 0; i < size; ++i) dst[i] = static_cast<uint8_t>(mmio_.Read(phys + i, 1));
}

void Mmu::WriteMmio(GuestPhys phys, const uint8_t* src, uint64_t size) {
  if (IsAccessSize(size)) {
    uint64_t v = 0;
    std::memcpy(&v, src, size);
    mmio_.Write(phys, static_cast<unsigned>(size), v);
    return;
  }
  for (uint64_t i = 0; i < size; ++i) mmio_.Write(phys + i, 1, src[i]);
}

Mmu::Mmu(GuestMemory& memory, MmioBus& mmio, SoftTlb* tlbs)
    : memory_(memory), mmio_(mmio), tlbs_(tlbs) {}

Mmu::Lookup Mmu::Translate(const CpuState& cpu, GuestVirt addr, Access access, MmuIndex index) {
  Lookup out;
  // A soft-TLB hit: the walk already checked this access and set A (and D
  // for a write).
  {
    const unsigned slot = SoftTlb::Index(addr.value);
    const TlbEntry& e = tlbs_[index].entries[slot];
    uint64_t tag = access == Access::kWrite   ? e.write_tag
                   : access == Access::kFetch ? e.fetch_tag
                                              : e.read_tag;
    GuestPhys page;
    if (SoftTlb::Hits(tag, addr.value, 1) &&
        memory_.PhysOf(reinterpret_cast<const uint8_t*>(e.host_page), &page)) {
      out.kind = Lookup::kRam;
      out.phys = page + addr.PageOffset();
      out.host = reinterpret_cast<uint8_t*>(e.host_page) + addr.PageOffset();
      out.global = tlbs_[index].global[slot];
      return out;
    }
  }
  if (cpu.LongMode() && !IsCanonical(addr.value)) {
    out.fault = GuestException::Gp(0);
    return out;
  }
  ++walks;
  PagingMode mode = PagingModeOf(cpu, index == kMmuUser);
  WalkOutcome w = WalkPageTables(memory_, mode, addr, access);
  if (!w.ok) {
    out.fault = GuestException::PageFault(addr.value, w.error_code);
    return out;
  }
  out.phys = w.translation.phys;
  uint8_t* page = memory_.HostPointer(out.phys.PageBase(), kPageSize);
  if (!page) {
    out.kind = Lookup::kMmio;
    return out;
  }
  out.kind = Lookup::kRam;
  out.host = page + out.phys.PageOffset();
  out.global = w.translation.global && (cpu.cr4 & cr4::kPGE);

  // Fill the TLB. A kernel access to a user page under SMAP depends on
  // RFLAGS.AC, which the inline probe does not see: such pages stay slow.
  bool smap_sensitive = index == kMmuKernel && w.translation.user && (cpu.cr4 & cr4::kSMAP);
  if (smap_sensitive) return out;
  uint64_t vpage = addr.PageBase().value;
  unsigned i = SoftTlb::Index(vpage);
  TlbEntry& e = tlbs_[index].entries[i];
  if (e.host_page != reinterpret_cast<uint64_t>(page) || (e.read_tag != vpage)) {
    tlbs_[index].Invalidate(i);
  }
  e.host_page = reinterpret_cast<uint64_t>(page);
  e.read_tag = vpage;
  if (w.translation.writable && w.translation.dirty && !IsCodePage(out.phys)) {
    e.write_tag = vpage;
  }
  if (w.translation.executable) e.fetch_tag = vpage;
  tlbs_[index].global[i] = out.global;
  return out;
}

bool Mmu::ReadVirt(const CpuState& cpu, GuestVirt addr, void* out, uint64_t size, MmuIndex index,
                   GuestException* fault, Access access) {
  uint8_t* dst = static_cast<uint8_t*>(out);
  while (size > 0) {
    uint64_t chunk = std::min<uint64_t>(size, kPageSize - addr.PageOffset());
    Lookup l = Translate(cpu, addr, access, index);
    if (l.kind == Lookup::kFault) {
      *fault = l.fault;
      return false;
    }
    if (l.kind == Lookup::kRam) {
      std::memcpy(dst, l.host, chunk);
    } else {
      ReadMmio(l.phys, dst, chunk);
    }
    dst += chunk;
    addr = addr + chunk;
    size -= chunk;
  }
  return true;
}

void Mmu::NoteWrite(GuestPhys phys, uint64_t size) {
  if (!IsCodePage(phys)) return;
  for (MmuObserver* o : observers_) o->OnCodeWrite(phys, size);
}

bool Mmu::WriteVirt(const CpuState& cpu, GuestVirt addr, const void* in, uint64_t size,
                    MmuIndex index, GuestException* fault) {
  // Translate every page first so that a fault leaves memory untouched.
  const uint8_t* src = static_cast<const uint8_t*>(in);
  Lookup pages[2];
  uint64_t first = std::min<uint64_t>(size, kPageSize - addr.PageOffset());
  if (size > kPageSize + first) {  // larger than two pages: chunk it
    uint64_t head = first;
    if (!WriteVirt(cpu, addr, src, head, index, fault)) return false;
    return WriteVirt(cpu, addr + head, src + head, size - head, index, fault);
  }
  pages[0] = Translate(cpu, addr, Access::kWrite, index);
  if (pages[0].kind == Lookup::kFault) {
    *fault = pages[0].fault;
    return false;
  }
  if (size > first) {
    pages[1] = Translate(cpu, addr + first, Access::kWrite, index);
    if (pages[1].kind == Lookup::kFault) {
      *fault = pages[1].fault;
      return false;
    }
  }
  uint64_t done = 0;
  for (int p = 0; p < 2 && done < size; ++p) {
    uint64_t chunk = p == 0 ? first : size - first;
    if (pages[p].kind == Lookup::kRam) {
      std::memcpy(pages[p].host, src + done, chunk);
      NoteWrite(pages[p].phys, chunk);
    } else {
      WriteMmio(pages[p].phys, src + done, chunk);
    }
    done += chunk;
  }
  return true;
}

void Mmu::FlushTlb(Flush kind) {
  ++flushes;
  for (unsigned i = 0; i < kMmuCount; ++i) {
    if (kind == Flush::kNonGlobal) {
      tlbs_[i].FlushNonGlobal();
    } else {
      tlbs_[i].Flush();
    }
  }
  for (MmuObserver* o : observers_) o->OnTlbFlush(kind == Flush::kNonGlobal);
}

void Mmu::FlushPage(GuestVirt addr) {
  for (unsigned i = 0; i < kMmuCount; ++i) tlbs_[i].FlushPage(addr.PageBase());
  for (MmuObserver* o : observers_) o->OnTlbFlushPage(addr.PageBase());
}

Mmu::PageRights Mmu::TlbRights(GuestVirt addr, MmuIndex index) const {
  const uint64_t vpage = addr.PageBase().value;
  const TlbEntry& e = tlbs_[index].entries[SoftTlb::Index(vpage)];
  PageRights r;
  if (e.read_tag != vpage) return r;
  r.write = e.write_tag == vpage;
  r.fetch = e.fetch_tag == vpage;
  return r;
}

void Mmu::MarkCodePage(GuestPhys page) {
  uint64_t n = page.value >> 12;
  if (n >= code_pages_.size() * 64) code_pages_.resize(n / 64 + 1, 0);
  code_pages_[n / 64] |= 1ull << (n % 64);
  // Entries that already allow writes to this page lose that right.
  const uint8_t* host = memory_.HostPointer(page.PageBase(), kPageSize);
  for (unsigned i = 0; i < kMmuCount; ++i) {
    for (unsigned j = 0; j < SoftTlb::kEntries; ++j) {
      TlbEntry& e = tlbs_[i].entries[j];
      if (e.host_page == reinterpret_cast<uint64_t>(host)) e.write_tag = SoftTlb::InvalidTag(j);
    }
    if (tlbs_[i].stack.host_page == reinterpret_cast<uint64_t>(host)) tlbs_[i].ResetStack();
  }
  for (MmuObserver* o : observers_) o->OnCodePageMarked(page.PageBase());
}

void Mmu::UnmarkCodePage(GuestPhys page) {
  uint64_t n = page.value >> 12;
  if (n < code_pages_.size() * 64) code_pages_[n / 64] &= ~(1ull << (n % 64));
}

void Mmu::UnmarkAllCodePages() { std::fill(code_pages_.begin(), code_pages_.end(), 0); }

}  // namespace btvm
