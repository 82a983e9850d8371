#pragma once
// Segment descriptors and gates as the guest's GDT/LDT/IDT hold them
// (SDM Vol. 3 §3.4.5, §6.14.1), read through the MMU as supervisor accesses.

#include <cstdint>

#include "base/cpu_state.h"
#include "base/exception.h"
#include "mmu/mmu.h"

namespace btvm {

struct Descriptor {
  uint64_t raw = 0;
  uint64_t raw_high = 0;  // system descriptors in long mode are 16 bytes

  uint16_t Attrib() const { return static_cast<uint16_t>((raw >> 40) & 0xf0ff); }
  unsigned Type() const { return (raw >> 40) & 0xf; }
  bool System() const { return !((raw >> 44) & 1); }
  unsigned Dpl() const { return (raw >> 45) & 3; }
  bool Present() const { return (raw >> 47) & 1; }
  bool Long() const { return (raw >> 53) & 1; }
  bool Code() const { return !System() && (Type() & 8); }
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
// #GP(selector) if it lies outside the table.
bool ReadDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, bool wide, Descriptor* out,
                    GuestException* fault);
bool WriteDescriptorLow(Mmu& mmu, const CpuState& cpu, uint16_t selector, uint64_t raw,
                        GuestException* fault);

}  // namespace btvm
