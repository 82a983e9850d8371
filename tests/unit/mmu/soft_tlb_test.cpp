// The soft TLB's one-compare hit test, the Mmu's fills, and TLB semantics:
// an edited page table is not seen until invlpg or a flush.

#include <gtest/gtest.h>

#include <random>

#include "base/cpu_state.h"
#include "devices/bus.h"
#include "mmu/mmu.h"

namespace btvm {
namespace {

TEST(SoftTlb, InvalidEntriesNeverHit) {
  SoftTlb tlb;
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; ++i) {
    uint64_t addr = rng();
    const TlbEntry& e = tlb.entries[SoftTlb::Index(addr)];
    for (unsigned size : {1u, 2u, 4u, 8u, 16u}) {
      EXPECT_FALSE(SoftTlb::Hits(e.read_tag, addr, size));
      EXPECT_FALSE(SoftTlb::Hits(e.write_tag, addr, size));
    }
  }
}

TEST(SoftTlb, HitTestChecksPageAndCrossing) {
  uint64_t tag = 0x7f1234567000;
  EXPECT_TRUE(SoftTlb::Hits(tag, tag, 8));
  EXPECT_TRUE(SoftTlb::Hits(tag, tag + 0xff8, 8));
  EXPECT_FALSE(SoftTlb::Hits(tag, tag + 0xff9, 8)) << "crosses into the next page";
  EXPECT_TRUE(SoftTlb::Hits(tag, tag + 0xfff, 1));
  EXPECT_FALSE(SoftTlb::Hits(tag, tag + 0x1000, 1));
  EXPECT_FALSE(SoftTlb::Hits(tag, tag - 1, 1));
}

class MmuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::Create(MiB(16));
    ASSERT_TRUE(m.ok());
    mem_ = std::make_unique<GuestMemory>(std::move(m.value()));
    mmu_ = std::make_unique<Mmu>(*mem_, mmio_, tlbs_);
    cpu_.cr0 = cr0::kPE | cr0::kPG | cr0::kWP;
    cpu_.cr4 = cr4::kPAE;
    cpu_.efer = efer::kLME | efer::kLMA | efer::kNXE;
    cpu_.cr3 = 0x1000;
    Pte(0x1000, 0) = 0x2000 | 7;
    Pte(0x2000, 0) = 0x3000 | 7;
    Pte(0x3000, 2) = 0x4000 | 7;  // 4 MiB..6 MiB
  }
  uint64_t& Pte(uint64_t table, unsigned i) {
    return *reinterpret_cast<uint64_t*>(mem_->HostPointer(GuestPhys(table + 8 * i), 8));
  }
  std::unique_ptr<GuestMemory> mem_;
  MmioBus mmio_;
  SoftTlb tlbs_[kMmuCount];
  std::unique_ptr<Mmu> mmu_;
  CpuState cpu_;
};

TEST_F(MmuTest, FillsReadThenWriteTagOnlyWhenDirty) {
  Pte(0x4000, 5) = 0x900000 | 3;  // va 0x405000 -> pa 0x900000
  Mmu::Lookup l = mmu_->Translate(cpu_, GuestVirt(0x405010), Access::kRead, kMmuKernel);
  ASSERT_EQ(l.kind, Mmu::Lookup::kRam);
  EXPECT_EQ(l.host, mem_->HostPointer(GuestPhys(0x900010), 1));
  const TlbEntry& e = tlbs_[kMmuKernel].entries[SoftTlb::Index(0x405000)];
  EXPECT_TRUE(SoftTlb::Hits(e.read_tag, 0x405010, 8));
  EXPECT_FALSE(SoftTlb::Hits(e.write_tag, 0x405010, 8)) << "D clear: the first write walks";
  mmu_->Translate(cpu_, GuestVirt(0x405010), Access::kWrite, kMmuKernel);
  EXPECT_TRUE(SoftTlb::Hits(e.write_tag, 0x405010, 8));
  EXPECT_TRUE(Pte(0x4000, 5) & (1u << 6));
}

TEST_F(MmuTest, StaleUntilInvlpg) {
  Pte(0x4000, 5) = 0x900000 | 3;
  mmu_->Translate(cpu_, GuestVirt(0x405000), Access::kRead, kMmuKernel);
  Pte(0x4000, 5) = 0;  // the guest unmaps without invlpg: the TLB may still hit
  const TlbEntry& e = tlbs_[kMmuKernel].entries[SoftTlb::Index(0x405000)];
  EXPECT_TRUE(SoftTlb::Hits(e.read_tag, 0x405000, 1));
  mmu_->FlushPage(GuestVirt(0x405000));
  EXPECT_FALSE(SoftTlb::Hits(e.read_tag, 0x405000, 1));
  Mmu::Lookup l = mmu_->Translate(cpu_, GuestVirt(0x405000), Access::kRead, kMmuKernel);
  EXPECT_EQ(l.kind, Mmu::Lookup::kFault);
  EXPECT_EQ(l.fault.vector, kPF);
  EXPECT_EQ(l.fault.cr2, 0x405000u);
}

