// The page walker against hand-built tables: translations for 4 KiB, 2 MiB
// and 1 GiB pages, A/D bits as hardware sets them, and #PF error codes
// (SDM Vol. 3 §4.7) for each kind of fault.

#include <gtest/gtest.h>

#include "base/cpu_state.h"
#include "mmu/guest_memory.h"
#include "mmu/page_walker.h"

namespace btvm {
namespace {

constexpr uint64_t P = 1, RW = 2, US = 4, A = 1ull << 5, D = 1ull << 6, PS = 1ull << 7,
                   NX = 1ull << 63;

class PageWalkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = GuestMemory::Create(MiB(16));
    ASSERT_TRUE(m.ok());
    mem_ = std::make_unique<GuestMemory>(std::move(m.value()));
    mode_.cr0 = cr0::kPE | cr0::kPG | cr0::kWP;
    mode_.cr4 = cr4::kPAE;
    mode_.efer = efer::kLME | efer::kLMA | efer::kNXE;
    mode_.cr3 = 0x1000;
  }
  uint64_t& Entry(uint64_t table, unsigned index) {
    return *reinterpret_cast<uint64_t*>(mem_->HostPointer(GuestPhys(table + 8 * index), 8));
  }
  // Maps va -> pa with a 4 KiB page through tables at 0x1000.. (flags on
  // every level unless `leaf_only`).
  void Map4K(uint64_t va, uint64_t pa, uint64_t flags, uint64_t upper = P | RW | US) {
    Entry(0x1000, (va >> 39) & 511) = 0x2000 | upper;
    Entry(0x2000, (va >> 30) & 511) = 0x3000 | upper;
    Entry(0x3000, (va >> 21) & 511) = 0x4000 | upper;
    Entry(0x4000, (va >> 12) & 511) = pa | flags;
  }
  WalkOutcome Walk(uint64_t va, Access a, bool user = false) {
    PagingMode m = mode_;
    m.user = user;
    return WalkPageTables(*mem_, m, GuestVirt(va), a);
  }
  std::unique_ptr<GuestMemory> mem_;
  PagingMode mode_;
};

TEST_F(PageWalkerTest, Translates4KPageAndSetsAccessedThenDirty) {
  Map4K(0x400000, 0x800000, P | RW);
  WalkOutcome r = Walk(0x400123, Access::kRead);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.translation.phys.value, 0x800123u);
  EXPECT_TRUE(Entry(0x1000, 0) & A);
  EXPECT_TRUE(Entry(0x4000, 0) & A);
  EXPECT_FALSE(Entry(0x4000, 0) & D) << "a read must not set D";
  EXPECT_FALSE(r.translation.dirty);
  r = Walk(0x400123, Access::kWrite);
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(Entry(0x4000, 0) & D);
  EXPECT_FALSE(Entry(0x3000, 2) & D) << "D is set on the leaf only";
  EXPECT_TRUE(r.translation.dirty && r.translation.writable);
}

TEST_F(PageWalkerTest, LargePages) {
  Entry(0x1000, 0) = 0x2000 | P | RW;
  Entry(0x2000, 1) = 0x40000000 | P | RW | PS;  // 1 GiB page at 1 GiB
  Entry(0x2000, 0) = 0x3000 | P | RW;
  Entry(0x3000, 3) = 0x600000 | P | RW | PS;  // 2 MiB page at 6 MiB
  WalkOutcome r = Walk(0x40000000 + 0x12345678, Access::kRead);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.translation.phys.value, 0x40000000u + 0x12345678u);
  r = Walk(0x600000 + 0x1abcd, Access::kWrite);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.translation.phys.value, 0x61abcdu);
  EXPECT_TRUE(Entry(0x3000, 3) & D);
}

TEST_F(PageWalkerTest, NotPresentFaults) {
  Map4K(0x400000, 0x800000, 0);  // leaf not present
  WalkOutcome r = Walk(0x400000, Access::kRead);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error_code, 0u);
  r = Walk(0x400000, Access::kWrite, /*user=*/true);
  EXPECT_EQ(r.error_code, pf::kWrite | pf::kUser);
  r = Walk(0x400000, Access::kFetch);
  EXPECT_EQ(r.error_code, pf::kFetch);
  r = Walk(0x7f0000000000, Access::kRead);  // no PML4 entry
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error_code, 0u);
}

TEST_F(PageWalkerTest, ProtectionFaults) {
  Map4K(0x400000, 0x800000, P);  // read-only, supervisor
  EXPECT_EQ(Walk(0x400000, Access::kWrite).error_code, pf::kPresent | pf::kWrite);
  EXPECT_EQ(Walk(0x400000, Access::kRead, true).error_code, pf::kPresent | pf::kUser);
  mode_.cr0 &= ~cr0::kWP;  // supervisor writes ignore R/W without WP
  EXPECT_TRUE(Walk(0x400000, Access::kWrite).ok);
  Map4K(0x400000, 0x800000, P | RW | US | NX);
  EXPECT_EQ(Walk(0x400000, Access::kFetch, true).error_code,
            pf::kPresent | pf::kUser | pf::kFetch);
  EXPECT_TRUE(Walk(0x400000, Access::kWrite, true).ok);
  // U/S must be set on every level for a user access.
  Map4K(0x400000, 0x800000, P | RW | US, P | RW);
  EXPECT_EQ(Walk(0x400000, Access::kRead, true).error_code, pf::kPresent | pf::kUser);
}

TEST_F(PageWalkerTest, ReservedBitsFault) {
  Map4K(0x400000, 0x800000 | (1ull << 45), P | RW);  // above MAXPHYADDR
  EXPECT_EQ(Walk(0x400000, Access::kRead).error_code, pf::kPresent | pf::kReserved);
  mode_.efer &= ~efer::kNXE;  // NX is reserved without EFER.NXE
  Map4K(0x400000, 0x800000, P | RW | NX);
  EXPECT_EQ(Walk(0x400000, Access::kRead).error_code, pf::kPresent | pf::kReserved);
  // A table outside RAM reads as all ones: reserved bits.
  mode_.efer |= efer::kNXE;
  Entry(0x1000, 0) = 0xfff000 | P | RW;  // inside RAM but garbage -> fine
  mode_.cr3 = 0xc0000000;                // in the MMIO hole
  EXPECT_EQ(Walk(0x0, Access::kRead).error_code, pf::kPresent | pf::kReserved);
}

TEST_F(PageWalkerTest, SmepAndSmap) {
  Map4K(0x400000, 0x800000, P | RW | US);
  mode_.cr4 |= cr4::kSMEP | cr4::kSMAP;
  EXPECT_EQ(Walk(0x400000, Access::kFetch).error_code, pf::kPresent | pf::kFetch);
  EXPECT_EQ(Walk(0x400000, Access::kRead).error_code, pf::kPresent);
  mode_.smap_allowed = true;  // RFLAGS.AC
  EXPECT_TRUE(Walk(0x400000, Access::kRead).ok);
}

TEST(Canonical, Addresses) {
  EXPECT_TRUE(IsCanonical(0x00007fffffffffffull));
  EXPECT_TRUE(IsCanonical(0xffff800000000000ull));
  EXPECT_FALSE(IsCanonical(0x0000800000000000ull));
  EXPECT_FALSE(IsCanonical(0x8000000000000000ull));
}

}  // namespace
}  // namespace btvm
