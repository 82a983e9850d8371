// The code cache's bookkeeping: chaining a direct exit, undoing it when the
// target is invalidated, finding blocks by host address and by exit data,
// flushing, and refusing when full. Blocks come from BuildBlock over a
// small guest code buffer mapped 1:1 (guest-virtual = guest-physical).

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "translator/block_builder.h"
#include "translator/code_cache.h"

namespace btvm {
namespace {

constexpr uint64_t kBase = 0x10000;

class CodeCacheTest : public ::testing::Test {
 protected:
  explicit CodeCacheTest(size_t capacity = CodeCache::kDefaultCapacity)
      : cache_(&ctx_, nullptr, capacity) {}

  // Places bytes at guest address `at`.
  void Put(uint64_t at, std::vector<uint8_t> bytes) {
    if (code_.size() < at - kBase + bytes.size()) code_.resize(at - kBase + bytes.size(), 0xf4);
    std::memcpy(code_.data() + (at - kBase), bytes.data(), bytes.size());
  }
  // Supervisor code from a global page unless told otherwise.
  BuildResult Build(uint64_t rip, uint32_t flags = kBlockGlobal) {
    FetchFn fetch = [this](uint64_t pc, uint8_t* buf, size_t len, GuestException*) {
      for (size_t i = 0; i < len; ++i) {
        uint64_t off = pc + i - kBase;
        buf[i] = off < code_.size() ? code_[off] : 0xf4;  // hlt: a runtime instruction
      }
      return len;
    };
    return BuildBlock(cache_, BlockKey{rip, rip, 0, flags}, fetch, [](uint64_t v) { return v; });
  }
  // Where the patchable jump of `exit` currently goes.
  static const uint8_t* JumpTarget(const Block& b, uint32_t exit) {
    const uint8_t* jmp = b.code + b.exits[exit].jmp_offset;
    unsigned len = jmp[0] == 0xe9 ? 5 : 6;
    int32_t rel;
    std::memcpy(&rel, jmp + len - 4, 4);
    return jmp + len + rel;
  }

