#pragma once
// CpuState: all architectural state of one x86-64 vCPU. Every engine loads
// it before running and stores it after; a snapshot saves exactly this.
// Translated code addresses GPRs, RIP and RFLAGS by offset, so the layout is
// pinned by static_asserts below.

#include <cstddef>
#include <cstdint>

namespace btvm {

// GPR numbers in x86 encoding order (ModRM.reg / REX.B numbering).
enum Gpr : int {
  kRax = 0, kRcx, kRdx, kRbx, kRsp, kRbp, kRsi, kRdi,
  kR8, kR9, kR10, kR11, kR12, kR13, kR14, kR15,
  kGprCount
};

// Segment registers in x86 encoding order (Sreg field).
enum SegIndex : int { kEs = 0, kCs, kSs, kDs, kFs, kGs, kSegCount };

// A segment register with its hidden (descriptor cache) part.
// `attrib` packs descriptor bits 40..55 as VMX access rights do:
// type[3:0] s[4] dpl[6:5] p[7] avl[12] l[13] db[14] g[15].
struct SegmentReg {
  uint16_t selector = 0;
  uint16_t attrib = 0;
  uint32_t limit = 0;
  uint64_t base = 0;

  unsigned Dpl() const { return (attrib >> 5) & 3; }
  bool Present() const { return attrib & 0x80; }
  bool Long() const { return attrib & 0x2000; }
  bool Db() const { return attrib & 0x4000; }  // D (code: 32-bit default) / B (stack)
};
static_assert(sizeof(SegmentReg) == 16);

struct DescriptorTable {
  uint64_t base = 0;
  uint16_t limit = 0;
  uint16_t pad[3] = {};
};
static_assert(sizeof(DescriptorTable) == 16);

// Control-register and MSR bits btvm itself interprets.
namespace cr0 {
inline constexpr uint64_t kPE = 1ull << 0, kMP = 1ull << 1, kEM = 1ull << 2, kTS = 1ull << 3,
                          kET = 1ull << 4, kNE = 1ull << 5, kWP = 1ull << 16, kAM = 1ull << 18,
                          kPG = 1ull << 31;
}
namespace cr4 {
inline constexpr uint64_t kPSE = 1ull << 4, kPAE = 1ull << 5, kPGE = 1ull << 7,
                          kOSFXSR = 1ull << 9, kOSXMMEXCPT = 1ull << 10, kFSGSBASE = 1ull << 16,
                          kPCIDE = 1ull << 17, kOSXSAVE = 1ull << 18, kSMEP = 1ull << 20,
                          kSMAP = 1ull << 21;
}
namespace efer {
inline constexpr uint64_t kSCE = 1ull << 0, kLME = 1ull << 8, kLMA = 1ull << 10,
                          kNXE = 1ull << 11;
}
namespace rflags {
inline constexpr uint64_t kCF = 1ull << 0, kFixed1 = 1ull << 1, kPF = 1ull << 2,
                          kAF = 1ull << 4, kZF = 1ull << 6, kSF = 1ull << 7, kTF = 1ull << 8,
                          kIF = 1ull << 9, kDF = 1ull << 10, kOF = 1ull << 11,
                          kIOPL = 3ull << 12, kNT = 1ull << 14, kRF = 1ull << 16,
                          kVM = 1ull << 17, kAC = 1ull << 18, kID = 1ull << 21;
// The arithmetic flags, which translated code keeps live in host RFLAGS.
inline constexpr uint64_t kArith = kCF | kPF | kAF | kZF | kSF | kOF;
}  // namespace rflags

// The MSRs an x86-64 operating system uses (SDM Vol. 4, Table 2-2).
struct MsrState {
  uint64_t star = 0, lstar = 0, cstar = 0, fmask = 0;
  uint64_t kernel_gs_base = 0;
  uint64_t sysenter_cs = 0, sysenter_esp = 0, sysenter_eip = 0;
  uint64_t tsc_aux = 0;
  uint64_t tsc_offset = 0;  // guest TSC = host-derived TSC + offset
  uint64_t tsc_adjust = 0;  // IA32_TSC_ADJUST: the sum of the guest's changes to its TSC
  uint64_t tsc_deadline = 0;
  uint64_t apic_base = 0xfee00900;  // BSP, xAPIC enabled, at the default base
  uint64_t pat = 0x0007040600070406ull;  // power-on value (SDM Vol. 3 §11.12.4)
  uint64_t misc_enable = 1;              // fast strings
  uint64_t mtrr_def_type = 0;
  uint64_t mtrr_fixed[11] = {};
  uint64_t mtrr_var[16] = {};  // 8 base/mask pairs
  uint64_t spec_ctrl = 0;
};

// Events that are pending delivery to the guest.
struct PendingEvents {
  uint8_t exception_pending = 0;  // 1: `exception_vector` is to be delivered
  uint8_t exception_vector = 0;
  uint8_t has_error_code = 0;
  uint8_t interrupt_shadow = 0;   // 1: sti / mov ss shadow on the next instruction
  uint8_t nmi_pending = 0;
  uint8_t pad[3] = {};
  uint32_t error_code = 0;
  uint32_t pad2 = 0;
};
static_assert(sizeof(PendingEvents) == 16);

// x87/SSE/AVX state in XSAVE standard format (SDM Vol. 1 §13.4): the legacy
// FXSAVE region (512 bytes), the XSAVE header (64 bytes), then the extended
// components at their standard offsets (AVX YMM_Hi128 at 576).
struct alignas(64) XsaveArea {
  uint8_t bytes[4096];
};

struct CpuState {
  uint64_t gpr[kGprCount] = {};
  uint64_t rip = 0;
  uint64_t rflags = rflags::kFixed1;

  SegmentReg seg[kSegCount] = {};
  SegmentReg ldtr{}, tr{};
  DescriptorTable gdtr{}, idtr{};

  uint64_t cr0 = cr0::kET | cr0::kNE;
  uint64_t cr2 = 0, cr3 = 0, cr4 = 0, cr8 = 0;
  uint64_t efer = 0;
  uint64_t xcr0 = 1;  // x87 always enabled
  uint64_t dr[8] = {0, 0, 0, 0, 0, 0, 0xffff0ff0, 0x400};

  MsrState msr{};
  PendingEvents pending{};

  XsaveArea xsave{};

  unsigned Cpl() const { return seg[kCs].selector & 3; }
  bool LongMode() const { return efer & efer::kLMA; }
};

// Layout pins: translated code and snapshots depend on these offsets.
static_assert(offsetof(CpuState, gpr) == 0);
static_assert(offsetof(CpuState, rip) == 128);
static_assert(offsetof(CpuState, rflags) == 136);
static_assert(offsetof(CpuState, seg) == 144);
static_assert(offsetof(CpuState, cr0) == 144 + 16 * 6 + 16 * 2 + 16 * 2);
static_assert(offsetof(CpuState, xsave) % 64 == 0);
static_assert(sizeof(CpuState) % 64 == 0);

}  // namespace btvm
