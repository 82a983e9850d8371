#pragma once
// Segment descriptors and gates as the guest's GDT/LDT/IDT hold them
// (SDM Vol. 3 §3.4.5, §5.8.3.1, §6.14.1), read through the MMU as supervisor
// accesses, and the descriptor checks of a segment-register load
// (SDM Vol. 3 §5.5-§5.6; Vol. 2 MOV, POP, LAR, LSL, VERR/VERW).

#include <cstdint>

#include "base/cpu_state.h"
#include "base/exception.h"
#include "mmu/mmu.h"

namespace btvm {

// System-descriptor types in IA-32e mode (SDM Vol. 3 Table 3-2).
namespace desc_type {
inline constexpr unsigned kLdt = 0x2, kTssAvailable = 0x9, kTssBusy = 0xb, kCallGate = 0xc,
                          kInterruptGate = 0xe, kTrapGate = 0xf;
}

inline bool IsNullSelector(uint16_t selector) { return (selector & ~3u) == 0; }

struct Descriptor {
  uint64_t raw = 0;
  uint64_t raw_high = 0;  // system descriptors in long mode are 16 bytes

  uint16_t Attrib() const { return static_cast<uint16_t>((raw >> 40) & 0xf0ff); }
  unsigned Type() const { return (raw >> 40) & 0xf; }
  bool System() const { return !((raw >> 44) & 1); }
  unsigned Dpl() const { return (raw >> 45) & 3; }
  bool Present() const { return (raw >> 47) & 1; }
  bool Long() const { return (raw >> 53) & 1; }
  bool Db() const { return (raw >> 54) & 1; }
  bool Code() const { return !System() && (Type() & 8); }
  bool Data() const { return !System() && !(Type() & 8); }
  bool Conforming() const { return Code() && (Type() & 4); }
  bool Readable() const { return Data() || (Code() && (Type() & 2)); }
  bool Writable() const { return Data() && (Type() & 2); }
  bool Accessed() const { return !System() && (Type() & 1); }
  // A 64-bit code segment (L=1, D=0); L=0 is compatibility mode.
  bool Code64() const { return Code() && Long() && !Db(); }
  uint64_t Base() const {
    uint64_t b = ((raw >> 16) & 0xffffff) | (((raw >> 56) & 0xff) << 24);
    if (System()) b |= raw_high << 32;
    return b;
  }
  uint32_t Limit() const {
    uint32_t l = static_cast<uint32_t>((raw & 0xffff) | (((raw >> 48) & 0xf) << 16));
    if ((raw >> 55) & 1) l = (l << 12) | 0xfff;
    return l;
  }
  // A 64-bit call gate (SDM Vol. 3 Figure 5-9).
  uint16_t GateSelector() const { return static_cast<uint16_t>(raw >> 16); }
  uint64_t GateOffset() const {
    return (raw & 0xffff) | (((raw >> 48) & 0xffff) << 16) | ((raw_high & 0xffffffff) << 32);
  }
  SegmentReg ToSegment(uint16_t selector) const {
    SegmentReg s;
    s.selector = selector;
    s.attrib = Attrib();
    s.limit = Limit();
    s.base = Base();
    return s;
  }
};

// Reads the descriptor `selector` names (8 bytes; 16 if `wide`). Fails with
// #GP(selector) if it lies outside the table (or the LDT is not loaded), or
// with the fault of reading the table.
bool ReadDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, bool wide, Descriptor* out,
                    GuestException* fault);
bool WriteDescriptorLow(Mmu& mmu, const CpuState& cpu, uint16_t selector, uint64_t raw,
                        GuestException* fault);
// True if the 8 bytes of `selector`'s descriptor (16 if `wide`) lie inside
// its table: LAR, LSL and VERR/VERW clear ZF instead of faulting when not.
bool DescriptorInTable(const CpuState& cpu, uint16_t selector, bool wide);

// Sets the accessed bit of a code or data descriptor in its table, as the
// processor does when it loads a segment register (SDM Vol. 3 §3.4.5.1).
bool MarkAccessed(Mmu& mmu, const CpuState& cpu, uint16_t selector, Descriptor* desc,
                  GuestException* fault);

// Loads `selector` into DS, ES, FS, GS or SS at privilege `cpl` with every
// check of SDM Vol. 2 MOV/POP (64-bit mode): a null selector is allowed for
// DS/ES/FS/GS, and for SS only at CPL < 3 with RPL = CPL; SS needs a
// writable data segment with RPL = DPL = CPL (#GP(sel), not present:
// #SS(sel)); the others a data or readable code segment with
// max(CPL, RPL) <= DPL unless conforming code (#GP(sel); not present:
// #NP(sel)). On success *out is the new segment register (the accessed bit
// is set in the table); on failure *fault says why and nothing changed.
bool LoadDataSegment(Mmu& mmu, const CpuState& cpu, SegIndex seg, uint16_t selector,
                     unsigned cpl, SegmentReg* out, GuestException* fault);

// LAR, LSL, VERR, VERW: whether the descriptor is visible to the query at
// the current CPL (SDM Vol. 2). *valid false means ZF := 0 and no fault;
// reading the table may still fault (returns false with *fault).
enum class DescriptorQuery : uint8_t { kLar, kLsl, kVerr, kVerw };
bool QueryDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, DescriptorQuery query,
                     Descriptor* out, bool* valid, GuestException* fault);

}  // namespace btvm
