// The runtime's emulation of sensitive instructions (runtime/emulate.cpp)
// against a small machine: 16 MiB of RAM identity-mapped by hand-built page
// tables, a GDT with the descriptors each check needs, a TSS with an I/O
// permission bitmap, an LDT, and a port device that records accesses. Every
// instruction is decoded from real bytes with the translator's Decoder (the
// bytes come from GNU as) and must be one the translator sends to the
// runtime. Expectations follow the SDM; each test names its section.

#include "runtime/emulate.h"

#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "mmu/guest_memory.h"
#include "mmu/soft_tlb.h"
#include "runtime/descriptors.h"

namespace btvm {
namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, PS = 1ull << 7;

// Guest-physical layout (identity-mapped, so also the virtual one).
constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kPt = 0x4000, kPdHigh = 0x5000;
constexpr uint64_t kGdt = 0x10000, kTss = 0x11000, kLdt = 0x14000, kIdt = 0x15000;
constexpr uint64_t kCode = 0x400000;   // RIP of the instruction under test
constexpr uint64_t kData = 0x500000;   // scratch data
constexpr uint64_t kStack = 0x700000;  // RSP (grows down)
constexpr uint64_t kRsp0 = 0x800000;   // TSS.RSP0
// 0x40000000: 4 KiB pages: +0 user RW, +0x1000 supervisor RW, +0x2000 not present.
constexpr uint64_t kPaged = 0x40000000;

// GDT selectors.
constexpr uint16_t kKernelCs = 0x08, kKernelDs = 0x10, kTssSel = 0x18, kUserCs32 = 0x28,
                   kUserDs = 0x33, kUserCs = 0x3b, kNotPresentData = 0x40, kExecOnlyCode = 0x48,
                   kConformingCode = 0x50, kFreshData = 0x58, kBasedData = 0x60, kLdtSel = 0x68,
                   kCallGate = 0x78, kNotPresentCode = 0x88;
constexpr uint16_t kGdtLimit = 0x8f;
constexpr uint32_t kTssLimit = 0x68 + 8192;  // the I/O bitmap and its terminating byte

constexpr uint64_t kCode64Dpl0 = 0x00af9b000000ffff, kData0 = 0x00cf93000000ffff,
                   kCode32Dpl3 = 0x00cffb000000ffff, kData3 = 0x00cff3000000ffff,
                   kCode64Dpl3 = 0x00affb000000ffff;

// Ports the I/O device claims.
constexpr uint16_t kPortBase = 0x70;

class RecordingPort final : public PioDevice {
 public:
  uint32_t PioRead(uint16_t offset, unsigned size) override {
    ++reads;
    return (0xab + offset) & static_cast<uint32_t>((1ull << (8 * size)) - 1);
  }
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override {
    writes.push_back({offset, size, value});
  }
  struct Write {
    uint16_t offset;
    unsigned size;
    uint32_t value;
  };
  std::vector<Write> writes;
  unsigned reads = 0;
};

#define EXPECT_DONE(...) EXPECT_TRUE(IsDone(__VA_ARGS__))
#define EXPECT_FAULT(...) EXPECT_TRUE(IsFault(__VA_ARGS__))

class EmulateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::Create(MiB(16));
    ASSERT_TRUE(m.ok());
    mem_ = std::make_unique<GuestMemory>(std::move(m.value()));
    mmu_ = std::make_unique<Mmu>(*mem_, mmio_, tlbs_);
    emu_ = std::make_unique<Emulator>(*mmu_, pio_, counters_);
    ASSERT_TRUE(pio_.Register(kPortBase, 16, &port_, "test").ok());

    // Page tables: [0, 16 MiB) with 2 MiB pages, user-accessible; at
    // kPaged three 4 KiB pages.
    Put<uint64_t>(kPml4, kPdpt | P | RW | US);
    Put<uint64_t>(kPdpt, kPd | P | RW | US);
    for (uint64_t i = 0; i < 8; ++i) Put<uint64_t>(kPd + 8 * i, (i << 21) | P | RW | US | PS);
    Put<uint64_t>(kPdpt + 8, kPdHigh | P | RW | US);
    Put<uint64_t>(kPdHigh, kPt | P | RW | US);
    Put<uint64_t>(kPt, 0x600000 | P | RW | US);
    Put<uint64_t>(kPt + 8, 0x601000 | P | RW);

    // GDT.
    Put<uint64_t>(kGdt + kKernelCs, kCode64Dpl0);
    Put<uint64_t>(kGdt + kKernelDs, kData0);
    Put<uint64_t>(kGdt + kTssSel, (kTssLimit & 0xffff) | ((kTss & 0xffffff) << 16) |
                                     (0x89ull << 40) | (uint64_t{kTssLimit >> 16} << 48));
    Put<uint64_t>(kGdt + kTssSel + 8, 0);
    Put<uint64_t>(kGdt + kUserCs32, kCode32Dpl3);
    Put<uint64_t>(kGdt + (kUserDs & ~3), kData3);
    Put<uint64_t>(kGdt + (kUserCs & ~3), kCode64Dpl3);
    Put<uint64_t>(kGdt + kNotPresentData, 0x00cf13000000ffff);  // P = 0
    Put<uint64_t>(kGdt + kExecOnlyCode, 0x00af99000000ffff);    // code, not readable
    Put<uint64_t>(kGdt + kConformingCode, 0x00af9e000000ffff);  // conforming, readable
    Put<uint64_t>(kGdt + kFreshData, 0x00cf92000000ffff);       // accessed bit clear
    Put<uint64_t>(kGdt + kBasedData, 0x12cf93345678ffff);       // base 0x12345678
    Put<uint64_t>(kGdt + kLdtSel, 0x17 | ((kLdt & 0xffffff) << 16) | (0x82ull << 40));
    Put<uint64_t>(kGdt + kLdtSel + 8, 0);
    // A 64-bit call gate, DPL 3, to kernel code at kData + 0x100.
    const uint64_t target = kData + 0x100;
    Put<uint64_t>(kGdt + kCallGate, (target & 0xffff) | (uint64_t{kKernelCs} << 16) |
                                        (0xecull << 40) | (((target >> 16) & 0xffff) << 48));
    Put<uint64_t>(kGdt + kCallGate + 8, target >> 32);
    Put<uint64_t>(kGdt + kNotPresentCode, 0x00af1b000000ffff);

    // LDT: one DPL-3 data segment (selector 0x07).
    Put<uint64_t>(kLdt, kData3);

    // IDT (0x83 vectors): #BP and 0x80 reachable from CPL 3, 0x81 only from
    // CPL 0, 0x82 not present, 0x7f not a gate.
    auto gate = [&](unsigned vector, uint64_t attr) {
      Put<uint64_t>(kIdt + 16 * vector, (uint64_t{kKernelCs} << 16) | (attr << 40));
      Put<uint64_t>(kIdt + 16 * vector + 8, 0);
    };
    gate(kBP, 0xee);
    gate(0x80, 0xee);
    gate(0x81, 0x8e);
    gate(0x82, 0x6e);
    gate(0x7f, 0x80);

    // TSS: RSP0, and an I/O bitmap that allows only ports 0x70-0x71.
    Put<uint64_t>(kTss + 4, kRsp0);
    Put<uint16_t>(kTss + 0x66, 0x68);
    for (uint64_t i = 0; i <= 8192; ++i) Put<uint8_t>(kTss + 0x68 + i, 0xff);
    Put<uint8_t>(kTss + 0x68 + kPortBase / 8, static_cast<uint8_t>(~0x3u));  // 0x70, 0x71

    // The vCPU: 64-bit mode, CPL 0, as the loader leaves it.
    cpu_.rip = kCode;
    cpu_.gpr[kRsp] = kStack;
    cpu_.cr0 = cr0::kPE | cr0::kMP | cr0::kET | cr0::kNE | cr0::kWP | cr0::kPG;
    cpu_.cr3 = kPml4;
    cpu_.cr4 = cr4::kPAE | cr4::kOSFXSR | cr4::kOSXMMEXCPT;
    cpu_.efer = efer::kSCE | efer::kLME | efer::kLMA | efer::kNXE;
    cpu_.seg[kCs] = {kKernelCs, 0xa09b, 0xffffffff, 0};
    for (int s : {kEs, kSs, kDs, kFs, kGs}) cpu_.seg[s] = {kKernelDs, 0xc093, 0xffffffff, 0};
    cpu_.gdtr = {kGdt, kGdtLimit};
    cpu_.idtr = {kIdt, 0x83 * 16 - 1};
    cpu_.tr = {kTssSel, 0x8b, kTssLimit, kTss};
    const uint16_t fcw = 0x37f;
    const uint32_t mxcsr = 0x1f80, mxcsr_mask = 0xffff;
    std::memcpy(cpu_.xsave.bytes, &fcw, 2);
    std::memcpy(cpu_.xsave.bytes + 24, &mxcsr, 4);
    std::memcpy(cpu_.xsave.bytes + 28, &mxcsr_mask, 4);
  }

  template <typename T>
  void Put(uint64_t pa, T v) {
    ASSERT_TRUE(mem_->WriteValue(GuestPhys(pa), v));
  }
  template <typename T>
  T Get(uint64_t pa) {
    T v{};
    EXPECT_TRUE(mem_->ReadValue(GuestPhys(pa), &v));
    return v;
  }

  // Decodes `bytes` at cpu_.rip, checks that the translator leaves the
  // instruction to the runtime, and emulates it.
  EmulateOutcome Run(std::initializer_list<uint8_t> bytes) {
    std::vector<uint8_t> b(bytes);
    DecodedInsn d;
    EXPECT_TRUE(decoder_.Decode(b.data(), b.size(), cpu_.rip, &d)) << "undecodable bytes";
    EXPECT_EQ(d.cls, InsnClass::kRuntime) << FormatInsn(d) << " is not sent to the runtime";
    length_ = d.insn.length;
    return emu_->Emulate(cpu_, d);
  }
  // Emulates an instruction the translator does not (or not always) send to
  // the runtime: string instructions with 64-bit addressing, xlat and
  // division run in translated code, their 32-bit-address forms and
  // other engines still come here.
  EmulateOutcome RunAny(std::initializer_list<uint8_t> bytes) {
    std::vector<uint8_t> b(bytes);
    DecodedInsn d;
    EXPECT_TRUE(decoder_.Decode(b.data(), b.size(), cpu_.rip, &d)) << "undecodable bytes";
    length_ = d.insn.length;
    return emu_->Emulate(cpu_, d);
  }

  // Decodes `bytes` as 32-bit compatibility-mode code and emulates them
  // (whether or not the translator sends them to the runtime).
  EmulateOutcome RunCompat(std::initializer_list<uint8_t> bytes) {
    std::vector<uint8_t> b(bytes);
    DecodedInsn d;
    EXPECT_TRUE(compat_decoder_.Decode(b.data(), b.size(), cpu_.rip, &d)) << "undecodable bytes";
    length_ = d.insn.length;
    return emu_->Emulate(cpu_, d);
  }
  // CPL 3 in compatibility mode: the 32-bit user code segment.
  void ToCompatUser() {
    cpu_.seg[kCs] = {kUserCs32 | 3, 0xc0fb, 0xffffffff, 0};
    for (int s : {kEs, kSs, kDs}) cpu_.seg[s] = {kUserDs, 0xc0f3, 0xffffffff, 0};
  }

  void ToUser() {
    cpu_.seg[kCs] = {kUserCs, 0xa0fb, 0xffffffff, 0};
    for (int s : {kEs, kSs, kDs}) cpu_.seg[s] = {kUserDs, 0xc0f3, 0xffffffff, 0};
  }

  // The instruction completed: RIP moved past it.
  ::testing::AssertionResult IsDone(const EmulateOutcome& o, uint64_t rip_before = kCode) {
    if (o.kind != EmulateOutcome::kDone) {
      return ::testing::AssertionFailure() << "outcome " << o.kind << " (vector "
                                           << int(o.exception.vector) << ", error code "
                                           << o.exception.error_code << ") " << o.message;
    }
    if (cpu_.rip != rip_before + length_) {
      return ::testing::AssertionFailure() << "rip " << std::hex << cpu_.rip << ", want "
                                           << rip_before + length_;
    }
    return ::testing::AssertionSuccess();
  }
  // The instruction faulted: RIP still at it.
  ::testing::AssertionResult IsFault(const EmulateOutcome& o, uint8_t vector,
                                     uint32_t error_code = 0, uint64_t rip = kCode) {
    if (o.kind != EmulateOutcome::kFault) {
      return ::testing::AssertionFailure() << "outcome " << o.kind << ", want a fault "
                                           << o.message;
    }
    if (o.exception.vector != vector || o.exception.error_code != error_code) {
      return ::testing::AssertionFailure()
             << "vector " << int(o.exception.vector) << " error code " << std::hex
             << o.exception.error_code << ", want vector " << std::dec << int(vector)
             << " error code " << std::hex << error_code;
    }
    if (cpu_.rip != rip) {
      return ::testing::AssertionFailure() << "rip " << std::hex << cpu_.rip << ", want " << rip;
    }
    return ::testing::AssertionSuccess();
  }

  EmulateOutcome Rdmsr(uint32_t index) {
    cpu_.rip = kCode;
    cpu_.gpr[kRcx] = index;
    return Run({0x0f, 0x32});
  }
  EmulateOutcome Wrmsr(uint32_t index, uint64_t v) {
    cpu_.rip = kCode;
    cpu_.gpr[kRcx] = index;
    cpu_.gpr[kRax] = v & 0xffffffff;
    cpu_.gpr[kRdx] = v >> 32;
    return Run({0x0f, 0x30});
  }
  uint64_t Edxeax() const { return (cpu_.gpr[kRdx] << 32) | (cpu_.gpr[kRax] & 0xffffffff); }
  CpuidResult Cpuid(uint32_t leaf, uint32_t sub = 0) {
    cpu_.rip = kCode;
    cpu_.gpr[kRax] = leaf;
    cpu_.gpr[kRcx] = sub;
    EXPECT_EQ(Run({0x0f, 0xa2}).kind, EmulateOutcome::kDone);
    return {static_cast<uint32_t>(cpu_.gpr[kRax]), static_cast<uint32_t>(cpu_.gpr[kRbx]),
            static_cast<uint32_t>(cpu_.gpr[kRcx]), static_cast<uint32_t>(cpu_.gpr[kRdx])};
  }
  EmulateOutcome MovCr(int cr, uint64_t v) {
    cpu_.rip = kCode;
    cpu_.gpr[kRax] = v;
    switch (cr) {
      case 0: return Run({0x0f, 0x22, 0xc0});
      case 3: return Run({0x0f, 0x22, 0xd8});
      case 4: return Run({0x0f, 0x22, 0xe0});
      default: return Run({0x44, 0x0f, 0x22, 0xc0});  // cr8
    }
  }
  EmulateOutcome LoadSeg(int seg, uint16_t selector) {
    cpu_.rip = kCode;
    cpu_.gpr[kRax] = selector;
    switch (seg) {
      case kSs: return Run({0x8e, 0xd0});
      case kFs: return Run({0x8e, 0xe0});
      default: return Run({0x8e, 0xd8});  // ds
    }
  }
  // Builds an iretq frame at kStack - 40 and makes it RSP.
  void IretFrame(uint64_t rip, uint64_t cs, uint64_t rflags, uint64_t rsp, uint64_t ss) {
    const uint64_t base = kStack - 40;
    Put<uint64_t>(base, rip);
    Put<uint64_t>(base + 8, cs);
    Put<uint64_t>(base + 16, rflags);
    Put<uint64_t>(base + 24, rsp);
    Put<uint64_t>(base + 32, ss);
    cpu_.gpr[kRsp] = base;
  }

  MmioBus mmio_;
  PioBus pio_;
  RecordingPort port_;
  Counters counters_;
  SoftTlb tlbs_[kMmuCount];
  std::unique_ptr<GuestMemory> mem_;
  std::unique_ptr<Mmu> mmu_;
  std::unique_ptr<Emulator> emu_;
  Decoder decoder_;
  Decoder compat_decoder_{CodeMode::kCompat32};
  CpuState cpu_;
  unsigned length_ = 0;
};