  BtContext ctx_;
  CodeCache cache_;
  std::vector<uint8_t> code_;
};

TEST_F(CodeCacheTest, SaysHowMuchOfABlockIsItsMainPath) {
  // A load has a slow path and the ret an exit stub: both come after the
  // main path, which holds the probe and the load.
  Put(kBase, {0x48, 0x8b, 0x06, 0xc3});  // mov rax, [rsi]; ret
  BuildResult r = Build(kBase);
  ASSERT_EQ(r.kind, BuildResult::kOk);
  EXPECT_GT(r.host_main_bytes, 0u);
  EXPECT_LT(r.host_main_bytes, r.host_bytes);
  // Without memory access or exit beyond the block's own jumps, what
  // follows the main path is smaller.
  Put(kBase + 0x100, {0x48, 0x01, 0xd8, 0xc3});  // add rax, rbx; ret
  BuildResult plain = Build(kBase + 0x100);
  ASSERT_EQ(plain.kind, BuildResult::kOk);
  EXPECT_LT(plain.host_bytes - plain.host_main_bytes, r.host_bytes - r.host_main_bytes);
}

TEST_F(CodeCacheTest, ReadingAheadWatchesTheSuccessor) {
  Put(kBase, {0x48, 0x01, 0xd8, 0xeb, 0x10});  // add rax, rbx; jmp +0x10
  Put(kBase + 0x15, {0x48, 0xff, 0xc0, 0xc3}); // inc rax (leaves CF); ret
  BuildResult a = Build(kBase);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  // The jump's target was decoded for flag liveness: a store there must
  // invalidate the block that relied on it.
  EXPECT_TRUE(cache_.Overlaps(kBase + 0x17, 1));
  cache_.InvalidateRange(kBase + 0x17, 1);
  EXPECT_FALSE(a.block->valid);
}

TEST_F(CodeCacheTest, DirectExitChainsAndUnchains) {
  Put(kBase, {0x48, 0x01, 0xd8, 0xeb, 0x10});     // add rax, rbx; jmp +0x10
  Put(kBase + 0x15, {0x48, 0x01, 0xd8, 0xc3});    // add rax, rbx; ret
  BuildResult a = Build(kBase);
  BuildResult b = Build(kBase + 0x15);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  ASSERT_EQ(b.kind, BuildResult::kOk);
  ASSERT_EQ(a.block->exits.size(), 1u);
  EXPECT_EQ(a.block->exits[0].target, kBase + 0x15);
  const uint8_t* stub = a.block->code + a.block->exits[0].stub_offset;
  EXPECT_EQ(JumpTarget(*a.block, 0), stub);

  ASSERT_TRUE(CodeCache::CanLink(*a.block, 0, *b.block));
  cache_.Link(a.block, 0, b.block);
  // A forward jump enters past b's exit_request check.
  EXPECT_TRUE(a.block->exits[0].forward);
  EXPECT_GT(b.block->unchecked_offset, 0u);
  EXPECT_EQ(JumpTarget(*a.block, 0), b.block->code + b.block->unchecked_offset);
  EXPECT_EQ(a.block->exits[0].linked, b.block);

  // A store into b's ret invalidates b and points a's jump back at its
  // stub. (a read ahead into b only as far as the add, which writes every
  // flag: a store there would invalidate a too.)
  cache_.InvalidateRange(kBase + 0x18, 1);
  EXPECT_FALSE(b.block->valid);
  EXPECT_TRUE(a.block->valid);
  EXPECT_EQ(cache_.Find(BlockKey{kBase + 0x15, kBase + 0x15, 0, 0}), nullptr);
  EXPECT_EQ(JumpTarget(*a.block, 0), stub);
  EXPECT_EQ(a.block->exits[0].linked, nullptr);
}

// Jumps backward, and calls, go through the target's exit_request check:
// every loop must pass one.
TEST_F(CodeCacheTest, BackwardJumpsAndCallsEnterThroughTheCheck) {
  Put(kBase, {0x48, 0x01, 0xd8, 0xc3});              // add rax, rbx; ret
  Put(kBase + 0x10, {0x48, 0x01, 0xd8, 0xeb, 0xeb}); // add rax, rbx; jmp kBase
  Put(kBase + 0x20, {0xe8, 0xdb, 0xff, 0xff, 0xff}); // call kBase
  Put(kBase + 0x25, {0xe8, 0x06, 0x00, 0x00, 0x00}); // call kBase + 0x30
  Put(kBase + 0x30, {0x48, 0x01, 0xd8, 0xc3});       // add rax, rbx; ret
  BuildResult t = Build(kBase), back = Build(kBase + 0x10), call = Build(kBase + 0x20),
              fwd_call = Build(kBase + 0x25), t2 = Build(kBase + 0x30);
  for (const BuildResult* r : {&t, &back, &call, &fwd_call, &t2}) {
    ASSERT_EQ(r->kind, BuildResult::kOk);
  }
  ASSERT_GT(t.block->unchecked_offset, 0u);
  auto exit_to = [](const Block& b, uint64_t target) {
    for (uint32_t i = 0; i < b.exits.size(); ++i) {
      if (b.exits[i].target == target) return i;
    }
    return ~0u;
  };
  uint32_t x = exit_to(*back.block, kBase);
  ASSERT_NE(x, ~0u);
  EXPECT_FALSE(back.block->exits[x].forward);
  cache_.Link(back.block, x, t.block);
  EXPECT_EQ(JumpTarget(*back.block, x), t.block->code);
  x = exit_to(*call.block, kBase);
  ASSERT_NE(x, ~0u);
  EXPECT_FALSE(call.block->exits[x].forward);
  cache_.Link(call.block, x, t.block);
  EXPECT_EQ(JumpTarget(*call.block, x), t.block->code);
  x = exit_to(*fwd_call.block, kBase + 0x30);
  ASSERT_NE(x, ~0u);
  EXPECT_FALSE(fwd_call.block->exits[x].forward) << "a call forward is checked too";
  cache_.Link(fwd_call.block, x, t2.block);
  EXPECT_EQ(JumpTarget(*fwd_call.block, x), t2.block->code);
}

TEST_F(CodeCacheTest, OnlySamePagePlainBlocksLink) {
  Put(kBase, {0x90, 0xeb, 0xfd});  // nop; jmp back to the nop
  Put(kBase + 0x1000, {0x90, 0xc3});
  BuildResult a = Build(kBase), far = Build(kBase + 0x1000);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  ASSERT_EQ(far.kind, BuildResult::kOk);
  ASSERT_EQ(a.block->exits.size(), 1u);
  EXPECT_TRUE(CodeCache::CanLink(*a.block, 0, *a.block));
  EXPECT_FALSE(CodeCache::CanLink(*a.block, 0, *far.block));
}

// A block with a stack window (push, push, pop, pop, ret) gets one more
// direct exit, to itself translated without the window, which links only
// to that variant.
TEST_F(CodeCacheTest, StackWindowExitLinksToThePlainVariant) {
  Put(kBase, {0x50, 0x53, 0x5b, 0x58, 0xc3});  // push rax; push rbx; pop rbx; pop rax; ret
  BuildResult a = Build(kBase);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  ASSERT_EQ(a.block->exits.size(), 1u);
  EXPECT_EQ(a.block->exits[0].target, kBase);
  EXPECT_EQ(a.block->exits[0].flags, kBlockPlainStack);
  FetchFn fetch = [this](uint64_t pc, uint8_t* buf, size_t len, GuestException*) {
    for (size_t i = 0; i < len; ++i) {
      uint64_t off = pc + i - kBase;
      buf[i] = off < code_.size() ? code_[off] : 0xf4;
    }
    return len;
  };
  BuildResult plain = BuildBlock(cache_, BlockKey{kBase, kBase, 0, kBlockPlainStack | kBlockGlobal}, fetch,
                                 [](uint64_t v) { return v; });
  ASSERT_EQ(plain.kind, BuildResult::kOk);
  EXPECT_TRUE(plain.block->exits.empty());  // no window there
  EXPECT_FALSE(CodeCache::CanLink(*a.block, 0, *a.block));
  EXPECT_TRUE(CodeCache::CanLink(*a.block, 0, *plain.block));
  // The variant is never entered through the jump cache.
  cache_.RememberLookup(*plain.block);
  EXPECT_NE(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kBase);
}

TEST_F(CodeCacheTest, WritesOutsideTheBytesKeepTheBlock) {
  Put(kBase, {0x48, 0x01, 0xd8, 0xc3});  // add rax, rbx; ret
  BuildResult a = Build(kBase);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  EXPECT_FALSE(cache_.Overlaps(kBase + 0x800, 8));
  cache_.InvalidateRange(kBase + 0x800, 8);
  EXPECT_TRUE(a.block->valid);
  EXPECT_TRUE(cache_.Overlaps(kBase + 3, 1));
}

TEST_F(CodeCacheTest, FindsBlocksByHostAddressAndExitData) {
  Put(kBase, {0x48, 0x01, 0xd8, 0xeb, 0x10});
  BuildResult a = Build(kBase);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  const Block* b = a.block;
  EXPECT_EQ(cache_.FindByHostPc(reinterpret_cast<uint64_t>(b->code)), b);
  EXPECT_EQ(cache_.FindByHostPc(reinterpret_cast<uint64_t>(b->code) + b->code_size - 1), b);
  EXPECT_EQ(cache_.FindByHostPc(reinterpret_cast<uint64_t>(b->code) + b->code_size + 64), nullptr);
  // The chain stub is `call stub; dq target`: its data names the exit.
  uint64_t site = reinterpret_cast<uint64_t>(b->code) + b->exits[0].stub_offset + 5;
  Block* found = nullptr;
  uint32_t exit = 99;
  ASSERT_TRUE(cache_.FindExit(site, &found, &exit));
  EXPECT_EQ(found, b);
  EXPECT_EQ(exit, 0u);
  // The side table maps the first instruction's host offset to its RIP.
  ASSERT_FALSE(b->insns.empty());
  EXPECT_EQ(b->insns.front().rip, kBase);
}

TEST_F(CodeCacheTest, FlushDropsEverything) {
  Put(kBase, {0x90, 0xc3});
  BuildResult a = Build(kBase);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  EXPECT_EQ(cache_.block_count(), 1u);
  EXPECT_GT(cache_.used_bytes(), 0u);
  cache_.RememberLookup(*a.block);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kBase);
  cache_.Flush();
  EXPECT_EQ(cache_.block_count(), 0u);
  EXPECT_EQ(cache_.used_bytes(), 0u);
  EXPECT_EQ(cache_.flushes(), 1u);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kNoRip);
}