// SDM Vol. 3 §4.10.4.1: a CR3 write invalidates every TLB entry but those
// of global pages (PTE.G) while CR4.PGE is set; a CR4 write that changes
// PGE, or any full flush, takes them too.
TEST_F(MmuTest, GlobalPagesSurviveAFlushOfNonGlobalOnes) {
  Pte(0x4000, 5) = 0x900000 | 3 | (1u << 8);  // global
  Pte(0x4000, 6) = 0x901000 | 3;              // not global
  auto hits = [&](uint64_t va) {
    return SoftTlb::Hits(tlbs_[kMmuKernel].entries[SoftTlb::Index(va)].read_tag, va, 1);
  };
  // Without CR4.PGE the G bit means nothing.
  EXPECT_FALSE(mmu_->Translate(cpu_, GuestVirt(0x405000), Access::kRead, kMmuKernel).global);
  mmu_->FlushTlb(Mmu::Flush::kNonGlobal);
  EXPECT_FALSE(hits(0x405000));

  cpu_.cr4 |= cr4::kPGE;
  EXPECT_TRUE(mmu_->Translate(cpu_, GuestVirt(0x405000), Access::kRead, kMmuKernel).global);
  EXPECT_FALSE(mmu_->Translate(cpu_, GuestVirt(0x406000), Access::kRead, kMmuKernel).global);
  EXPECT_TRUE(mmu_->Translate(cpu_, GuestVirt(0x405000), Access::kRead, kMmuKernel).global)
      << "a hit knows it too";
  mmu_->FlushTlb(Mmu::Flush::kNonGlobal);
  EXPECT_TRUE(hits(0x405000));
  EXPECT_FALSE(hits(0x406000));
  mmu_->FlushTlb(Mmu::Flush::kAll);
  EXPECT_FALSE(hits(0x405000));
}

TEST_F(MmuTest, NonCanonicalIsGp) {
  Mmu::Lookup l = mmu_->Translate(cpu_, GuestVirt(0x8000000000000000ull), Access::kRead,
                                  kMmuKernel);
  EXPECT_EQ(l.kind, Mmu::Lookup::kFault);
  EXPECT_EQ(l.fault.vector, kGP);
}

TEST_F(MmuTest, CrossPageCopiesAndFaultLeavesMemoryUntouched) {
  Pte(0x4000, 1) = 0x800000 | 3;
  Pte(0x4000, 2) = 0xa00000 | 3;  // not contiguous with 0x800000
  uint8_t out[16];
  for (int i = 0; i < 16; ++i) out[i] = static_cast<uint8_t>(i + 1);
  GuestException f;
  ASSERT_TRUE(mmu_->WriteVirt(cpu_, GuestVirt(0x401ff8), out, 16, kMmuKernel, &f));
  EXPECT_EQ(*mem_->HostPointer(GuestPhys(0x800ff8), 1), 1);
  EXPECT_EQ(*mem_->HostPointer(GuestPhys(0xa00000), 1), 9);
  Pte(0x4000, 2) = 0xa00000 | 1;  // second page now read-only
  mmu_->FlushTlb();
  uint8_t zeros[16] = {};
  EXPECT_FALSE(mmu_->WriteVirt(cpu_, GuestVirt(0x401ff8), zeros, 16, kMmuKernel, &f));
  EXPECT_EQ(f.error_code, pf::kPresent | pf::kWrite);
  EXPECT_EQ(f.cr2, 0x402000u);
  EXPECT_EQ(*mem_->HostPointer(GuestPhys(0x800ff8), 1), 1) << "first page must be untouched";
}

TEST_F(MmuTest, MmioGoesToTheBus) {
  struct Reg : MmioDevice {
    uint64_t last = 0;
    unsigned size = 0;
    uint64_t MmioRead(uint64_t offset, unsigned s) override { return offset + s; }
    void MmioWrite(uint64_t, unsigned s, uint64_t v) override {
      last = v;
      size = s;
    }
  } dev;
  ASSERT_TRUE(mmio_.Register(GuestPhys(0xfee00000), 0x1000, &dev, "reg").ok());
  cpu_.cr0 &= ~cr0::kPG;  // identity
  cpu_.efer &= ~efer::kLMA;
  uint32_t v = 0;
  GuestException f;
  ASSERT_TRUE(mmu_->ReadVirt(cpu_, GuestVirt(0xfee00020), &v, 4, kMmuKernel, &f));
  EXPECT_EQ(v, 0x24u);
  uint32_t w = 0xdeadbeef;
  ASSERT_TRUE(mmu_->WriteVirt(cpu_, GuestVirt(0xfee00030), &w, 4, kMmuKernel, &f));
  EXPECT_EQ(dev.last, 0xdeadbeefu);
  EXPECT_EQ(dev.size, 4u) << "a 4-byte MMIO write stays one access";
}

}  // namespace
}  // namespace btvm