// ---------------------------------------------------------------------------
// CPUID: one virtual CPU model.

TEST_F(EmulateTest, CpuidVendorAndMaximumLeaves) {
  CpuidResult r = Cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &r.ebx, 4);
  std::memcpy(vendor + 4, &r.edx, 4);
  std::memcpy(vendor + 8, &r.ecx, 4);
  EXPECT_STREQ(vendor, "GenuineIntel");
  EXPECT_EQ(r.eax, 0x16u) << "leaves 0x15 and 0x16 exist";
  EXPECT_EQ(Cpuid(0x80000000).eax, 0x80000008u);
  // Writing EAX..EDX zero-extends: the upper halves were garbage.
  cpu_.gpr[kRbx] = ~0ull;
  cpu_.gpr[kRdx] = ~0ull;
  Cpuid(0);
  EXPECT_EQ(cpu_.gpr[kRbx] >> 32, 0u);
  EXPECT_EQ(cpu_.gpr[kRdx] >> 32, 0u);
}

TEST_F(EmulateTest, CpuidLeaf1SignatureAndFeatures) {
  CpuidResult r = Cpuid(1);
  EXPECT_EQ((r.eax >> 8) & 0xf, 6u) << "family 6";
  EXPECT_EQ(((r.eax >> 4) & 0xf) | (((r.eax >> 16) & 0xf) << 4), 0x6au) << "model";
  EXPECT_EQ((r.ebx >> 8) & 0xff, 8u) << "64-byte CLFLUSH line";
  EXPECT_EQ((r.ebx >> 16) & 0xff, 1u) << "one logical processor";
  EXPECT_EQ(r.ebx >> 24, 0u) << "APIC ID 0";
  for (unsigned bit : {0u, 3u, 4u, 5u, 6u, 8u, 9u, 11u, 12u, 13u, 15u, 16u, 19u, 24u, 25u, 26u}) {
    EXPECT_TRUE(r.edx & (1u << bit)) << "EDX bit " << bit;
  }
  EXPECT_TRUE(r.ecx & (1u << 24)) << "TSC-deadline (the local APIC timer)";
  EXPECT_FALSE(r.edx & (1u << 28)) << "no HTT";
  EXPECT_TRUE(r.ecx & (1u << 26)) << "XSAVE";
  EXPECT_TRUE(r.ecx & (1u << 31)) << "hypervisor";
  for (unsigned bit : {3u, 5u, 17u, 21u, 28u, 29u, 30u}) {
    EXPECT_FALSE(r.ecx & (1u << bit)) << "ECX bit " << bit << " (MONITOR VMX PCID x2APIC "
                                         "AVX F16C RDRAND) must stay hidden";
  }
  EXPECT_FALSE(r.ecx & (1u << 27)) << "OSXSAVE follows CR4.OSXSAVE";
  cpu_.cr4 |= cr4::kOSXSAVE;
  EXPECT_TRUE(Cpuid(1).ecx & (1u << 27));
}

TEST_F(EmulateTest, CpuidExposesWhatTheRuntimeImplements) {
  CpuidResult l7 = Cpuid(7, 0);
  EXPECT_TRUE(l7.ebx & (1u << 0)) << "FSGSBASE";
  EXPECT_TRUE(l7.ebx & (1u << 7)) << "SMEP";
  EXPECT_FALSE(l7.ebx & (1u << 20)) << "no SMAP";
  EXPECT_FALSE(l7.ebx & (1u << 5)) << "no AVX2";
  EXPECT_FALSE(l7.ebx & (1u << 9)) << "no ERMS";
  EXPECT_TRUE(l7.ecx & (1u << 22)) << "RDPID";
  EXPECT_FALSE(l7.ecx & (1u << 2)) << "no UMIP";
  EXPECT_TRUE(l7.edx & (1u << 29)) << "IA32_ARCH_CAPABILITIES";
  EXPECT_TRUE(l7.edx & (1u << 14)) << "SERIALIZE (Linux's sync_core() without iret)";
  EXPECT_EQ(Cpuid(7, 1).ebx, 0u);
  CpuidResult e1 = Cpuid(0x80000001);
  for (unsigned bit : {11u, 20u, 26u, 27u, 29u}) {
    EXPECT_TRUE(e1.edx & (1u << bit)) << "SYSCALL NX 1GiB RDTSCP LM: bit " << bit;
  }
  char brand[49] = {};
  for (uint32_t i = 0; i < 3; ++i) {
    CpuidResult b = Cpuid(0x80000002 + i);
    std::memcpy(brand + 16 * i, &b, 16);
  }
  EXPECT_EQ(std::string(brand).substr(0, 16), "btvm virtual CPU");
  EXPECT_EQ(Cpuid(0x80000008).eax, 0x3028u) << "48 virtual, 40 physical address bits";
  EXPECT_EQ(Cpuid(0x80000008).eax & 0xff, kPhysAddrBits);
}

TEST_F(EmulateTest, CpuidXsaveLeafReportsX87AndSseOnly) {
  CpuidResult r = Cpuid(0xd, 0);
  EXPECT_EQ(r.eax, 3u);
  EXPECT_EQ(r.edx, 0u);
  EXPECT_EQ(r.ebx, 576u);
  EXPECT_EQ(r.ecx, 576u);
  CpuidResult s1 = Cpuid(0xd, 1);
  EXPECT_EQ(s1.eax, 0u) << "no XSAVEOPT, XSAVEC, XGETBV1, XSAVES";
  EXPECT_EQ(Cpuid(0xd, 2).eax, 0u) << "no AVX component";
}

TEST_F(EmulateTest, CpuidTscLeavesGiveTheHostFrequency) {
  CpuidResult r = Cpuid(0x15);
  ASSERT_NE(r.eax, 0u);
  ASSERT_NE(r.ecx, 0u);
  const uint64_t khz = HostTscKhz();
  EXPECT_GT(khz, 100'000u) << "a TSC slower than 100 MHz is a measurement error";
  EXPECT_EQ(uint64_t{r.ecx} * r.ebx / r.eax, khz * 1000) << "crystal * ratio = TSC, to the kHz";
  // Linux computes crystal kHz * EBX / EAX in 32-bit unsigned arithmetic
  // (native_calibrate_tsc()); with a 25 MHz crystal the product overflowed
  // and Debian's kernel saw a 2.4 GHz TSC as 40 MHz.
  const uint32_t crystal_khz = r.ecx / 1000;
  EXPECT_EQ(crystal_khz * r.ebx / r.eax, khz) << "the same in Linux's 32-bit arithmetic";
  CpuidResult f = Cpuid(0x16);
  EXPECT_EQ(f.eax, khz / 1000);
  EXPECT_EQ(f.ebx, khz / 1000);
  EXPECT_EQ(f.ecx, 100u);
}

TEST_F(EmulateTest, CpuidTopologyIsOneProcessor) {
  CpuidResult l1d = Cpuid(4, 0);
  EXPECT_EQ(l1d.eax & 0x1f, 1u) << "data cache";
  EXPECT_EQ((l1d.eax >> 14) & 0xfff, 0u) << "not shared";
  EXPECT_EQ(l1d.eax >> 26, 0u) << "one core";
  EXPECT_EQ(Cpuid(4, 4).eax & 0x1f, 0u) << "no fifth cache";
  CpuidResult smt = Cpuid(0xb, 0), core = Cpuid(0xb, 1), end = Cpuid(0xb, 2);
  EXPECT_EQ(smt.ebx, 1u);
  EXPECT_EQ((smt.ecx >> 8) & 0xff, 1u) << "SMT level";
  EXPECT_EQ(core.ebx, 1u);
  EXPECT_EQ((core.ecx >> 8) & 0xff, 2u) << "core level";
  EXPECT_EQ(end.ebx, 0u);
  EXPECT_EQ((end.ecx >> 8) & 0xff, 0u) << "no third level";
}

TEST_F(EmulateTest, CpuidOutOfRangeLeavesAndHypervisorLeaf) {
  CpuidResult top = Cpuid(0x16);
  CpuidResult past = Cpuid(0x17);
  EXPECT_EQ(past.eax, top.eax) << "Intel returns the highest basic leaf";
  EXPECT_EQ(Cpuid(0x80000009).eax, top.eax);
  CpuidResult hv = Cpuid(0x40000000);
  char sig[13] = {};
  std::memcpy(sig, &hv.ebx, 4);
  std::memcpy(sig + 4, &hv.ecx, 4);
  std::memcpy(sig + 8, &hv.edx, 4);
  EXPECT_STREQ(sig, "btvmbtvmbtvm");
  EXPECT_EQ(Cpuid(0x40000100).eax, 0u);
}

TEST_F(EmulateTest, CpuidIsAvailableInUserMode) {
  ToUser();
  EXPECT_EQ(Cpuid(0x80000008).eax, 0x3028u);
}

// ---------------------------------------------------------------------------
// MSRs (SDM Vol. 4).

TEST_F(EmulateTest, UnknownMsrRaisesGp) {
  EXPECT_FAULT(Rdmsr(0x12345678), kGP, 0);
  EXPECT_FAULT(Wrmsr(0x12345678, 0), kGP, 0);
  EXPECT_FAULT(Rdmsr(0x48), kGP, 0) << "SPEC_CTRL is not exposed";
  EXPECT_FAULT(Rdmsr(0x6e0), kGP, 0) << "no TSC deadline";
  EXPECT_FAULT(Rdmsr(0x802), kGP, 0) << "no x2APIC";
}

TEST_F(EmulateTest, MsrAccessAtCpl3RaisesGp) {
  ToUser();
  EXPECT_FAULT(Rdmsr(0xc0000080), kGP, 0);
  EXPECT_FAULT(Wrmsr(0xc0000081, 0), kGP, 0);
}

TEST_F(EmulateTest, EferChecks) {
  EXPECT_DONE(Rdmsr(0xc0000080));
  EXPECT_EQ(Edxeax(), cpu_.efer);
  EXPECT_FAULT(Wrmsr(0xc0000080, cpu_.efer | (1ull << 12)), kGP) << "SVME is reserved";
  EXPECT_FAULT(Wrmsr(0xc0000080, cpu_.efer & ~efer::kLME), kGP)
      << "LME cannot change while paging is on";
  EXPECT_DONE(Wrmsr(0xc0000080, (cpu_.efer & ~efer::kNXE) & ~efer::kLMA));
  EXPECT_EQ(cpu_.efer, efer::kSCE | efer::kLME | efer::kLMA) << "LMA is read-only";
}

TEST_F(EmulateTest, SyscallMsrsRoundTripAndCanonicalChecks) {
  EXPECT_DONE(Wrmsr(0xc0000081, 0x0023001000080000ull));
  EXPECT_DONE(Rdmsr(0xc0000081));
  EXPECT_EQ(Edxeax(), 0x0023001000080000ull);
  EXPECT_DONE(Wrmsr(0xc0000082, 0xffffffff81000000ull));
  EXPECT_EQ(cpu_.msr.lstar, 0xffffffff81000000ull);
  EXPECT_FAULT(Wrmsr(0xc0000082, 0x0000800000000000ull), kGP) << "LSTAR must be canonical";
  EXPECT_FAULT(Wrmsr(0xc0000083, 0x8000000000000000ull), kGP) << "CSTAR must be canonical";
  EXPECT_DONE(Wrmsr(0xc0000084, 0x47700));
  EXPECT_EQ(cpu_.msr.fmask, 0x47700u);
  EXPECT_FAULT(Wrmsr(0xc0000084, 1ull << 32), kGP) << "FMASK bits 63:32 are reserved";
}

TEST_F(EmulateTest, SegmentBaseMsrsAndSwapgs) {
  EXPECT_DONE(Wrmsr(0xc0000100, 0x7fff12340000ull));
  EXPECT_EQ(cpu_.seg[kFs].base, 0x7fff12340000ull);
  EXPECT_DONE(Wrmsr(0xc0000101, 0x1000));
  EXPECT_DONE(Wrmsr(0xc0000102, 0xffff888000000000ull));
  EXPECT_FAULT(Wrmsr(0xc0000100, 0x0001000000000000ull), kGP) << "non-canonical FS base";
  EXPECT_FAULT(Wrmsr(0xc0000101, 0x0001000000000000ull), kGP) << "non-canonical GS base";
  EXPECT_FAULT(Wrmsr(0xc0000102, 0x0001000000000000ull), kGP) << "non-canonical KERNEL_GS";
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x01, 0xf8}));  // swapgs
  EXPECT_EQ(cpu_.seg[kGs].base, 0xffff888000000000ull);
  EXPECT_EQ(cpu_.msr.kernel_gs_base, 0x1000u);
  ToUser();
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x01, 0xf8}), kGP) << "swapgs is privileged";
}