// A CR3 write (a flush keeping global pages) keeps the kernel's lookups
// while they name only code from global pages, and drops the user's.
TEST_F(CodeCacheTest, KernelLookupsOfGlobalCodeSurviveCr3Writes) {
  Put(kBase, {0x90, 0xc3});
  Put(kBase + 0x1000, {0x90, 0xc3});
  BuildResult global = Build(kBase), local = Build(kBase + 0x1000, 0);
  ASSERT_EQ(global.kind, BuildResult::kOk);
  ASSERT_EQ(local.kind, BuildResult::kOk);
  cache_.RememberLookup(*local.block);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase + 0x1000)].rip, kBase + 0x1000);
  cache_.OnTlbFlush(/*keep_global=*/true);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase + 0x1000)].rip, kNoRip)
      << "code from a page that is not global: dropped";
  cache_.RememberLookup(*global.block);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kBase);
  ctx_.FillLookup(1, kBase, 1);
  cache_.OnTlbFlush(/*keep_global=*/true);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kBase);
  EXPECT_EQ(ctx_.jump_cache[1][JumpCacheIndex(kBase)].rip, kNoRip);
  cache_.OnTlbFlush(/*keep_global=*/false);
  EXPECT_EQ(ctx_.jump_cache[0][JumpCacheIndex(kBase)].rip, kNoRip);
}

