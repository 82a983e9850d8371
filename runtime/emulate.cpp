#include "runtime/emulate.h"

#include <cpuid.h>
#include <x86intrin.h>

#include <cstring>

#include "runtime/descriptors.h"
#include "translator/emitter.h"

namespace btvm {

namespace {

constexpr uint64_t Mask(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }

EmulateOutcome Done() { return {}; }
EmulateOutcome Fault(const GuestException& e) {
  EmulateOutcome o;
  o.kind = EmulateOutcome::kFault;
  o.exception = e;
  return o;
}
EmulateOutcome Unsupported(const DecodedInsn& d) {
  EmulateOutcome o;
  o.kind = EmulateOutcome::kUnsupported;
  o.message = "unsupported guest instruction '" + FormatInsn(d) + "'";
  return o;
}

// Flags of `a - b` at `size` bytes, computed by the host CPU itself (the
// reference for instruction semantics).
uint64_t SubFlags(uint64_t a, uint64_t b, unsigned size) {
  uint64_t f;
  switch (size) {
    case 1: asm("cmpb %b2, %b1; pushfq; popq %0" : "=r"(f) : "r"(a), "r"(b) : "cc"); break;
    case 2: asm("cmpw %w2, %w1; pushfq; popq %0" : "=r"(f) : "r"(a), "r"(b) : "cc"); break;
    case 4: asm("cmpl %k2, %k1; pushfq; popq %0" : "=r"(f) : "r"(a), "r"(b) : "cc"); break;
    default: asm("cmpq %2, %1; pushfq; popq %0" : "=r"(f) : "r"(a), "r"(b) : "cc"); break;
  }
  return f & rflags::kArith;
}

bool IoAllowed(const CpuState& cpu) {
  // The TSS I/O permission bitmap is not consulted yet: at CPL > IOPL,
  // port I/O faults (a TSS without a bitmap behaves so).
  return cpu.Cpl() <= ((cpu.rflags & rflags::kIOPL) >> 12);
}

}  // namespace

uint64_t GuestTsc(const CpuState& cpu) { return __rdtsc() + cpu.msr.tsc_offset; }

uint64_t Emulator::EffectiveAddress(const CpuState& cpu, const DecodedInsn& d,
                                    const ZydisDecodedOperand& op) const {
  const auto& m = op.mem;
  uint64_t ea;
  if (m.base == ZYDIS_REGISTER_RIP) {
    ea = d.NextRip() + m.disp.value;
  } else {
    ea = m.disp.value;
    GprRef r;
    if (DecodeGpr(m.base, &r)) ea += cpu.gpr[r.index];
    if (DecodeGpr(m.index, &r)) ea += cpu.gpr[r.index] * m.scale;
  }
  if (d.insn.address_width == 32) ea &= 0xffffffff;
  if (m.segment == ZYDIS_REGISTER_FS) ea += cpu.seg[kFs].base;
  if (m.segment == ZYDIS_REGISTER_GS) ea += cpu.seg[kGs].base;
  return ea;
}

bool Emulator::ReadOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                           uint64_t* value, GuestException* fault) {
  unsigned size = op.size / 8;
  if (op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
    *value = op.imm.value.u & Mask(size);
    return true;
  }
  if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
    GprRef r;
    if (!DecodeGpr(op.reg.value, &r)) return false;
    uint64_t v = cpu.gpr[r.index];
    *value = r.high8 ? (v >> 8) & 0xff : v & Mask(r.size);
    return true;
  }
  *value = 0;
  return mmu_.ReadVirt(cpu, GuestVirt(EffectiveAddress(cpu, d, op)), value, size,
                       MmuIndexFor(cpu), fault);
}

bool Emulator::WriteOperand(CpuState& cpu, const DecodedInsn& d, const ZydisDecodedOperand& op,
                            uint64_t value, GuestException* fault) {
  unsigned size = op.size / 8;
  if (op.type == ZYDIS_OPERAND_TYPE_REGISTER) {
    GprRef r;
    if (!DecodeGpr(op.reg.value, &r)) return false;
    uint64_t& g = cpu.gpr[r.index];
    if (r.high8) {
      g = (g & ~0xff00ull) | ((value & 0xff) << 8);
    } else if (r.size == 4) {
      g = value & 0xffffffff;
    } else {
      g = (g & ~Mask(r.size)) | (value & Mask(r.size));
    }
    return true;
  }
  return mmu_.WriteVirt(cpu, GuestVirt(EffectiveAddress(cpu, d, op)), &value, size,
                        MmuIndexFor(cpu), fault);
}

bool Emulator::Push(CpuState& cpu, uint64_t value, unsigned size, GuestException* fault) {
  uint64_t rsp = cpu.gpr[kRsp] - size;
  if (!mmu_.WriteVirt(cpu, GuestVirt(rsp), &value, size, MmuIndexFor(cpu), fault)) return false;
  cpu.gpr[kRsp] = rsp;
  return true;
}

bool Emulator::Pop(CpuState& cpu, uint64_t* value, unsigned size, GuestException* fault) {
  *value = 0;
  if (!mmu_.ReadVirt(cpu, GuestVirt(cpu.gpr[kRsp]), value, size, MmuIndexFor(cpu), fault)) {
    return false;
  }
  cpu.gpr[kRsp] += size;
  return true;
}

EmulateOutcome Emulator::PortIo(CpuState& cpu, const DecodedInsn& d) {
  if (!IoAllowed(cpu)) return Fault(GuestException::Gp(0));
  ++counters_.exits_io;
  bool in = d.insn.mnemonic == ZYDIS_MNEMONIC_IN;
  const ZydisDecodedOperand& data = in ? d.ops[0] : d.ops[1];
  const ZydisDecodedOperand& port_op = in ? d.ops[1] : d.ops[0];
  uint16_t port = port_op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE
                      ? static_cast<uint16_t>(port_op.imm.value.u)
                      : static_cast<uint16_t>(cpu.gpr[kRdx]);
  unsigned size = data.size / 8;
  GuestException unused;
  if (in) {
    WriteOperand(cpu, d, data, pio_.Read(port, size), &unused);
  } else {
    pio_.Write(port, size, static_cast<uint32_t>(cpu.gpr[kRax] & Mask(size)));
  }
  cpu.rip = d.NextRip();
  return Done();
}