// IA32_TSC_ADJUST (SDM Vol. 3 §17.17.3): a write to the TSC moves it by
// the same amount; a write to it moves the TSC.
TEST_F(EmulateTest, TscAdjustFollowsTheTsc) {
  EXPECT_DONE(Rdmsr(0x3b));
  EXPECT_EQ(Edxeax(), 0u);
  EXPECT_DONE(Rdmsr(0x10));
  const uint64_t before = Edxeax();
  EXPECT_DONE(Wrmsr(0x10, before + (1ull << 40)));
  EXPECT_DONE(Rdmsr(0x3b));
  const uint64_t adjust = Edxeax();
  EXPECT_GE(adjust, (1ull << 40) - (1ull << 34));  // the TSC ran meanwhile
  EXPECT_LE(adjust, 1ull << 40);
  EXPECT_DONE(Wrmsr(0x3b, 0));  // back: the TSC loses what it gained
  EXPECT_DONE(Rdmsr(0x10));
  EXPECT_LT(Edxeax() - before, 1ull << 34);
}

TEST_F(EmulateTest, TscMsrAndRdtsc) {
  EXPECT_DONE(Wrmsr(0x10, 0x100000000000ull));
  EXPECT_DONE(Rdmsr(0x10));
  EXPECT_GE(Edxeax(), 0x100000000000ull);
  EXPECT_LT(Edxeax(), 0x100000000000ull + (1ull << 40));
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x31}));  // rdtsc
  EXPECT_GE(Edxeax(), 0x100000000000ull);
  EXPECT_LT(Edxeax(), 0x100000000000ull + (1ull << 40));
  // CR4.TSD: rdtsc and rdtscp only at CPL 0.
  cpu_.cr4 |= 1ull << 2;
  ToUser();
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x31}), kGP);
  EXPECT_FAULT(Run({0x0f, 0x01, 0xf9}), kGP);
}

TEST_F(EmulateTest, TscAuxRdtscpAndRdpid) {
  EXPECT_FAULT(Wrmsr(0xc0000103, 1ull << 32), kGP) << "TSC_AUX bits 63:32 are reserved";
  EXPECT_DONE(Wrmsr(0xc0000103, 0x2a));
  cpu_.rip = kCode;
  cpu_.gpr[kRcx] = ~0ull;
  EXPECT_DONE(Run({0x0f, 0x01, 0xf9}));  // rdtscp
  EXPECT_EQ(cpu_.gpr[kRcx], 0x2au);
  EXPECT_NE(Edxeax(), 0u);
  // rdpid works at CPL 3, even with CR4.TSD.
  cpu_.cr4 |= 1ull << 2;
  ToUser();
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = ~0ull;
  EXPECT_DONE(Run({0xf3, 0x0f, 0xc7, 0xf8}));  // rdpid rax
  EXPECT_EQ(cpu_.gpr[kRax], 0x2au);
}

TEST_F(EmulateTest, ApicBaseMsr) {
  EXPECT_DONE(Rdmsr(0x1b));
  EXPECT_EQ(Edxeax(), 0xfee00900u) << "BSP, enabled, default base";
  EXPECT_FAULT(Wrmsr(0x1b, 0xfee00000u | (1u << 11) | (1u << 10)), kGP) << "x2APIC is hidden";
  EXPECT_FAULT(Wrmsr(0x1b, (1ull << 40) | (1u << 11)), kGP) << "base above MAXPHYADDR";
  EXPECT_DONE(Wrmsr(0x1b, 0xfec00000u));  // disable and move; BSP stays
  EXPECT_DONE(Rdmsr(0x1b));
  EXPECT_EQ(Edxeax(), 0xfec00100u);
}

TEST_F(EmulateTest, PatAndMtrrMsrs) {
  EXPECT_DONE(Rdmsr(0x277));
  EXPECT_EQ(Edxeax(), 0x0007040600070406ull);
  EXPECT_DONE(Wrmsr(0x277, 0x0007010600070106ull));
  EXPECT_FAULT(Wrmsr(0x277, 0x0007040600070402ull), kGP) << "memory type 2 is reserved";
  EXPECT_DONE(Rdmsr(0xfe));
  EXPECT_EQ(Edxeax() & 0xff, 8u) << "8 variable ranges";
  EXPECT_FAULT(Wrmsr(0xfe, 0), kGP) << "MTRRCAP is read-only";
  EXPECT_DONE(Wrmsr(0x2ff, 0xc06));  // enabled, fixed enabled, WB
  EXPECT_FAULT(Wrmsr(0x2ff, 0xc03), kGP) << "type 3";
  EXPECT_FAULT(Wrmsr(0x2ff, 0x1c06), kGP) << "reserved bit 12";
  EXPECT_DONE(Wrmsr(0x200, 0x80000000u));                  // PHYSBASE0 UC
  EXPECT_DONE(Wrmsr(0x201, 0xff80000000ull | (1u << 11)));  // PHYSMASK0 2 GiB, valid
  EXPECT_FAULT(Wrmsr(0x201, 0x1ff80000000ull | (1u << 11)), kGP) << "mask above MAXPHYADDR";
  EXPECT_FAULT(Wrmsr(0x200, 0x80000100u), kGP) << "PHYSBASE bit 8 is reserved";
  EXPECT_DONE(Wrmsr(0x250, 0x0606060606060606ull));
  EXPECT_FAULT(Wrmsr(0x268, 0x0606060606060602ull), kGP) << "invalid fixed-range type";
  EXPECT_DONE(Rdmsr(0x250));
  EXPECT_EQ(Edxeax(), 0x0606060606060606ull);
}

TEST_F(EmulateTest, MiscEnableAndReadOnlyMsrs) {
  EXPECT_DONE(Rdmsr(0x1a0));
  const uint64_t misc = Edxeax();
  EXPECT_TRUE(misc & 1) << "fast strings";
  EXPECT_DONE(Wrmsr(0x1a0, misc));  // writing back what was read
  EXPECT_FAULT(Wrmsr(0x1a0, misc | (1ull << 34)), kGP) << "XD disable is not writable";
  // Limit CPUID: leaf 0 reports 2.
  EXPECT_DONE(Wrmsr(0x1a0, misc | (1ull << 22)));
  EXPECT_EQ(Cpuid(0).eax, 2u);
  EXPECT_DONE(Wrmsr(0x1a0, misc));
  EXPECT_EQ(Cpuid(0).eax, 0x16u);
  EXPECT_DONE(Rdmsr(0x10a));
  EXPECT_TRUE(Edxeax() & 1) << "ARCH_CAPABILITIES.RDCL_NO";
  // MDS_NO, TAA_NO, the three MMIO stale-data NOs and ITS_NO: Linux then
  // runs no verw on its returns to user mode and no return thunks.
  for (unsigned bit : {5u, 8u, 13u, 14u, 15u, 62u}) {
    EXPECT_TRUE(Edxeax() >> bit & 1) << "ARCH_CAPABILITIES bit " << bit;
  }
  EXPECT_FAULT(Wrmsr(0x10a, 0), kGP);
  EXPECT_DONE(Rdmsr(0x3a));
  EXPECT_EQ(Edxeax(), 1u) << "FEATURE_CONTROL locked, VMX off";
  EXPECT_FAULT(Wrmsr(0x3a, 5), kGP);
}

TEST_F(EmulateTest, SysenterAndSysexit) {
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x34}), kGP) << "SYSENTER_CS is 0";
  EXPECT_DONE(Wrmsr(0x174, kKernelCs));
  EXPECT_DONE(Wrmsr(0x175, kRsp0));
  EXPECT_DONE(Wrmsr(0x176, kData + 0x200));
  EXPECT_FAULT(Wrmsr(0x176, 1ull << 60), kGP) << "SYSENTER_EIP must be canonical";
  // sysexitq to CPL 3: CS = SYSENTER_CS + 32, SS = + 40, RIP = RDX, RSP = RCX.
  cpu_.rip = kCode;
  cpu_.gpr[kRdx] = 0x401000;
  cpu_.gpr[kRcx] = 0x6ff000;
  EXPECT_EQ(Run({0x48, 0x0f, 0x35}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.seg[kCs].selector, kKernelCs + 32 + 3);
  EXPECT_EQ(cpu_.seg[kSs].selector, kKernelCs + 40 + 3);
  EXPECT_EQ(cpu_.rip, 0x401000u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_FAULT(Run({0x48, 0x0f, 0x35}), kGP, 0, 0x401000) << "sysexit at CPL 3";
  cpu_.rflags |= rflags::kIF;
  EXPECT_EQ(Run({0x0f, 0x34}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 0u);
  EXPECT_EQ(cpu_.seg[kSs].selector, kKernelCs + 8);
  EXPECT_EQ(cpu_.rip, kData + 0x200);
  EXPECT_EQ(cpu_.gpr[kRsp], kRsp0);
  EXPECT_FALSE(cpu_.rflags & rflags::kIF);
}

// ---------------------------------------------------------------------------
// Control and debug registers (SDM Vol. 3 §2.5, Vol. 2 MOV CRn/DRn).

TEST_F(EmulateTest, MovToCr0Checks) {
  const uint64_t cr0 = cpu_.cr0;
  EXPECT_FAULT(MovCr(0, cr0 | (1ull << 32)), kGP) << "bits 63:32";
  EXPECT_FAULT(MovCr(0, (cr0 & ~cr0::kPE)), kGP) << "PG without PE";
  EXPECT_FAULT(MovCr(0, cr0 | (1ull << 29)), kGP) << "NW without CD";
  EXPECT_FAULT(MovCr(0, cr0 & ~cr0::kPG), kGP) << "paging off from 64-bit mode";
  EXPECT_EQ(cpu_.cr0, cr0);
  EXPECT_DONE(MovCr(0, (cr0 | cr0::kTS | (1ull << 30) | (1ull << 6)) & ~cr0::kET));
  EXPECT_EQ(cpu_.cr0, cr0 | cr0::kTS | (1ull << 30)) << "ET reads 1, reserved bit 6 is dropped";
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x20, 0xc0}));  // mov rax, cr0
  EXPECT_EQ(cpu_.gpr[kRax], cpu_.cr0);
}

TEST_F(EmulateTest, MovToCr3ChecksReservedBitsAndFlushesTheTlb) {
  // Fill a TLB entry, then change CR3: the entry must go.
  ASSERT_EQ(mmu_->Translate(cpu_, GuestVirt(kData), Access::kRead, kMmuKernel).kind,
            Mmu::Lookup::kRam);
  ASSERT_TRUE(tlbs_[kMmuKernel].entries[SoftTlb::Index(kData)].read_tag == kData);
  EXPECT_FAULT(MovCr(3, kPml4 | (1ull << 40)), kGP) << "above MAXPHYADDR";
  EXPECT_FAULT(MovCr(3, kPml4 | (1ull << 63)), kGP) << "bit 63 without PCIDs";
  EXPECT_EQ(cpu_.cr3, kPml4);
  EXPECT_DONE(MovCr(3, 0xfff000 | 0x18));  // PWT|PCD kept; a page of zeros
  EXPECT_EQ(cpu_.cr3, 0xfff018u);
  EXPECT_NE(tlbs_[kMmuKernel].entries[SoftTlb::Index(kData)].read_tag, kData);
  // Valid-looking but empty tables: the next access faults, the monitor does not.
  GuestException fault;
  uint64_t v;
  EXPECT_FALSE(mmu_->ReadVirt(cpu_, GuestVirt(kData), &v, 8, kMmuKernel, &fault));
  EXPECT_EQ(fault.vector, kPF);
  // Past the end of RAM, and in the MMIO hole: #PF with RSVD, no crash.
  EXPECT_DONE(MovCr(3, 0xffff000000ull));
  EXPECT_FALSE(mmu_->ReadVirt(cpu_, GuestVirt(kData), &v, 8, kMmuKernel, &fault));
  EXPECT_EQ(fault.vector, kPF);
  EXPECT_DONE(MovCr(3, 0xfee00000ull));
  EXPECT_FALSE(mmu_->ReadVirt(cpu_, GuestVirt(kData), &v, 8, kMmuKernel, &fault));
  EXPECT_EQ(fault.vector, kPF);
}

TEST_F(EmulateTest, MovToCr4Checks) {
  const uint64_t cr4 = cpu_.cr4;
  for (unsigned bit : {0u, 1u, 6u, 11u, 12u, 13u, 14u, 17u, 21u, 22u, 23u, 32u}) {
    EXPECT_FAULT(MovCr(4, cr4 | (1ull << bit)), kGP) << "CR4 bit " << bit << " is reserved here";
  }
  EXPECT_FAULT(MovCr(4, cr4 & ~cr4::kPAE), kGP) << "clearing PAE would leave IA-32e mode";
  EXPECT_DONE(MovCr(4, cr4 | cr4::kOSXSAVE | cr4::kFSGSBASE | cr4::kSMEP | cr4::kPGE));
  EXPECT_EQ(cpu_.cr4, cr4 | cr4::kOSXSAVE | cr4::kFSGSBASE | cr4::kSMEP | cr4::kPGE);
}

TEST_F(EmulateTest, MovCr8IsTheTaskPriority) {
  EXPECT_DONE(MovCr(8, 0xf));
  EXPECT_EQ(cpu_.cr8, 0xfu);
  EXPECT_FAULT(MovCr(8, 0x10), kGP) << "bits 63:4 are reserved";
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x44, 0x0f, 0x20, 0xc0}));  // mov rax, cr8
  EXPECT_EQ(cpu_.gpr[kRax], 0xfu);
}

TEST_F(EmulateTest, ControlRegistersArePrivileged) {
  ToUser();
  EXPECT_FAULT(MovCr(0, cpu_.cr0), kGP);
  EXPECT_FAULT(MovCr(3, cpu_.cr3), kGP);
  EXPECT_FAULT(MovCr(8, 0), kGP);
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x20, 0xd8}), kGP) << "reading CR3 too";
  EXPECT_FAULT(Run({0x0f, 0x06}), kGP) << "clts";
  EXPECT_FAULT(Run({0x0f, 0x01, 0xf0}), kGP) << "lmsw";
  EXPECT_FAULT(Run({0x0f, 0x23, 0xf8}), kGP) << "mov dr7, rax";
}

TEST_F(EmulateTest, LmswCannotClearPe) {
  cpu_.gpr[kRax] = 0xe;  // MP EM TS, PE clear
  EXPECT_DONE(Run({0x0f, 0x01, 0xf0}));
  EXPECT_TRUE(cpu_.cr0 & cr0::kPE) << "lmsw can set PE but never clear it";
  EXPECT_TRUE(cpu_.cr0 & cr0::kTS);
  EXPECT_TRUE(cpu_.cr0 & cr0::kEM);
  EXPECT_TRUE(cpu_.cr0 & cr0::kPG) << "bits above 3 are untouched";
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x06}));  // clts
  EXPECT_FALSE(cpu_.cr0 & cr0::kTS);
}