// A block whose first instruction reaches into the next page can be linked
// to, until a TLB flush that may remap that page (all of them, or an
// invlpg of the second page) undoes the link.
TEST_F(CodeCacheTest, LinksIntoABlockSpanningPagesLastUntilATlbFlush) {
  Put(kBase + 0xf7e, {0xeb, 0x7e});               // jmp kBase + 0xffe
  Put(kBase + 0xffe, {0x48, 0x01, 0xd8, 0xc3});  // add rax, rbx (across the page); ret
  BuildResult a = Build(kBase + 0xf7e), span = Build(kBase + 0xffe);
  ASSERT_EQ(a.kind, BuildResult::kOk);
  ASSERT_EQ(span.kind, BuildResult::kOk);
  ASSERT_TRUE(span.block->spans_pages);
  ASSERT_EQ(a.block->exits.size(), 1u);
  const uint8_t* stub = a.block->code + a.block->exits[0].stub_offset;
  ASSERT_TRUE(CodeCache::CanLink(*a.block, 0, *span.block));
  auto link = [&] {
    cache_.Link(a.block, 0, span.block);
    EXPECT_EQ(JumpTarget(*a.block, 0), span.block->code + span.block->unchecked_offset);
  };
  link();
  cache_.OnTlbFlushPage(GuestVirt(kBase));  // the first page: the link may stay
  EXPECT_EQ(JumpTarget(*a.block, 0), span.block->code + span.block->unchecked_offset);
  cache_.OnTlbFlushPage(GuestVirt(kBase + 0x1000));  // the second page
  EXPECT_EQ(JumpTarget(*a.block, 0), stub);
  EXPECT_EQ(a.block->exits[0].linked, nullptr);
  EXPECT_TRUE(span.block->incoming.empty());
  link();
  cache_.OnTlbFlush(/*keep_global=*/true);
  EXPECT_EQ(JumpTarget(*a.block, 0), stub);
}

class SmallCodeCacheTest : public CodeCacheTest {
 protected:
  SmallCodeCacheTest() : CodeCacheTest(16 << 10) {}
};

TEST_F(SmallCodeCacheTest, ReportsFullThenWorksAfterAFlush) {
  // Blocks of loads (each with a slow path) until the region is full.
  std::vector<uint8_t> loads;
  for (int i = 0; i < 60; ++i) loads.insert(loads.end(), {0x48, 0x8b, 0x06});  // mov rax, [rsi]
  loads.push_back(0xc3);
  Put(kBase, loads);
  BuildResult r;
  int built = 0;
  do {
    r = Build(kBase);
    if (r.kind == BuildResult::kOk) ++built;
  } while (r.kind == BuildResult::kOk && built < 1000);
  EXPECT_EQ(r.kind, BuildResult::kCacheFull);
  EXPECT_GT(built, 0);
  cache_.Flush();
  EXPECT_EQ(Build(kBase).kind, BuildResult::kOk);
}

}  // namespace
}  // namespace btvm