// String instructions, one element at a time, so that a fault part-way
// through a rep leaves RCX/RSI/RDI exactly at the faulting element
// (SDM Vol. 2 "REP": interrupted string operations are restartable).
EmulateOutcome Emulator::StringOp(CpuState& cpu, const DecodedInsn& d) {
  const ZydisMnemonic m = d.insn.mnemonic;
  unsigned size = d.insn.operand_width / 8;
  bool io = m == ZYDIS_MNEMONIC_INSB || m == ZYDIS_MNEMONIC_INSW || m == ZYDIS_MNEMONIC_INSD ||
            m == ZYDIS_MNEMONIC_OUTSB || m == ZYDIS_MNEMONIC_OUTSW || m == ZYDIS_MNEMONIC_OUTSD;
  if (m == ZYDIS_MNEMONIC_INSB || m == ZYDIS_MNEMONIC_OUTSB) size = 1;
  if (io && !IoAllowed(cpu)) return Fault(GuestException::Gp(0));
  bool rep = d.insn.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE |
                                  ZYDIS_ATTRIB_HAS_REPNE);
  bool repne = d.insn.attributes & ZYDIS_ATTRIB_HAS_REPNE;
  bool conditional = m == ZYDIS_MNEMONIC_CMPSB || m == ZYDIS_MNEMONIC_CMPSW ||
                     m == ZYDIS_MNEMONIC_CMPSD || m == ZYDIS_MNEMONIC_CMPSQ ||
                     m == ZYDIS_MNEMONIC_SCASB || m == ZYDIS_MNEMONIC_SCASW ||
                     m == ZYDIS_MNEMONIC_SCASD || m == ZYDIS_MNEMONIC_SCASQ;
  const uint64_t amask = d.insn.address_width == 32 ? 0xffffffffull : ~0ull;
  const int64_t step = (cpu.rflags & rflags::kDF) ? -int64_t(size) : int64_t(size);
  // The source segment may be overridden (FS/GS bases); ES:RDI may not.
  uint64_t src_base = 0;
  if (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_FS) src_base = cpu.seg[kFs].base;
  if (d.insn.attributes & ZYDIS_ATTRIB_HAS_SEGMENT_GS) src_base = cpu.seg[kGs].base;
  const MmuIndex index = MmuIndexFor(cpu);
  GuestException fault;
  uint64_t done = 0;
  while (!rep || (cpu.gpr[kRcx] & amask) != 0) {
    uint64_t rsi = cpu.gpr[kRsi] & amask, rdi = cpu.gpr[kRdi] & amask;
    uint64_t v = 0, w = 0;
    bool advance_si = false, advance_di = false;
    switch (m) {
      case ZYDIS_MNEMONIC_MOVSB: case ZYDIS_MNEMONIC_MOVSW:
      case ZYDIS_MNEMONIC_MOVSD: case ZYDIS_MNEMONIC_MOVSQ:
        if (!mmu_.ReadVirt(cpu, GuestVirt(src_base + rsi), &v, size, index, &fault) ||
            !mmu_.WriteVirt(cpu, GuestVirt(rdi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        advance_si = advance_di = true;
        break;
      case ZYDIS_MNEMONIC_STOSB: case ZYDIS_MNEMONIC_STOSW:
      case ZYDIS_MNEMONIC_STOSD: case ZYDIS_MNEMONIC_STOSQ:
        v = cpu.gpr[kRax];
        if (!mmu_.WriteVirt(cpu, GuestVirt(rdi), &v, size, index, &fault)) return Fault(fault);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_LODSB: case ZYDIS_MNEMONIC_LODSW:
      case ZYDIS_MNEMONIC_LODSD: case ZYDIS_MNEMONIC_LODSQ:
        if (!mmu_.ReadVirt(cpu, GuestVirt(src_base + rsi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        if (size == 4) cpu.gpr[kRax] = v;
        else cpu.gpr[kRax] = (cpu.gpr[kRax] & ~Mask(size)) | v;
        advance_si = true;
        break;
      case ZYDIS_MNEMONIC_CMPSB: case ZYDIS_MNEMONIC_CMPSW:
      case ZYDIS_MNEMONIC_CMPSD: case ZYDIS_MNEMONIC_CMPSQ:
        if (!mmu_.ReadVirt(cpu, GuestVirt(src_base + rsi), &v, size, index, &fault) ||
            !mmu_.ReadVirt(cpu, GuestVirt(rdi), &w, size, index, &fault)) {
          return Fault(fault);
        }
        cpu.rflags = (cpu.rflags & ~rflags::kArith) | SubFlags(v, w, size);
        advance_si = advance_di = true;
        break;
      case ZYDIS_MNEMONIC_SCASB: case ZYDIS_MNEMONIC_SCASW:
      case ZYDIS_MNEMONIC_SCASD: case ZYDIS_MNEMONIC_SCASQ:
        if (!mmu_.ReadVirt(cpu, GuestVirt(rdi), &w, size, index, &fault)) return Fault(fault);
        cpu.rflags = (cpu.rflags & ~rflags::kArith) | SubFlags(cpu.gpr[kRax], w, size);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_INSB: case ZYDIS_MNEMONIC_INSW: case ZYDIS_MNEMONIC_INSD:
        // Check the destination before the port read (which may have effects).
        if (!mmu_.WriteVirt(cpu, GuestVirt(rdi), &v, 0, index, &fault)) return Fault(fault);
        v = pio_.Read(static_cast<uint16_t>(cpu.gpr[kRdx]), size);
        if (!mmu_.WriteVirt(cpu, GuestVirt(rdi), &v, size, index, &fault)) return Fault(fault);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_OUTSB: case ZYDIS_MNEMONIC_OUTSW: case ZYDIS_MNEMONIC_OUTSD:
        if (!mmu_.ReadVirt(cpu, GuestVirt(src_base + rsi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        pio_.Write(static_cast<uint16_t>(cpu.gpr[kRdx]), size, static_cast<uint32_t>(v));
        advance_si = true;
        break;
      default:
        return Unsupported(d);
    }
    auto bump = [&](int reg) {
      uint64_t nv = (cpu.gpr[reg] + step) & amask;
      cpu.gpr[reg] = amask == ~0ull ? nv : nv;  // 32-bit addressing zero-extends
    };
    if (advance_si) bump(kRsi);
    if (advance_di) bump(kRdi);
    ++done;
    if (!rep) break;
    cpu.gpr[kRcx] = (cpu.gpr[kRcx] - 1) & amask;
    if (conditional) {
      bool zf = cpu.rflags & rflags::kZF;
      if (repne ? zf : !zf) break;
    }
  }
  (void)done;
  cpu.rip = d.NextRip();
  return Done();
}

EmulateOutcome Emulator::MovCr(CpuState& cpu, const DecodedInsn& d) {
  if (cpu.Cpl() != 0) return Fault(GuestException::Gp(0));
  bool to_cr = ZydisRegisterGetClass(d.ops[0].reg.value) == ZYDIS_REGCLASS_CONTROL;
  ZydisRegister crreg = to_cr ? d.ops[0].reg.value : d.ops[1].reg.value;
  int cr = crreg - ZYDIS_REGISTER_CR0;
  GprRef g;
  DecodeGpr(to_cr ? d.ops[1].reg.value : d.ops[0].reg.value, &g);
  if (!to_cr) {
    uint64_t v = cr == 0 ? cpu.cr0 : cr == 2 ? cpu.cr2 : cr == 3 ? cpu.cr3 : cr == 4 ? cpu.cr4
                 : cr == 8 ? cpu.cr8 : ~0ull;
    if (v == ~0ull) return Fault(GuestException::Ud());
    cpu.gpr[g.index] = v;
    cpu.rip = d.NextRip();
    return Done();
  }
  uint64_t v = cpu.gpr[g.index];
  switch (cr) {
    case 0: {
      // Reserved bits 63:32 set -> #GP; PG without PE -> #GP (SDM Vol. 3 §2.5).
      if (v >> 32) return Fault(GuestException::Gp(0));
      if ((v & cr0::kPG) && !(v & cr0::kPE)) return Fault(GuestException::Gp(0));
      if (cpu.LongMode() && !(v & cr0::kPG)) {
        return Unsupported(d);  // leaving long mode is not modelled
      }
      cpu.cr0 = v | cr0::kET;
      mmu_.FlushTlb();
      break;
    }
    case 2: cpu.cr2 = v; break;
    case 3:
      if (v & ~((1ull << kPhysAddrBits) - 1) & ~0xfffull) return Fault(GuestException::Gp(0));
      cpu.cr3 = v;
      mmu_.FlushTlb();
      ++counters_.tlb_flushes;
      break;
    case 4: {
      const uint64_t allowed = cr4::kPSE | cr4::kPAE | cr4::kPGE | cr4::kOSFXSR |
                               cr4::kOSXMMEXCPT | (1ull << 3) /*DE*/ | (1ull << 8) /*PCE*/;
      if (v & ~allowed) return Fault(GuestException::Gp(0));
      if (cpu.LongMode() && !(v & cr4::kPAE)) return Fault(GuestException::Gp(0));
      cpu.cr4 = v;
      mmu_.FlushTlb();
      break;
    }
    case 8:
      if (v & ~0xfull) return Fault(GuestException::Gp(0));
      cpu.cr8 = v;
      break;
    default: return Fault(GuestException::Ud());
  }
  cpu.rip = d.NextRip();
  return Done();
}

EmulateOutcome Emulator::LoadSegment(CpuState& cpu, int seg, uint16_t selector) {
  GuestException fault;
  if ((selector & ~3u) == 0) {
    // A null selector: allowed for DS/ES/FS/GS, and for SS at CPL < 3 in
    // 64-bit mode (SDM Vol. 3 §5.4.1.1). The base of FS/GS stays as is only
    // through the MSRs; a null load zeroes the hidden part here.
    if (seg == kSs && (cpu.Cpl() == 3 || selector != cpu.Cpl())) {
      return Fault(GuestException::Gp(0));
    }
    cpu.seg[seg] = SegmentReg{};
    cpu.seg[seg].selector = selector;
    return Done();
  }
  Descriptor desc;
  if (!ReadDescriptor(mmu_, cpu, selector, false, &desc, &fault)) return Fault(fault);
  unsigned rpl = selector & 3, cpl = cpu.Cpl();
  if (seg == kSs) {
    bool writable_data = !desc.System() && !desc.Code() && (desc.Type() & 2);
    if (rpl != cpl || desc.Dpl() != cpl || !writable_data) {
      return Fault(GuestException::Gp(selector & ~3u));
    }
    if (!desc.Present()) return Fault({kSS, true, static_cast<uint32_t>(selector & ~3u), 0});
  } else {
    bool readable = !desc.System() && (!desc.Code() || (desc.Type() & 2));
    bool conforming = desc.Code() && (desc.Type() & 4);
    if (!readable || (!conforming && (desc.Dpl() < cpl || desc.Dpl() < rpl))) {
      return Fault(GuestException::Gp(selector & ~3u));
    }
    if (!desc.Present()) return Fault({kNP, true, static_cast<uint32_t>(selector & ~3u), 0});
  }
  cpu.seg[seg] = desc.ToSegment(selector);
  return Done();
}

// iretq and far ret in 64-bit mode (SDM Vol. 2 IRET, RET; returns to the
// same or an outer privilege level; 64-bit and compatibility-mode targets).
EmulateOutcome Emulator::FarReturn(CpuState& cpu, const DecodedInsn& d, bool iret) {
  GuestException fault;
  unsigned size = d.insn.operand_width / 8;
  CpuState next = cpu;
  uint64_t rip = 0, cs = 0, fl = 0, rsp = 0, ss = 0;
  if (!Pop(next, &rip, size, &fault) || !Pop(next, &cs, size, &fault)) return Fault(fault);
  if (iret && !Pop(next, &fl, size, &fault)) return Fault(fault);
  if (!iret && d.ops[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE) next.gpr[kRsp] += d.ops[0].imm.value.u;
  uint16_t cs_sel = static_cast<uint16_t>(cs);
  unsigned rpl = cs_sel & 3, cpl = cpu.Cpl();
  bool outer = rpl > cpl;
  if (iret || outer) {
    if (!Pop(next, &rsp, size, &fault) || !Pop(next, &ss, size, &fault)) return Fault(fault);
  }
  if (rpl < cpl || (cs_sel & ~3u) == 0) return Fault(GuestException::Gp(cs_sel & ~3u));
  Descriptor desc;
  if (!ReadDescriptor(mmu_, cpu, cs_sel, false, &desc, &fault)) return Fault(fault);
  if (!desc.Code()) return Fault(GuestException::Gp(cs_sel & ~3u));
  bool conforming = desc.Type() & 4;
  if (conforming ? desc.Dpl() > rpl : desc.Dpl() != rpl) {
    return Fault(GuestException::Gp(cs_sel & ~3u));
  }
  if (!desc.Present()) return Fault({kNP, true, static_cast<uint32_t>(cs_sel & ~3u), 0});
  if (desc.Long() && !IsCanonical(rip)) return Fault(GuestException::Gp(0));
  if (!desc.Long()) return Unsupported(d);  // compatibility mode: later issue

  next.seg[kCs] = desc.ToSegment(cs_sel);
  next.rip = rip;
  if (iret) {
    // Which flags iret may change depends on CPL and IOPL (SDM Vol. 2 IRET).
    uint64_t changeable = rflags::kArith | rflags::kTF | rflags::kDF | rflags::kNT |
                          rflags::kRF | rflags::kAC | rflags::kID | (1ull << 19) | (1ull << 20);
    if (cpl == 0) changeable |= rflags::kIOPL;
    if (cpl <= ((cpu.rflags & rflags::kIOPL) >> 12)) changeable |= rflags::kIF;
    next.rflags = (cpu.rflags & ~changeable) | (fl & changeable) | rflags::kFixed1;
  }
  if (iret || outer) {
    next.gpr[kRsp] = rsp;
    uint16_t ss_sel = static_cast<uint16_t>(ss);
    CpuState probe = next;  // SS is checked at the new CPL
    EmulateOutcome o = LoadSegment(probe, kSs, ss_sel);
    if (o.kind != EmulateOutcome::kDone) return o;
    next.seg[kSs] = probe.seg[kSs];
  }
  if (outer) {
    // Data segments the new CPL may not use become null (SDM Vol. 2 IRET).
    for (int s : {kDs, kEs, kFs, kGs}) {
      const SegmentReg& r = next.seg[s];
      bool code_conforming = (r.attrib & 0x1c) == 0x1c;
      if ((r.selector & ~3u) != 0 && !code_conforming && r.Dpl() < rpl) {
        uint64_t base = r.base;
        next.seg[s] = SegmentReg{};
        if (s == kFs || s == kGs) next.seg[s].base = base;  // bases stay in 64-bit mode
      }
    }
  }
  cpu = next;
  return Done();
}

// div/idiv r/m (SDM Vol. 2 DIV, IDIV): the dividend is AX, DX:AX, EDX:EAX
// or RDX:RAX; #DE for a zero divisor or a quotient that does not fit.
// Arithmetic flags are undefined after a division; they are left as they were.
EmulateOutcome Emulator::Divide(CpuState& cpu, const DecodedInsn& d) {
  GuestException fault;
  unsigned size = d.ops[0].size / 8;
  uint64_t divisor;
  if (!ReadOperand(cpu, d, d.ops[0], &divisor, &fault)) return Fault(fault);
  if (divisor == 0) return Fault({kDE, false, 0, 0});
  const unsigned bits = size * 8;
  const uint64_t m = Mask(size);
  unsigned __int128 dividend;
  if (size == 1) {
    dividend = cpu.gpr[kRax] & 0xffff;
  } else {
    dividend = (static_cast<unsigned __int128>(cpu.gpr[kRdx] & m) << bits) | (cpu.gpr[kRax] & m);
  }
  uint64_t q, r;
  if (d.insn.mnemonic == ZYDIS_MNEMONIC_DIV) {
    unsigned __int128 qq = dividend / divisor;
    if (qq > m) return Fault({kDE, false, 0, 0});
    q = static_cast<uint64_t>(qq);
    r = static_cast<uint64_t>(dividend % divisor);
  } else {
    // Sign-extend the 2*bits-wide dividend and the divisor.
    __int128 sd;
    if (bits == 64) {
      sd = static_cast<__int128>(dividend);
    } else {
      unsigned total = 2 * bits;
      sd = static_cast<__int128>(dividend << (128 - total)) >> (128 - total);
    }
    int64_t sv = static_cast<int64_t>(divisor << (64 - bits)) >> (64 - bits);
    __int128 qq = sd / sv;  // sd = -2^127, sv = -1 cannot happen: sd fits 2*bits <= 128
    if (bits == 64 && sd == (static_cast<__int128>(1) << 127) && sv == -1) {
      return Fault({kDE, false, 0, 0});
    }
    __int128 lo = -(static_cast<__int128>(1) << (bits - 1));
    __int128 hi = (static_cast<__int128>(1) << (bits - 1)) - 1;
    if (qq < lo || qq > hi) return Fault({kDE, false, 0, 0});
    q = static_cast<uint64_t>(qq) & m;
    r = static_cast<uint64_t>(sd % sv) & m;
  }
  if (size == 1) {
    cpu.gpr[kRax] = (cpu.gpr[kRax] & ~0xffffull) | (r << 8) | q;
  } else if (size == 4) {
    cpu.gpr[kRax] = q;
    cpu.gpr[kRdx] = r;
  } else {
    cpu.gpr[kRax] = (cpu.gpr[kRax] & ~m) | q;
    cpu.gpr[kRdx] = (cpu.gpr[kRdx] & ~m) | r;
  }
  return Done();
}

EmulateOutcome Emulator::Msr(CpuState& cpu, bool write) {
  if (cpu.Cpl() != 0) return Fault(GuestException::Gp(0));
  uint32_t msr = static_cast<uint32_t>(cpu.gpr[kRcx]);
  uint64_t v = (cpu.gpr[kRdx] << 32) | (cpu.gpr[kRax] & 0xffffffff);
  uint64_t* slot = nullptr;
  MsrState& m = cpu.msr;
  switch (msr) {
    case 0x10:  // IA32_TSC
      if (write) {
        m.tsc_offset = v - __rdtsc();
      } else {
        v = GuestTsc(cpu);
      }
      break;
    case 0x1b: slot = &m.apic_base; break;
    case 0xfe:  // IA32_MTRRCAP: 8 variable ranges, fixed ranges, WC
      if (write) return Fault(GuestException::Gp(0));
      v = 0x508;
      break;
    case 0x174: slot = &m.sysenter_cs; break;
    case 0x175: slot = &m.sysenter_esp; break;
    case 0x176: slot = &m.sysenter_eip; break;
    case 0x1a0: slot = &m.misc_enable; break;
    case 0x277: slot = &m.pat; break;
    case 0x2ff: slot = &m.mtrr_def_type; break;
    case 0xc0000080: {  // EFER: LMA is read-only; only SCE, LME, NXE exist here
      if (write) {
        if (v & ~(efer::kSCE | efer::kLME | efer::kLMA | efer::kNXE)) {
          return Fault(GuestException::Gp(0));
        }
        cpu.efer = (v & ~efer::kLMA) | (cpu.efer & efer::kLMA);
        mmu_.FlushTlb();
      } else {
        v = cpu.efer;
      }
      break;
    }
    case 0xc0000081: slot = &m.star; break;
    case 0xc0000082: slot = &m.lstar; break;
    case 0xc0000083: slot = &m.cstar; break;
    case 0xc0000084: slot = &m.fmask; break;
    case 0xc0000100: slot = &cpu.seg[kFs].base; break;
    case 0xc0000101: slot = &cpu.seg[kGs].base; break;
    case 0xc0000102: slot = &m.kernel_gs_base; break;
    case 0xc0000103: slot = &m.tsc_aux; break;
    default:
      if (msr >= 0x200 && msr < 0x210) {
        slot = &m.mtrr_var[msr - 0x200];
      } else if (msr == 0x250) {
        slot = &m.mtrr_fixed[0];
      } else if (msr == 0x258 || msr == 0x259) {
        slot = &m.mtrr_fixed[1 + msr - 0x258];
      } else if (msr >= 0x268 && msr < 0x270) {
        slot = &m.mtrr_fixed[3 + msr - 0x268];
      } else {
        return Fault(GuestException::Gp(0));  // an unknown MSR, as hardware
      }
  }
  if (slot) {
    if (write) {
      bool base = msr == 0xc0000100 || msr == 0xc0000101 || msr == 0xc0000102 ||
                  msr == 0xc0000082 || msr == 0xc0000083;
      if (base && !IsCanonical(v)) return Fault(GuestException::Gp(0));
      *slot = v;
    } else {
      v = *slot;
    }
  }
  if (!write) {
    cpu.gpr[kRax] = v & 0xffffffff;
    cpu.gpr[kRdx] = v >> 32;
  }
  return Done();
}

// The virtual CPU model: what btvm implements, intersected with what the
// host can run natively (ident translation runs guest ALU/SSE on the host).
void Emulator::Cpuid(CpuState& cpu) {
  uint32_t leaf = static_cast<uint32_t>(cpu.gpr[kRax]);
  uint32_t sub = static_cast<uint32_t>(cpu.gpr[kRcx]);
  uint32_t a = 0, b = 0, c = 0, d = 0;
  uint32_t ha, hb, hc, hd;
  __cpuid_count(leaf, sub, ha, hb, hc, hd);
  switch (leaf) {
    case 0:
      a = 7;
      std::memcpy(&b, "Genu", 4);
      std::memcpy(&d, "ineI", 4);
      std::memcpy(&c, "ntel", 4);
      break;
    case 1: {
      a = 0x000306a9;  // family 6
      b = 0x00010800;  // CLFLUSH line 64 bytes, one logical processor
      // EDX: FPU TSC MSR PAE CX8 CMOV PAT PSE PGE CLFSH MMX FXSR SSE SSE2
      uint32_t want_d = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) |
                        (1u << 13) | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 23) |
                        (1u << 24) | (1u << 25) | (1u << 26);
      // ECX: SSE3 PCLMUL SSSE3 CX16 SSE4.1 SSE4.2 POPCNT
      uint32_t want_c = (1u << 0) | (1u << 1) | (1u << 9) | (1u << 13) | (1u << 19) |
                        (1u << 20) | (1u << 23);
      d = want_d & (hd | (1u << 3) | (1u << 13) | (1u << 16) | (1u << 12));
      c = want_c & hc;
      break;
    }
    case 0x80000000: a = 0x80000008; break;
    case 0x80000001:
      // EDX: SYSCALL NX LM; ECX: LAHF/SAHF in 64-bit mode, ABM (lzcnt)
      d = ((1u << 11) | (1u << 20) | (1u << 29)) & (hd | (1u << 11));
      c = ((1u << 0) | (1u << 5)) & hc;
      break;
    case 0x80000002: case 0x80000003: case 0x80000004: {
      static const char kBrand[49] = "btvm virtual CPU (binary translation)           ";
      uint32_t r[4];
      std::memcpy(r, kBrand + 16 * (leaf - 0x80000002), 16);
      a = r[0]; b = r[1]; c = r[2]; d = r[3];
      break;
    }
    case 0x80000008: a = (48u << 8) | kPhysAddrBits; break;
    default: break;  // leaves btvm does not model read as zero
  }
  cpu.gpr[kRax] = a;
  cpu.gpr[kRbx] = b;
  cpu.gpr[kRcx] = c;
  cpu.gpr[kRdx] = d;
}

EmulateOutcome Emulator::Emulate(CpuState& cpu, const DecodedInsn& d) {
  GuestException fault;
  const bool cpl0 = cpu.Cpl() == 0;
  const uint64_t next = d.NextRip();
  ++counters_.exits_sensitive;
  switch (d.insn.mnemonic) {
    case ZYDIS_MNEMONIC_IN:
    case ZYDIS_MNEMONIC_OUT:
      return PortIo(cpu, d);
    case ZYDIS_MNEMONIC_HLT: {
      if (!cpl0) return Fault(GuestException::Gp(0));
      cpu.rip = next;
      ++counters_.exits_hlt;
      EmulateOutcome o;
      o.kind = EmulateOutcome::kHalt;
      return o;
    }
    case ZYDIS_MNEMONIC_CLI:
    case ZYDIS_MNEMONIC_STI:
      if (!IoAllowed(cpu)) return Fault(GuestException::Gp(0));
      if (d.insn.mnemonic == ZYDIS_MNEMONIC_CLI) {
        cpu.rflags &= ~rflags::kIF;
      } else {
        cpu.rflags |= rflags::kIF;
        cpu.pending.interrupt_shadow = 1;
      }
      break;
    case ZYDIS_MNEMONIC_PUSHFQ:
    case ZYDIS_MNEMONIC_PUSHF: {
      unsigned size = d.insn.operand_width / 8;
      if (!Push(cpu, cpu.rflags & ~(rflags::kRF | rflags::kVM), size, &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_POPFQ:
    case ZYDIS_MNEMONIC_POPF: {
      unsigned size = d.insn.operand_width / 8;
      uint64_t v;
      CpuState probe = cpu;
      if (!Pop(probe, &v, size, &fault)) return Fault(fault);
      uint64_t changeable = rflags::kArith | rflags::kTF | rflags::kDF | rflags::kNT |
                            rflags::kAC | rflags::kID;
      if (cpl0) changeable |= rflags::kIOPL;
      if (cpu.Cpl() <= ((cpu.rflags & rflags::kIOPL) >> 12)) changeable |= rflags::kIF;
      if (size == 2) changeable &= 0xffff;
      probe.rflags = (cpu.rflags & ~changeable) | (v & changeable) | rflags::kFixed1;
      cpu = probe;
      break;
    }
    case ZYDIS_MNEMONIC_MOV: {
      ZydisRegisterClass c0 = d.ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER
                                  ? ZydisRegisterGetClass(d.ops[0].reg.value)
                                  : ZYDIS_REGCLASS_INVALID;
      ZydisRegisterClass c1 = d.ops[1].type == ZYDIS_OPERAND_TYPE_REGISTER
                                  ? ZydisRegisterGetClass(d.ops[1].reg.value)
                                  : ZYDIS_REGCLASS_INVALID;
      if (c0 == ZYDIS_REGCLASS_CONTROL || c1 == ZYDIS_REGCLASS_CONTROL) return MovCr(cpu, d);
      if (c0 == ZYDIS_REGCLASS_DEBUG || c1 == ZYDIS_REGCLASS_DEBUG) {
        if (!cpl0) return Fault(GuestException::Gp(0));
        int dr = (c0 == ZYDIS_REGCLASS_DEBUG ? d.ops[0].reg.value : d.ops[1].reg.value) -
                 ZYDIS_REGISTER_DR0;
        GprRef g;
        DecodeGpr(c0 == ZYDIS_REGCLASS_DEBUG ? d.ops[1].reg.value : d.ops[0].reg.value, &g);
        if (dr == 4 || dr == 5 || dr > 7) return Fault(GuestException::Ud());
        if (c0 == ZYDIS_REGCLASS_DEBUG) cpu.dr[dr] = cpu.gpr[g.index];
        else cpu.gpr[g.index] = cpu.dr[dr];
        break;
      }
      if (c1 == ZYDIS_REGCLASS_SEGMENT) {  // mov r/m, Sreg
        int seg = d.ops[1].reg.value - ZYDIS_REGISTER_ES;
        ZydisDecodedOperand dst = d.ops[0];
        if (!WriteOperand(cpu, d, dst, cpu.seg[seg].selector, &fault)) return Fault(fault);
        break;
      }
      if (c0 == ZYDIS_REGCLASS_SEGMENT) {  // mov Sreg, r/m
        int seg = d.ops[0].reg.value - ZYDIS_REGISTER_ES;
        if (seg == kCs) return Fault(GuestException::Ud());
        uint64_t sel;
        if (!ReadOperand(cpu, d, d.ops[1], &sel, &fault)) return Fault(fault);
        EmulateOutcome o = LoadSegment(cpu, seg, static_cast<uint16_t>(sel));
        if (o.kind != EmulateOutcome::kDone) return o;
        if (seg == kSs) cpu.pending.interrupt_shadow = 1;
        break;
      }
      return Unsupported(d);
    }
    case ZYDIS_MNEMONIC_PUSH: {  // push of a segment register or of memory
      if (d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        uint64_t v;
        if (!ReadOperand(cpu, d, d.ops[0], &v, &fault) ||
            !Push(cpu, v, d.insn.operand_width / 8, &fault)) {
          return Fault(fault);
        }
        break;
      }
      int seg = d.ops[0].reg.value - ZYDIS_REGISTER_ES;
      if (!Push(cpu, cpu.seg[seg].selector, d.insn.operand_width / 8, &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_POP: {  // pop of a segment register or to memory
      if (d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        CpuState probe = cpu;
        uint64_t v;
        if (!Pop(probe, &v, d.insn.operand_width / 8, &fault) ||
            !WriteOperand(probe, d, d.ops[0], v, &fault)) {
          return Fault(fault);
        }
        cpu = probe;
        break;
      }
      int seg = d.ops[0].reg.value - ZYDIS_REGISTER_ES;
      CpuState probe = cpu;
      uint64_t sel;
      if (!Pop(probe, &sel, d.insn.operand_width / 8, &fault)) return Fault(fault);
      EmulateOutcome o = LoadSegment(probe, seg, static_cast<uint16_t>(sel));
      if (o.kind != EmulateOutcome::kDone) return o;
      cpu = probe;
      break;
    }
    case ZYDIS_MNEMONIC_LGDT:
    case ZYDIS_MNEMONIC_LIDT: {
      if (!cpl0) return Fault(GuestException::Gp(0));
      uint8_t buf[10];
      uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
      if (!mmu_.ReadVirt(cpu, GuestVirt(ea), buf, 10, kMmuKernel, &fault)) return Fault(fault);
      DescriptorTable t;
      std::memcpy(&t.limit, buf, 2);
      std::memcpy(&t.base, buf + 2, 8);
      if (!IsCanonical(t.base)) return Fault(GuestException::Gp(0));
      (d.insn.mnemonic == ZYDIS_MNEMONIC_LGDT ? cpu.gdtr : cpu.idtr) = t;
      break;
    }
    case ZYDIS_MNEMONIC_SGDT:
    case ZYDIS_MNEMONIC_SIDT: {
      const DescriptorTable& t = d.insn.mnemonic == ZYDIS_MNEMONIC_SGDT ? cpu.gdtr : cpu.idtr;
      uint8_t buf[10];
      std::memcpy(buf, &t.limit, 2);
      std::memcpy(buf + 2, &t.base, 8);
      uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
      if (!mmu_.WriteVirt(cpu, GuestVirt(ea), buf, 10, MmuIndexFor(cpu), &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_LTR:
    case ZYDIS_MNEMONIC_LLDT: {
      if (!cpl0) return Fault(GuestException::Gp(0));
      uint64_t sel;
      if (!ReadOperand(cpu, d, d.ops[0], &sel, &fault)) return Fault(fault);
      bool ltr = d.insn.mnemonic == ZYDIS_MNEMONIC_LTR;
      if ((sel & ~3u) == 0) {
        if (ltr) return Fault(GuestException::Gp(0));
        cpu.ldtr = SegmentReg{};
        break;
      }
      if (sel & 4) return Fault(GuestException::Gp(sel & ~3u));  // must be in the GDT
      Descriptor desc;
      if (!ReadDescriptor(mmu_, cpu, static_cast<uint16_t>(sel), true, &desc, &fault)) {
        return Fault(fault);
      }
      unsigned want = ltr ? 0x9 : 0x2;  // available 64-bit TSS / LDT
      if (!desc.System() || desc.Type() != want) return Fault(GuestException::Gp(sel & ~3u));
      if (!desc.Present()) return Fault({kNP, true, static_cast<uint32_t>(sel & ~3u), 0});
      if (ltr) {
        // Mark the TSS busy in the GDT, as hardware does.
        if (!WriteDescriptorLow(mmu_, cpu, static_cast<uint16_t>(sel), desc.raw | (2ull << 40),
                                &fault)) {
          return Fault(fault);
        }
        desc.raw |= 2ull << 40;
        cpu.tr = desc.ToSegment(static_cast<uint16_t>(sel));
      } else {
        cpu.ldtr = desc.ToSegment(static_cast<uint16_t>(sel));
      }
      break;
    }
    case ZYDIS_MNEMONIC_STR:
    case ZYDIS_MNEMONIC_SLDT: {
      uint16_t sel = d.insn.mnemonic == ZYDIS_MNEMONIC_STR ? cpu.tr.selector : cpu.ldtr.selector;
      if (!WriteOperand(cpu, d, d.ops[0], sel, &fault)) return Fault(fault);
      break;
    }
    case ZYDIS_MNEMONIC_SMSW:
      if (!WriteOperand(cpu, d, d.ops[0], cpu.cr0, &fault)) return Fault(fault);
      break;
    case ZYDIS_MNEMONIC_CLTS:
      if (!cpl0) return Fault(GuestException::Gp(0));
      cpu.cr0 &= ~cr0::kTS;
      break;
    case ZYDIS_MNEMONIC_INVLPG:
      if (!cpl0) return Fault(GuestException::Gp(0));
      mmu_.FlushPage(GuestVirt(EffectiveAddress(cpu, d, d.ops[0])));
      break;
    case ZYDIS_MNEMONIC_WBINVD:
    case ZYDIS_MNEMONIC_INVD:
      if (!cpl0) return Fault(GuestException::Gp(0));
      break;
    case ZYDIS_MNEMONIC_CLFLUSH:
    case ZYDIS_MNEMONIC_CLFLUSHOPT: {
      uint8_t byte;  // faults like a read of the line (SDM Vol. 2 CLFLUSH)
      if (!mmu_.ReadVirt(cpu, GuestVirt(EffectiveAddress(cpu, d, d.ops[0])), &byte, 1,
                         MmuIndexFor(cpu), &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_RDMSR:
    case ZYDIS_MNEMONIC_WRMSR: {
      EmulateOutcome o = Msr(cpu, d.insn.mnemonic == ZYDIS_MNEMONIC_WRMSR);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_CPUID:
      Cpuid(cpu);
      break;
    case ZYDIS_MNEMONIC_DIV:
    case ZYDIS_MNEMONIC_IDIV: {
      EmulateOutcome o = Divide(cpu, d);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_RDTSC: {
      if ((cpu.cr4 & (1ull << 2)) && !cpl0) return Fault(GuestException::Gp(0));  // CR4.TSD
      uint64_t t = GuestTsc(cpu);
      cpu.gpr[kRax] = t & 0xffffffff;
      cpu.gpr[kRdx] = t >> 32;
      break;
    }
    case ZYDIS_MNEMONIC_SWAPGS: {
      if (!cpl0) return Fault(GuestException::Gp(0));
      std::swap(cpu.seg[kGs].base, cpu.msr.kernel_gs_base);
      break;
    }
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_INT: {
      EmulateOutcome o;
      o.kind = EmulateOutcome::kSoftwareInt;
      o.exception.vector = d.insn.mnemonic == ZYDIS_MNEMONIC_INT3
                               ? uint8_t(kBP)
                               : static_cast<uint8_t>(d.ops[0].imm.value.u);
      cpu.rip = next;
      return o;
    }
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
      return Fault(GuestException::Ud());
    case ZYDIS_MNEMONIC_IRETQ:
    case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRET:
      return FarReturn(cpu, d, true);
    case ZYDIS_MNEMONIC_RET:  // far return (ClassifyInsn sends only far ones here)
      return FarReturn(cpu, d, false);
    case ZYDIS_MNEMONIC_SYSCALL: {
      if (!(cpu.efer & efer::kSCE)) return Fault(GuestException::Ud());
      cpu.gpr[kRcx] = next;
      cpu.gpr[kR11] = cpu.rflags & ~rflags::kRF;
      uint16_t cs = static_cast<uint16_t>((cpu.msr.star >> 32) & 0xfffc);
      cpu.seg[kCs] = {cs, 0x209b, 0xffffffff, 0};
      cpu.seg[kSs] = {static_cast<uint16_t>(cs + 8), 0xc093, 0xffffffff, 0};
      cpu.rflags = (cpu.rflags & ~cpu.msr.fmask & ~rflags::kRF) | rflags::kFixed1;
      cpu.rip = cpu.msr.lstar;
      return Done();
    }
    case ZYDIS_MNEMONIC_SYSRET: {
      if (!(cpu.efer & efer::kSCE)) return Fault(GuestException::Ud());
      if (!cpl0) return Fault(GuestException::Gp(0));
      if (d.insn.operand_width != 64) return Unsupported(d);  // to compatibility mode
      if (!IsCanonical(cpu.gpr[kRcx])) return Fault(GuestException::Gp(0));
      uint16_t base = static_cast<uint16_t>(cpu.msr.star >> 48);
      cpu.seg[kCs] = {static_cast<uint16_t>((base + 16) | 3), 0x20fb, 0xffffffff, 0};
      cpu.seg[kSs] = {static_cast<uint16_t>((base + 8) | 3), 0xc0f3, 0xffffffff, 0};
      cpu.rflags = (cpu.gpr[kR11] & ~(rflags::kRF | rflags::kVM)) | rflags::kFixed1;
      cpu.rip = cpu.gpr[kRcx];
      return Done();
    }
    case ZYDIS_MNEMONIC_FXSAVE:
    case ZYDIS_MNEMONIC_FXSAVE64:
    case ZYDIS_MNEMONIC_FXRSTOR:
    case ZYDIS_MNEMONIC_FXRSTOR64: {
      if (cpu.cr0 & (cr0::kEM | cr0::kTS)) return Fault({kNM, false, 0, 0});
      uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
      if (ea & 15) return Fault(GuestException::Gp(0));
      bool save = d.insn.mnemonic == ZYDIS_MNEMONIC_FXSAVE ||
                  d.insn.mnemonic == ZYDIS_MNEMONIC_FXSAVE64;
      if (save) {
        if (!mmu_.WriteVirt(cpu, GuestVirt(ea), cpu.xsave.bytes, 512, MmuIndexFor(cpu),
                            &fault)) {
          return Fault(fault);
        }
      } else {
        uint8_t buf[512];
        if (!mmu_.ReadVirt(cpu, GuestVirt(ea), buf, 512, MmuIndexFor(cpu), &fault)) {
          return Fault(fault);
        }
        uint32_t mxcsr;
        std::memcpy(&mxcsr, buf + 24, 4);
        if (mxcsr & ~0xffffu) return Fault(GuestException::Gp(0));
        std::memcpy(cpu.xsave.bytes, buf, 512);
      }
      break;
    }
    case ZYDIS_MNEMONIC_MOVSB: case ZYDIS_MNEMONIC_MOVSW: case ZYDIS_MNEMONIC_MOVSD:
    case ZYDIS_MNEMONIC_MOVSQ: case ZYDIS_MNEMONIC_STOSB: case ZYDIS_MNEMONIC_STOSW:
    case ZYDIS_MNEMONIC_STOSD: case ZYDIS_MNEMONIC_STOSQ: case ZYDIS_MNEMONIC_LODSB:
    case ZYDIS_MNEMONIC_LODSW: case ZYDIS_MNEMONIC_LODSD: case ZYDIS_MNEMONIC_LODSQ:
    case ZYDIS_MNEMONIC_CMPSB: case ZYDIS_MNEMONIC_CMPSW: case ZYDIS_MNEMONIC_CMPSD:
    case ZYDIS_MNEMONIC_CMPSQ: case ZYDIS_MNEMONIC_SCASB: case ZYDIS_MNEMONIC_SCASW:
    case ZYDIS_MNEMONIC_SCASD: case ZYDIS_MNEMONIC_SCASQ: case ZYDIS_MNEMONIC_INSB:
    case ZYDIS_MNEMONIC_INSW: case ZYDIS_MNEMONIC_INSD: case ZYDIS_MNEMONIC_OUTSB:
    case ZYDIS_MNEMONIC_OUTSW: case ZYDIS_MNEMONIC_OUTSD:
      return StringOp(cpu, d);
    case ZYDIS_MNEMONIC_XSAVE: case ZYDIS_MNEMONIC_XRSTOR: case ZYDIS_MNEMONIC_XGETBV:
    case ZYDIS_MNEMONIC_XSETBV: case ZYDIS_MNEMONIC_MONITOR: case ZYDIS_MNEMONIC_MWAIT:
    case ZYDIS_MNEMONIC_RDTSCP: case ZYDIS_MNEMONIC_RDPID: case ZYDIS_MNEMONIC_RDFSBASE:
    case ZYDIS_MNEMONIC_RDGSBASE: case ZYDIS_MNEMONIC_WRFSBASE: case ZYDIS_MNEMONIC_WRGSBASE:
    case ZYDIS_MNEMONIC_INVPCID: case ZYDIS_MNEMONIC_SYSENTER: case ZYDIS_MNEMONIC_SYSEXIT:
      return Fault(GuestException::Ud());  // not exposed in CPUID
    default:
      return Unsupported(d);
  }
  cpu.rip = next;
  return Done();
}

}  // namespace btvm