TEST_F(EmulateTest, SmswToRegisterAndToMemory) {
  cpu_.gpr[kRax] = ~0ull;
  EXPECT_DONE(Run({0x48, 0x0f, 0x01, 0xe0}));  // smsw rax
  EXPECT_EQ(cpu_.gpr[kRax], cpu_.cr0) << "a 64-bit register gets all of CR0";
  Put<uint32_t>(kData, 0xdeadbeef);
  cpu_.rip = kCode;
  cpu_.gpr[kRbx] = kData;
  EXPECT_DONE(Run({0x0f, 0x01, 0x23}));  // smsw [rbx]
  EXPECT_EQ(Get<uint32_t>(kData), 0xdead0000u | (cpu_.cr0 & 0xffff)) << "memory gets 16 bits";
  ToUser();
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x01, 0xe0})) << "smsw is not privileged (no UMIP)";
}

TEST_F(EmulateTest, DebugRegisters) {
  cpu_.gpr[kRax] = 0x1;  // L0
  EXPECT_DONE(Run({0x0f, 0x23, 0xf8}));  // mov dr7, rax
  EXPECT_EQ(cpu_.dr[7], 0x401u) << "bit 10 reads as 1";
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0;
  EXPECT_DONE(Run({0x0f, 0x21, 0xe0}));  // mov rax, dr4: DR6 without CR4.DE
  EXPECT_EQ(cpu_.gpr[kRax], cpu_.dr[6]);
  cpu_.cr4 |= 1ull << 3;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x21, 0xe0}), kUD) << "DR4 with CR4.DE";
  cpu_.gpr[kRax] = 1ull << 32;
  EXPECT_FAULT(Run({0x0f, 0x23, 0xf0}), kGP) << "DR6 bits 63:32";
}

// ---------------------------------------------------------------------------
// RFLAGS: cli, sti, pushf, popf (SDM Vol. 2; Vol. 3 §6.8.3 shadows).

TEST_F(EmulateTest, StiOpensAShadowOnlyWhenItSetsIf) {
  EmulateOutcome o = Run({0xfb});
  EXPECT_DONE(o);
  EXPECT_TRUE(cpu_.rflags & rflags::kIF);
  EXPECT_EQ(o.shadow, InterruptShadow::kSti);
  EXPECT_EQ(cpu_.pending.interrupt_shadow, 1);
  // The next emulated instruction is the one the shadow covered.
  EmulateOutcome next = Run({0xfb});
  EXPECT_EQ(next.shadow, InterruptShadow::kNone) << "IF was already set";
  EXPECT_EQ(cpu_.pending.interrupt_shadow, 0);
  EXPECT_DONE(Run({0xfa}), kCode + 2);  // cli
  EXPECT_FALSE(cpu_.rflags & rflags::kIF);
}

TEST_F(EmulateTest, CliStiFollowIopl) {
  ToUser();
  EXPECT_FAULT(Run({0xfa}), kGP) << "cli at CPL 3, IOPL 0";
  EXPECT_FAULT(Run({0xfb}), kGP) << "sti at CPL 3, IOPL 0";
  cpu_.rflags |= rflags::kIOPL;  // IOPL 3
  EXPECT_DONE(Run({0xfb}));
  EXPECT_TRUE(cpu_.rflags & rflags::kIF);
}

TEST_F(EmulateTest, PopfAtCpl3KeepsIoplAndIf) {
  ToUser();
  cpu_.rflags = rflags::kFixed1 | rflags::kIF;
  Put<uint64_t>(kStack - 8, rflags::kIOPL | rflags::kCF | rflags::kAC | rflags::kRF);
  cpu_.gpr[kRsp] = kStack - 8;
  EXPECT_DONE(Run({0x9d}));
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kIF | rflags::kCF | rflags::kAC)
      << "IOPL and IF unchanged silently, RF cleared, CF and AC loaded";
  EXPECT_EQ(cpu_.gpr[kRsp], kStack);
}

TEST_F(EmulateTest, PopfAtCpl0AndPushf) {
  cpu_.rflags = rflags::kFixed1 | rflags::kIF | rflags::kRF;
  EXPECT_DONE(Run({0x9c}));  // pushfq
  EXPECT_EQ(Get<uint64_t>(kStack - 8), rflags::kFixed1 | rflags::kIF) << "RF is not pushed";
  Put<uint64_t>(kStack - 8, rflags::kIOPL | rflags::kDF | 0x28 /* reserved bits 3, 5 */);
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x9d}));  // popfq
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kIOPL | rflags::kDF);
  // 16-bit popf changes the low word only.
  Put<uint16_t>(kStack - 2, 0x0202);
  cpu_.gpr[kRsp] = kStack - 2;
  cpu_.rflags |= rflags::kAC;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x66, 0x9d}));
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kIF | rflags::kAC);
}

// ---------------------------------------------------------------------------
// Segment loads (SDM Vol. 2 MOV, POP; Vol. 3 §5.5-§5.6).

TEST_F(EmulateTest, NullSelectorRules) {
  cpu_.seg[kFs].base = 0x1234;
  EXPECT_DONE(LoadSeg(kFs, 0));
  EXPECT_EQ(cpu_.seg[kFs].selector, 0);
  EXPECT_EQ(cpu_.seg[kFs].base, 0u) << "Intel clears the base on a null load";
  EXPECT_DONE(LoadSeg(kDs, 3));
  EXPECT_EQ(cpu_.seg[kDs].selector, 3);
  EXPECT_DONE(LoadSeg(kSs, 0)) << "null SS at CPL 0 with RPL 0";
  EXPECT_FAULT(LoadSeg(kSs, 1), kGP, 0) << "null SS needs RPL = CPL";
  ToUser();
  EXPECT_FAULT(LoadSeg(kSs, 3), kGP, 0) << "null SS at CPL 3";
  EXPECT_DONE(LoadSeg(kDs, 0)) << "null DS at CPL 3";
}

TEST_F(EmulateTest, SegmentLoadTypeAndPrivilegeChecks) {
  EXPECT_FAULT(LoadSeg(kDs, kNotPresentData), kNP, kNotPresentData);
  EXPECT_FAULT(LoadSeg(kSs, kNotPresentData), kSS, kNotPresentData);
  EXPECT_FAULT(LoadSeg(kSs, kKernelCs), kGP, kKernelCs) << "SS must be writable data";
  EXPECT_FAULT(LoadSeg(kSs, kUserDs), kGP, kUserDs & ~3) << "SS needs RPL = DPL = CPL";
  EXPECT_FAULT(LoadSeg(kDs, kExecOnlyCode), kGP, kExecOnlyCode) << "execute-only code";
  EXPECT_FAULT(LoadSeg(kDs, kTssSel), kGP, kTssSel) << "a system descriptor";
  EXPECT_DONE(LoadSeg(kDs, kKernelCs)) << "readable code is fine for DS";
  ToUser();
  EXPECT_FAULT(LoadSeg(kDs, kKernelDs), kGP, kKernelDs) << "DPL 0 data from CPL 3";
  EXPECT_FAULT(LoadSeg(kDs, kKernelDs | 3), kGP, kKernelDs);
  EXPECT_DONE(LoadSeg(kDs, kConformingCode)) << "conforming readable code: no DPL check";
  EXPECT_DONE(LoadSeg(kSs, kUserDs));
  EXPECT_DONE(LoadSeg(kDs, kUserDs));
}

TEST_F(EmulateTest, SegmentLoadSelectorLimits) {
  EXPECT_FAULT(LoadSeg(kDs, 0x1238), kGP, 0x1238) << "past the GDT limit";
  EXPECT_FAULT(LoadSeg(kDs, 0x0f), kGP, 0x0c) << "an LDT selector with no LDT";
}

TEST_F(EmulateTest, SegmentLoadSetsTheAccessedBitAndBase) {
  ASSERT_FALSE(Get<uint64_t>(kGdt + kFreshData) & (1ull << 40));
  EXPECT_DONE(LoadSeg(kDs, kFreshData));
  EXPECT_TRUE(Get<uint64_t>(kGdt + kFreshData) & (1ull << 40));
  EXPECT_EQ(cpu_.seg[kDs].attrib & 0xf, 3u);
  EXPECT_DONE(LoadSeg(kFs, kBasedData));
  EXPECT_EQ(cpu_.seg[kFs].base, 0x12345678u);
  EXPECT_EQ(cpu_.seg[kFs].limit, 0xffffffffu);
}

TEST_F(EmulateTest, MovSsOpensAShadow) {
  EmulateOutcome o = LoadSeg(kSs, kKernelDs);
  EXPECT_DONE(o);
  EXPECT_EQ(o.shadow, InterruptShadow::kMovSs);
  EXPECT_EQ(cpu_.pending.interrupt_shadow, 1);
  EmulateOutcome ds = LoadSeg(kDs, kKernelDs);
  EXPECT_EQ(ds.shadow, InterruptShadow::kNone);
  EXPECT_EQ(cpu_.pending.interrupt_shadow, 0);
  // A faulting mov ss opens nothing.
  EmulateOutcome bad = LoadSeg(kSs, kNotPresentData);
  EXPECT_EQ(bad.kind, EmulateOutcome::kFault);
  EXPECT_EQ(cpu_.pending.interrupt_shadow, 0);
  // From memory: mov ss, [rbx].
  Put<uint16_t>(kData, kKernelDs);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_EQ(Run({0x8e, 0x13}).shadow, InterruptShadow::kMovSs);
}

TEST_F(EmulateTest, StoreSegmentRegister) {
  cpu_.gpr[kRax] = ~0ull;
  EXPECT_DONE(Run({0x8c, 0xd8}));  // mov eax, ds
  EXPECT_EQ(cpu_.gpr[kRax], kKernelDs) << "zero-extended into a 32-bit register";
  Put<uint32_t>(kData, 0xffffffff);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x8c, 0x1b}));  // mov [rbx], ds
  EXPECT_EQ(Get<uint32_t>(kData), 0xffff0000u | kKernelDs) << "16 bits to memory";
}

TEST_F(EmulateTest, PushAndPopFs) {
  EXPECT_DONE(Run({0x0f, 0xa0}));  // push fs
  EXPECT_EQ(cpu_.gpr[kRsp], kStack - 8);
  EXPECT_EQ(Get<uint64_t>(kStack - 8), kKernelDs);
  Put<uint64_t>(kStack - 8, kBasedData);
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0xa1}));  // pop fs
  EXPECT_EQ(cpu_.seg[kFs].selector, kBasedData);
  EXPECT_EQ(cpu_.seg[kFs].base, 0x12345678u);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack);
  // A pop of a bad selector faults with RSP unchanged.
  Put<uint64_t>(kStack - 8, kNotPresentData);
  cpu_.gpr[kRsp] = kStack - 8;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0xa1}), kNP, kNotPresentData);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack - 8);
}

TEST_F(EmulateTest, FarPointerLoads) {
  // lfs/lgs/lss load a segment register the host must never see: the
  // translator has to send them here (ClassifyInsn misses them today: the
  // segment register is a hidden operand), hence RunAny.
  Put<uint32_t>(kData, 0x12345678);
  Put<uint16_t>(kData + 4, kBasedData);
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = ~0ull;
  EXPECT_DONE(RunAny({0x0f, 0xb4, 0x03}));  // lfs eax, [rbx]
  EXPECT_EQ(cpu_.seg[kFs].selector, kBasedData);
  EXPECT_EQ(cpu_.seg[kFs].base, 0x12345678u);
  EXPECT_EQ(cpu_.gpr[kRax], 0x12345678u);
  Put<uint64_t>(kData + 8, 0x1122334455667788ull);
  Put<uint16_t>(kData + 16, kNotPresentData);
  cpu_.gpr[kRbx] = kData + 8;
  cpu_.rip = kCode;
  EXPECT_FAULT(RunAny({0x48, 0x0f, 0xb5, 0x03}), kNP, kNotPresentData);  // lgs rax, [rbx]
  EXPECT_EQ(cpu_.gpr[kRax], 0x12345678u) << "nothing changes on a fault";
  Put<uint16_t>(kData + 16, kKernelDs);
  EXPECT_DONE(RunAny({0x48, 0x0f, 0xb5, 0x03}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x1122334455667788ull);
  EXPECT_EQ(cpu_.seg[kGs].selector, kKernelDs);
  Put<uint16_t>(kData + 4, kKernelCs);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_FAULT(RunAny({0x0f, 0xb2, 0x23}), kGP, kKernelCs) << "lss of a code segment";
}

// ---------------------------------------------------------------------------
// Descriptor tables, task register, LDT.

TEST_F(EmulateTest, LgdtLidtSgdtSidt) {
  Put<uint16_t>(kData, 0x1ff);
  Put<uint64_t>(kData + 2, 0xffff800000001000ull);
  cpu_.gpr[kRbx] = kData;
  EXPECT_DONE(Run({0x0f, 0x01, 0x1b}));  // lidt [rbx]
  EXPECT_EQ(cpu_.idtr.base, 0xffff800000001000ull);
  EXPECT_EQ(cpu_.idtr.limit, 0x1ff);
  cpu_.gpr[kRbx] = kData + 0x100;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x01, 0x0b}));  // sidt [rbx]
  EXPECT_EQ(Get<uint16_t>(kData + 0x100), 0x1ff);
  EXPECT_EQ(Get<uint64_t>(kData + 0x102), 0xffff800000001000ull);
  Put<uint64_t>(kData + 2, 0x0000800000001000ull);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x01, 0x13}), kGP) << "lgdt of a non-canonical base";
  EXPECT_EQ(cpu_.gdtr.base, kGdt);
  ToUser();
  EXPECT_FAULT(Run({0x0f, 0x01, 0x13}), kGP) << "lgdt at CPL 3";
  cpu_.gpr[kRbx] = kData + 0x100;
  EXPECT_DONE(Run({0x0f, 0x01, 0x03})) << "sgdt at CPL 3 (no UMIP)";
  EXPECT_EQ(Get<uint64_t>(kData + 0x102), kGdt);
}

