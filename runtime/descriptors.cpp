#include "runtime/descriptors.h"

namespace btvm {

namespace {
// The table a selector indexes, as a (base, limit) pair.
void TableOf(const CpuState& cpu, uint16_t selector, uint64_t* base, uint32_t* limit) {
  if (selector & 4) {
    *base = cpu.ldtr.base;
    *limit = cpu.ldtr.Present() ? cpu.ldtr.limit : 0;
  } else {
    *base = cpu.gdtr.base;
    *limit = cpu.gdtr.limit;
  }
}
}  // namespace

bool ReadDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, bool wide, Descriptor* out,
                    GuestException* fault) {
  uint64_t base;
  uint32_t limit;
  TableOf(cpu, selector, &base, &limit);
  uint64_t offset = selector & ~7u;
  uint64_t size = wide ? 16 : 8;
  if (offset + size - 1 > limit) {
    *fault = GuestException::Gp(selector & ~3u);
    return false;
  }
  uint64_t raw[2] = {};
  if (!mmu.ReadVirt(cpu, GuestVirt(base + offset), raw, size, kMmuKernel, fault)) return false;
  out->raw = raw[0];
  out->raw_high = raw[1];
  return true;
}

bool WriteDescriptorLow(Mmu& mmu, const CpuState& cpu, uint16_t selector, uint64_t raw,
                        GuestException* fault) {
  uint64_t base;
  uint32_t limit;
  TableOf(cpu, selector, &base, &limit);
  return mmu.WriteVirt(cpu, GuestVirt(base + (selector & ~7u)), &raw, 8, kMmuKernel, fault);
}

}  // namespace btvm
