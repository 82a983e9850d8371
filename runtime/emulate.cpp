#include "runtime/emulate.h"

#include <cpuid.h>
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstring>

#include "runtime/descriptors.h"
#include "translator/emitter.h"

namespace btvm {

namespace {

constexpr uint64_t Mask(unsigned size) { return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1; }
constexpr uint32_t Bit(unsigned n) { return 1u << n; }

EmulateOutcome Done() { return {}; }
EmulateOutcome Fault(const GuestException& e) {
  EmulateOutcome o;
  o.kind = EmulateOutcome::kFault;
  o.exception = e;
  return o;
}
EmulateOutcome Unsupported(const DecodedInsn& d, const char* why = nullptr) {
  EmulateOutcome o;
  o.kind = EmulateOutcome::kUnsupported;
  o.message = "unsupported guest instruction '" + FormatInsn(d) + "'";
  if (why) o.message += std::string(" (") + why + ")";
  return o;
}
GuestException Gp0() { return GuestException::Gp(0); }
GuestException Ud() { return GuestException::Ud(); }
GuestException Nm() { return {kNM, false, 0, 0}; }
GuestException SelectorFault(uint8_t vector, uint16_t selector) {
  return {vector, true, static_cast<uint32_t>(selector & ~3u), 0};
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

unsigned Iopl(const CpuState& cpu) { return (cpu.rflags & rflags::kIOPL) >> 12; }

// Compatibility mode: IA-32e mode under a code segment with L = 0 (SDM
// Vol. 3 §5.2.1). Its addresses, stack and EIP are 32 bits wide.
bool Compat(const CpuState& cpu) { return !cpu.seg[kCs].Long(); }

// The linear address of `offset` in segment `seg`: in 64-bit mode only FS
// and GS have bases (SDM Vol. 3 §3.4.4); in compatibility mode every
// segment's base counts and the sum wraps at 4 GiB, as in legacy
// protected mode. Limits are not checked (flat segments; DESIGN.md).
uint64_t Linear(const CpuState& cpu, int seg, uint64_t offset) {
  if (!Compat(cpu)) return (seg == kFs || seg == kGs) ? offset + cpu.seg[seg].base : offset;
  return (offset + cpu.seg[seg].base) & 0xffffffff;
}

// The data segment an instruction with an implicit DS operand uses (string
// sources, xlat): DS or a segment-override prefix.
int OverrideOrDs(const DecodedInsn& d) {
  const auto a = d.insn.attributes;
  if (a & ZYDIS_ATTRIB_HAS_SEGMENT_ES) return kEs;
  if (a & ZYDIS_ATTRIB_HAS_SEGMENT_CS) return kCs;
  if (a & ZYDIS_ATTRIB_HAS_SEGMENT_SS) return kSs;
  if (a & ZYDIS_ATTRIB_HAS_SEGMENT_FS) return kFs;
  if (a & ZYDIS_ATTRIB_HAS_SEGMENT_GS) return kGs;
  return kDs;
}

// A 32-bit code segment register as SYSRET and SYSEXIT load it in IA-32e
// mode: flat, DPL 3, D = 1 (SDM Vol. 2 SYSRET, SYSEXIT).
SegmentReg FlatCode32Dpl3(uint16_t selector) { return {selector, 0xc0fb, 0xffffffff, 0}; }

void SetZf(CpuState& cpu, bool zf) {
  cpu.rflags = zf ? cpu.rflags | rflags::kZF : cpu.rflags & ~rflags::kZF;
}

// ---------------------------------------------------------------------------
// The virtual CPU model (CPUID). The decisions:
//
// - GenuineIntel, family 6 model 0x6a stepping 6 (an Ice Lake server core,
//   a model that has everything exposed below, RDPID and the TSC leaves
//   included); brand "btvm virtual CPU". One logical processor: leaf 1
//   EBX, leaf 4 and leaf 0xb describe 1 thread, 1 core, APIC ID 0. Address
//   sizes 40 physical / 48 virtual (0x80000008), as the MMU walks.
// - System features are btvm's own and the same on every host: the runtime
//   implements them. FPU, DE, PSE, TSC, MSR, PAE, CX8, APIC, SEP, MTRR, PGE,
//   CMOV, PAT, CLFSH, MMX, FXSR, SSE, SSE2, TSC-deadline, XSAVE (+OSXSAVE as
//   CR4 says), FSGSBASE, TSC_ADJUST, SMEP, CLFLUSHOPT, RDPID, SERIALIZE (translated as
//   nothing: a direct-execution engine must not run it natively on a host
//   without it), SYSCALL, NX, 1 GiB pages, RDTSCP, LM,
//   IA32_ARCH_CAPABILITIES, and the hypervisor bit.
// - ISA extensions run natively under ident translation, so they are the
//   ones btvm translates, intersected with the host's: SSE3, PCLMULQDQ,
//   SSSE3, CX16, SSE4.1, SSE4.2, POPCNT, LAHF/SAHF, LZCNT. Invariant TSC
//   (0x80000007) is reported when the host's TSC is invariant.
// - Hidden: AVX and everything VEX/EVEX (the engines switch the FXSAVE
//   image only), PCID/INVPCID, SMAP (stac/clac are not emulated), UMIP,
//   MONITOR/MWAIT, x2APIC,
//   performance counters (leaf 0xa is zero, rdpmc #GPs), MCE/MCA, VMX, PKU,
//   RDRAND, ERMS/FSRM (rep movs is emulated element by element, so guests
//   should prefer movsq over movsb).
// - XSAVE covers x87 and SSE only: XCR0 is 1 or 3, leaf 0xd reports a
//   576-byte area and no XSAVEOPT/XSAVEC/XGETBV1/XSAVES.
// - TSC: leaf 0x15 reports a 1 MHz crystal and the ratio (kHz / 1000) that
//   makes the host TSC frequency exact to the kHz; leaf 0x16 the same in
//   MHz. Linux then skips calibration and takes the local APIC timer
//   period from the crystal, so the local APIC timer ticks at 1 MHz
//   (LocalApic::kBusFrequencyHz). Linux multiplies crystal kHz by the
//   numerator in 32 bits (native_calibrate_tsc()): with a 25 MHz crystal
//   the product overflowed and a 2.4 GHz TSC came out as 40 MHz.
// - IA32_ARCH_CAPABILITIES reports RDCL_NO: a guest user-mode access goes
//   through the user soft TLB (bt) or the child's address space (direct),
//   neither of which ever holds a supervisor-only page, so a rogue data
//   cache load cannot reach guest kernel data and guests need no PTI (whose
//   CR3 writes would flush the soft TLB twice per system call).
//   It also reports MDS_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO and
//   ITS_NO: those attacks sample the host CPU's buffers and branch
//   predictors, which neither a guest's verw nor its branch thunks reach
//   here: guest kernel code runs as translated host code, and guest user
//   code in the direct engine's child is a host process like any other,
//   under the host kernel's own mitigations. Linux would otherwise run
//   verw on every return to user mode (an exit to the runtime per system
//   call) and route every return through a thunk.
// - Leaves above the maximum return the highest basic leaf, as Intel CPUs
//   do; 0x40000000 names the hypervisor ("btvmbtvmbtvm", no further leaves).

constexpr uint32_t kMaxBasicLeaf = 0x16;
constexpr uint32_t kMaxExtendedLeaf = 0x80000008;
constexpr uint32_t kHypervisorLeaf = 0x40000000;
constexpr uint32_t kSignature = 0x000606a6;  // family 6, model 0x6a, stepping 6
constexpr uint32_t kCrystalHz = 1'000'000;
constexpr unsigned kVirtAddrBits = 48;

namespace misc_enable {  // IA32_MISC_ENABLE (SDM Vol. 4 Table 2-2)
inline constexpr uint64_t kFastStrings = 1ull << 0, kAutoTcc = 1ull << 3,
                          kBtsUnavailable = 1ull << 11, kPebsUnavailable = 1ull << 12,
                          kLimitCpuid = 1ull << 22, kXtprDisable = 1ull << 23;
inline constexpr uint64_t kReadOnlyOnes = kBtsUnavailable | kPebsUnavailable;
inline constexpr uint64_t kWritable = kFastStrings | kAutoTcc | kLimitCpuid | kXtprDisable;
}  // namespace misc_enable

// IA32_ARCH_CAPABILITIES (see above; bit numbers from SDM Vol. 4 Table 2-2).
namespace arch_cap {
inline constexpr uint64_t kRdclNo = 1ull << 0, kMdsNo = 1ull << 5, kPschangeMcNo = 1ull << 6,
                          kTaaNo = 1ull << 8, kSbdrSsdpNo = 1ull << 13, kFbsdpNo = 1ull << 14,
                          kPsdpNo = 1ull << 15, kItsNo = 1ull << 62;
}  // namespace arch_cap
constexpr uint64_t kArchCapabilities = arch_cap::kRdclNo | arch_cap::kMdsNo |
                                       arch_cap::kPschangeMcNo | arch_cap::kTaaNo |
                                       arch_cap::kSbdrSsdpNo | arch_cap::kFbsdpNo |
                                       arch_cap::kPsdpNo | arch_cap::kItsNo;

struct HostFeatures {
  uint32_t ecx1 = 0, ecx_ext1 = 0, edx_ext7 = 0;
};

// The host's ISA extensions (a host constant, read once).
const HostFeatures& Host() {
  static const HostFeatures host = [] {
    HostFeatures h;
    uint32_t a, b, c, d;
    __cpuid(1, a, b, c, d);
    h.ecx1 = c;
    __cpuid(0x80000000, a, b, c, d);
    uint32_t max_ext = a;
    if (max_ext >= 0x80000001) {
      __cpuid(0x80000001, a, b, c, d);
      h.ecx_ext1 = c;
    }
    if (max_ext >= 0x80000007) {
      __cpuid(0x80000007, a, b, c, d);
      h.edx_ext7 = d;
    }
    return h;
  }();
  return host;
}

// One deterministic-cache-parameters subleaf (leaf 4): `type` 1 data,
// 2 instruction, 3 unified; one logical processor shares it.
CpuidResult CacheLeaf(unsigned type, unsigned level, unsigned ways, unsigned sets) {
  CpuidResult r;
  r.eax = type | (level << 5) | Bit(8) /* self-initialising */;
  r.ebx = (ways - 1) << 22 | (1 - 1) << 12 | (64 - 1);  // ways, 1 partition, 64-byte lines
  r.ecx = sets - 1;
  return r;
}

}  // namespace

uint64_t GuestTsc(const CpuState& cpu) { return __rdtsc() + cpu.msr.tsc_offset; }

uint64_t HostTscKhz() {
  // A host constant, measured once per process.
  static const uint64_t khz = [] () -> uint64_t {
    uint32_t a, b, c, d;
    __cpuid(0, a, b, c, d);
    if (a >= 0x15) {
      __cpuid_count(0x15, 0, a, b, c, d);
      if (a != 0 && b != 0 && c != 0) return uint64_t{c} * b / a / 1000;
    }
    // VMware's and KVM's (with QEMU's vmware-cpuid-freq) frequency leaf.
    __cpuid(1, a, b, c, d);
    if (c & Bit(31)) {
      uint32_t sig[3];
      __cpuid(kHypervisorLeaf, a, sig[0], sig[1], sig[2]);
      char name[13] = {};
      std::memcpy(name, sig, 12);
      if (a >= 0x40000010 && (std::strcmp(name, "VMwareVMware") == 0 ||
                              std::memcmp(name, "KVMKVMKVM", 9) == 0)) {
        __cpuid(0x40000010, a, b, c, d);
        if (a != 0) return a;
      }
    }
    // Measure: TSC against CLOCK_MONOTONIC_RAW over 25 ms, each end taken
    // as the tightest of a few clock-TSC-clock brackets.
    auto sample = [](uint64_t* tsc, uint64_t* ns) {
      uint64_t best = ~0ull;
      for (int i = 0; i < 8; ++i) {
        timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC_RAW, &t0);
        uint64_t t = __rdtsc();
        clock_gettime(CLOCK_MONOTONIC_RAW, &t1);
        uint64_t n0 = t0.tv_sec * 1'000'000'000ull + t0.tv_nsec;
        uint64_t n1 = t1.tv_sec * 1'000'000'000ull + t1.tv_nsec;
        if (n1 - n0 < best) {
          best = n1 - n0;
          *tsc = t;
          *ns = n0 + (n1 - n0) / 2;
        }
      }
    };
    uint64_t tsc0 = 0, ns0 = 0, tsc1 = 0, ns1 = 0;
    sample(&tsc0, &ns0);
    timespec pause{0, 25'000'000};
    while (nanosleep(&pause, &pause) != 0) {
    }
    sample(&tsc1, &ns1);
    if (ns1 <= ns0 || tsc1 <= tsc0) return 1'000'000;  // a clock that does not move: 1 GHz
    unsigned __int128 cycles = tsc1 - tsc0;
    return static_cast<uint64_t>((cycles * 1'000'000 + (ns1 - ns0) / 2) / (ns1 - ns0));
  }();
  return khz;
}

CpuidResult VirtualCpuid(const CpuState& cpu, uint32_t leaf, uint32_t sub) {
  const HostFeatures& host = Host();
  const uint32_t max_basic =
      (cpu.msr.misc_enable & misc_enable::kLimitCpuid) ? 2 : kMaxBasicLeaf;
  if (leaf >= kHypervisorLeaf && leaf < 0x50000000) {
    CpuidResult r;
    if (leaf == kHypervisorLeaf) {
      r.eax = kHypervisorLeaf;
      std::memcpy(&r.ebx, "btvm", 4);
      std::memcpy(&r.ecx, "btvm", 4);
      std::memcpy(&r.edx, "btvm", 4);
    }
    return r;
  }
  if ((leaf > max_basic && leaf < 0x80000000) || leaf > kMaxExtendedLeaf) {
    leaf = max_basic;
    sub = 0;
  }
  CpuidResult r;
  switch (leaf) {
    case 0:
      r.eax = max_basic;
      std::memcpy(&r.ebx, "Genu", 4);
      std::memcpy(&r.edx, "ineI", 4);
      std::memcpy(&r.ecx, "ntel", 4);
      break;
    case 1:
      r.eax = kSignature;
      // CLFLUSH line 8 * 8 bytes; 1 logical processor; initial APIC ID 0.
      r.ebx = (8u << 8) | (1u << 16);
      // EDX: FPU DE PSE TSC MSR PAE CX8 APIC SEP MTRR PGE CMOV PAT CLFSH MMX
      // FXSR SSE SSE2
      r.edx = Bit(0) | Bit(2) | Bit(3) | Bit(4) | Bit(5) | Bit(6) | Bit(8) | Bit(9) | Bit(11) |
              Bit(12) | Bit(13) | Bit(15) | Bit(16) | Bit(19) | Bit(23) | Bit(24) | Bit(25) |
              Bit(26);
      // ECX: SSE3 PCLMULQDQ SSSE3 CX16 SSE4.1 SSE4.2 POPCNT (the host's),
      // TSC-deadline (the local APIC's), XSAVE, OSXSAVE (CR4), hypervisor.
      r.ecx = (Bit(0) | Bit(1) | Bit(9) | Bit(13) | Bit(19) | Bit(20) | Bit(23)) & host.ecx1;
      r.ecx |= Bit(24) | Bit(26) | Bit(31);
      if (cpu.cr4 & cr4::kOSXSAVE) r.ecx |= Bit(27);
      break;
    case 2:
      r.eax = 0x00ff0001;  // one iteration; descriptor 0xff: use leaf 4
      break;
    case 4:
      switch (sub) {
        case 0: r = CacheLeaf(1, 1, 12, 64); break;    // L1d 48 KiB
        case 1: r = CacheLeaf(2, 1, 8, 64); break;     // L1i 32 KiB
        case 2: r = CacheLeaf(3, 2, 16, 1024); break;  // L2 1 MiB
        case 3: r = CacheLeaf(3, 3, 12, 16384); break; // L3 12 MiB
        default: break;                                // no more caches
      }
      break;
    case 7:
      if (sub == 0) {
        // EBX: FSGSBASE, TSC_ADJUST, SMEP, FPU CS/DS deprecated
        // (fxsave/xsave store them as zero), CLFLUSHOPT. ECX: RDPID. EDX:
        // SERIALIZE (a nop in translation), ARCH_CAPABILITIES.
        // TSC_ADJUST with an invariant TSC (0x80000007) is what lets Linux
        // trust the TSC without its clocksource watchdog (tsc.c,
        // check_system_tsc_reliable()): the watchdog compares it with
        // jiffies, which timer ticks lost on a loaded host make lag.
        r.ebx = Bit(0) | Bit(1) | Bit(7) | Bit(13) | Bit(23);
        r.ecx = Bit(22);
        r.edx = Bit(14) | Bit(29);
      }
      break;
    case 0xb:
      // x2APIC topology: an SMT level and a core level of one processor.
      if (sub < 2) {
        r.eax = 0;  // no APIC-ID bits to shift
        r.ebx = 1;  // one logical processor at this level
        r.ecx = sub | ((sub + 1) << 8);
      } else {
        r.ecx = sub & 0xff;  // an invalid level
      }
      r.edx = 0;  // x2APIC ID
      break;
    case 0xd:
      if (sub == 0) {
        r.eax = static_cast<uint32_t>(kSupportedXcr0);
        r.ebx = kXsaveAreaSize;  // for XCR0 as it is: x87 and SSE fit the legacy region
        r.ecx = kXsaveAreaSize;
      }
      break;
    case 0x15: {
      // TSC = crystal * EBX / EAX, with crystal kHz * EBX below 2^32.
      uint64_t num = HostTscKhz(), den = 1000;
      while (num * (kCrystalHz / 1000) > UINT32_MAX && den > 1) {
        num /= 2;
        den /= 2;
      }
      r.eax = static_cast<uint32_t>(den);
      r.ebx = static_cast<uint32_t>(num);
      r.ecx = kCrystalHz;
      break;
    }
    case 0x16: {
      uint32_t mhz = static_cast<uint32_t>(HostTscKhz() / 1000);
      r.eax = mhz;  // base
      r.ebx = mhz;  // maximum
      r.ecx = 100;  // bus (reference) clock
      break;
    }
    case 0x80000000:
      r.eax = kMaxExtendedLeaf;
      break;
    case 0x80000001:
      // ECX: LAHF/SAHF, LZCNT (the host's). EDX: SYSCALL NX Page1GB RDTSCP LM.
      r.ecx = (Bit(0) | Bit(5)) & host.ecx_ext1;
      r.edx = Bit(11) | Bit(20) | Bit(26) | Bit(27) | Bit(29);
      break;
    case 0x80000002: case 0x80000003: case 0x80000004: {
      static const char kBrand[49] = "btvm virtual CPU                                ";
      uint32_t w[4];
      std::memcpy(w, kBrand + 16 * (leaf - 0x80000002), 16);
      r = {w[0], w[1], w[2], w[3]};
      break;
    }
    case 0x80000006:
      r.ecx = (1024u << 16) | (0x8u << 12) | 64;  // L2: 1 MiB, 16-way, 64-byte lines
      break;
    case 0x80000007:
      r.edx = host.edx_ext7 & Bit(8);  // invariant TSC
      break;
    case 0x80000008:
      r.eax = (kVirtAddrBits << 8) | kPhysAddrBits;
      break;
    default:
      break;  // the leaves btvm does not model are zero (3, 5, 6, 8-0xa, 0xc, 0xe-0x14)
  }
  return r;
}

// ---------------------------------------------------------------------------
// Operands and the stack.

// A far pointer in memory (SDM Vol. 1 §4.3): an offset of `size` bytes,
// then a 16-bit selector.
bool Emulator::ReadFarPointer(const CpuState& cpu, const DecodedInsn& d,
                              const ZydisDecodedOperand& op, unsigned size, uint64_t* offset,
                              uint16_t* sel, GuestException* fault) {
  uint8_t far_ptr[10] = {};
  if (!mmu_.ReadVirt(cpu, GuestVirt(EffectiveAddress(cpu, d, op)), far_ptr, size + 2,
                     MmuIndexFor(cpu), fault)) {
    return false;
  }
  *offset = 0;
  std::memcpy(offset, far_ptr, size);
  std::memcpy(sel, far_ptr + size, 2);
  return true;
}

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
  return Linear(cpu, SegmentIndexOf(m.segment), ea);
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
    if (!DecodeGpr(op.reg.value, &r)) {
      *fault = Ud();
      return false;
    }
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
    if (!DecodeGpr(op.reg.value, &r)) {
      *fault = Ud();
      return false;
    }
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

// The stack is 64-bit in 64-bit mode and 32-bit in compatibility mode
// (ESP wraps at 4 GiB, written zero-extended; a 16-bit SS is not modelled).
bool Emulator::Push(CpuState& cpu, uint64_t value, unsigned size, GuestException* fault) {
  uint64_t rsp = cpu.gpr[kRsp] - size;
  if (Compat(cpu)) rsp &= 0xffffffff;
  if (!mmu_.WriteVirt(cpu, GuestVirt(Linear(cpu, kSs, rsp)), &value, size, MmuIndexFor(cpu),
                      fault)) {
    return false;
  }
  cpu.gpr[kRsp] = rsp;
  return true;
}

bool Emulator::Pop(CpuState& cpu, uint64_t* value, unsigned size, GuestException* fault) {
  *value = 0;
  uint64_t rsp = cpu.gpr[kRsp];
  if (Compat(cpu)) rsp &= 0xffffffff;
  if (!mmu_.ReadVirt(cpu, GuestVirt(Linear(cpu, kSs, rsp)), value, size, MmuIndexFor(cpu),
                     fault)) {
    return false;
  }
  rsp += size;
  cpu.gpr[kRsp] = Compat(cpu) ? rsp & 0xffffffff : rsp;
  return true;
}

// ---------------------------------------------------------------------------
// Port I/O.

bool Emulator::IoPermitted(const CpuState& cpu, uint16_t port, unsigned size,
                           GuestException* fault) {
  if (cpu.Cpl() <= Iopl(cpu)) return true;
  // CPL > IOPL: every bit for the accessed ports in the TSS I/O permission
  // bitmap must be clear. The processor reads two bytes at the bitmap base
  // (TSS offset 0x66) + port / 8; any of them past the TSS limit means #GP
  // (SDM Vol. 1 §19.5.2). The reads are implicit supervisor accesses.
  *fault = Gp0();
  const unsigned type = cpu.tr.attrib & 0xf;
  if (!cpu.tr.Present() || (type != desc_type::kTssBusy && type != desc_type::kTssAvailable) ||
      cpu.tr.limit < 0x67) {
    return false;
  }
  uint16_t map_base = 0;
  if (!mmu_.ReadVirt(cpu, GuestVirt(cpu.tr.base + 0x66), &map_base, 2, kMmuKernel, fault)) {
    return false;
  }
  const uint64_t offset = uint64_t{map_base} + port / 8;
  if (offset + 1 > cpu.tr.limit) {
    *fault = Gp0();
    return false;
  }
  uint16_t bits = 0;
  if (!mmu_.ReadVirt(cpu, GuestVirt(cpu.tr.base + offset), &bits, 2, kMmuKernel, fault)) {
    return false;
  }
  const uint16_t wanted = static_cast<uint16_t>(((1u << size) - 1) << (port & 7));
  if (bits & wanted) {
    *fault = Gp0();
    return false;
  }
  return true;
}

EmulateOutcome Emulator::PortIo(CpuState& cpu, const DecodedInsn& d) {
  const bool in = d.insn.mnemonic == ZYDIS_MNEMONIC_IN;
  const ZydisDecodedOperand& data = in ? d.ops[0] : d.ops[1];
  const ZydisDecodedOperand& port_op = in ? d.ops[1] : d.ops[0];
  const uint16_t port = port_op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE
                            ? static_cast<uint16_t>(port_op.imm.value.u)
                            : static_cast<uint16_t>(cpu.gpr[kRdx]);
  const unsigned size = data.size / 8;
  GuestException fault;
  if (!IoPermitted(cpu, port, size, &fault)) return Fault(fault);
  ++counters_.exits_io;
  if (in) {
    if (!WriteOperand(cpu, d, data, pio_.Read(port, size), &fault)) return Fault(fault);
  } else {
    pio_.Write(port, size, static_cast<uint32_t>(cpu.gpr[kRax] & Mask(size)));
  }
  cpu.rip = d.NextRip();
  return Done();
}

// Elements one emulated rep string instruction does before it yields.
constexpr unsigned kRepChunk = 16384;

// rep movs / rep stos over guest RAM, a page at a time: the elements that
// lie wholly inside the current source and destination pages are done
// through one translation each instead of a walk per element. Element by
// element and in order, so overlapping moves repeat as on hardware. Returns
// how many were done; 0 leaves the next element to the general path (an
// element across a page boundary, MMIO, a fault).
unsigned Emulator::RepOverPage(CpuState& cpu, ZydisMnemonic m, unsigned size,
                               uint64_t src_base, MmuIndex index, unsigned limit) {
  const bool movs = m == ZYDIS_MNEMONIC_MOVSB || m == ZYDIS_MNEMONIC_MOVSW ||
                    m == ZYDIS_MNEMONIC_MOVSD || m == ZYDIS_MNEMONIC_MOVSQ;
  const bool stos = m == ZYDIS_MNEMONIC_STOSB || m == ZYDIS_MNEMONIC_STOSW ||
                    m == ZYDIS_MNEMONIC_STOSD || m == ZYDIS_MNEMONIC_STOSQ;
  if (!movs && !stos) return 0;
  const bool down = cpu.rflags & rflags::kDF;
  // Elements from `addr` on that stay inside its page, in the direction of DF.
  auto fit = [&](uint64_t addr) -> uint64_t {
    const uint64_t off = addr & (kPageSize - 1);
    if (off + size > kPageSize) return 0;
    return down ? off / size + 1 : (kPageSize - off) / size;
  };
  const uint64_t dst = cpu.gpr[kRdi], src = src_base + cpu.gpr[kRsi];
  uint64_t n = std::min<uint64_t>(cpu.gpr[kRcx], limit);
  n = std::min(n, fit(dst));
  if (movs) n = std::min(n, fit(src));
  if (n == 0) return 0;
  uint8_t* from = nullptr;
  if (movs) {  // the source first, as the general path reads before it writes
    Mmu::Lookup l = mmu_.Translate(cpu, GuestVirt(src), Access::kRead, index);
    if (l.kind != Mmu::Lookup::kRam) return 0;
    from = l.host;
  }
  Mmu::Lookup to = mmu_.Translate(cpu, GuestVirt(dst), Access::kWrite, index);
  if (to.kind != Mmu::Lookup::kRam) return 0;
  // Invariant: Translate's host pointers are valid for the rest of their
  // guest page, and fit() kept every element (i * size from them, down or
  // up) inside that page.
  const uint64_t value = cpu.gpr[kRax];
  for (uint64_t i = 0; i < n; ++i) {
    const int64_t at = down ? -int64_t(i * size) : int64_t(i * size);
    if (movs) {
      std::memmove(to.host + at, from + at, size);
    } else {
      std::memcpy(to.host + at, &value, size);
    }
  }
  const uint64_t bytes = n * size;
  cpu.gpr[kRdi] = down ? dst - bytes : dst + bytes;
  if (movs) cpu.gpr[kRsi] = down ? cpu.gpr[kRsi] - bytes : cpu.gpr[kRsi] + bytes;
  cpu.gpr[kRcx] -= n;
  return static_cast<unsigned>(n);
}

// String instructions, one element at a time, so that a fault part-way
// through a rep leaves RCX/RSI/RDI exactly at the faulting element
// (SDM Vol. 2 "REP": interrupted string operations are restartable).
EmulateOutcome Emulator::StringOp(CpuState& cpu, const DecodedInsn& d) {
  const ZydisMnemonic m = d.insn.mnemonic;
  unsigned size = d.insn.operand_width / 8;
  const bool io = m == ZYDIS_MNEMONIC_INSB || m == ZYDIS_MNEMONIC_INSW ||
                  m == ZYDIS_MNEMONIC_INSD || m == ZYDIS_MNEMONIC_OUTSB ||
                  m == ZYDIS_MNEMONIC_OUTSW || m == ZYDIS_MNEMONIC_OUTSD;
  if (m == ZYDIS_MNEMONIC_INSB || m == ZYDIS_MNEMONIC_OUTSB) size = 1;
  if (io && size > 4) size = 4;
  GuestException fault;
  const uint16_t port = static_cast<uint16_t>(cpu.gpr[kRdx]);
  if (io && !IoPermitted(cpu, port, size, &fault)) return Fault(fault);
  const bool rep = d.insn.attributes & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE |
                                        ZYDIS_ATTRIB_HAS_REPNE);
  const bool repne = d.insn.attributes & ZYDIS_ATTRIB_HAS_REPNE;
  const bool conditional = m == ZYDIS_MNEMONIC_CMPSB || m == ZYDIS_MNEMONIC_CMPSW ||
                           m == ZYDIS_MNEMONIC_CMPSD || m == ZYDIS_MNEMONIC_CMPSQ ||
                           m == ZYDIS_MNEMONIC_SCASB || m == ZYDIS_MNEMONIC_SCASW ||
                           m == ZYDIS_MNEMONIC_SCASD || m == ZYDIS_MNEMONIC_SCASQ;
  const uint64_t amask = d.insn.address_width == 32 ? 0xffffffffull : ~0ull;
  const int64_t step = (cpu.rflags & rflags::kDF) ? -int64_t(size) : int64_t(size);
  // The source segment may be overridden (its base counts: FS/GS in 64-bit
  // mode, every one in compatibility mode); ES:RDI may not.
  const int src_seg = OverrideOrDs(d);
  const uint64_t src_base = Linear(cpu, src_seg, 0);
  const auto src_at = [&](uint64_t rsi) { return GuestVirt(Linear(cpu, src_seg, rsi)); };
  const auto dst_at = [&](uint64_t rdi) { return GuestVirt(Linear(cpu, kEs, rdi)); };
  const MmuIndex index = MmuIndexFor(cpu);
  if (io) ++counters_.exits_io;
  for (unsigned done = 0; !rep || (cpu.gpr[kRcx] & amask) != 0; ++done) {
    // A long rep yields to the engine part-way, with RIP still at the
    // instruction, as hardware lets interrupts in between iterations: the
    // engine can deliver events and stop, then the instruction continues.
    if (done >= kRepChunk) return Done();
    if (rep && amask == ~0ull) {
      const unsigned n = RepOverPage(cpu, m, size, src_base, index, kRepChunk - done);
      if (n > 0) {
        done += n - 1;
        continue;
      }
    }
    const uint64_t rsi = cpu.gpr[kRsi] & amask, rdi = cpu.gpr[kRdi] & amask;
    uint64_t v = 0, w = 0;
    bool advance_si = false, advance_di = false;
    switch (m) {
      case ZYDIS_MNEMONIC_MOVSB: case ZYDIS_MNEMONIC_MOVSW:
      case ZYDIS_MNEMONIC_MOVSD: case ZYDIS_MNEMONIC_MOVSQ:
        if (!mmu_.ReadVirt(cpu, src_at(rsi), &v, size, index, &fault) ||
            !mmu_.WriteVirt(cpu, dst_at(rdi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        advance_si = advance_di = true;
        break;
      case ZYDIS_MNEMONIC_STOSB: case ZYDIS_MNEMONIC_STOSW:
      case ZYDIS_MNEMONIC_STOSD: case ZYDIS_MNEMONIC_STOSQ:
        v = cpu.gpr[kRax];
        if (!mmu_.WriteVirt(cpu, dst_at(rdi), &v, size, index, &fault)) return Fault(fault);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_LODSB: case ZYDIS_MNEMONIC_LODSW:
      case ZYDIS_MNEMONIC_LODSD: case ZYDIS_MNEMONIC_LODSQ:
        if (!mmu_.ReadVirt(cpu, src_at(rsi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        if (size == 4) cpu.gpr[kRax] = v;
        else cpu.gpr[kRax] = (cpu.gpr[kRax] & ~Mask(size)) | v;
        advance_si = true;
        break;
      case ZYDIS_MNEMONIC_CMPSB: case ZYDIS_MNEMONIC_CMPSW:
      case ZYDIS_MNEMONIC_CMPSD: case ZYDIS_MNEMONIC_CMPSQ:
        if (!mmu_.ReadVirt(cpu, src_at(rsi), &v, size, index, &fault) ||
            !mmu_.ReadVirt(cpu, dst_at(rdi), &w, size, index, &fault)) {
          return Fault(fault);
        }
        cpu.rflags = (cpu.rflags & ~rflags::kArith) | SubFlags(v, w, size);
        advance_si = advance_di = true;
        break;
      case ZYDIS_MNEMONIC_SCASB: case ZYDIS_MNEMONIC_SCASW:
      case ZYDIS_MNEMONIC_SCASD: case ZYDIS_MNEMONIC_SCASQ:
        if (!mmu_.ReadVirt(cpu, dst_at(rdi), &w, size, index, &fault)) return Fault(fault);
        cpu.rflags = (cpu.rflags & ~rflags::kArith) | SubFlags(cpu.gpr[kRax], w, size);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_INSB: case ZYDIS_MNEMONIC_INSW: case ZYDIS_MNEMONIC_INSD:
        // Check the destination before the port read (which may have effects).
        if (!mmu_.WriteVirt(cpu, dst_at(rdi), &v, 0, index, &fault)) return Fault(fault);
        v = pio_.Read(port, size);
        if (!mmu_.WriteVirt(cpu, dst_at(rdi), &v, size, index, &fault)) return Fault(fault);
        advance_di = true;
        break;
      case ZYDIS_MNEMONIC_OUTSB: case ZYDIS_MNEMONIC_OUTSW: case ZYDIS_MNEMONIC_OUTSD:
        if (!mmu_.ReadVirt(cpu, src_at(rsi), &v, size, index, &fault)) {
          return Fault(fault);
        }
        pio_.Write(port, size, static_cast<uint32_t>(v));
        advance_si = true;
        break;
      default:
        return Unsupported(d);
    }
    // 32-bit addressing writes the zero-extended 32-bit result.
    if (advance_si) cpu.gpr[kRsi] = (cpu.gpr[kRsi] + step) & amask;
    if (advance_di) cpu.gpr[kRdi] = (cpu.gpr[kRdi] + step) & amask;
    if (!rep) break;
    cpu.gpr[kRcx] = (cpu.gpr[kRcx] - 1) & amask;
    if (conditional) {
      const bool zf = cpu.rflags & rflags::kZF;
      if (repne ? zf : !zf) break;
    }
  }
  cpu.rip = d.NextRip();
  return Done();
}

// ---------------------------------------------------------------------------
// Control and debug registers.

namespace {
// CR0 bits that exist (SDM Vol. 3 §2.5); writes to the others are ignored.
constexpr uint64_t kCr0NW = 1ull << 29, kCr0CD = 1ull << 30;
constexpr uint64_t kCr0Defined = cr0::kPE | cr0::kMP | cr0::kEM | cr0::kTS | cr0::kET | cr0::kNE |
                                 cr0::kWP | cr0::kAM | kCr0NW | kCr0CD | cr0::kPG;
// CR4 bits the virtual CPU implements (the others are reserved: #GP).
constexpr uint64_t kCr4TSD = 1ull << 2, kCr4DE = 1ull << 3, kCr4PCE = 1ull << 8;
constexpr uint64_t kCr4Allowed = kCr4TSD | kCr4DE | cr4::kPSE | cr4::kPAE | cr4::kPGE | kCr4PCE |
                                 cr4::kOSFXSR | cr4::kOSXMMEXCPT | cr4::kFSGSBASE |
                                 cr4::kOSXSAVE | cr4::kSMEP;
// CR3 bits above MAXPHYADDR are reserved (no PCIDs: bit 63 too).
constexpr uint64_t kCr3Reserved = ~((1ull << kPhysAddrBits) - 1);
}  // namespace

EmulateOutcome Emulator::MovCr(CpuState& cpu, const DecodedInsn& d) {
  if (cpu.Cpl() != 0) return Fault(Gp0());
  const bool to_cr = ZydisRegisterGetClass(d.ops[0].reg.value) == ZYDIS_REGCLASS_CONTROL;
  const ZydisRegister crreg = to_cr ? d.ops[0].reg.value : d.ops[1].reg.value;
  const int cr = crreg - ZYDIS_REGISTER_CR0;
  GprRef g;
  if (!DecodeGpr(to_cr ? d.ops[1].reg.value : d.ops[0].reg.value, &g)) return Fault(Ud());
  if (!to_cr) {
    uint64_t v;
    switch (cr) {
      case 0: v = cpu.cr0; break;
      case 2: v = cpu.cr2; break;
      case 3: v = cpu.cr3; break;
      case 4: v = cpu.cr4; break;
      case 8: v = platform_ ? platform_->ReadCr8() : cpu.cr8; break;
      default: return Fault(Ud());
    }
    cpu.gpr[g.index] = v;
    cpu.rip = d.NextRip();
    return Done();
  }
  const uint64_t v = cpu.gpr[g.index];
  switch (cr) {
    case 0: {
      // SDM Vol. 2 MOV CRn, 64-bit mode exceptions: bits 63:32 set, PG
      // without PE, NW without CD. Paging cannot be turned off from 64-bit
      // code (leaving IA-32e mode goes through compatibility mode).
      if (v >> 32) return Fault(Gp0());
      if ((v & cr0::kPG) && !(v & cr0::kPE)) return Fault(Gp0());
      if ((v & kCr0NW) && !(v & kCr0CD)) return Fault(Gp0());
      if (cpu.LongMode() && !(v & cr0::kPG)) return Fault(Gp0());
      const uint64_t next = (v & kCr0Defined) | cr0::kET;
      if ((next ^ cpu.cr0) & (cr0::kPG | cr0::kPE | cr0::kWP)) mmu_.FlushTlb();
      cpu.cr0 = next;
      break;
    }
    case 2:
      cpu.cr2 = v;
      break;
    case 3:
      if (v & kCr3Reserved) return Fault(Gp0());
      cpu.cr3 = v;
      // Global pages survive a CR3 write (SDM Vol. 3 §4.10.4.1; no PCID).
      mmu_.FlushTlb((cpu.cr4 & cr4::kPGE) ? Mmu::Flush::kNonGlobal : Mmu::Flush::kAll);
      ++counters_.tlb_flushes;
      break;
    case 4:
      if (v & ~kCr4Allowed) return Fault(Gp0());
      if (cpu.LongMode() && !(v & cr4::kPAE)) return Fault(Gp0());  // would leave IA-32e mode
      if (v != cpu.cr4) mmu_.FlushTlb();
      cpu.cr4 = v;
      break;
    case 8:  // the task-priority register (SDM Vol. 3 §11.8.6.5)
      if (v & ~0xfull) return Fault(Gp0());
      cpu.cr8 = v;
      if (platform_) platform_->WriteCr8(v);
      break;
    default:
      return Fault(Ud());
  }
  cpu.rip = d.NextRip();
  return Done();
}

// mov to/from DR0-DR7 (SDM Vol. 3 §18.2). DR4/DR5 alias DR6/DR7 unless
// CR4.DE makes them #UD. The registers are stored; breakpoints are not
// armed yet.
EmulateOutcome Emulator::MovDr(CpuState& cpu, const DecodedInsn& d) {
  if (cpu.Cpl() != 0) return Fault(Gp0());
  const bool to_dr = ZydisRegisterGetClass(d.ops[0].reg.value) == ZYDIS_REGCLASS_DEBUG;
  int dr = (to_dr ? d.ops[0].reg.value : d.ops[1].reg.value) - ZYDIS_REGISTER_DR0;
  GprRef g;
  if (!DecodeGpr(to_dr ? d.ops[1].reg.value : d.ops[0].reg.value, &g)) return Fault(Ud());
  if (dr == 4 || dr == 5) {
    if (cpu.cr4 & kCr4DE) return Fault(Ud());
    dr += 2;
  }
  if (dr > 7) return Fault(Ud());
  if (!to_dr) {
    cpu.gpr[g.index] = cpu.dr[dr];
  } else {
    const uint64_t v = cpu.gpr[g.index];
    if (dr >= 6 && (v >> 32)) return Fault(Gp0());
    if (dr == 6) {
      cpu.dr[6] = (v & 0xe00f) | 0xffff0ff0;  // B0-B3, BD, BS, BT; the rest reads as 1
    } else if (dr == 7) {
      cpu.dr[7] = (v & ~0xd800ull) | 0x400;  // bits 11, 12, 14, 15 read 0; bit 10 reads 1
    } else {
      cpu.dr[dr] = v;
    }
  }
  cpu.rip = d.NextRip();
  return Done();
}

// ---------------------------------------------------------------------------
// Segments and descriptor tables.

EmulateOutcome Emulator::LoadSegment(CpuState& cpu, int seg, uint16_t selector) {
  GuestException fault;
  SegmentReg loaded;
  if (!LoadDataSegment(mmu_, cpu, static_cast<SegIndex>(seg), selector, cpu.Cpl(), &loaded,
                       &fault)) {
    return Fault(fault);
  }
  cpu.seg[seg] = loaded;
  return Done();
}

EmulateOutcome Emulator::MovSreg(CpuState& cpu, const DecodedInsn& d) {
  GuestException fault;
  if (d.ops[1].type == ZYDIS_OPERAND_TYPE_REGISTER &&
      ZydisRegisterGetClass(d.ops[1].reg.value) == ZYDIS_REGCLASS_SEGMENT) {
    // mov r/m, Sreg: a 32/64-bit register gets the selector zero-extended,
    // memory and 16-bit registers 16 bits.
    const int seg = d.ops[1].reg.value - ZYDIS_REGISTER_ES;
    if (!WriteOperand(cpu, d, d.ops[0], cpu.seg[seg].selector, &fault)) return Fault(fault);
    cpu.rip = d.NextRip();
    return Done();
  }
  const int seg = d.ops[0].reg.value - ZYDIS_REGISTER_ES;
  if (seg == kCs || seg < 0 || seg >= kSegCount) return Fault(Ud());
  uint64_t sel;
  if (!ReadOperand(cpu, d, d.ops[1], &sel, &fault)) return Fault(fault);
  EmulateOutcome o = LoadSegment(cpu, seg, static_cast<uint16_t>(sel));
  if (o.kind != EmulateOutcome::kDone) return o;
  cpu.rip = d.NextRip();
  if (seg == kSs) o.shadow = InterruptShadow::kMovSs;
  return o;
}

// ltr / lldt (SDM Vol. 2 LTR, LLDT; 16-byte system descriptors in IA-32e
// mode, Vol. 3 §7.2.3, §3.5.2).
EmulateOutcome Emulator::LoadTaskOrLdt(CpuState& cpu, const DecodedInsn& d) {
  if (cpu.Cpl() != 0) return Fault(Gp0());
  GuestException fault;
  uint64_t v;
  if (!ReadOperand(cpu, d, d.ops[0], &v, &fault)) return Fault(fault);
  const uint16_t sel = static_cast<uint16_t>(v);
  const bool ltr = d.insn.mnemonic == ZYDIS_MNEMONIC_LTR;
  if (IsNullSelector(sel)) {
    if (ltr) return Fault(Gp0());
    cpu.ldtr = SegmentReg{};  // an unusable LDTR: LDT selectors fault
    cpu.ldtr.selector = sel;
    return Done();
  }
  if (sel & 4) return Fault(SelectorFault(kGP, sel));  // must be in the GDT
  Descriptor desc;
  if (!ReadDescriptor(mmu_, cpu, sel, true, &desc, &fault)) return Fault(fault);
  const unsigned want = ltr ? desc_type::kTssAvailable : desc_type::kLdt;
  if (!desc.System() || desc.Type() != want) return Fault(SelectorFault(kGP, sel));
  // The upper half's type field must be zero, the base canonical.
  if (((desc.raw_high >> 40) & 0x1f) != 0 || !IsCanonical(desc.Base())) {
    return Fault(SelectorFault(kGP, sel));
  }
  if (!desc.Present()) return Fault(SelectorFault(kNP, sel));
  if (ltr) {
    // Mark the TSS busy in the GDT, as hardware does.
    desc.raw |= uint64_t{desc_type::kTssBusy ^ desc_type::kTssAvailable} << 40;
    if (!WriteDescriptorLow(mmu_, cpu, sel, desc.raw, &fault)) return Fault(fault);
    cpu.tr = desc.ToSegment(sel);
  } else {
    cpu.ldtr = desc.ToSegment(sel);
  }
  return Done();
}

// lar, lsl, verr, verw: ZF says whether the selector passed the checks.
EmulateOutcome Emulator::QuerySegment(CpuState& cpu, const DecodedInsn& d) {
  const ZydisMnemonic m = d.insn.mnemonic;
  const bool verify = m == ZYDIS_MNEMONIC_VERR || m == ZYDIS_MNEMONIC_VERW;
  const ZydisDecodedOperand& src = verify ? d.ops[0] : d.ops[1];
  GuestException fault;
  uint64_t v;
  if (!ReadOperand(cpu, d, src, &v, &fault)) return Fault(fault);
  const DescriptorQuery q = m == ZYDIS_MNEMONIC_LAR    ? DescriptorQuery::kLar
                            : m == ZYDIS_MNEMONIC_LSL  ? DescriptorQuery::kLsl
                            : m == ZYDIS_MNEMONIC_VERR ? DescriptorQuery::kVerr
                                                       : DescriptorQuery::kVerw;
  Descriptor desc;
  bool valid;
  if (!QueryDescriptor(mmu_, cpu, static_cast<uint16_t>(v), q, &desc, &valid, &fault)) {
    return Fault(fault);
  }
  if (valid && !verify) {
    // LAR: the access rights, bits 23:8 of the descriptor's second dword
    // (limit bits 19:16 read as zero); LSL: the limit in bytes.
    uint64_t result = q == DescriptorQuery::kLar ? (desc.raw >> 32) & 0x00f0ff00 : desc.Limit();
    if (!WriteOperand(cpu, d, d.ops[0], result, &fault)) return Fault(fault);
  }
  SetZf(cpu, valid);
  cpu.rip = d.NextRip();
  return Done();
}

// The mode a far transfer enters through code descriptor `desc`, and the
// instruction pointer it may load there (SDM Vol. 2 IRET, RET, JMP, CALL,
// "IA-32e mode"): a 64-bit segment takes a canonical RIP; a 32-bit one
// (compatibility mode) takes EIP, the low 32 bits (limits are not
// checked: flat segments). L = 1 with D = 1 is reserved (#GP(selector));
// 16-bit code segments are not modelled (false with *unsupported set).
namespace {
bool FarTarget(const Descriptor& desc, uint16_t selector, uint64_t* rip, GuestException* fault,
               bool* unsupported) {
  *unsupported = false;
  if (desc.Long() && desc.Db()) {
    *fault = SelectorFault(kGP, selector);
    return false;
  }
  if (desc.Long()) {
    if (!IsCanonical(*rip)) {
      *fault = Gp0();
      return false;
    }
    return true;
  }
  if (!desc.Db()) {
    *unsupported = true;
    return false;
  }
  *rip &= 0xffffffff;
  return true;
}
}  // namespace

// iret and far ret in IA-32e mode (SDM Vol. 2 IRET "IA-32e-MODE", RET
// "IA-32E-MODE-RETURN"), from 64-bit or compatibility mode, to the same or
// an outer privilege level, to 64-bit or compatibility-mode code. The
// operand size (iretq/iretd, lretq/lret) sets the width of every pop; the
// stack is the current mode's (RSP, or ESP wrapping at 4 GiB). SS:RSP is
// popped by iret in 64-bit mode always, and otherwise only on a return to
// an outer privilege level.
EmulateOutcome Emulator::FarReturn(CpuState& cpu, const DecodedInsn& d, bool iret) {
  GuestException fault;
  const unsigned size = d.insn.operand_width / 8;
  const unsigned cpl = cpu.Cpl();
  // IA-32e mode has no task return: iret with NT set faults.
  if (iret && (cpu.rflags & rflags::kNT)) return Fault(Gp0());
  CpuState next = cpu;
  uint64_t rip = 0, cs = 0, fl = 0, rsp = 0, ss = 0;
  if (!Pop(next, &rip, size, &fault) || !Pop(next, &cs, size, &fault)) return Fault(fault);
  if (iret && !Pop(next, &fl, size, &fault)) return Fault(fault);
  // ret imm16 releases parameters on both stacks.
  const uint64_t release =
      !iret && d.ops[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE ? d.ops[0].imm.value.u & 0xffff : 0;
  next.gpr[kRsp] += release;
  if (Compat(cpu)) next.gpr[kRsp] &= 0xffffffff;
  const uint16_t cs_sel = static_cast<uint16_t>(cs);
  const unsigned rpl = cs_sel & 3;
  const bool outer = rpl > cpl;
  const bool pops_stack = outer || (iret && !Compat(cpu));
  if (pops_stack) {
    if (!Pop(next, &rsp, size, &fault) || !Pop(next, &ss, size, &fault)) return Fault(fault);
  }
  if (IsNullSelector(cs_sel)) return Fault(Gp0());
  if (rpl < cpl) return Fault(SelectorFault(kGP, cs_sel));
  Descriptor desc;
  if (!ReadDescriptor(mmu_, cpu, cs_sel, false, &desc, &fault)) return Fault(fault);
  if (!desc.Code()) return Fault(SelectorFault(kGP, cs_sel));
  if (desc.Conforming() ? desc.Dpl() > rpl : desc.Dpl() != rpl) {
    return Fault(SelectorFault(kGP, cs_sel));
  }
  if (!desc.Present()) return Fault(SelectorFault(kNP, cs_sel));
  // The IA-32e checks apply to a RIP popped whole, whichever the target.
  if (!IsCanonical(rip)) return Fault(Gp0());
  bool unsupported;
  if (!FarTarget(desc, cs_sel, &rip, &fault, &unsupported)) {
    return unsupported ? Unsupported(d, "return to a 16-bit code segment") : Fault(fault);
  }
  const bool to_compat = !desc.Long();
  // A null SS is allowed only going back to 64-bit code below CPL 3
  // (SDM Vol. 2 IRET "IA-32e-MODE-RETURN", RET: #GP(0) / #GP(selector)).
  if (pops_stack && to_compat && IsNullSelector(static_cast<uint16_t>(ss))) {
    return Fault(iret ? Gp0() : SelectorFault(kGP, static_cast<uint16_t>(ss)));
  }

  next.seg[kCs] = desc.ToSegment(cs_sel);
  next.rip = rip;
  if (iret) {
    // Which flags iret may change depends on CPL and IOPL (SDM Vol. 2 IRET).
    uint64_t changeable = rflags::kArith | rflags::kTF | rflags::kDF | rflags::kNT |
                          rflags::kRF | rflags::kAC | rflags::kID;
    if (cpl == 0) changeable |= rflags::kIOPL | (1ull << 19) | (1ull << 20);  // VIF, VIP
    if (cpl <= Iopl(cpu)) changeable |= rflags::kIF;
    if (size == 2) changeable &= 0xffff;
    next.rflags = (cpu.rflags & ~changeable) | (fl & changeable) | rflags::kFixed1;
  }
  if (pops_stack) {
    // RSP as popped (ESP, zero-extended, with a 32-bit operand size).
    next.gpr[kRsp] = rsp + (outer ? release : 0);
    if (to_compat) next.gpr[kRsp] &= 0xffffffff;
    // SS is checked at the new CPL: RPL = DPL = CPL, or null below CPL 3.
    SegmentReg ss_reg;
    if (!LoadDataSegment(mmu_, next, kSs, static_cast<uint16_t>(ss), rpl, &ss_reg, &fault)) {
      return Fault(fault);
    }
    next.seg[kSs] = ss_reg;
  }
  if (outer) {
    // Data segments the new CPL may not use become null (SDM Vol. 2 IRET).
    for (int s : {kDs, kEs, kFs, kGs}) {
      const SegmentReg& r = next.seg[s];
      const bool code_conforming = (r.attrib & 0x1c) == 0x1c;
      if (!IsNullSelector(r.selector) && !code_conforming && r.Dpl() < rpl) {
        const uint64_t base = r.base;
        next.seg[s] = SegmentReg{};
        if (s == kFs || s == kGs) next.seg[s].base = base;  // bases stay in 64-bit mode
      }
    }
  }
  if (!MarkAccessed(mmu_, cpu, cs_sel, &desc, &fault)) return Fault(fault);
  cpu = next;
  return Done();
}

// jmp far / call far: through memory (m16:16, m16:32, m16:64) or, in
// compatibility mode, direct (ptr16:32); to a code segment at the same
// privilege (64-bit or compatibility mode), or through a 64-bit call
// gate, inward for call (SDM Vol. 2 JMP, CALL; Vol. 3 §5.8.5-§5.8.6). TSS
// and task gates #GP: IA-32e mode has no task switch.
EmulateOutcome Emulator::FarJumpOrCall(CpuState& cpu, const DecodedInsn& d) {
  GuestException fault;
  const bool call = d.insn.mnemonic == ZYDIS_MNEMONIC_CALL;
  const unsigned size = d.insn.operand_width / 8;  // of the offset (and of the pushes)
  const unsigned cpl = cpu.Cpl();
  uint64_t offset = 0;
  uint16_t sel;
  if (d.ops[0].type == ZYDIS_OPERAND_TYPE_POINTER) {
    offset = d.ops[0].ptr.offset;
    sel = d.ops[0].ptr.segment;
  } else if (d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
    if (!ReadFarPointer(cpu, d, d.ops[0], size, &offset, &sel, &fault)) return Fault(fault);
  } else {
    return Fault(Ud());
  }
  if (IsNullSelector(sel)) return Fault(Gp0());
  Descriptor desc;
  if (!ReadDescriptor(mmu_, cpu, sel, false, &desc, &fault)) return Fault(fault);
  CpuState next = cpu;
  const uint64_t return_rip = d.NextRip();

  if (desc.Code()) {
    if (desc.Conforming() ? desc.Dpl() > cpl : ((sel & 3) > cpl || desc.Dpl() != cpl)) {
      return Fault(SelectorFault(kGP, sel));
    }
    if (!desc.Present()) return Fault(SelectorFault(kNP, sel));
    bool unsupported;
    if (!FarTarget(desc, sel, &offset, &fault, &unsupported)) {
      return unsupported ? Unsupported(d, "far transfer to a 16-bit code segment") : Fault(fault);
    }
    // The pushes go to the current stack, as wide as the operand size.
    if (call && (!Push(next, cpu.seg[kCs].selector, size, &fault) ||
                 !Push(next, return_rip, size, &fault))) {
      return Fault(fault);
    }
    if (!MarkAccessed(mmu_, cpu, sel, &desc, &fault)) return Fault(fault);
    next.seg[kCs] = desc.ToSegment(static_cast<uint16_t>((sel & ~3u) | cpl));
    next.rip = offset;
    cpu = next;
    return Done();
  }
  if (!desc.System() || desc.Type() != desc_type::kCallGate) {
    return Fault(SelectorFault(kGP, sel));
  }

  // A 64-bit call gate (16 bytes).
  Descriptor gate;
  if (!ReadDescriptor(mmu_, cpu, sel, true, &gate, &fault)) return Fault(fault);
  if (gate.Dpl() < cpl || gate.Dpl() < (sel & 3u) || ((gate.raw_high >> 40) & 0x1f) != 0) {
    return Fault(SelectorFault(kGP, sel));
  }
  if (!gate.Present()) return Fault(SelectorFault(kNP, sel));
  const uint16_t cs_sel = gate.GateSelector();
  if (IsNullSelector(cs_sel)) return Fault(Gp0());
  Descriptor cs;
  if (!ReadDescriptor(mmu_, cpu, cs_sel, false, &cs, &fault)) return Fault(fault);
  if (!cs.Code64() || cs.Dpl() > cpl || (!call && !cs.Conforming() && cs.Dpl() != cpl)) {
    return Fault(SelectorFault(kGP, cs_sel));
  }
  if (!cs.Present()) return Fault(SelectorFault(kNP, cs_sel));
  const uint64_t target = gate.GateOffset();
  if (!IsCanonical(target)) return Fault(Gp0());
  const unsigned new_cpl = cs.Conforming() ? cpl : cs.Dpl();
  next.seg[kCs] = cs.ToSegment(static_cast<uint16_t>((cs_sel & ~3u) | new_cpl));
  if (call) {
    if (new_cpl < cpl) {
      // Inward: the stack for the new CPL from the TSS, SS null with RPL =
      // new CPL; the old SS:RSP goes on the new stack first.
      const uint64_t off = 4 + 8ull * new_cpl;
      if (off + 7 > cpu.tr.limit) return Fault(SelectorFault(kTS, cpu.tr.selector));
      uint64_t new_rsp;
      if (!mmu_.ReadVirt(cpu, GuestVirt(cpu.tr.base + off), &new_rsp, 8, kMmuKernel, &fault)) {
        return Fault(fault);
      }
      if (!IsCanonical(new_rsp)) return Fault({kSS, true, 0, 0});
      next.seg[kSs] = SegmentReg{};
      next.seg[kSs].selector = static_cast<uint16_t>(new_cpl);
      next.gpr[kRsp] = new_rsp;
      if (!Push(next, cpu.seg[kSs].selector, 8, &fault) ||
          !Push(next, cpu.gpr[kRsp], 8, &fault)) {
        return Fault(fault);
      }
    }
    if (!Push(next, cpu.seg[kCs].selector, 8, &fault) || !Push(next, return_rip, 8, &fault)) {
      return Fault(fault);
    }
  }
  if (!MarkAccessed(mmu_, cpu, cs_sel, &cs, &fault)) return Fault(fault);
  next.rip = target;
  cpu = next;
  return Done();
}

// sysenter / sysexit in IA-32e mode (SDM Vol. 2 SYSENTER, SYSEXIT): flat
// segments derived from IA32_SYSENTER_CS.
EmulateOutcome Emulator::Sysenter(CpuState& cpu) {
  const uint16_t cs = static_cast<uint16_t>(cpu.msr.sysenter_cs & 0xfffc);
  if (cs == 0) return Fault(Gp0());
  cpu.seg[kCs] = {cs, 0xa09b, 0xffffffff, 0};  // 64-bit code, DPL 0
  cpu.seg[kSs] = {static_cast<uint16_t>(cs + 8), 0xc093, 0xffffffff, 0};
  cpu.rflags &= ~(rflags::kVM | rflags::kIF | rflags::kRF);
  cpu.gpr[kRsp] = cpu.msr.sysenter_esp;
  cpu.rip = cpu.msr.sysenter_eip;
  return Done();
}

// sysexit without REX.W returns to compatibility mode: CS = SYSENTER_CS +
// 16, SS = + 24, ESP = ECX, EIP = EDX.
EmulateOutcome Emulator::Sysexit(CpuState& cpu, const DecodedInsn& d) {
  const uint16_t cs = static_cast<uint16_t>(cpu.msr.sysenter_cs & 0xfffc);
  if (cs == 0 || cpu.Cpl() != 0) return Fault(Gp0());
  if (d.insn.operand_width != 64) {
    cpu.seg[kCs] = FlatCode32Dpl3(static_cast<uint16_t>((cs + 16) | 3));
    cpu.seg[kSs] = {static_cast<uint16_t>((cs + 24) | 3), 0xc0f3, 0xffffffff, 0};
    cpu.gpr[kRsp] = cpu.gpr[kRcx] & 0xffffffff;
    cpu.rip = cpu.gpr[kRdx] & 0xffffffff;
    return Done();
  }
  if (!IsCanonical(cpu.gpr[kRdx]) || !IsCanonical(cpu.gpr[kRcx])) return Fault(Gp0());
  cpu.seg[kCs] = {static_cast<uint16_t>((cs + 32) | 3), 0xa0fb, 0xffffffff, 0};
  cpu.seg[kSs] = {static_cast<uint16_t>((cs + 40) | 3), 0xc0f3, 0xffffffff, 0};
  cpu.gpr[kRsp] = cpu.gpr[kRcx];
  cpu.rip = cpu.gpr[kRdx];
  return Done();
}

// ---------------------------------------------------------------------------
// MSRs (SDM Vol. 4 Table 2-2). An MSR the virtual CPU does not have raises
// #GP(0) on rdmsr and wrmsr, as hardware does; so does a write of a
// reserved bit, a non-canonical address or an invalid memory type.

namespace {
namespace msr {
inline constexpr uint32_t kTsc = 0x10, kPlatformId = 0x17, kApicBase = 0x1b, kTscAdjust = 0x3b,
                          kFeatureControl = 0x3a, kBiosSignId = 0x8b, kMtrrCap = 0xfe,
                          kArchCapabilities = 0x10a, kSysenterCs = 0x174, kSysenterEsp = 0x175,
                          kSysenterEip = 0x176, kMiscEnable = 0x1a0, kMtrrPhysBase0 = 0x200,
                          kMtrrFix64K = 0x250, kMtrrFix16K0 = 0x258, kMtrrFix16K1 = 0x259,
                          kMtrrFix4K0 = 0x268, kPat = 0x277, kMtrrDefType = 0x2ff,
                          kEfer = 0xc0000080, kStar = 0xc0000081, kLstar = 0xc0000082,
                          kCstar = 0xc0000083, kFmask = 0xc0000084, kFsBase = 0xc0000100,
                          kGsBase = 0xc0000101, kKernelGsBase = 0xc0000102,
                          kTscAux = 0xc0000103;
}  // namespace msr

constexpr uint64_t kPhysAddrMask = ((1ull << kPhysAddrBits) - 1) & ~0xfffull;
constexpr uint64_t kApicBsp = 1ull << 8, kApicEnable = 1ull << 11;

// Memory types an MTRR may hold (UC WC WT WP WB); PAT also has UC- (7).
bool ValidMtrrType(uint64_t t) { return t == 0 || t == 1 || t == 4 || t == 5 || t == 6; }
bool ValidPatType(uint64_t t) { return ValidMtrrType(t) || t == 7; }
bool EveryByte(uint64_t v, bool (*ok)(uint64_t)) {
  for (int i = 0; i < 8; ++i) {
    if (!ok((v >> (8 * i)) & 0xff)) return false;
  }
  return true;
}

// The storage of a fixed-range MTRR, or nullptr.
uint64_t* FixedMtrr(MsrState& m, uint32_t index) {
  if (index == msr::kMtrrFix64K) return &m.mtrr_fixed[0];
  if (index == msr::kMtrrFix16K0 || index == msr::kMtrrFix16K1) {
    return &m.mtrr_fixed[1 + index - msr::kMtrrFix16K0];
  }
  if (index >= msr::kMtrrFix4K0 && index < msr::kMtrrFix4K0 + 8) {
    return &m.mtrr_fixed[3 + index - msr::kMtrrFix4K0];
  }
  return nullptr;
}

bool ReadMsr(const CpuState& cpu, uint32_t index, uint64_t* v) {
  const MsrState& m = cpu.msr;
  switch (index) {
    case msr::kTsc: *v = GuestTsc(cpu); return true;
    case msr::kTscAdjust: *v = m.tsc_adjust; return true;
    case msr::kPlatformId: *v = 0; return true;
    case msr::kApicBase: *v = m.apic_base; return true;
    case msr::kFeatureControl: *v = 1; return true;  // locked, VMX off
    case msr::kBiosSignId: *v = 0; return true;      // no microcode revision
    case msr::kMtrrCap: *v = 0x508; return true;     // 8 variable ranges, fixed ranges, WC
    case msr::kArchCapabilities: *v = kArchCapabilities; return true;
    case msr::kSysenterCs: *v = m.sysenter_cs; return true;
    case msr::kSysenterEsp: *v = m.sysenter_esp; return true;
    case msr::kSysenterEip: *v = m.sysenter_eip; return true;
    case msr::kMiscEnable: *v = m.misc_enable | misc_enable::kReadOnlyOnes; return true;
    case msr::kPat: *v = m.pat; return true;
    case msr::kMtrrDefType: *v = m.mtrr_def_type; return true;
    case msr::kEfer: *v = cpu.efer; return true;
    case msr::kStar: *v = m.star; return true;
    case msr::kLstar: *v = m.lstar; return true;
    case msr::kCstar: *v = m.cstar; return true;
    case msr::kFmask: *v = m.fmask; return true;
    case msr::kFsBase: *v = cpu.seg[kFs].base; return true;
    case msr::kGsBase: *v = cpu.seg[kGs].base; return true;
    case msr::kKernelGsBase: *v = m.kernel_gs_base; return true;
    case msr::kTscAux: *v = m.tsc_aux; return true;
    default: break;
  }
  if (index >= msr::kMtrrPhysBase0 && index < msr::kMtrrPhysBase0 + 16) {
    *v = m.mtrr_var[index - msr::kMtrrPhysBase0];
    return true;
  }
  if (const uint64_t* fixed = FixedMtrr(const_cast<MsrState&>(m), index)) {
    *v = *fixed;
    return true;
  }
  return false;
}

bool WriteMsr(CpuState& cpu, Mmu& mmu, uint32_t index, uint64_t v) {
  MsrState& m = cpu.msr;
  auto canonical = [&](uint64_t* slot) {
    if (!IsCanonical(v)) return false;
    *slot = v;
    return true;
  };
  switch (index) {
    case msr::kTsc: {
      // IA32_TSC_ADJUST follows a write to the TSC by the same amount, and
      // a write to it moves the TSC (SDM Vol. 3 §17.17.3).
      const uint64_t delta = v - GuestTsc(cpu);
      m.tsc_offset += delta;
      m.tsc_adjust += delta;
      return true;
    }
    case msr::kTscAdjust:
      m.tsc_offset += v - m.tsc_adjust;
      m.tsc_adjust = v;
      return true;
    case msr::kApicBase:
      // x2APIC (bit 10) is not exposed; BSP is read-only.
      if (v & ~(kApicBsp | kApicEnable | kPhysAddrMask)) return false;
      m.apic_base = (v & (kApicEnable | kPhysAddrMask)) | (m.apic_base & kApicBsp);
      return true;
    case msr::kBiosSignId:
      return true;  // the microcode-revision handshake: ignored
    case msr::kSysenterCs:
      m.sysenter_cs = v & 0xffffffff;
      return true;
    case msr::kSysenterEsp: return canonical(&m.sysenter_esp);
    case msr::kSysenterEip: return canonical(&m.sysenter_eip);
    case msr::kMiscEnable: {
      const uint64_t now = m.misc_enable | misc_enable::kReadOnlyOnes;
      if ((v ^ now) & ~misc_enable::kWritable) return false;
      m.misc_enable = v & misc_enable::kWritable;
      return true;
    }
    case msr::kPat:
      if (!EveryByte(v, ValidPatType)) return false;
      m.pat = v;
      return true;
    case msr::kMtrrDefType:
      if ((v & ~0xcffull) || !ValidMtrrType(v & 0xff)) return false;  // type, FE, E
      m.mtrr_def_type = v;
      return true;
    case msr::kEfer: {
      // SCE, LME, NXE; LMA is read-only; LME cannot change with paging on.
      if (v & ~(efer::kSCE | efer::kLME | efer::kLMA | efer::kNXE)) return false;
      if (((v ^ cpu.efer) & efer::kLME) && (cpu.cr0 & cr0::kPG)) return false;
      const uint64_t next = (v & ~efer::kLMA) | (cpu.efer & efer::kLMA);
      if ((next ^ cpu.efer) & efer::kNXE) mmu.FlushTlb();
      cpu.efer = next;
      return true;
    }
    case msr::kStar: m.star = v; return true;
    case msr::kLstar: return canonical(&m.lstar);
    case msr::kCstar: return canonical(&m.cstar);
    case msr::kFmask:
      if (v >> 32) return false;
      m.fmask = v;
      return true;
    case msr::kFsBase: return canonical(&cpu.seg[kFs].base);
    case msr::kGsBase: return canonical(&cpu.seg[kGs].base);
    case msr::kKernelGsBase: return canonical(&m.kernel_gs_base);
    case msr::kTscAux:
      if (v >> 32) return false;
      m.tsc_aux = v;
      return true;
    default:
      break;  // read-only MSRs (MTRRCAP, ARCH_CAPABILITIES, ...) and unknown ones
  }
  if (index >= msr::kMtrrPhysBase0 && index < msr::kMtrrPhysBase0 + 16) {
    const bool base = (index & 1) == 0;
    // PHYSBASEn: type and address; PHYSMASKn: valid bit (11) and address.
    const uint64_t allowed = kPhysAddrMask | (base ? 0xffull : 0x800ull);
    if ((v & ~allowed) || (base && !ValidMtrrType(v & 0xff))) return false;
    m.mtrr_var[index - msr::kMtrrPhysBase0] = v;
    return true;
  }
  if (uint64_t* fixed = FixedMtrr(m, index)) {
    if (!EveryByte(v, ValidMtrrType)) return false;
    *fixed = v;
    return true;
  }
  return false;
}
}  // namespace

EmulateOutcome Emulator::Msr(CpuState& cpu, bool write) {
  if (cpu.Cpl() != 0) return Fault(Gp0());
  const uint32_t index = static_cast<uint32_t>(cpu.gpr[kRcx]);
  using R = CpuPlatform::MsrResult;
  if (write) {
    const uint64_t v = (cpu.gpr[kRdx] << 32) | (cpu.gpr[kRax] & 0xffffffff);
    R r = platform_ ? platform_->WriteMsr(index, v) : R::kNotMine;
    if (r == R::kFault || (r == R::kNotMine && !WriteMsr(cpu, mmu_, index, v))) {
      return Fault(Gp0());
    }
    return Done();
  }
  uint64_t v;
  R r = platform_ ? platform_->ReadMsr(index, &v) : R::kNotMine;
  if (r == R::kFault || (r == R::kNotMine && !ReadMsr(cpu, index, &v))) return Fault(Gp0());
  cpu.gpr[kRax] = v & 0xffffffff;
  cpu.gpr[kRdx] = v >> 32;
  return Done();
}

// ---------------------------------------------------------------------------
// x87/SSE state: fxsave/fxrstor and xsave/xrstor (x87 and SSE components),
// xgetbv/xsetbv. CpuState keeps the state as the FXSAVE64 image the
// engines load into the host FPU (SDM Vol. 1 §10.5.1, §13.4-§13.8).

namespace {
// Offsets in the legacy (FXSAVE) region.
constexpr size_t kFipOffset = 8, kFdpOffset = 16, kMxcsrOffset = 24, kMxcsrMaskOffset = 28,
                 kStOffset = 32, kXmmOffset = 160, kXmmEnd = 416, kLegacySize = 512;
constexpr uint32_t kDefaultMxcsrMask = 0xffbf;

uint32_t MxcsrMask(const CpuState& cpu) {
  uint32_t mask;
  std::memcpy(&mask, cpu.xsave.bytes + kMxcsrMaskOffset, 4);
  return mask ? mask : kDefaultMxcsrMask;
}

// Copies components of the legacy region from CpuState (FXSAVE64 layout)
// to a guest image in the REX.W layout or the default one (32-bit FIP and
// FDP, FCS and FDS stored as zero: CPUID.7.EBX[13] deprecates them).
void LegacyToGuest(const CpuState& cpu, uint8_t* out, bool rex_w, bool x87, bool mxcsr,
                   bool sse) {
  const uint8_t* s = cpu.xsave.bytes;
  if (x87) {
    std::memcpy(out, s, kFipOffset);  // FCW FSW FTW FOP
    if (rex_w) {
      std::memcpy(out + kFipOffset, s + kFipOffset, 16);
    } else {
      std::memcpy(out + kFipOffset, s + kFipOffset, 4);
      std::memset(out + kFipOffset + 4, 0, 4);
      std::memcpy(out + kFdpOffset, s + kFdpOffset, 4);
      std::memset(out + kFdpOffset + 4, 0, 4);
    }
    std::memcpy(out + kStOffset, s + kStOffset, kXmmOffset - kStOffset);
  }
  if (mxcsr) std::memcpy(out + kMxcsrOffset, s + kMxcsrOffset, 8);  // MXCSR, MXCSR_MASK
  if (sse) std::memcpy(out + kXmmOffset, s + kXmmOffset, kXmmEnd - kXmmOffset);
}

void LegacyFromGuest(CpuState& cpu, const uint8_t* in, bool rex_w, bool x87, bool mxcsr,
                     bool sse) {
  uint8_t* s = cpu.xsave.bytes;
  if (x87) {
    std::memcpy(s, in, kFipOffset);
    if (rex_w) {
      std::memcpy(s + kFipOffset, in + kFipOffset, 16);
    } else {
      std::memset(s + kFipOffset, 0, 16);
      std::memcpy(s + kFipOffset, in + kFipOffset, 4);
      std::memcpy(s + kFdpOffset, in + kFdpOffset, 4);
    }
    std::memcpy(s + kStOffset, in + kStOffset, kXmmOffset - kStOffset);
  }
  if (mxcsr) std::memcpy(s + kMxcsrOffset, in + kMxcsrOffset, 4);  // not the mask
  if (sse) std::memcpy(s + kXmmOffset, in + kXmmOffset, kXmmEnd - kXmmOffset);
}

// The x87 and SSE initial configurations (SDM Vol. 1 §13.6).
void InitX87(CpuState& cpu) {
  uint8_t* s = cpu.xsave.bytes;
  std::memset(s, 0, kMxcsrOffset);
  std::memset(s + kStOffset, 0, kXmmOffset - kStOffset);
  const uint16_t fcw = 0x37f;
  std::memcpy(s, &fcw, 2);
}
void InitSse(CpuState& cpu) {
  std::memset(cpu.xsave.bytes + kXmmOffset, 0, kXmmEnd - kXmmOffset);
}

bool IsRexW(const DecodedInsn& d) {
  const ZydisMnemonic m = d.insn.mnemonic;
  return m == ZYDIS_MNEMONIC_FXSAVE64 || m == ZYDIS_MNEMONIC_FXRSTOR64 ||
         m == ZYDIS_MNEMONIC_XSAVE64 || m == ZYDIS_MNEMONIC_XRSTOR64;
}
}  // namespace

EmulateOutcome Emulator::FxSave(CpuState& cpu, const DecodedInsn& d) {
  if (cpu.cr0 & (cr0::kEM | cr0::kTS)) return Fault(Nm());
  GuestException fault;
  const uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
  if (ea & 15) return Fault(Gp0());
  const bool save = d.insn.mnemonic == ZYDIS_MNEMONIC_FXSAVE ||
                    d.insn.mnemonic == ZYDIS_MNEMONIC_FXSAVE64;
  const bool rex_w = IsRexW(d);
  uint8_t image[kLegacySize] = {};
  if (save) {
    // Bytes 416-511 are not written (464-511 are software's).
    LegacyToGuest(cpu, image, rex_w, true, true, true);
    if (!mmu_.WriteVirt(cpu, GuestVirt(ea), image, kXmmEnd, MmuIndexFor(cpu), &fault)) {
      return Fault(fault);
    }
  } else {
    if (!mmu_.ReadVirt(cpu, GuestVirt(ea), image, kLegacySize, MmuIndexFor(cpu), &fault)) {
      return Fault(fault);
    }
    uint32_t mxcsr;
    std::memcpy(&mxcsr, image + kMxcsrOffset, 4);
    if (mxcsr & ~MxcsrMask(cpu)) return Fault(Gp0());
    LegacyFromGuest(cpu, image, rex_w, true, true, true);
  }
  cpu.rip = d.NextRip();
  return Done();
}

EmulateOutcome Emulator::XSave(CpuState& cpu, const DecodedInsn& d) {
  if (!(cpu.cr4 & cr4::kOSXSAVE)) return Fault(Ud());
  if (cpu.cr0 & cr0::kTS) return Fault(Nm());
  GuestException fault;
  const uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
  if (ea & 63) return Fault(Gp0());
  const bool save = d.insn.mnemonic == ZYDIS_MNEMONIC_XSAVE ||
                    d.insn.mnemonic == ZYDIS_MNEMONIC_XSAVE64;
  const bool rex_w = IsRexW(d);
  // The requested-feature bitmap: XCR0 and EDX:EAX.
  const uint64_t rfbm = cpu.xcr0 & ((cpu.gpr[kRdx] << 32) | (cpu.gpr[kRax] & 0xffffffff));
  const bool x87 = rfbm & 1, sse = rfbm & 2, mxcsr = rfbm & 6;
  uint8_t area[kXsaveAreaSize];
  // Read the whole area first: xsave leaves the parts it does not save
  // as they were, and either form must fault before changing anything.
  if (!mmu_.ReadVirt(cpu, GuestVirt(ea), area, kXsaveAreaSize, MmuIndexFor(cpu), &fault)) {
    return Fault(fault);
  }
  uint64_t header[8];
  std::memcpy(header, area + kLegacySize, sizeof header);
  if (save) {
    LegacyToGuest(cpu, area, rex_w, x87, mxcsr, sse);
    // XSTATE_BV[i] := XINUSE[i] for the saved components; btvm does not
    // track the init optimisation, so a saved component is "in use".
    header[0] = (header[0] & ~rfbm) | rfbm;
    std::memcpy(area + kLegacySize, header, sizeof header);
    if (!mmu_.WriteVirt(cpu, GuestVirt(ea), area, kXsaveAreaSize, MmuIndexFor(cpu), &fault)) {
      return Fault(fault);
    }
  } else {
    // The standard form: XSTATE_BV within XCR0, XCOMP_BV and the rest of
    // the header zero, a valid MXCSR if it is to be loaded.
    const uint64_t xstate_bv = header[0];
    if (xstate_bv & ~cpu.xcr0) return Fault(Gp0());
    for (int i = 1; i < 8; ++i) {
      if (header[i] != 0) return Fault(Gp0());
    }
    uint32_t new_mxcsr;
    std::memcpy(&new_mxcsr, area + kMxcsrOffset, 4);
    if (mxcsr && (new_mxcsr & ~MxcsrMask(cpu))) return Fault(Gp0());
    // A requested component is loaded if XSTATE_BV says it was saved, else
    // initialised; MXCSR is loaded whenever SSE (or AVX) is requested.
    if (x87) {
      if (xstate_bv & 1) LegacyFromGuest(cpu, area, rex_w, true, false, false);
      else InitX87(cpu);
    }
    if (sse) {
      if (xstate_bv & 2) LegacyFromGuest(cpu, area, rex_w, false, false, true);
      else InitSse(cpu);
    }
    if (mxcsr) LegacyFromGuest(cpu, area, rex_w, false, true, false);
  }
  cpu.rip = d.NextRip();
  return Done();
}

// xgetbv / xsetbv (SDM Vol. 2): only XCR0 exists.
EmulateOutcome Emulator::Xcr(CpuState& cpu, bool write) {
  if (!(cpu.cr4 & cr4::kOSXSAVE)) return Fault(Ud());
  const uint32_t index = static_cast<uint32_t>(cpu.gpr[kRcx]);
  if (!write) {
    if (index != 0) return Fault(Gp0());  // no XGETBV with ECX = 1 (CPUID 0xd.1 EAX[2])
    cpu.gpr[kRax] = cpu.xcr0 & 0xffffffff;
    cpu.gpr[kRdx] = cpu.xcr0 >> 32;
    return Done();
  }
  if (cpu.Cpl() != 0 || index != 0) return Fault(Gp0());
  const uint64_t v = (cpu.gpr[kRdx] << 32) | (cpu.gpr[kRax] & 0xffffffff);
  if (!(v & 1) || (v & ~kSupportedXcr0)) return Fault(Gp0());
  cpu.xcr0 = v;
  return Done();
}

// enter imm16, imm8 (SDM Vol. 2 ENTER): the frame pointers of the outer
// levels are copied from the old frame.
// pusha/pushad, popa/popad (SDM Vol. 2; compatibility mode only): the
// eight GPRs in EAX ECX EDX EBX ESP EBP ESI EDI order, ESP as it was before
// the first push; popa skips the ESP slot. Either completes or faults
// with nothing changed.
EmulateOutcome Emulator::PushPopAll(CpuState& cpu, const DecodedInsn& d) {
  const unsigned size = d.insn.operand_width / 8;
  const bool push = d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHA ||
                    d.insn.mnemonic == ZYDIS_MNEMONIC_PUSHAD;
  GuestException fault;
  CpuState next = cpu;
  if (push) {
    for (int r = kRax; r <= kRdi; ++r) {
      if (!Push(next, cpu.gpr[r] & Mask(size), size, &fault)) return Fault(fault);
    }
  } else {
    for (int r = kRdi; r >= kRax; --r) {
      uint64_t v;
      if (!Pop(next, &v, size, &fault)) return Fault(fault);
      if (r == kRsp) continue;
      next.gpr[r] = size == 4 ? v : (next.gpr[r] & ~0xffffull) | v;
    }
  }
  next.rip = d.NextRip();
  cpu = next;
  return Done();
}

// BCD adjustments (SDM Vol. 2 AAA, AAS, DAA, DAS, AAM, AAD; compatibility
// mode only). AL, AH, CF and AF as the SDM defines them; the flags it
// leaves undefined are set as QEMU TCG sets them (AAA/AAS keep SF ZF PF
// OF; DAA/DAS clear OF; AAM/AAD set SF ZF PF from AL and clear CF AF OF),
// so outputs compare across the two.
EmulateOutcome Emulator::Bcd(CpuState& cpu, const DecodedInsn& d) {
  const ZydisMnemonic m = d.insn.mnemonic;
  uint64_t& rax = cpu.gpr[kRax];
  unsigned al = rax & 0xff, ah = (rax >> 8) & 0xff;
  const bool cf = cpu.rflags & rflags::kCF, af = cpu.rflags & rflags::kAF;
  uint64_t fl = cpu.rflags;
  const auto szp = [](unsigned v) {
    uint64_t f = 0;
    if (v == 0) f |= rflags::kZF;
    if (v & 0x80) f |= rflags::kSF;
    if (!__builtin_parity(v)) f |= rflags::kPF;
    return f;
  };
  switch (m) {
    case ZYDIS_MNEMONIC_AAA:
    case ZYDIS_MNEMONIC_AAS: {
      const bool add = m == ZYDIS_MNEMONIC_AAA;
      fl &= ~(rflags::kCF | rflags::kAF);
      if ((al & 0xf) > 9 || af) {
        // AX +/- 106H, then AL's high nibble cleared.
        const unsigned carry = add ? al > 0xf9 : al < 6;
        al = (add ? al + 6 : al - 6) & 0xf;
        ah = (add ? ah + 1 + carry : ah - 1 - carry) & 0xff;
        fl |= rflags::kCF | rflags::kAF;
      } else {
        al &= 0xf;
      }
      rax = (rax & ~0xffffull) | (ah << 8) | al;
      break;
    }
    case ZYDIS_MNEMONIC_DAA:
    case ZYDIS_MNEMONIC_DAS: {
      const bool add = m == ZYDIS_MNEMONIC_DAA;
      const unsigned old = al;
      fl &= ~rflags::kArith;
      if ((al & 0xf) > 9 || af) {
        if (!add && (al < 6 || cf)) fl |= rflags::kCF;
        al = (add ? al + 6 : al - 6) & 0xff;
        fl |= rflags::kAF;
      }
      if (old > 0x99 || cf) {
        al = (add ? al + 0x60 : al - 0x60) & 0xff;
        fl |= rflags::kCF;
      }
      fl |= szp(al);
      rax = (rax & ~0xffull) | al;
      break;
    }
    default: {  // AAM, AAD imm8 (base 10 without one)
      const unsigned base = d.ops[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE
                                ? static_cast<unsigned>(d.ops[0].imm.value.u & 0xff)
                                : 10;
      if (m == ZYDIS_MNEMONIC_AAM) {
        if (base == 0) return Fault({kDE, false, 0, 0});
        ah = al / base;
        al = al % base;
      } else {
        al = (ah * base + al) & 0xff;
        ah = 0;
      }
      fl = (fl & ~rflags::kArith) | szp(al);
      rax = (rax & ~0xffffull) | (ah << 8) | al;
      break;
    }
  }
  cpu.rflags = fl;
  return Done();
}

EmulateOutcome Emulator::Enter(CpuState& cpu, const DecodedInsn& d) {
  const unsigned size = d.insn.operand_width / 8;  // 8, or 2 with 66h
  const uint64_t alloc = d.ops[0].imm.value.u & 0xffff;
  const unsigned level = d.ops[1].imm.value.u & 31;
  GuestException fault;
  CpuState next = cpu;
  if (!Push(next, cpu.gpr[kRbp], size, &fault)) return Fault(fault);
  const uint64_t frame = next.gpr[kRsp];
  if (level > 0) {
    uint64_t rbp = cpu.gpr[kRbp];
    for (unsigned i = 1; i < level; ++i) {
      rbp -= size;
      uint64_t v = 0;
      if (!mmu_.ReadVirt(next, GuestVirt(rbp), &v, size, MmuIndexFor(next), &fault) ||
          !Push(next, v, size, &fault)) {
        return Fault(fault);
      }
    }
    if (!Push(next, frame, size, &fault)) return Fault(fault);
  }
  next.gpr[kRbp] = size == 2 ? (next.gpr[kRbp] & ~0xffffull) | (frame & 0xffff) : frame;
  next.gpr[kRsp] -= alloc;
  if (Compat(cpu)) next.gpr[kRsp] &= 0xffffffff;
  next.rip = d.NextRip();
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


// int n / int3: the gate checks that come before anything is pushed (SDM
// Vol. 3 §6.12.1.1, §6.14.1): the vector inside the IDT limit, an interrupt
// or trap gate, DPL >= CPL, present. A failing one faults with RIP at the
// instruction (error code: the vector's IDT index); done here because the
// engine delivers a software interrupt with RIP already past it.
bool Emulator::SoftwareGateOk(const CpuState& cpu, uint8_t vector, GuestException* fault) {
  const uint32_t error = (uint32_t{vector} << 3) | 2;
  if (uint32_t{vector} * 16 + 15 > cpu.idtr.limit) {
    *fault = GuestException::Gp(error);
    return false;
  }
  uint64_t gate = 0;
  if (!mmu_.ReadVirt(cpu, GuestVirt(cpu.idtr.base + vector * 16ull), &gate, 8, kMmuKernel,
                     fault)) {
    if (fault->vector == kPF) fault->error_code &= ~pf::kUser;  // an implicit supervisor read
    return false;
  }
  const unsigned type = (gate >> 40) & 0xf, dpl = (gate >> 45) & 3;
  if ((type != desc_type::kInterruptGate && type != desc_type::kTrapGate) || dpl < cpu.Cpl()) {
    *fault = GuestException::Gp(error);
    return false;
  }
  if (!((gate >> 47) & 1)) {
    *fault = {kNP, true, error, 0};
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// The dispatcher.

EmulateOutcome Emulator::Emulate(CpuState& cpu, const DecodedInsn& d) {
  ++counters_.exits_sensitive;
  // This instruction is the one a previous shadow covered (emulate.h).
  cpu.pending.interrupt_shadow = 0;
  EmulateOutcome o = Dispatch(cpu, d);
  if (o.kind == EmulateOutcome::kDone && o.shadow != InterruptShadow::kNone) {
    cpu.pending.interrupt_shadow = 1;
  } else {
    o.shadow = InterruptShadow::kNone;
  }
  return o;
}

EmulateOutcome Emulator::Dispatch(CpuState& cpu, const DecodedInsn& d) {
  GuestException fault;
  const bool cpl0 = cpu.Cpl() == 0;
  const uint64_t next = d.NextRip();
  EmulateOutcome done;  // what the cases that `break` return, RIP := next
  // Compatibility mode: 16-bit addressing and 16-bit near branches are not
  // modelled (insn_table.cpp sends them here to be reported).
  if (d.mode == CodeMode::kCompat32) {
    bool memory = false;
    for (unsigned i = 0; i < d.insn.operand_count; ++i) {
      memory |= d.ops[i].type == ZYDIS_OPERAND_TYPE_MEMORY;
    }
    const ZydisMnemonic m = d.insn.mnemonic;
    const bool counts_cx = m == ZYDIS_MNEMONIC_LOOP || m == ZYDIS_MNEMONIC_LOOPE ||
                           m == ZYDIS_MNEMONIC_LOOPNE || m == ZYDIS_MNEMONIC_JCXZ;
    if (d.insn.address_width == 16 && (memory || counts_cx)) {
      return Unsupported(d, "16-bit addressing in compatibility mode");
    }
    if (d.insn.meta.branch_type != ZYDIS_BRANCH_TYPE_NONE &&
        d.insn.meta.branch_type != ZYDIS_BRANCH_TYPE_FAR && d.insn.operand_width == 16) {
      return Unsupported(d, "16-bit near branch in compatibility mode");
    }
  }
  switch (d.insn.mnemonic) {
    // Port I/O (SDM Vol. 1 §19).
    case ZYDIS_MNEMONIC_IN:
    case ZYDIS_MNEMONIC_OUT:
      return PortIo(cpu, d);
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

    case ZYDIS_MNEMONIC_HLT: {
      if (!cpl0) return Fault(Gp0());
      cpu.rip = next;
      ++counters_.exits_hlt;
      EmulateOutcome o;
      o.kind = EmulateOutcome::kHalt;
      return o;
    }

    // The virtual IF (SDM Vol. 2 CLI, STI: CPL > IOPL is #GP; no VME/PVI).
    case ZYDIS_MNEMONIC_CLI:
    case ZYDIS_MNEMONIC_STI:
      if (cpu.Cpl() > Iopl(cpu)) return Fault(Gp0());
      if (d.insn.mnemonic == ZYDIS_MNEMONIC_CLI) {
        cpu.rflags &= ~rflags::kIF;
      } else {
        // Only an sti that sets IF opens a shadow.
        if (!(cpu.rflags & rflags::kIF)) done.shadow = InterruptShadow::kSti;
        cpu.rflags |= rflags::kIF;
      }
      break;
    case ZYDIS_MNEMONIC_PUSHFQ:
    case ZYDIS_MNEMONIC_PUSHFD:
    case ZYDIS_MNEMONIC_PUSHF: {
      const unsigned size = d.insn.operand_width / 8;
      if (!Push(cpu, cpu.rflags & ~(rflags::kRF | rflags::kVM), size, &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_POPFQ:
    case ZYDIS_MNEMONIC_POPFD:
    case ZYDIS_MNEMONIC_POPF: {
      // IOPL changes only at CPL 0, IF only at CPL <= IOPL (silently kept
      // otherwise); RF is cleared; VIP, VIF and VM are kept (SDM Vol. 2 POPF).
      const unsigned size = d.insn.operand_width / 8;
      uint64_t v;
      CpuState probe = cpu;
      if (!Pop(probe, &v, size, &fault)) return Fault(fault);
      uint64_t changeable = rflags::kArith | rflags::kTF | rflags::kDF | rflags::kNT |
                            rflags::kAC | rflags::kID;
      if (cpl0) changeable |= rflags::kIOPL;
      if (cpu.Cpl() <= Iopl(cpu)) changeable |= rflags::kIF;
      if (size == 2) changeable &= 0xffff;
      probe.rflags =
          ((cpu.rflags & ~changeable) | (v & changeable) | rflags::kFixed1) & ~rflags::kRF;
      cpu = probe;
      break;
    }

    case ZYDIS_MNEMONIC_MOV: {
      auto cls = [&](int i) {
        return d.ops[i].type == ZYDIS_OPERAND_TYPE_REGISTER
                   ? ZydisRegisterGetClass(d.ops[i].reg.value)
                   : ZYDIS_REGCLASS_INVALID;
      };
      const ZydisRegisterClass c0 = cls(0), c1 = cls(1);
      if (c0 == ZYDIS_REGCLASS_CONTROL || c1 == ZYDIS_REGCLASS_CONTROL) return MovCr(cpu, d);
      if (c0 == ZYDIS_REGCLASS_DEBUG || c1 == ZYDIS_REGCLASS_DEBUG) return MovDr(cpu, d);
      if (c0 == ZYDIS_REGCLASS_SEGMENT || c1 == ZYDIS_REGCLASS_SEGMENT) return MovSreg(cpu, d);
      return Unsupported(d);
    }
    case ZYDIS_MNEMONIC_PUSH: {  // of a segment register or of memory
      const unsigned size = d.insn.operand_width / 8;
      uint64_t v;
      if (d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        if (!ReadOperand(cpu, d, d.ops[0], &v, &fault)) return Fault(fault);
      } else if (d.ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
                 ZydisRegisterGetClass(d.ops[0].reg.value) == ZYDIS_REGCLASS_SEGMENT) {
        v = cpu.seg[d.ops[0].reg.value - ZYDIS_REGISTER_ES].selector;
      } else {
        return Unsupported(d);
      }
      if (!Push(cpu, v, size, &fault)) return Fault(fault);
      break;
    }
    case ZYDIS_MNEMONIC_POP: {  // to memory (at the new RSP) or a segment register
      const unsigned size = d.insn.operand_width / 8;
      CpuState probe = cpu;
      uint64_t v;
      if (!Pop(probe, &v, size, &fault)) return Fault(fault);
      if (d.ops[0].type == ZYDIS_OPERAND_TYPE_MEMORY) {
        if (!WriteOperand(probe, d, d.ops[0], v, &fault)) return Fault(fault);
      } else if (d.ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
                 ZydisRegisterGetClass(d.ops[0].reg.value) == ZYDIS_REGCLASS_SEGMENT) {
        const int seg = d.ops[0].reg.value - ZYDIS_REGISTER_ES;
        EmulateOutcome o = LoadSegment(probe, seg, static_cast<uint16_t>(v));
        if (o.kind != EmulateOutcome::kDone) return o;
        if (seg == kSs) done.shadow = InterruptShadow::kMovSs;  // not encodable in 64-bit mode
      } else {
        return Unsupported(d);
      }
      cpu = probe;
      break;
    }

    case ZYDIS_MNEMONIC_LSS:
    case ZYDIS_MNEMONIC_LFS:
    case ZYDIS_MNEMONIC_LGS:
    case ZYDIS_MNEMONIC_LDS:  // compatibility mode only
    case ZYDIS_MNEMONIC_LES: {
      // Far-pointer loads (SDM Vol. 2 LDS/LES/LFS/LGS/LSS): the offset (as
      // wide as the register), then the selector, loaded with every check.
      if (d.ops[1].type != ZYDIS_OPERAND_TYPE_MEMORY) return Fault(Ud());
      const unsigned size = d.ops[0].size / 8;
      uint64_t offset = 0;
      uint16_t sel;
      if (!ReadFarPointer(cpu, d, d.ops[1], size, &offset, &sel, &fault)) return Fault(fault);
      const int seg = d.insn.mnemonic == ZYDIS_MNEMONIC_LSS   ? kSs
                      : d.insn.mnemonic == ZYDIS_MNEMONIC_LFS ? kFs
                      : d.insn.mnemonic == ZYDIS_MNEMONIC_LGS ? kGs
                      : d.insn.mnemonic == ZYDIS_MNEMONIC_LDS ? kDs
                                                              : kEs;
      CpuState probe = cpu;
      EmulateOutcome o = LoadSegment(probe, seg, sel);
      if (o.kind != EmulateOutcome::kDone) return o;
      if (!WriteOperand(probe, d, d.ops[0], offset, &fault)) return Fault(fault);
      cpu = probe;
      break;
    }

    // Descriptor tables and system segments (SDM Vol. 3 §2.8).
    case ZYDIS_MNEMONIC_LGDT:
    case ZYDIS_MNEMONIC_LIDT: {
      if (!cpl0) return Fault(Gp0());
      // A 10-byte operand in 64-bit mode, 6 bytes (a 32-bit base) in
      // compatibility mode (SDM Vol. 2 LGDT/LIDT).
      uint8_t buf[10] = {};
      const unsigned bytes = Compat(cpu) ? 6 : 10;
      const uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
      if (!mmu_.ReadVirt(cpu, GuestVirt(ea), buf, bytes, kMmuKernel, &fault)) return Fault(fault);
      DescriptorTable t;
      std::memcpy(&t.limit, buf, 2);
      std::memcpy(&t.base, buf + 2, 8);
      if (!IsCanonical(t.base)) return Fault(Gp0());
      (d.insn.mnemonic == ZYDIS_MNEMONIC_LGDT ? cpu.gdtr : cpu.idtr) = t;
      break;
    }
    case ZYDIS_MNEMONIC_SGDT:
    case ZYDIS_MNEMONIC_SIDT: {
      // Any CPL (UMIP is not exposed).
      const DescriptorTable& t = d.insn.mnemonic == ZYDIS_MNEMONIC_SGDT ? cpu.gdtr : cpu.idtr;
      uint8_t buf[10];
      std::memcpy(buf, &t.limit, 2);
      std::memcpy(buf + 2, &t.base, 8);
      const uint64_t ea = EffectiveAddress(cpu, d, d.ops[0]);
      const unsigned bytes = Compat(cpu) ? 6 : 10;  // the base's low 32 bits
      if (!mmu_.WriteVirt(cpu, GuestVirt(ea), buf, bytes, MmuIndexFor(cpu), &fault)) {
        return Fault(fault);
      }
      break;
    }
    case ZYDIS_MNEMONIC_LTR:
    case ZYDIS_MNEMONIC_LLDT: {
      EmulateOutcome o = LoadTaskOrLdt(cpu, d);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_STR:
    case ZYDIS_MNEMONIC_SLDT: {
      const uint16_t sel =
          d.insn.mnemonic == ZYDIS_MNEMONIC_STR ? cpu.tr.selector : cpu.ldtr.selector;
      if (!WriteOperand(cpu, d, d.ops[0], sel, &fault)) return Fault(fault);
      break;
    }
    case ZYDIS_MNEMONIC_LAR:
    case ZYDIS_MNEMONIC_LSL:
    case ZYDIS_MNEMONIC_VERR:
    case ZYDIS_MNEMONIC_VERW:
      return QuerySegment(cpu, d);

    // CR0's low word (SDM Vol. 2 SMSW, LMSW, CLTS).
    case ZYDIS_MNEMONIC_SMSW:
      // A register gets CR0 (as wide as the register), memory 16 bits.
      if (!WriteOperand(cpu, d, d.ops[0], cpu.cr0, &fault)) return Fault(fault);
      break;
    case ZYDIS_MNEMONIC_LMSW: {
      if (!cpl0) return Fault(Gp0());
      uint64_t v;
      if (!ReadOperand(cpu, d, d.ops[0], &v, &fault)) return Fault(fault);
      // Loads PE, MP, EM, TS; can set PE but never clear it.
      cpu.cr0 = (cpu.cr0 & ~0xeull) | (v & 0xf) | (cpu.cr0 & cr0::kPE);
      break;
    }
    case ZYDIS_MNEMONIC_CLTS:
      if (!cpl0) return Fault(Gp0());
      cpu.cr0 &= ~cr0::kTS;
      break;

    // TLB and cache control.
    case ZYDIS_MNEMONIC_INVLPG:
      if (!cpl0) return Fault(Gp0());
      // A non-canonical address invalidates nothing and does not fault.
      mmu_.FlushPage(GuestVirt(EffectiveAddress(cpu, d, d.ops[0])));
      break;
    case ZYDIS_MNEMONIC_WBINVD:
    case ZYDIS_MNEMONIC_INVD:
      if (!cpl0) return Fault(Gp0());
      break;
    case ZYDIS_MNEMONIC_CLFLUSH:
    case ZYDIS_MNEMONIC_CLFLUSHOPT: {
      // Faults like a byte read of the line (SDM Vol. 2 CLFLUSH); MMIO is
      // not read.
      Mmu::Lookup l = mmu_.Translate(cpu, GuestVirt(EffectiveAddress(cpu, d, d.ops[0])),
                                     Access::kRead, MmuIndexFor(cpu));
      if (l.kind == Mmu::Lookup::kFault) return Fault(l.fault);
      break;
    }
    case ZYDIS_MNEMONIC_INVPCID:
      return Fault(Ud());  // PCID is not exposed

    case ZYDIS_MNEMONIC_RDMSR:
    case ZYDIS_MNEMONIC_WRMSR: {
      EmulateOutcome o = Msr(cpu, d.insn.mnemonic == ZYDIS_MNEMONIC_WRMSR);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_CPUID: {
      const CpuidResult r = VirtualCpuid(cpu, static_cast<uint32_t>(cpu.gpr[kRax]),
                                         static_cast<uint32_t>(cpu.gpr[kRcx]));
      cpu.gpr[kRax] = r.eax;
      cpu.gpr[kRbx] = r.ebx;
      cpu.gpr[kRcx] = r.ecx;
      cpu.gpr[kRdx] = r.edx;
      break;
    }

    // Time stamp counter and TSC_AUX (CR4.TSD restricts rdtsc/rdtscp to
    // CPL 0; rdpid is allowed at every CPL).
    case ZYDIS_MNEMONIC_RDTSC:
    case ZYDIS_MNEMONIC_RDTSCP: {
      if ((cpu.cr4 & kCr4TSD) && !cpl0) return Fault(Gp0());
      const uint64_t t = GuestTsc(cpu);
      cpu.gpr[kRax] = t & 0xffffffff;
      cpu.gpr[kRdx] = t >> 32;
      if (d.insn.mnemonic == ZYDIS_MNEMONIC_RDTSCP) cpu.gpr[kRcx] = cpu.msr.tsc_aux & 0xffffffff;
      break;
    }
    case ZYDIS_MNEMONIC_RDPID:
      if (!WriteOperand(cpu, d, d.ops[0], cpu.msr.tsc_aux, &fault)) return Fault(fault);
      break;
    case ZYDIS_MNEMONIC_RDPMC:
      // No performance counters: every counter number is invalid.
      return Fault(Gp0());

    // FS/GS bases (SDM Vol. 2 RDFSBASE, WRFSBASE; CR4.FSGSBASE).
    case ZYDIS_MNEMONIC_RDFSBASE:
    case ZYDIS_MNEMONIC_RDGSBASE:
    case ZYDIS_MNEMONIC_WRFSBASE:
    case ZYDIS_MNEMONIC_WRGSBASE: {
      if (!(cpu.cr4 & cr4::kFSGSBASE)) return Fault(Ud());
      const ZydisMnemonic m = d.insn.mnemonic;
      uint64_t& base = cpu.seg[(m == ZYDIS_MNEMONIC_RDFSBASE || m == ZYDIS_MNEMONIC_WRFSBASE)
                                   ? kFs
                                   : kGs]
                           .base;
      if (m == ZYDIS_MNEMONIC_RDFSBASE || m == ZYDIS_MNEMONIC_RDGSBASE) {
        if (!WriteOperand(cpu, d, d.ops[0], base, &fault)) return Fault(fault);
      } else {
        uint64_t v;
        if (!ReadOperand(cpu, d, d.ops[0], &v, &fault)) return Fault(fault);
        if (!IsCanonical(v)) return Fault(Gp0());
        base = v;
      }
      break;
    }
    case ZYDIS_MNEMONIC_SWAPGS:
      if (!cpl0) return Fault(Gp0());
      std::swap(cpu.seg[kGs].base, cpu.msr.kernel_gs_base);
      break;

    // Interrupts and exceptions raised by instructions.
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_INT: {
      const uint8_t vector = d.insn.mnemonic == ZYDIS_MNEMONIC_INT3
                                 ? uint8_t(kBP)
                                 : static_cast<uint8_t>(d.ops[0].imm.value.u);
      if (!SoftwareGateOk(cpu, vector, &fault)) return Fault(fault);
      EmulateOutcome o;
      o.kind = EmulateOutcome::kSoftwareInt;
      o.exception.vector = vector;
      cpu.rip = next;
      return o;
    }
    case ZYDIS_MNEMONIC_INT1:
      // icebp: a #DB trap without the gate DPL check (SDM Vol. 3 §6.15).
      cpu.rip = next;
      return Fault({kDB, false, 0, 0});
    case ZYDIS_MNEMONIC_INTO:
      // Invalid in 64-bit mode; in compatibility mode an #OF trap when OF
      // is set, delivered as a software interrupt (the gate DPL counts).
      if (!Compat(cpu)) return Fault(Ud());
      if (cpu.rflags & rflags::kOF) {
        if (!SoftwareGateOk(cpu, kOF, &fault)) return Fault(fault);
        EmulateOutcome o;
        o.kind = EmulateOutcome::kSoftwareInt;
        o.exception.vector = kOF;
        cpu.rip = next;
        return o;
      }
      break;
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
      return Fault(Ud());

    // Privilege transfers.
    case ZYDIS_MNEMONIC_IRETQ:
    case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRET:
      return FarReturn(cpu, d, true);
    case ZYDIS_MNEMONIC_RET:  // far return (ClassifyInsn sends only far ones here)
      return FarReturn(cpu, d, false);
    case ZYDIS_MNEMONIC_JMP:  // far forms (ClassifyInsn sends only those here)
    case ZYDIS_MNEMONIC_CALL:
      return FarJumpOrCall(cpu, d);
    case ZYDIS_MNEMONIC_SYSCALL: {
      // SDM Vol. 2 SYSCALL: flat CS/SS from STAR[47:32], RFLAGS masked by
      // FMASK. From compatibility mode it enters the 64-bit kernel at CSTAR,
      // as AMD CPUs and QEMU do (Intel CPUs raise #UD there instead; the
      // 32-bit entry points Linux sets up work either way).
      if (!(cpu.efer & efer::kSCE)) return Fault(Ud());
      const uint64_t entry = Compat(cpu) ? cpu.msr.cstar : cpu.msr.lstar;
      cpu.gpr[kRcx] = next;
      cpu.gpr[kR11] = cpu.rflags & ~rflags::kRF;
      const uint16_t cs = static_cast<uint16_t>((cpu.msr.star >> 32) & 0xfffc);
      cpu.seg[kCs] = {cs, 0xa09b, 0xffffffff, 0};
      cpu.seg[kSs] = {static_cast<uint16_t>(cs + 8), 0xc093, 0xffffffff, 0};
      cpu.rflags = (cpu.rflags & ~cpu.msr.fmask & ~rflags::kRF) | rflags::kFixed1;
      cpu.rip = entry;
      return Done();
    }
    case ZYDIS_MNEMONIC_SYSRET: {
      // SDM Vol. 2 SYSRET. Intel: a non-canonical RCX faults at CPL 0,
      // before anything changes.
      if (!(cpu.efer & efer::kSCE)) return Fault(Ud());
      if (!cpl0) return Fault(Gp0());
      const uint16_t base = static_cast<uint16_t>(cpu.msr.star >> 48);
      if (d.insn.operand_width != 64) {
        // sysretl: to compatibility mode at CS = STAR[63:48], EIP = ECX.
        cpu.seg[kCs] = FlatCode32Dpl3(static_cast<uint16_t>(base | 3));
        cpu.rip = cpu.gpr[kRcx] & 0xffffffff;
      } else {
        if (!IsCanonical(cpu.gpr[kRcx])) return Fault(Gp0());
        cpu.seg[kCs] = {static_cast<uint16_t>((base + 16) | 3), 0xa0fb, 0xffffffff, 0};
        cpu.rip = cpu.gpr[kRcx];
      }
      cpu.seg[kSs] = {static_cast<uint16_t>((base + 8) | 3), 0xc0f3, 0xffffffff, 0};
      // RFLAGS from R11 without RF, VM and the reserved bits (mask 3C7FD7H).
      cpu.rflags = (cpu.gpr[kR11] & 0x3c7fd7) | rflags::kFixed1;
      return Done();
    }
    case ZYDIS_MNEMONIC_SYSENTER:
      return Sysenter(cpu);
    case ZYDIS_MNEMONIC_SYSEXIT:
      return Sysexit(cpu, d);

    // FPU/SSE state.
    case ZYDIS_MNEMONIC_FXSAVE:
    case ZYDIS_MNEMONIC_FXSAVE64:
    case ZYDIS_MNEMONIC_FXRSTOR:
    case ZYDIS_MNEMONIC_FXRSTOR64:
      return FxSave(cpu, d);
    case ZYDIS_MNEMONIC_XSAVE:
    case ZYDIS_MNEMONIC_XSAVE64:
    case ZYDIS_MNEMONIC_XRSTOR:
    case ZYDIS_MNEMONIC_XRSTOR64:
      return XSave(cpu, d);
    case ZYDIS_MNEMONIC_XGETBV:
    case ZYDIS_MNEMONIC_XSETBV: {
      EmulateOutcome o = Xcr(cpu, d.insn.mnemonic == ZYDIS_MNEMONIC_XSETBV);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_XSAVEOPT: case ZYDIS_MNEMONIC_XSAVEOPT64:
    case ZYDIS_MNEMONIC_XSAVEC: case ZYDIS_MNEMONIC_XSAVEC64:
    case ZYDIS_MNEMONIC_XSAVES: case ZYDIS_MNEMONIC_XSAVES64:
    case ZYDIS_MNEMONIC_XRSTORS: case ZYDIS_MNEMONIC_XRSTORS64:
    case ZYDIS_MNEMONIC_MONITOR: case ZYDIS_MNEMONIC_MWAIT:
      return Fault(Ud());  // not exposed in CPUID

    // Ordinary instructions the translator leaves to the runtime.
    case ZYDIS_MNEMONIC_ENTER:
      return Enter(cpu, d);
    case ZYDIS_MNEMONIC_PUSHA:
    case ZYDIS_MNEMONIC_PUSHAD:
    case ZYDIS_MNEMONIC_POPA:
    case ZYDIS_MNEMONIC_POPAD: {
      EmulateOutcome o = PushPopAll(cpu, d);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_BOUND: {
      // SDM Vol. 2 BOUND: #BR (a fault) unless lower <= index <= upper,
      // signed, the bounds a pair in memory.
      const unsigned size = d.ops[0].size / 8;
      uint64_t index = 0, bounds = 0;
      if (!ReadOperand(cpu, d, d.ops[0], &index, &fault)) return Fault(fault);
      if (!mmu_.ReadVirt(cpu, GuestVirt(EffectiveAddress(cpu, d, d.ops[1])), &bounds, 2 * size,
                         MmuIndexFor(cpu), &fault)) {
        return Fault(fault);
      }
      const uint64_t lower = bounds & Mask(size), upper = (bounds >> (8 * size)) & Mask(size);
      const unsigned shift = 64 - 8 * size;
      const auto sx = [shift](uint64_t v) { return static_cast<int64_t>(v << shift) >> shift; };
      if (sx(index) < sx(lower) || sx(index) > sx(upper)) return Fault({kBR, false, 0, 0});
      break;
    }
    case ZYDIS_MNEMONIC_AAA:
    case ZYDIS_MNEMONIC_AAS:
    case ZYDIS_MNEMONIC_DAA:
    case ZYDIS_MNEMONIC_DAS:
    case ZYDIS_MNEMONIC_AAM:
    case ZYDIS_MNEMONIC_AAD: {
      EmulateOutcome o = Bcd(cpu, d);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_SALC:
      // Undocumented (D6h, compatibility mode only): AL = CF ? FFh : 0, no
      // flags changed; AMD documents it, QEMU implements it.
      cpu.gpr[kRax] = (cpu.gpr[kRax] & ~0xffull) | ((cpu.rflags & rflags::kCF) ? 0xff : 0);
      break;
    case ZYDIS_MNEMONIC_ARPL: {
      // SDM Vol. 2 ARPL: raise the destination's RPL to the source's; ZF
      // says whether it changed.
      uint64_t dst, src;
      if (!ReadOperand(cpu, d, d.ops[0], &dst, &fault) ||
          !ReadOperand(cpu, d, d.ops[1], &src, &fault)) {
        return Fault(fault);
      }
      const bool raise = (dst & 3) < (src & 3);
      if (raise && !WriteOperand(cpu, d, d.ops[0], (dst & ~3ull) | (src & 3), &fault)) {
        return Fault(fault);
      }
      SetZf(cpu, raise);
      break;
    }
    case ZYDIS_MNEMONIC_XLAT: {
      uint64_t ea = cpu.gpr[kRbx] + (cpu.gpr[kRax] & 0xff);
      if (d.insn.address_width == 32) ea &= 0xffffffff;
      ea = Linear(cpu, OverrideOrDs(d), ea);
      uint8_t v;
      if (!mmu_.ReadVirt(cpu, GuestVirt(ea), &v, 1, MmuIndexFor(cpu), &fault)) {
        return Fault(fault);
      }
      cpu.gpr[kRax] = (cpu.gpr[kRax] & ~0xffull) | v;
      break;
    }
    case ZYDIS_MNEMONIC_DIV:
    case ZYDIS_MNEMONIC_IDIV: {
      EmulateOutcome o = Divide(cpu, d);
      if (o.kind != EmulateOutcome::kDone) return o;
      break;
    }
    case ZYDIS_MNEMONIC_NOP:
    case ZYDIS_MNEMONIC_PAUSE:
    case ZYDIS_MNEMONIC_LFENCE:
    case ZYDIS_MNEMONIC_MFENCE:
    case ZYDIS_MNEMONIC_SFENCE:
      // Ordering and hints: the emulator does one access at a time, in order.
      break;
    default:
      return Unsupported(d);
  }
  cpu.rip = next;
  return done;
}

}  // namespace btvm