TEST_F(EmulateTest, LtrMarksTheTssBusy) {
  cpu_.tr = SegmentReg{};
  cpu_.gpr[kRax] = kTssSel;
  EXPECT_DONE(Run({0x0f, 0x00, 0xd8}));  // ltr ax
  EXPECT_EQ(cpu_.tr.selector, kTssSel);
  EXPECT_EQ(cpu_.tr.base, kTss);
  EXPECT_EQ(cpu_.tr.limit, kTssLimit);
  EXPECT_EQ((Get<uint64_t>(kGdt + kTssSel) >> 40) & 0xf, 0xbu) << "busy in the GDT";
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x00, 0xd8}), kGP, kTssSel) << "a busy TSS";
  cpu_.gpr[kRax] = 0;
  EXPECT_FAULT(Run({0x0f, 0x00, 0xd8}), kGP, 0) << "a null selector";
  cpu_.gpr[kRax] = kKernelDs;
  EXPECT_FAULT(Run({0x0f, 0x00, 0xd8}), kGP, kKernelDs) << "not a TSS";
  ToUser();
  cpu_.gpr[kRax] = kTssSel;
  EXPECT_FAULT(Run({0x0f, 0x00, 0xd8}), kGP, 0) << "ltr at CPL 3";
}

TEST_F(EmulateTest, LldtAndLdtSelectors) {
  cpu_.gpr[kRax] = kLdtSel;
  EXPECT_DONE(Run({0x0f, 0x00, 0xd0}));  // lldt ax
  EXPECT_EQ(cpu_.ldtr.base, kLdt);
  ToUser();
  EXPECT_DONE(LoadSeg(kDs, 0x07)) << "LDT entry 0, RPL 3";
  EXPECT_EQ(cpu_.seg[kDs].selector, 0x07);
  cpu_.seg[kCs] = {kKernelCs, 0xa09b, 0xffffffff, 0};
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = kKernelDs;
  EXPECT_FAULT(Run({0x0f, 0x00, 0xd0}), kGP, kKernelDs) << "not an LDT";
  cpu_.gpr[kRax] = 0;
  EXPECT_DONE(Run({0x0f, 0x00, 0xd0})) << "a null selector unloads the LDT";
  EXPECT_FAULT(LoadSeg(kDs, 0x04), kGP, 0x04);
}

TEST_F(EmulateTest, StrAndSldt) {
  cpu_.gpr[kRax] = ~0ull;
  EXPECT_DONE(Run({0x0f, 0x00, 0xc8}));  // str eax
  EXPECT_EQ(cpu_.gpr[kRax], kTssSel);
  cpu_.ldtr.selector = kLdtSel;
  Put<uint32_t>(kData, 0xffffffff);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x00, 0x03}));  // sldt [rbx]
  EXPECT_EQ(Get<uint32_t>(kData), 0xffff0000u | kLdtSel);
}

TEST_F(EmulateTest, LarLslVerrVerw) {
  cpu_.gpr[kRbx] = kKernelCs;
  EXPECT_DONE(Run({0x0f, 0x02, 0xc3}));  // lar eax, bx
  EXPECT_TRUE(cpu_.rflags & rflags::kZF);
  EXPECT_EQ(cpu_.gpr[kRax], 0x00a09b00u);
  cpu_.gpr[kRbx] = kTssSel;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x03, 0xc3}));  // lsl eax, bx
  EXPECT_TRUE(cpu_.rflags & rflags::kZF);
  EXPECT_EQ(cpu_.gpr[kRax], kTssLimit);
  cpu_.gpr[kRbx] = 0x1238;  // past the GDT: ZF = 0, no fault
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x02, 0xc3}));
  EXPECT_FALSE(cpu_.rflags & rflags::kZF);
  cpu_.gpr[kRbx] = kExecOnlyCode;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x00, 0xe3}));  // verr bx
  EXPECT_FALSE(cpu_.rflags & rflags::kZF) << "execute-only code is not readable";
  cpu_.gpr[kRbx] = kKernelDs;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x00, 0xeb}));  // verw bx
  EXPECT_TRUE(cpu_.rflags & rflags::kZF);
  ToUser();
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x00, 0xeb}));
  EXPECT_FALSE(cpu_.rflags & rflags::kZF) << "DPL 0 data is not visible at CPL 3";
  cpu_.gpr[kRbx] = kConformingCode;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x00, 0xe3}));
  EXPECT_TRUE(cpu_.rflags & rflags::kZF) << "conforming readable code at any CPL";
}

// ---------------------------------------------------------------------------
// Port I/O: IOPL and the TSS I/O permission bitmap (SDM Vol. 1 §19.5).

TEST_F(EmulateTest, InAndOutAtCpl0) {
  cpu_.gpr[kRax] = 0x5a;
  EXPECT_DONE(Run({0xe6, 0x70}));  // out 0x70, al
  ASSERT_EQ(port_.writes.size(), 1u);
  EXPECT_EQ(port_.writes[0].offset, 0);
  EXPECT_EQ(port_.writes[0].value, 0x5au);
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = ~0ull;
  cpu_.gpr[kRdx] = 0x72;
  EXPECT_DONE(Run({0xed}));  // in eax, dx
  EXPECT_EQ(cpu_.gpr[kRax], 0xadu) << "a 32-bit in zero-extends";
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x1234;
  EXPECT_DONE(Run({0x66, 0xef}));  // out dx, ax
  EXPECT_EQ(port_.writes.back().size, 2u);
  EXPECT_EQ(port_.writes.back().value, 0x1234u);
}

TEST_F(EmulateTest, IoBitmapDecidesAtCpl3) {
  ToUser();
  cpu_.gpr[kRax] = 1;
  EXPECT_DONE(Run({0xe6, 0x70})) << "port 0x70 is allowed by the bitmap";
  cpu_.rip = kCode;
  cpu_.gpr[kRdx] = 0x71;
  EXPECT_DONE(Run({0xe4, 0x71}));
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xe6, 0x72}), kGP, 0) << "port 0x72 is not";
  cpu_.gpr[kRdx] = 0x71;
  EXPECT_FAULT(Run({0x66, 0xef}), kGP, 0) << "a word at 0x71 also needs 0x72";
  cpu_.gpr[kRdx] = 0x70;
  EXPECT_DONE(Run({0x66, 0xef})) << "a word at 0x70 covers 0x70-0x71";
  // A TSS without a bitmap (the map base at the limit): everything faults.
  Put<uint16_t>(kTss + 0x66, static_cast<uint16_t>(kTssLimit));
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xe6, 0x70}), kGP, 0);
  // IOPL 3 needs no bitmap.
  cpu_.rflags |= rflags::kIOPL;
  EXPECT_DONE(Run({0xe6, 0x70}));
}

TEST_F(EmulateTest, StringPortIo) {
  cpu_.gpr[kRdx] = 0x70;
  cpu_.gpr[kRdi] = kData;
  cpu_.gpr[kRcx] = 4;
  EXPECT_DONE(Run({0xf3, 0x6c}));  // rep insb
  EXPECT_EQ(Get<uint32_t>(kData), 0xabababab);
  EXPECT_EQ(cpu_.gpr[kRcx], 0u);
  EXPECT_EQ(cpu_.gpr[kRdi], kData + 4);
  Put<uint32_t>(kData + 0x10, 0x04030201);
  cpu_.gpr[kRsi] = kData + 0x10;
  cpu_.gpr[kRcx] = 3;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0xf3, 0x6e}));  // rep outsb
  ASSERT_EQ(port_.writes.size(), 3u);
  EXPECT_EQ(port_.writes[2].value, 3u);
  ToUser();
  cpu_.gpr[kRdx] = 0x80;
  cpu_.gpr[kRcx] = 3;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xf3, 0x6e}), kGP, 0) << "port 0x80 at CPL 3";
  EXPECT_EQ(cpu_.gpr[kRcx], 3u);
}

TEST_F(EmulateTest, LongRepYieldsWithRipAtTheInstruction) {
  cpu_.gpr[kRdi] = kData;
  cpu_.gpr[kRcx] = 20000;
  cpu_.gpr[kRax] = 0x1111111111111111ull;
  EmulateOutcome o = RunAny({0xf3, 0x48, 0xab});  // rep stosq
  EXPECT_EQ(o.kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, kCode) << "yielded part-way";
  EXPECT_GT(cpu_.gpr[kRcx], 0u);
  EXPECT_EQ(cpu_.gpr[kRdi], kData + 8 * (20000 - cpu_.gpr[kRcx]));
  EXPECT_DONE(RunAny({0xf3, 0x48, 0xab}));
  EXPECT_EQ(cpu_.gpr[kRcx], 0u);
  EXPECT_EQ(Get<uint64_t>(kData + 8 * 19999), 0x1111111111111111ull);
}

TEST_F(EmulateTest, RepMovsOverlapsAndRunsBackwardsAsHardware) {
  // Element by element: a forward move onto itself one byte up replicates
  // the first byte (the classic memset by movsb).
  Put<uint8_t>(kData, 0xaa);
  for (int i = 1; i < 200; ++i) Put<uint8_t>(kData + i, 0);
  cpu_.gpr[kRsi] = kData;
  cpu_.gpr[kRdi] = kData + 1;
  cpu_.gpr[kRcx] = 150;
  EXPECT_DONE(RunAny({0xf3, 0xa4}));  // rep movsb
  for (int i = 0; i <= 150; ++i) EXPECT_EQ(Get<uint8_t>(kData + i), 0xaa) << i;
  EXPECT_EQ(Get<uint8_t>(kData + 151), 0);
  EXPECT_EQ(cpu_.gpr[kRdi], kData + 151);
  // DF = 1: rep movsq from the top element down, across a page boundary.
  for (int i = 0; i < 4; ++i) Put<uint64_t>(kData + 0xff0 + 8 * i, 0x1000 + i);
  cpu_.rflags |= rflags::kDF;
  cpu_.gpr[kRsi] = kData + 0x1008;
  cpu_.gpr[kRdi] = kData + 0x3008;
  cpu_.gpr[kRcx] = 4;
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0xf3, 0x48, 0xa5}));  // rep movsq
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Get<uint64_t>(kData + 0x2ff0 + 8 * i), 0x1000u + i);
  EXPECT_EQ(cpu_.gpr[kRsi], kData + 0xfe8);
  EXPECT_EQ(cpu_.gpr[kRdi], kData + 0x2fe8);
}

TEST_F(EmulateTest, RepStosAcrossPagesAndMisalignedElements) {
  // Dwords from 2 bytes before a page boundary: one element straddles it.
  cpu_.gpr[kRdi] = kData + 0xffe - 4 * 100;
  cpu_.gpr[kRcx] = 300;
  cpu_.gpr[kRax] = 0xcafef00d;
  EXPECT_DONE(RunAny({0xf3, 0xab}));  // rep stosd
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(Get<uint32_t>(kData + 0xffe - 400 + 4 * i), 0xcafef00du) << i;
  }
  EXPECT_EQ(cpu_.gpr[kRdi], kData + 0xffe - 400 + 1200);
  // Into MMIO (nothing there: writes are dropped), without faulting.
  cpu_.cr3 = kPml4;
  Put<uint64_t>(kPt + 16, 0xfee00000ull | P | RW);  // kPaged + 0x2000 -> MMIO
  mmu_->FlushTlb();
  cpu_.gpr[kRdi] = kPaged + 0x2000;
  cpu_.gpr[kRcx] = 8;
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0xf3, 0xab}));
  EXPECT_EQ(cpu_.gpr[kRcx], 0u);
}

TEST_F(EmulateTest, RepStringFaultLeavesRegistersAtTheFaultingElement) {
  // stosb across the end of the user page at kPaged into the supervisor one, at CPL 3.
  ToUser();
  cpu_.gpr[kRdi] = kPaged + 0xffe;
  cpu_.gpr[kRcx] = 4;
  EXPECT_FAULT(RunAny({0xf3, 0xaa}), kPF, pf::kPresent | pf::kWrite | pf::kUser);
  EXPECT_EQ(cpu_.gpr[kRcx], 2u);
  EXPECT_EQ(cpu_.gpr[kRdi], kPaged + 0x1000);
}

// ---------------------------------------------------------------------------
// Privileged and trapping instructions.

TEST_F(EmulateTest, HltIsPrivileged) {
  EmulateOutcome o = Run({0xf4});
  EXPECT_EQ(o.kind, EmulateOutcome::kHalt);
  EXPECT_EQ(cpu_.rip, kCode + 1);
  ToUser();
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xf4}), kGP);
}

TEST_F(EmulateTest, CacheAndTlbControl) {
  cpu_.gpr[kRbx] = kData;
  EXPECT_DONE(Run({0x0f, 0x01, 0x3b}));  // invlpg [rbx]
  cpu_.gpr[kRbx] = 0x0000800000000000ull;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x01, 0x3b})) << "invlpg of a non-canonical address is a no-op";
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x09}));  // wbinvd
  cpu_.gpr[kRbx] = kPaged + 0x2000;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0xae, 0x3b}), kPF, 0) << "clflush of an unmapped line";
  cpu_.gpr[kRbx] = kData;
  EXPECT_DONE(Run({0x0f, 0xae, 0x3b}));
  ToUser();
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x01, 0x3b}), kGP) << "invlpg at CPL 3";
  EXPECT_FAULT(Run({0x0f, 0x09}), kGP) << "wbinvd at CPL 3";
  EXPECT_FAULT(Run({0x0f, 0x08}), kGP) << "invd at CPL 3";
  cpu_.gpr[kRbx] = kPaged + 0x1000;
  EXPECT_FAULT(Run({0x0f, 0xae, 0x3b}), kPF, pf::kPresent | pf::kUser)
      << "clflush of a supervisor line at CPL 3";
}

TEST_F(EmulateTest, SoftwareInterruptsAndTraps) {
  EmulateOutcome o = Run({0xcd, 0x80});
  EXPECT_EQ(o.kind, EmulateOutcome::kSoftwareInt);
  EXPECT_EQ(o.exception.vector, 0x80);
  EXPECT_EQ(cpu_.rip, kCode + 2) << "int n pushes the next RIP";
  cpu_.rip = kCode;
  o = Run({0xcc});
  EXPECT_EQ(o.kind, EmulateOutcome::kSoftwareInt);
  EXPECT_EQ(o.exception.vector, kBP);
  cpu_.rip = kCode;
  o = Run({0xf1});  // int1: a #DB trap, no DPL check
  EXPECT_EQ(o.kind, EmulateOutcome::kFault);
  EXPECT_EQ(o.exception.vector, kDB);
  EXPECT_EQ(cpu_.rip, kCode + 1);
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x0b}), kUD);  // ud2: a fault, RIP at it
}

