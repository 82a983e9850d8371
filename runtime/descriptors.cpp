#include "runtime/descriptors.h"

namespace btvm {

namespace {
// The table a selector indexes, as a (base, limit) pair. An LDT selector
// with no LDT loaded sees an empty table.
bool TableOf(const CpuState& cpu, uint16_t selector, uint64_t* base, uint32_t* limit) {
  if (selector & 4) {
    if (!cpu.ldtr.Present() || IsNullSelector(cpu.ldtr.selector)) return false;
    *base = cpu.ldtr.base;
    *limit = cpu.ldtr.limit;
  } else {
    *base = cpu.gdtr.base;
    *limit = cpu.gdtr.limit;
  }
  return true;
}

GuestException SelectorFault(uint8_t vector, uint16_t selector) {
  return {vector, true, static_cast<uint32_t>(selector & ~3u), 0};
}
}  // namespace

bool DescriptorInTable(const CpuState& cpu, uint16_t selector, bool wide) {
  uint64_t base;
  uint32_t limit;
  if (!TableOf(cpu, selector, &base, &limit)) return false;
  uint64_t last = (selector & ~7u) + (wide ? 15u : 7u);
  return last <= limit;
}

bool ReadDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, bool wide, Descriptor* out,
                    GuestException* fault) {
  uint64_t base;
  uint32_t limit;
  if (!DescriptorInTable(cpu, selector, wide) || !TableOf(cpu, selector, &base, &limit)) {
    *fault = SelectorFault(kGP, selector);
    return false;
  }
  uint64_t raw[2] = {};
  if (!mmu.ReadVirt(cpu, GuestVirt(base + (selector & ~7u)), raw, wide ? 16 : 8, kMmuKernel,
                    fault)) {
    return false;
  }
  out->raw = raw[0];
  out->raw_high = raw[1];
  return true;
}

bool WriteDescriptorLow(Mmu& mmu, const CpuState& cpu, uint16_t selector, uint64_t raw,
                        GuestException* fault) {
  uint64_t base;
  uint32_t limit;
  if (!TableOf(cpu, selector, &base, &limit)) {
    *fault = SelectorFault(kGP, selector);
    return false;
  }
  return mmu.WriteVirt(cpu, GuestVirt(base + (selector & ~7u)), &raw, 8, kMmuKernel, fault);
}

bool MarkAccessed(Mmu& mmu, const CpuState& cpu, uint16_t selector, Descriptor* desc,
                  GuestException* fault) {
  if (desc->System() || desc->Accessed()) return true;
  uint64_t raw = desc->raw | (1ull << 40);
  if (!WriteDescriptorLow(mmu, cpu, selector, raw, fault)) return false;
  desc->raw = raw;
  return true;
}

bool LoadDataSegment(Mmu& mmu, const CpuState& cpu, SegIndex seg, uint16_t selector,
                     unsigned cpl, SegmentReg* out, GuestException* fault) {
  const unsigned rpl = selector & 3;
  if (IsNullSelector(selector)) {
    // 64-bit mode: DS/ES/FS/GS take a null selector (the register becomes
    // unusable; Intel also clears the FS/GS base); SS only at CPL < 3 with
    // RPL = CPL (SDM Vol. 2 MOV, "64-Bit Mode Exceptions").
    if (seg == kSs && (cpl == 3 || rpl != cpl)) {
      *fault = GuestException::Gp(0);
      return false;
    }
    *out = SegmentReg{};
    out->selector = selector;
    return true;
  }
  Descriptor desc;
  if (!ReadDescriptor(mmu, cpu, selector, false, &desc, fault)) return false;
  if (seg == kSs) {
    if (rpl != cpl || desc.Dpl() != cpl || !desc.Writable()) {
      *fault = SelectorFault(kGP, selector);
      return false;
    }
    if (!desc.Present()) {
      *fault = SelectorFault(kSS, selector);
      return false;
    }
  } else {
    if (!desc.Readable() ||
        (!desc.Conforming() && (desc.Dpl() < cpl || desc.Dpl() < rpl))) {
      *fault = SelectorFault(kGP, selector);
      return false;
    }
    if (!desc.Present()) {
      *fault = SelectorFault(kNP, selector);
      return false;
    }
  }
  if (!MarkAccessed(mmu, cpu, selector, &desc, fault)) return false;
  *out = desc.ToSegment(selector);
  return true;
}

bool QueryDescriptor(Mmu& mmu, const CpuState& cpu, uint16_t selector, DescriptorQuery query,
                     Descriptor* out, bool* valid, GuestException* fault) {
  *valid = false;
  if (IsNullSelector(selector) || !DescriptorInTable(cpu, selector, false)) return true;
  if (!ReadDescriptor(mmu, cpu, selector, false, out, fault)) return false;
  const Descriptor& d = *out;
  const unsigned cpl = cpu.Cpl(), rpl = selector & 3;
  bool type_ok = false;
  switch (query) {
    case DescriptorQuery::kLar:
    case DescriptorQuery::kLsl:
      if (d.System()) {
        // IA-32e mode: LDT and 64-bit TSS for both, call gates for LAR only.
        unsigned t = d.Type();
        type_ok = t == desc_type::kLdt || t == desc_type::kTssAvailable ||
                  t == desc_type::kTssBusy ||
                  (query == DescriptorQuery::kLar && t == desc_type::kCallGate);
      } else {
        type_ok = true;
      }
      break;
    case DescriptorQuery::kVerr: type_ok = d.Readable(); break;
    case DescriptorQuery::kVerw: type_ok = d.Writable(); break;
  }
  if (!type_ok) return true;
  // Conforming code segments are visible at every privilege; everything
  // else needs DPL >= max(CPL, RPL).
  if (!d.Conforming() && (d.Dpl() < cpl || d.Dpl() < rpl)) return true;
  *valid = true;
  return true;
}

}  // namespace btvm