TEST_F(EmulateTest, SoftwareInterruptGateChecksFaultAtTheInstruction) {
  // SDM Vol. 3 §6.12.1.1: int n checks the gate DPL against CPL; the #GP
  // names the IDT entry (vector << 3 | IDT bit) and RIP stays at the int.
  ToUser();
  EXPECT_EQ(Run({0xcd, 0x80}).kind, EmulateOutcome::kSoftwareInt) << "a DPL-3 gate";
  cpu_.rip = kCode;
  EXPECT_EQ(Run({0xcc}).kind, EmulateOutcome::kSoftwareInt);
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xcd, 0x81}), kGP, (0x81 << 3) | 2) << "a DPL-0 gate from CPL 3";
  EXPECT_FAULT(Run({0xcd, 0x82}), kNP, (0x82 << 3) | 2) << "a gate not present";
  EXPECT_FAULT(Run({0xcd, 0x7f}), kGP, (0x7f << 3) | 2) << "not an interrupt or trap gate";
  EXPECT_FAULT(Run({0xcd, 0x90}), kGP, (0x90 << 3) | 2) << "past the IDT limit";
  cpu_.idtr.base = kPaged + 0x2000 - 0x82 * 16;  // 0x82's gate on the page not present
  EXPECT_FAULT(Run({0xcd, 0x82}), kPF, 0) << "an unmapped IDT: a supervisor read fault";
  cpu_.seg[kCs] = {kKernelCs, 0xa09b, 0xffffffff, 0};
  cpu_.idtr = {kIdt, 0x83 * 16 - 1};
  EXPECT_EQ(Run({0xcd, 0x81}).kind, EmulateOutcome::kSoftwareInt) << "from CPL 0";
}

TEST_F(EmulateTest, HiddenFeaturesRaiseTheirExceptions) {
  EXPECT_FAULT(Run({0x0f, 0x33}), kGP) << "rdpmc: no counters";
  EXPECT_FAULT(Run({0x66, 0x0f, 0x38, 0x82, 0x03}), kUD) << "invpcid";
  EXPECT_FAULT(Run({0x0f, 0x01, 0xc8}), kUD) << "monitor";
  EXPECT_FAULT(Run({0xf3, 0x48, 0x0f, 0xae, 0xc0}), kUD) << "rdfsbase without CR4.FSGSBASE";
  EXPECT_FAULT(Run({0x0f, 0x01, 0xd0}), kUD) << "xgetbv without CR4.OSXSAVE";
  EXPECT_FAULT(RunAny({0x0f, 0xae, 0x33}), kUD) << "xsaveopt";
}

TEST_F(EmulateTest, FsGsBaseInstructions) {
  cpu_.cr4 |= cr4::kFSGSBASE;
  ToUser();
  cpu_.gpr[kRax] = 0x7f0000001000ull;
  EXPECT_DONE(Run({0xf3, 0x48, 0x0f, 0xae, 0xd0}));  // wrfsbase rax
  EXPECT_EQ(cpu_.seg[kFs].base, 0x7f0000001000ull);
  cpu_.seg[kGs].base = 0xffffffff12345678ull;
  cpu_.gpr[kRax] = ~0ull;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0xf3, 0x0f, 0xae, 0xc8}));  // rdgsbase eax
  EXPECT_EQ(cpu_.gpr[kRax], 0x12345678u) << "32-bit form zero-extends";
  cpu_.gpr[kRbx] = 0x0000800000000000ull;
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0xf3, 0x48, 0x0f, 0xae, 0xdb}), kGP) << "wrgsbase non-canonical";
}

// ---------------------------------------------------------------------------
// iretq, far ret, far jmp/call, syscall/sysret (SDM Vol. 2).

TEST_F(EmulateTest, IretqSamePrivilege) {
  IretFrame(0x401234, kKernelCs, rflags::kFixed1 | rflags::kIF | rflags::kCF, 0x6ff000,
            kKernelDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, 0x401234u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u) << "64-bit iret always pops SS:RSP";
  EXPECT_TRUE(cpu_.rflags & rflags::kIF);
  EXPECT_TRUE(cpu_.rflags & rflags::kCF);
  // Null SS at CPL 0.
  cpu_.rip = kCode;
  IretFrame(0x401234, kKernelCs, rflags::kFixed1, 0x6ff000, 0);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.seg[kSs].selector, 0);
}

TEST_F(EmulateTest, IretqToUserMode) {
  cpu_.seg[kDs] = {kKernelDs, 0xc093, 0xffffffff, 0};
  cpu_.seg[kFs] = {kKernelDs, 0xc093, 0xffffffff, 0x5000};
  IretFrame(0x401000, kUserCs, rflags::kFixed1 | rflags::kIF | rflags::kIOPL, 0x6ff000, kUserDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs);
  EXPECT_EQ(cpu_.seg[kSs].selector, kUserDs);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
  EXPECT_EQ(cpu_.rflags & rflags::kIOPL, rflags::kIOPL) << "CPL 0 may set IOPL";
  EXPECT_EQ(cpu_.seg[kDs].selector, 0) << "DPL 0 data is nulled on the way out";
  EXPECT_EQ(cpu_.seg[kFs].selector, 0);
  EXPECT_EQ(cpu_.seg[kFs].base, 0x5000u) << "the FS base stays";
}

TEST_F(EmulateTest, IretqAtCpl3) {
  ToUser();
  cpu_.rflags = rflags::kFixed1;
  // CPL 3 -> 3: IF and IOPL cannot change at IOPL 0.
  IretFrame(0x402000, kUserCs, rflags::kFixed1 | rflags::kIF | rflags::kIOPL | rflags::kZF,
            0x6fe000, kUserDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, 0x402000u);
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kZF);
  // CPL 3 -> 0: #GP(selector), nothing changes.
  cpu_.rip = kCode;
  IretFrame(0x401000, kKernelCs, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, kKernelCs);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack - 40);
  // CPL 3 with a null SS: #GP(0).
  IretFrame(0x401000, kUserCs, rflags::kFixed1, 0x6ff000, 3);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, 0);
}

TEST_F(EmulateTest, IretqFaults) {
  IretFrame(0x0000800000000000ull, kKernelCs, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, 0) << "a non-canonical RIP";
  IretFrame(0x401000, kNotPresentCode, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kNP, kNotPresentCode);
  IretFrame(0x401000, kKernelDs, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, kKernelDs) << "CS must be code";
  IretFrame(0x401000, kUserCs, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, kKernelDs) << "SS RPL must match the new CPL";
  IretFrame(0x401000, kKernelCs, rflags::kFixed1, 0x6ff000, kKernelDs);
  cpu_.rflags |= rflags::kNT;
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, 0) << "no task return in IA-32e mode";
  cpu_.rflags &= ~rflags::kNT;
  cpu_.gpr[kRsp] = kPaged + 0x2000 - 16;  // the frame runs into a not-present page
  EXPECT_FAULT(Run({0x48, 0xcf}), kPF, 0);
  cpu_.gpr[kRsp] = kStack;
  // A 16-bit code segment (L = 0, D = 0) is not modelled.
  Put<uint64_t>(kGdt + kFreshData, 0x008ffb000000ffff);
  IretFrame(0x401000, kFreshData | 3, rflags::kFixed1, 0x6ff000, kUserDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kUnsupported) << "16-bit code";
  // L = 1 with D = 1 is reserved.
  Put<uint64_t>(kGdt + kFreshData, 0x00effb000000ffff);
  IretFrame(0x401000, kFreshData | 3, rflags::kFixed1, 0x6ff000, kUserDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, kFreshData);
}

TEST_F(EmulateTest, FarReturn) {
  // lretq at the same privilege.
  Put<uint64_t>(kStack - 16, 0x401111);
  Put<uint64_t>(kStack - 8, kKernelCs);
  cpu_.gpr[kRsp] = kStack - 16;
  EXPECT_EQ(Run({0x48, 0xcb}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, 0x401111u);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack);
  // lretq 16 to CPL 3: parameters are released on both stacks.
  const uint64_t base = kStack - 0x40;
  Put<uint64_t>(base, 0x402222);
  Put<uint64_t>(base + 8, kUserCs);
  Put<uint64_t>(base + 32, 0x6f0000);  // user RSP, after 16 bytes of parameters
  Put<uint64_t>(base + 40, kUserDs);
  cpu_.gpr[kRsp] = base;
  cpu_.rip = kCode;
  EXPECT_EQ(Run({0x48, 0xca, 0x10, 0x00}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_EQ(cpu_.rip, 0x402222u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6f0010u);
}

TEST_F(EmulateTest, FarJumpAndCallThroughMemory) {
  Put<uint64_t>(kData, 0x403000);
  Put<uint16_t>(kData + 8, kKernelCs);
  cpu_.gpr[kRbx] = kData;
  EXPECT_EQ(Run({0x48, 0xff, 0x1b}).kind, EmulateOutcome::kDone);  // call far [rbx] (m16:64)
  EXPECT_EQ(cpu_.rip, 0x403000u);
  EXPECT_EQ(Get<uint64_t>(kStack - 8), kKernelCs);
  EXPECT_EQ(Get<uint64_t>(kStack - 16), kCode + 3);
  cpu_.rip = kCode;
  Put<uint16_t>(kData + 8, kUserCs);
  EXPECT_FAULT(Run({0x48, 0xff, 0x2b}), kGP, kUserCs & ~3) << "jmp far to another privilege";
  Put<uint16_t>(kData + 8, kTssSel);
  EXPECT_FAULT(Run({0x48, 0xff, 0x2b}), kGP, kTssSel) << "no task switch";
}

TEST_F(EmulateTest, CallGateFromUserMode) {
  ToUser();
  Put<uint64_t>(kData, 0);  // the offset is ignored for a gate
  Put<uint16_t>(kData + 8, kCallGate | 3);
  cpu_.gpr[kRbx] = kData;
  EXPECT_EQ(Run({0x48, 0xff, 0x1b}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 0u);
  EXPECT_EQ(cpu_.rip, kData + 0x100);
  EXPECT_EQ(cpu_.seg[kSs].selector, 0) << "null SS with RPL 0";
  EXPECT_EQ(cpu_.gpr[kRsp], kRsp0 - 32);
  EXPECT_EQ(Get<uint64_t>(kRsp0 - 8), kUserDs) << "old SS";
  EXPECT_EQ(Get<uint64_t>(kRsp0 - 16), kStack) << "old RSP";
  EXPECT_EQ(Get<uint64_t>(kRsp0 - 24), kUserCs) << "old CS";
  EXPECT_EQ(Get<uint64_t>(kRsp0 - 32), kCode + 3) << "return RIP";
}

TEST_F(EmulateTest, SyscallAndSysret) {
  cpu_.msr.star = (uint64_t{kUserCs32 | 3} << 48) | (uint64_t{kKernelCs} << 32);
  cpu_.msr.lstar = kData + 0x300;
  cpu_.msr.fmask = rflags::kIF | rflags::kTF | rflags::kDF;
  ToUser();
  cpu_.rflags = rflags::kFixed1 | rflags::kIF | rflags::kDF | rflags::kCF;
  EXPECT_EQ(Run({0x0f, 0x05}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 0u);
  EXPECT_EQ(cpu_.rip, kData + 0x300);
  EXPECT_EQ(cpu_.gpr[kRcx], kCode + 2);
  EXPECT_EQ(cpu_.gpr[kR11], rflags::kFixed1 | rflags::kIF | rflags::kDF | rflags::kCF);
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kCF) << "masked by FMASK";
  EXPECT_EQ(cpu_.seg[kSs].selector, kKernelDs);
  // sysretq back: RFLAGS from R11 without RF, VM and reserved bits.
  cpu_.gpr[kR11] |= rflags::kRF | rflags::kVM | (1ull << 3) | (1ull << 15) | (1ull << 40);
  EXPECT_EQ(Run({0x48, 0x0f, 0x07}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs);
  EXPECT_EQ(cpu_.seg[kSs].selector, kUserDs);
  EXPECT_EQ(cpu_.rip, kCode + 2);
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kIF | rflags::kDF | rflags::kCF);
}

TEST_F(EmulateTest, SysretChecks) {
  cpu_.msr.star = (uint64_t{kUserCs32 | 3} << 48) | (uint64_t{kKernelCs} << 32);
  cpu_.gpr[kRcx] = 0x0000800000001000ull;
  const CpuState before = cpu_;
  EXPECT_FAULT(Run({0x48, 0x0f, 0x07}), kGP, 0) << "non-canonical RCX (Intel: #GP at CPL 0)";
  EXPECT_EQ(cpu_.Cpl(), 0u);
  EXPECT_EQ(cpu_.seg[kSs].selector, before.seg[kSs].selector);
  ToUser();
  cpu_.gpr[kRcx] = kCode;
  EXPECT_FAULT(Run({0x48, 0x0f, 0x07}), kGP, 0) << "sysret at CPL 3";
  cpu_.efer &= ~efer::kSCE;
  EXPECT_FAULT(Run({0x0f, 0x05}), kUD) << "syscall without EFER.SCE";
}

// ---------------------------------------------------------------------------
// Compatibility mode (IA-32e mode under a 32-bit code segment): the ways in
// and out, its 32-bit stack and segment bases, its own instructions.

TEST_F(EmulateTest, IretqToCompatibilityMode) {
  // CPL 0 -> CPL 3, 32-bit code: RIP is the low 32 bits, RSP as popped.
  IretFrame(0x401000, kUserCs32 | 3, rflags::kFixed1 | rflags::kCF, 0x6ff000, kUserDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs32 | 3);
  EXPECT_FALSE(cpu_.seg[kCs].Long());
  EXPECT_TRUE(cpu_.seg[kCs].Db());
  EXPECT_EQ(cpu_.rip, 0x401000u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
  EXPECT_EQ(cpu_.seg[kSs].selector, kUserDs);
  EXPECT_TRUE(cpu_.rflags & rflags::kCF);
  EXPECT_EQ(cpu_.seg[kDs].selector, 0) << "DPL 0 data is nulled on the way out";
}

TEST_F(EmulateTest, IretqToCompatibilityModeChecks) {
  // A 32-bit DPL 0 code segment in place of kFreshData.
  Put<uint64_t>(kGdt + kFreshData, 0x00cf9b000000ffff);
  IretFrame(0x401000, kFreshData, rflags::kFixed1, 0x6ff000, 0);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, 0) << "a null SS going back to compatibility mode";
  IretFrame(0x0000800000401000ull, kFreshData, rflags::kFixed1, 0x6ff000, kKernelDs);
  EXPECT_FAULT(Run({0x48, 0xcf}), kGP, 0) << "the popped RIP is checked whole";
  // CPL 0 -> CPL 0 compatibility mode, with SS:RSP (64-bit iretq pops them).
  IretFrame(0x12345678, kFreshData, rflags::kFixed1, 0x6ff008, kKernelDs);
  EXPECT_EQ(Run({0x48, 0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.Cpl(), 0u);
  EXPECT_EQ(cpu_.rip, 0x12345678u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff008u);
}

TEST_F(EmulateTest, IretdWithinCompatibilityMode) {
  ToCompatUser();
  cpu_.rflags = rflags::kFixed1;
  // Same privilege from compatibility mode: EIP, CS, EFLAGS only (4 bytes
  // each), no SS:ESP (SDM Vol. 2 IRET).
  const uint64_t frame = 0x6ff000;
  Put<uint32_t>(frame, 0x402000);
  Put<uint32_t>(frame + 4, kUserCs32 | 3);
  Put<uint32_t>(frame + 8, rflags::kFixed1 | rflags::kZF | rflags::kIF);
  Put<uint32_t>(frame + 12, 0xdeadbeef);  // not popped
  cpu_.gpr[kRsp] = frame;
  EXPECT_EQ(RunCompat({0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, 0x402000u);
  EXPECT_EQ(cpu_.gpr[kRsp], frame + 12);
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kZF) << "IF stays at IOPL 0";
  // To 64-bit user code at the same privilege: still no SS:ESP.
  cpu_.rip = kCode;
  Put<uint32_t>(frame + 4, kUserCs);
  cpu_.gpr[kRsp] = frame;
  EXPECT_EQ(RunCompat({0xcf}).kind, EmulateOutcome::kDone);
  EXPECT_TRUE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.gpr[kRsp], frame + 12);
  // A far return from compatibility mode to CPL 0 is #GP(selector).
  ToCompatUser();
  cpu_.rip = kCode;
  Put<uint32_t>(frame, 0x402000);
  Put<uint32_t>(frame + 4, kKernelCs);
  cpu_.gpr[kRsp] = frame;
  EXPECT_FAULT(RunCompat({0xcb}), kGP, kKernelCs);
}

TEST_F(EmulateTest, SysretlToCompatibilityMode) {
  cpu_.msr.star = (uint64_t{kUserCs32 | 3} << 48) | (uint64_t{kKernelCs} << 32);
  cpu_.gpr[kRcx] = 0xdead000000402000ull;  // only ECX counts: no canonical check
  cpu_.gpr[kR11] = rflags::kFixed1 | rflags::kIF | rflags::kCF;
  EXPECT_EQ(Run({0x0f, 0x07}).kind, EmulateOutcome::kDone);  // sysretl
  EXPECT_EQ(cpu_.Cpl(), 3u);
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs32 | 3) << "CS = STAR[63:48] | 3";
  EXPECT_FALSE(cpu_.seg[kCs].Long());
  EXPECT_TRUE(cpu_.seg[kCs].Db());
  EXPECT_EQ(cpu_.seg[kSs].selector, kUserDs) << "SS = STAR[63:48] + 8";
  EXPECT_EQ(cpu_.rip, 0x402000u);
  EXPECT_EQ(cpu_.rflags, rflags::kFixed1 | rflags::kIF | rflags::kCF);
}

TEST_F(EmulateTest, SyscallFromCompatibilityModeUsesCstar) {
  cpu_.msr.star = (uint64_t{kUserCs32 | 3} << 48) | (uint64_t{kKernelCs} << 32);
  cpu_.msr.lstar = kData + 0x300;
  cpu_.msr.cstar = kData + 0x400;
  cpu_.msr.fmask = rflags::kIF;
  ToCompatUser();
  cpu_.rflags = rflags::kFixed1 | rflags::kIF;
  EXPECT_EQ(RunCompat({0x0f, 0x05}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.rip, kData + 0x400);
  EXPECT_EQ(cpu_.gpr[kRcx], kCode + 2);
  EXPECT_EQ(cpu_.gpr[kR11], rflags::kFixed1 | rflags::kIF);
  EXPECT_EQ(cpu_.seg[kCs].selector, kKernelCs);
  EXPECT_TRUE(cpu_.seg[kCs].Long()) << "the kernel runs 64-bit code";
  EXPECT_EQ(cpu_.Cpl(), 0u);
}

TEST_F(EmulateTest, SysexitToCompatibilityMode) {
  cpu_.msr.sysenter_cs = kKernelCs;
  cpu_.gpr[kRcx] = 0xffff0000006f0000ull;
  cpu_.gpr[kRdx] = 0x1234000000403000ull;
  EXPECT_EQ(Run({0x0f, 0x35}).kind, EmulateOutcome::kDone);  // sysexit (32-bit)
  EXPECT_EQ(cpu_.seg[kCs].selector, (kKernelCs + 16) | 3);
  EXPECT_FALSE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.seg[kSs].selector, (kKernelCs + 24) | 3);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6f0000u);
  EXPECT_EQ(cpu_.rip, 0x403000u);
}

TEST_F(EmulateTest, FarTransfersBetweenModes) {
  // 64-bit CPL 3 -> compatibility mode: jmp far m16:32.
  ToUser();
  Put<uint32_t>(kData, 0x404000);
  Put<uint16_t>(kData + 4, kUserCs32 | 3);
  cpu_.gpr[kRbx] = kData;
  EXPECT_EQ(Run({0xff, 0x2b}).kind, EmulateOutcome::kDone);
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs32 | 3);
  EXPECT_FALSE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.rip, 0x404000u);
  // Compatibility mode -> 64-bit: call far ptr16:32 pushes CS and EIP in
  // 4-byte slots on the 32-bit stack.
  cpu_.rip = kCode;
  cpu_.gpr[kRsp] = 0x6ff000;
  EXPECT_EQ(RunCompat({0x9a, 0x00, 0x50, 0x40, 0x00, kUserCs, 0x00}).kind,
            EmulateOutcome::kDone);
  EXPECT_TRUE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.seg[kCs].selector, kUserCs);
  EXPECT_EQ(cpu_.rip, 0x405000u);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u - 8);
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 4), kUserCs32 | 3u);
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 8), kCode + 7);
  // And back by lret (operand size 32) from 64-bit code: 4-byte pops.
  cpu_.rip = kCode;
  Put<uint32_t>(0x6ff000 - 4, kUserCs32 | 3);
  EXPECT_EQ(Run({0xcb}).kind, EmulateOutcome::kDone);
  EXPECT_FALSE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.rip, kCode + 7);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
  // A 16-bit code segment is reported, not entered.
  Put<uint64_t>(kGdt + kFreshData, 0x008ffb000000ffff);
  cpu_.rip = kCode;
  EXPECT_EQ(RunCompat({0xea, 0x00, 0x50, 0x40, 0x00, kFreshData | 3, 0x00}).kind,
            EmulateOutcome::kUnsupported);
}

TEST_F(EmulateTest, CompatibilityModeStackWrapsAt4GiB) {
  ToCompatUser();
  cpu_.gpr[kRsp] = 0;  // push ds writes at 0xfffffffc, not 0xfffffffffffffffc
  EXPECT_FAULT(RunCompat({0x1e}), kPF, pf::kUser | pf::kWrite);
  EXPECT_EQ(cpu_.gpr[kRsp], 0u);
  cpu_.gpr[kRsp] = 0x6ff000;
  EXPECT_DONE(RunCompat({0x1e}));  // push ds: a 4-byte slot, zero-extended selector
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u - 4);
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 4), kUserDs);
  cpu_.rip = kCode;
  EXPECT_DONE(RunCompat({0x07}));  // pop es
  EXPECT_EQ(cpu_.seg[kEs].selector, kUserDs);
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
}

TEST_F(EmulateTest, CompatibilityModeSegmentBases) {
  // DS with base 0x12345678: push dword [ebx] reads DS.base + EBX, mod 2^32.
  ToCompatUser();
  cpu_.seg[kDs] = {kBasedData, 0xc093, 0xffffffff, 0x12345678};
  cpu_.gpr[kRsp] = 0x6ff000;
  cpu_.gpr[kRbx] = 0xf0000000;
  const EmulateOutcome o = RunCompat({0xff, 0x33});
  EXPECT_FAULT(o, kPF, pf::kUser);
  EXPECT_EQ(o.exception.cr2, 0x02345678u) << "(0x12345678 + 0xf0000000) mod 2^32";
  // In 64-bit mode DS has no base.
  cpu_.seg[kCs] = {kUserCs, 0xa0fb, 0xffffffff, 0};
  cpu_.gpr[kRbx] = kData;
  Put<uint64_t>(kData, 0x1122334455667788ull);
  cpu_.rip = kCode;
  // (Translated code pushes memory in 64-bit mode; other engines and
  // single-instruction fallbacks still come here.)
  EXPECT_DONE(RunAny({0xff, 0x33}));
  EXPECT_EQ(Get<uint64_t>(0x6ff000 - 8), 0x1122334455667788ull);
}

TEST_F(EmulateTest, PushadPopad) {
  ToCompatUser();
  for (int r = kRax; r <= kRdi; ++r) cpu_.gpr[r] = 0x100 + r;
  cpu_.gpr[kRsp] = 0x6ff000;
  EXPECT_DONE(RunCompat({0x60}));
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u - 32);
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 4), 0x100u) << "EAX first";
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 20), 0x6ff000u) << "ESP before pushad";
  EXPECT_EQ(Get<uint32_t>(0x6ff000 - 32), 0x107u) << "EDI last";
  Put<uint32_t>(0x6ff000 - 20, 0x12345678);  // popad ignores the ESP slot
  for (int r = kRax; r <= kRdi; ++r) {
    if (r != kRsp) cpu_.gpr[r] = 0;
  }
  cpu_.rip = kCode;
  EXPECT_DONE(RunCompat({0x61}));
  EXPECT_EQ(cpu_.gpr[kRsp], 0x6ff000u);
  for (int r = kRax; r <= kRdi; ++r) {
    if (r != kRsp) {
      EXPECT_EQ(cpu_.gpr[r], 0x100u + r) << "register " << r;
    }
  }
}

TEST_F(EmulateTest, CompatibilityModeOnlyInstructions) {
  ToCompatUser();
  cpu_.gpr[kRsp] = 0x6ff000;
  // into: #OF (a trap through the gate, DPL checked) only when OF is set.
  cpu_.rflags = rflags::kFixed1;
  EXPECT_DONE(RunCompat({0xce}));
  cpu_.rip = kCode;
  cpu_.rflags |= rflags::kOF;
  Put<uint64_t>(kIdt + 16 * kOF, (uint64_t{kKernelCs} << 16) | (0xeeull << 40));
  EmulateOutcome o = RunCompat({0xce});
  EXPECT_EQ(o.kind, EmulateOutcome::kSoftwareInt);
  EXPECT_EQ(o.exception.vector, kOF);
  EXPECT_EQ(cpu_.rip, kCode + 1);
  // bound: #BR outside [lower, upper], signed.
  cpu_.rip = kCode;
  Put<int32_t>(kData, -5);
  Put<int32_t>(kData + 4, 10);
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = static_cast<uint32_t>(-5);
  EXPECT_DONE(RunCompat({0x62, 0x03}));
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 11;
  EXPECT_FAULT(RunCompat({0x62, 0x03}), kBR);
  // arpl: raises the RPL, ZF says so.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x10;
  cpu_.gpr[kRcx] = 0x3b;
  EXPECT_DONE(RunCompat({0x63, 0xc8}));  // arpl ax, cx
  EXPECT_EQ(cpu_.gpr[kRax], 0x13u);
  EXPECT_TRUE(cpu_.rflags & rflags::kZF);
  cpu_.rip = kCode;
  EXPECT_DONE(RunCompat({0x63, 0xc8}));
  EXPECT_FALSE(cpu_.rflags & rflags::kZF);
  // lds: offset and selector.
  cpu_.rip = kCode;
  Put<uint32_t>(kData, 0xabcd);
  Put<uint16_t>(kData + 4, kUserDs);
  cpu_.seg[kDs] = {};
  EXPECT_DONE(RunCompat({0x3e, 0xc5, 0x13}));  // lds edx, ds:[ebx] (DS null: flat)
  EXPECT_EQ(cpu_.gpr[kRdx], 0xabcdu);
  EXPECT_EQ(cpu_.seg[kDs].selector, kUserDs);
  // salc: AL from CF.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x1234;
  cpu_.rflags = rflags::kFixed1 | rflags::kCF;
  EXPECT_DONE(RunCompat({0xd6}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x12ffu);
  // 64-bit mode has no into.
  cpu_.seg[kCs] = {kUserCs, 0xa0fb, 0xffffffff, 0};
  cpu_.rip = kCode;
  EXPECT_FAULT(RunCompat({0xce}), kUD);
}

TEST_F(EmulateTest, BcdAdjustments) {
  ToCompatUser();
  const uint64_t arith = rflags::kArith;
  // daa after 0x38 + 0x45 = 0x7d: 83 (SDM Vol. 2 DAA example).
  cpu_.gpr[kRax] = 0x7d;
  cpu_.rflags = rflags::kFixed1;
  EXPECT_DONE(RunCompat({0x27}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x83u);
  EXPECT_EQ(cpu_.rflags & arith, rflags::kAF | rflags::kSF);
  // daa with a decimal carry: 0x99 + 0x01 = 0x9a -> 0x00, CF.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x9a;
  cpu_.rflags = rflags::kFixed1;
  EXPECT_DONE(RunCompat({0x27}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x00u);
  EXPECT_EQ(cpu_.rflags & arith, rflags::kCF | rflags::kAF | rflags::kZF | rflags::kPF);
  // das after 0x35 - 0x47 = 0xee (CF, AF): -12 as 88 with a borrow.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0xee;
  cpu_.rflags = rflags::kFixed1 | rflags::kCF | rflags::kAF;
  EXPECT_DONE(RunCompat({0x2f}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x88u);
  EXPECT_TRUE(cpu_.rflags & rflags::kCF);
  // aaa: AX = 0x0009 + 8 = 0x0011 with AF -> 0x0107, CF AF.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x0011;
  cpu_.rflags = rflags::kFixed1 | rflags::kAF;
  EXPECT_DONE(RunCompat({0x37}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x0107u);
  EXPECT_EQ(cpu_.rflags & (rflags::kCF | rflags::kAF), rflags::kCF | rflags::kAF);
  // aas: AX = 0x0102 - 3 = 0x01ff with AF -> 0x0009 (AH - 1, AL - 6 masked).
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x01ff;
  cpu_.rflags = rflags::kFixed1 | rflags::kAF;
  EXPECT_DONE(RunCompat({0x3f}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x0009u);
  // aam: AL = 75 -> AH 7, AL 5; aad back; aam 0 is #DE.
  cpu_.rip = kCode;
  cpu_.gpr[kRax] = 0x12340000 | 75;
  EXPECT_DONE(RunCompat({0xd4, 0x0a}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x12340705u);
  cpu_.rip = kCode;
  EXPECT_DONE(RunCompat({0xd5, 0x0a}));
  EXPECT_EQ(cpu_.gpr[kRax], 0x1234004bu);
  cpu_.rip = kCode;
  EXPECT_FAULT(RunCompat({0xd4, 0x00}), kDE);
}

TEST_F(EmulateTest, CompatibilityModeUnsupportedInstructions) {
  ToCompatUser();
  EXPECT_EQ(RunCompat({0x67, 0xa4}).kind, EmulateOutcome::kUnsupported) << "movsb, 16-bit addresses";
  EXPECT_EQ(RunCompat({0x66, 0xc3}).kind, EmulateOutcome::kUnsupported) << "ret, 16-bit IP";
}

// ---------------------------------------------------------------------------
// FPU/SSE state: fxsave/fxrstor, xsave/xrstor, xgetbv/xsetbv.

TEST_F(EmulateTest, FxsaveFxrstorRoundTrip) {
  for (int i = 0; i < 16; ++i) cpu_.xsave.bytes[160 + 16 * i] = static_cast<uint8_t>(i + 1);
  const uint64_t fip = 0x1122334455667788ull;
  std::memcpy(cpu_.xsave.bytes + 8, &fip, 8);
  cpu_.gpr[kRbx] = kData;
  EXPECT_DONE(Run({0x48, 0x0f, 0xae, 0x03}));  // fxsave64 [rbx]
  EXPECT_EQ(Get<uint16_t>(kData), 0x37f);
  EXPECT_EQ(Get<uint32_t>(kData + 24), 0x1f80u);
  EXPECT_EQ(Get<uint64_t>(kData + 8), fip) << "64-bit FIP";
  EXPECT_EQ(Get<uint8_t>(kData + 160 + 16 * 15), 16);
  // fxsave (no REX.W): 32-bit FIP, FCS zero.
  cpu_.gpr[kRbx] = kData + 0x400;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0xae, 0x03}));
  EXPECT_EQ(Get<uint64_t>(kData + 0x400 + 8), 0x55667788u);
  // Restore something else.
  Put<uint16_t>(kData, 0x27f);
  Put<uint8_t>(kData + 160, 0x99);
  cpu_.gpr[kRbx] = kData;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x48, 0x0f, 0xae, 0x0b}));  // fxrstor64 [rbx]
  uint16_t fcw;
  std::memcpy(&fcw, cpu_.xsave.bytes, 2);
  EXPECT_EQ(fcw, 0x27f);
  EXPECT_EQ(cpu_.xsave.bytes[160], 0x99);
}

TEST_F(EmulateTest, FxsaveFaults) {
  cpu_.gpr[kRbx] = kData + 8;
  EXPECT_FAULT(Run({0x48, 0x0f, 0xae, 0x03}), kGP) << "not 16-byte aligned";
  cpu_.gpr[kRbx] = kData;
  cpu_.cr0 |= cr0::kTS;
  EXPECT_FAULT(Run({0x48, 0x0f, 0xae, 0x03}), kNM) << "CR0.TS";
  cpu_.cr0 &= ~cr0::kTS;
  EXPECT_DONE(Run({0x48, 0x0f, 0xae, 0x03}));
  Put<uint32_t>(kData + 24, 0x10000);  // MXCSR reserved bit
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x48, 0x0f, 0xae, 0x0b}), kGP) << "fxrstor of a bad MXCSR";
}

TEST_F(EmulateTest, XgetbvAndXsetbv) {
  cpu_.cr4 |= cr4::kOSXSAVE;
  EXPECT_DONE(Run({0x0f, 0x01, 0xd0}));  // xgetbv (ecx = 0)
  EXPECT_EQ(Edxeax(), 1u);
  cpu_.gpr[kRcx] = 0;
  cpu_.gpr[kRax] = 3;
  cpu_.gpr[kRdx] = 0;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0x01, 0xd1}));  // xsetbv
  EXPECT_EQ(cpu_.xcr0, 3u);
  cpu_.gpr[kRax] = 7;  // AVX is not supported
  cpu_.rip = kCode;
  EXPECT_FAULT(Run({0x0f, 0x01, 0xd1}), kGP);
  cpu_.gpr[kRax] = 2;  // x87 must stay on
  EXPECT_FAULT(Run({0x0f, 0x01, 0xd1}), kGP);
  cpu_.gpr[kRcx] = 1;
  EXPECT_FAULT(Run({0x0f, 0x01, 0xd0}), kGP) << "no XCR1";
  cpu_.gpr[kRcx] = 0;
  cpu_.gpr[kRax] = 3;
  ToUser();
  EXPECT_FAULT(Run({0x0f, 0x01, 0xd1}), kGP) << "xsetbv at CPL 3";
  EXPECT_DONE(Run({0x0f, 0x01, 0xd0})) << "xgetbv at CPL 3";
}

TEST_F(EmulateTest, XsaveWritesTheRequestedComponentsAndTheHeader) {
  cpu_.cr4 |= cr4::kOSXSAVE;
  cpu_.xcr0 = 3;
  cpu_.xsave.bytes[160] = 0x42;  // XMM0
  for (uint64_t i = 0; i < 512; i += 8) Put<uint64_t>(kData + i, 0xeeeeeeeeeeeeeeeeull);
  for (uint64_t i = 512; i < 576; i += 8) Put<uint64_t>(kData + i, 0);
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = 1;  // x87 only
  cpu_.gpr[kRdx] = 0;
  EXPECT_DONE(Run({0x0f, 0xae, 0x23}));  // xsave [rbx]
  EXPECT_EQ(Get<uint16_t>(kData), 0x37f) << "FCW";
  EXPECT_EQ(Get<uint8_t>(kData + 160), 0xee) << "XMM0 not requested";
  EXPECT_EQ(Get<uint32_t>(kData + 24), 0xeeeeeeeeu) << "MXCSR only with SSE";
  EXPECT_EQ(Get<uint64_t>(kData + 512), 1u) << "XSTATE_BV";
  cpu_.gpr[kRax] = ~0u;
  cpu_.gpr[kRdx] = ~0u;
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0xae, 0x23}));
  EXPECT_EQ(Get<uint8_t>(kData + 160), 0x42);
  EXPECT_EQ(Get<uint32_t>(kData + 24), 0x1f80u);
  EXPECT_EQ(Get<uint64_t>(kData + 512), 3u) << "XCR0 limits what is saved";
  EXPECT_EQ(Get<uint8_t>(kData + 420), 0xee) << "bytes 416-511 are not written";
  // The REX.W form writes the 64-bit FIP.
  const uint64_t fip = 0x1122334455667788ull;
  std::memcpy(cpu_.xsave.bytes + 8, &fip, 8);
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0x48, 0x0f, 0xae, 0x23}));  // xsave64 [rbx]
  EXPECT_EQ(Get<uint64_t>(kData + 8), fip);
}

TEST_F(EmulateTest, XrstorLoadsOrInitialisesEachComponent) {
  cpu_.cr4 |= cr4::kOSXSAVE;
  cpu_.xcr0 = 3;
  for (uint64_t i = 0; i < 576; i += 8) Put<uint64_t>(kData + i, 0);
  Put<uint16_t>(kData, 0x27f);
  Put<uint32_t>(kData + 24, 0x9fc0);
  Put<uint8_t>(kData + 160, 0x77);
  Put<uint64_t>(kData + 512, 1);  // x87 saved, SSE in its initial state
  cpu_.xsave.bytes[160] = 0x42;
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = 3;
  cpu_.gpr[kRdx] = 0;
  EXPECT_DONE(Run({0x0f, 0xae, 0x2b}));  // xrstor [rbx]
  uint16_t fcw;
  uint32_t mxcsr;
  std::memcpy(&fcw, cpu_.xsave.bytes, 2);
  std::memcpy(&mxcsr, cpu_.xsave.bytes + 24, 4);
  EXPECT_EQ(fcw, 0x27f);
  EXPECT_EQ(cpu_.xsave.bytes[160], 0) << "SSE initialised: XMM0 zero";
  EXPECT_EQ(mxcsr, 0x9fc0u) << "MXCSR is loaded whenever SSE is requested";
  // XSTATE_BV = 0: x87 initialised too.
  Put<uint64_t>(kData + 512, 0);
  cpu_.rip = kCode;
  EXPECT_DONE(Run({0x0f, 0xae, 0x2b}));
  std::memcpy(&fcw, cpu_.xsave.bytes, 2);
  EXPECT_EQ(fcw, 0x37f);
  // With XSTATE_BV = 3 the registers come from memory.
  Put<uint64_t>(kData + 512, 3);
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0x48, 0x0f, 0xae, 0x2b}));  // xrstor64
  EXPECT_EQ(cpu_.xsave.bytes[160], 0x77);
}

TEST_F(EmulateTest, XrstorChecksTheHeader) {
  cpu_.cr4 |= cr4::kOSXSAVE;
  cpu_.xcr0 = 3;
  for (uint64_t i = 0; i < 576; i += 8) Put<uint64_t>(kData + i, 0);
  Put<uint32_t>(kData + 24, 0x1f80);
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = 3;
  cpu_.gpr[kRdx] = 0;
  Put<uint64_t>(kData + 512, 4);
  EXPECT_FAULT(Run({0x0f, 0xae, 0x2b}), kGP) << "XSTATE_BV bit outside XCR0";
  Put<uint64_t>(kData + 512, 3);
  Put<uint64_t>(kData + 520, 1ull << 63);
  EXPECT_FAULT(Run({0x0f, 0xae, 0x2b}), kGP) << "compacted form is not supported";
  Put<uint64_t>(kData + 520, 0);
  Put<uint8_t>(kData + 540, 1);
  EXPECT_FAULT(Run({0x0f, 0xae, 0x2b}), kGP) << "reserved header bytes";
  Put<uint8_t>(kData + 540, 0);
  Put<uint32_t>(kData + 24, 0x40000);
  EXPECT_FAULT(Run({0x0f, 0xae, 0x2b}), kGP) << "a reserved MXCSR bit";
  cpu_.gpr[kRax] = 1;
  EXPECT_DONE(Run({0x0f, 0xae, 0x2b})) << "MXCSR is not loaded without SSE";
}

TEST_F(EmulateTest, XsaveFaults) {
  cpu_.gpr[kRbx] = kData;
  EXPECT_FAULT(Run({0x0f, 0xae, 0x23}), kUD) << "without CR4.OSXSAVE";
  cpu_.cr4 |= cr4::kOSXSAVE;
  cpu_.gpr[kRbx] = kData + 16;
  EXPECT_FAULT(Run({0x0f, 0xae, 0x23}), kGP) << "not 64-byte aligned";
  cpu_.gpr[kRbx] = kData;
  cpu_.cr0 |= cr0::kTS;
  EXPECT_FAULT(Run({0x0f, 0xae, 0x23}), kNM);
  cpu_.cr0 &= ~cr0::kTS;
  cpu_.gpr[kRbx] = kPaged + 0x1000 - 64;  // runs into the supervisor page at CPL 3
  ToUser();
  EXPECT_FAULT(Run({0x0f, 0xae, 0x23}), kPF, pf::kPresent | pf::kUser);
}

// ---------------------------------------------------------------------------
// Ordinary instructions the translator leaves to the runtime.

TEST_F(EmulateTest, EnterWithNestingLevels) {
  const uint64_t rbp = kStack - 0x100;
  Put<uint64_t>(rbp - 8, 0xaaaa);
  Put<uint64_t>(rbp - 16, 0xbbbb);
  cpu_.gpr[kRbp] = rbp;
  cpu_.gpr[kRsp] = kStack - 0x200;
  EXPECT_DONE(Run({0xc8, 0x20, 0x00, 0x03}));  // enter 32, 3
  const uint64_t frame = kStack - 0x208;
  EXPECT_EQ(Get<uint64_t>(frame), rbp) << "old RBP";
  EXPECT_EQ(Get<uint64_t>(frame - 8), 0xaaaau);
  EXPECT_EQ(Get<uint64_t>(frame - 16), 0xbbbbu);
  EXPECT_EQ(Get<uint64_t>(frame - 24), frame) << "the new frame pointer";
  EXPECT_EQ(cpu_.gpr[kRbp], frame);
  EXPECT_EQ(cpu_.gpr[kRsp], frame - 24 - 32);
}

TEST_F(EmulateTest, XlatAndMemoryPushPop) {
  Put<uint8_t>(kData + 5, 0x5c);
  cpu_.gpr[kRbx] = kData;
  cpu_.gpr[kRax] = 0x1205;
  EXPECT_DONE(RunAny({0xd7}));  // xlat
  EXPECT_EQ(cpu_.gpr[kRax], 0x125cu);
  Put<uint64_t>(kData + 0x10, 0x1234567890ull);
  cpu_.gpr[kRbx] = kData + 0x10;
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0xff, 0x33}));  // push qword [rbx]
  EXPECT_EQ(Get<uint64_t>(kStack - 8), 0x1234567890ull);
  cpu_.gpr[kRbx] = kData + 0x20;
  cpu_.rip = kCode;
  EXPECT_DONE(RunAny({0x8f, 0x03}));  // pop qword [rbx]
  EXPECT_EQ(Get<uint64_t>(kData + 0x20), 0x1234567890ull);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack);
  // A pop whose store faults leaves RSP alone.
  cpu_.gpr[kRsp] = kStack - 8;
  cpu_.gpr[kRbx] = kPaged + 0x2000;
  cpu_.rip = kCode;
  EXPECT_FAULT(RunAny({0x8f, 0x03}), kPF, pf::kWrite);
  EXPECT_EQ(cpu_.gpr[kRsp], kStack - 8);
}

TEST_F(EmulateTest, DivideErrors) {
  cpu_.gpr[kRbx] = 0;
  EXPECT_FAULT(RunAny({0x48, 0xf7, 0xf3}), kDE) << "div by zero";
  cpu_.gpr[kRbx] = 2;
  cpu_.gpr[kRdx] = 5;  // quotient does not fit
  EXPECT_FAULT(RunAny({0x48, 0xf7, 0xf3}), kDE);
  cpu_.gpr[kRdx] = 0;
  cpu_.gpr[kRax] = 7;
  EXPECT_DONE(RunAny({0x48, 0xf7, 0xf3}));
  EXPECT_EQ(cpu_.gpr[kRax], 3u);
  EXPECT_EQ(cpu_.gpr[kRdx], 1u);
}

}  // namespace
}  // namespace btvm
