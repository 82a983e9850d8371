#pragma once
// The code cache (DESIGN.md, Translator): one fixed region of host memory
// holding the entry trampoline, the exit stub and every translated block,
// allocated front to back and flushed whole when full. It also keeps what
// the runtime needs to know about each block: where it came from (for
// self-modifying code), its direct exits (for chaining), and the map from
// host code back to guest instructions (for precise faults).

#include <asmjit/x86.h>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "mmu/mmu.h"
#include "translator/bt_context.h"
#include "translator/emitter.h"

namespace btvm {

struct BlockKey {
  uint64_t rip;
  uint64_t phys;  // guest-physical address of rip: a remapped page is a new block
  uint32_t mmu_index;
  uint32_t flags;  // kBlockSingle...
  bool operator==(const BlockKey&) const = default;
};
// A block of one instruction, not chained and not found by lookups: single
// stepping (TF), interrupt shadows, and the store that modified code.
inline constexpr uint32_t kBlockSingle = 1;
// Decoded as 32-bit compatibility-mode code (CS.L = 0, CS.D = 1): the same
// RIP under a 64-bit CS is another block. Such blocks are not entered
// through the jump cache or a host return (emit_compat.cpp).
inline constexpr uint32_t kBlockCompat = 2;
// Translated without a stack window (emit_stack.cpp): the block a window
// block goes to when its entry probe misses. Found only through that
// block's exit, never through the jump cache.
inline constexpr uint32_t kBlockPlainStack = 4;
// Supervisor code from a global page (PTE.G with CR4.PGE): its jump-cache
// entries survive CR3 writes, as the page's
// translation does. Lookups of other kernel code make a CR3 write drop the
// kernel's lookups too (BtContext::kernel_local_lookups).
inline constexpr uint32_t kBlockGlobal = 8;

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const {
    return std::hash<uint64_t>()(k.rip * 31 + k.phys * 7 + k.mmu_index * 3 + k.flags);
  }
};

// One translated guest block.
struct Block {
  BlockKey key{};
  uint8_t* code = nullptr;  // host entry point
  uint32_t code_size = 0;
  // Where forward links enter: past the entry check (0 if the block has
  // none there; BlockEmitter::EmitEntryCheck).
  uint32_t unchecked_offset = 0;
  uint32_t guest_size = 0;   // guest bytes [key.rip, key.rip + guest_size)
  uint32_t guest_insns = 0;
  uint32_t main_bytes = 0;   // host code before the slow paths and exit stubs
  bool loop = false;         // translated as a loop
  uint64_t window_insns = 0;  // bit i: instruction i's stack access used the stack window
  // How many times it was entered, counted by its code only with
  // set_count_tlb_hits (--stats); a loop block counts each pass through
  // its head.
  uint64_t executions = 0;
  // Page offsets, in its first page, of the guest bytes the translation
  // relies on (its own, and successors it looked at): a store there
  // invalidates it.
  uint32_t watch_lo = 0, watch_hi = 0;
  bool valid = true;
  bool spans_pages = false;  // its last instruction reaches into the next page
  uint64_t phys2 = 0;        // that page, guest-physical

  // A direct exit: a 5-byte `jmp rel32` at code + jmp_offset that goes to
  // its own stub (code + stub_offset) until the runtime links it straight
  // to the block at `target`.
  struct Exit {
    uint32_t jmp_offset = 0;
    uint32_t stub_offset = 0;
    uint64_t target = 0;
    Block* linked = nullptr;
    uint32_t flags = 0;  // key flags the target must have (kBlockPlainStack)
    // To a RIP above its branch's, not from a call: linked past the
    // target's entry check (BlockEmitter::EmitEntryCheck).
    bool forward = false;
  };
  std::vector<Exit> exits;
  std::vector<std::pair<Block*, uint32_t>> incoming;  // (block, exit) linked here

  // Host code offset -> guest instruction, in host order: the instruction
  // whose code contains a host PC is the last record at or before it.
  struct InsnRecord {
    uint32_t host_offset;
    uint16_t scratch;  // host registers holding scratch values, guest ones parked in CpuState
    uint16_t flags_saved = 0;  // guest arithmetic flags in BtContext::saved_flags, not host RFLAGS
    uint64_t rip;
    // The guest exception (kGP or kSS, error code 0) a host fault below
    // one page stands for (BlockEmitter::last_null_page_fault), or 0.
    uint8_t null_page_fault = 0;
  };
  std::vector<InsnRecord> insns;

  // A sensitive instruction the runtime emulates has no code: the block
  // keeps its decoding (so it is fetched and decoded once, and a store to
  // it invalidates it like any block).
  std::unique_ptr<DecodedInsn> emulated;
};

class CodeCache final : public MmuObserver {
 public:
  static constexpr size_t kDefaultCapacity = size_t{64} << 20;

  // `ctx` holds the inline lookups (the jump cache) this cache keeps
  // consistent; `mmu` tracks the pages blocks come from.
  CodeCache(BtContext* ctx, Mmu* mmu, size_t capacity = kDefaultCapacity);
  ~CodeCache() override;
  CodeCache(const CodeCache&) = delete;
  CodeCache& operator=(const CodeCache&) = delete;

  // Runs translated code from `code` until it exits to the runtime.
  // Runs block b's translated code until it exits; first points this
  // thread's GS base at ctx (context_operand.h) if it is not there yet.
  void Enter(BtContext* ctx, const Block& b);

  // Through a small direct-mapped cache of recent finds first: the hash
  // map's nodes are scattered, and the runtime looks blocks up on every
  // exit. Its entries may name invalidated blocks (kept until a flush), so
  // a hit checks `valid`; installing a block for a key puts it in the key's
  // slot (a block replaced under its key, still valid, is never found).
  Block* Find(const BlockKey& key) const {
    Block*& recent = RecentSlot(key);
    if (recent && recent->valid && recent->key == key) return recent;
    auto it = blocks_.find(key);
    Block* b = it == blocks_.end() ? nullptr : it->second;
    if (b) recent = b;
    return b;
  }

  // Translation in two steps: NewBlock, emit into a CodeHolder initialised
  // for next_address(), then Install. Install fails (nullptr) when the
  // region is full; the caller flushes and translates again.
  std::unique_ptr<Block> NewBlock(const BlockKey& key) const;
  uint64_t next_address() const { return reinterpret_cast<uint64_t>(next_); }
  Block* Install(std::unique_ptr<Block> block, asmjit::CodeHolder& code);
  // Records a decoded sensitive instruction for the runtime (no code).
  Block* InstallEmulated(const BlockKey& key, const DecodedInsn& insn);

  // The block and direct exit whose stub left data at `site`
  // (BtContext::chain_site); false if none (the block was flushed).
  bool FindExit(uint64_t site, Block** block, uint32_t* exit) const;
  // Points direct exit `exit` of `from` straight at `to`.
  void Link(Block* from, uint32_t exit, Block* to);
  // Whether direct exit `exit` of `from` may be patched to `to`: same page
  // (so the same translation), same privilege, same code mode, neither a
  // single-instruction block, and `to` the variant the exit asks for. (A
  // link into a block that reaches into a second page lasts until the next
  // TLB flush: UnlinkSpanning.)
  static bool CanLink(const Block& from, uint32_t exit, const Block& to);

  // Records a block reached through the runtime in the inline jump cache.
  void RememberLookup(const Block& block);

  // Drops every block (the region is reused from the start).
  void Flush();
  // Invalidates the blocks whose guest bytes overlap [phys, phys+size).
  void InvalidateRange(uint64_t phys, uint64_t size);
  bool Overlaps(uint64_t phys, uint64_t size) const;

  // The block whose host code contains `pc`, or nullptr.
  const Block* FindByHostPc(uint64_t pc) const;
  bool Contains(uint64_t pc) const {
    return pc >= reinterpret_cast<uint64_t>(region_) &&
           pc < reinterpret_cast<uint64_t>(region_) + capacity_;
  }

  size_t block_count() const { return blocks_.size(); }
  size_t used_bytes() const { return static_cast<size_t>(next_ - blocks_start_); }
  // Guest instructions run in translated blocks, counted as each block's
  // instructions at each of its entries (with count_tlb_hits, else 0; a
  // block left early by an exception or an exit still counts whole).
  uint64_t executed_insns() const;
  // The blocks (in the cache now) that ran the most guest instructions,
  // most first, at most n.
  std::vector<const Block*> HottestBlocks(size_t n) const;
  size_t capacity() const { return capacity_; }
  uint64_t flushes() const { return flushes_; }

  // The stub a host-fault handler resumes at: it leaves translated code
  // without storing host GPRs (the handler took them from the signal
  // context).
  uint8_t* fault_exit_stub() const { return fault_exit_stub_; }

  const asmjit::Environment& environment() const { return env_; }
  EmitEnv EmitEnvFor(unsigned mmu_index) const;
  // Blocks translated from now on count their inline soft-TLB hits.
  void set_count_tlb_hits(bool on) { count_tlb_hits_ = on; }

  // MmuObserver
  void OnTlbFlush(bool keep_global) override;
  void OnTlbFlushPage(GuestVirt page) override;
  void OnCodeWrite(GuestPhys addr, uint64_t size) override;

 private:
  void BuildTrampolines();
  void Invalidate(Block* b);
  void Patch(Block* from, uint32_t exit, const uint8_t* dest);
  void AddToPage(uint64_t page, Block* b);
  // Undoes the links into blocks reaching into the page `second_vpn` (or
  // into any second page, with `all`).
  void UnlinkSpanning(uint64_t second_vpn, bool all);

  BtContext* ctx_;
  Mmu* mmu_;
  asmjit::Environment env_;
  uint8_t* region_ = nullptr;
  size_t capacity_ = 0;
  uint8_t* blocks_start_ = nullptr;
  uint8_t* next_ = nullptr;
  using EnterFn = void (*)(BtContext*, const void*, const void*);
  EnterFn enter_ = nullptr;
  uint8_t* exit_stub_ = nullptr;
  uint8_t* fault_exit_stub_ = nullptr;
  uint8_t* exit_next_ = nullptr;
  uint8_t* exit_chain_ = nullptr;
  uint8_t* exit_rip_ = nullptr;
  uint8_t* mem_stub_ = nullptr;     // calls BtMemSlowPath, keeping every register
  uint8_t* commit_stub_ = nullptr;  // calls BtBounceCommit, likewise
  uint8_t* ret_miss_[2] = {};       // per MmuIndex (bt_context.h, calls and returns)
  uint8_t* underflow_[2] = {};      // the entry sentinels, per MmuIndex
  uint64_t flushes_ = 0;
  bool count_tlb_hits_ = false;
  uint64_t flushed_insns_ = 0;  // executed_insns() of blocks a flush dropped

  std::vector<std::unique_ptr<Block>> order_;  // every block with code, in address order
  std::vector<std::unique_ptr<Block>> emulated_;  // code-less blocks
  std::unordered_map<BlockKey, Block*, BlockKeyHash> blocks_;
  std::unordered_map<uint64_t, std::vector<Block*>> pages_;  // guest-physical page -> blocks
  struct SpanningLink {
    Block* from;
    uint32_t exit;
    Block* to;
  };
  std::vector<SpanningLink> spanning_links_;  // links into blocks that reach into a second page
  // (65,536: a Linux fork+exec runs through more blocks than 4,096 slots
  // hold apart, and each miss walks the hash map's cold nodes.)
  static constexpr size_t kRecentFinds = 65536;
  Block*& RecentSlot(const BlockKey& key) const {
    return recent_[(key.rip ^ (key.rip >> 12) ^ key.flags) & (kRecentFinds - 1)];
  }
  mutable std::vector<Block*> recent_ = std::vector<Block*>(kRecentFinds, nullptr);
  // FindExit's recent answers, direct-mapped by site: the runtime asks on
  // every unlinked direct exit (those to emulated instructions, mostly),
  // and the search by host address walks the whole block list. Sites stay
  // what they name until a flush (invalidated blocks keep their code).
  struct ExitFind {
    uint64_t site = 0;
    Block* block = nullptr;
    uint32_t exit = 0;
  };
  static constexpr size_t kExitFinds = 1024;
  mutable std::vector<ExitFind> exit_finds_ = std::vector<ExitFind>(kExitFinds);
};

// Helpers translated code calls (helpers.cpp).
extern "C" uint8_t* BtMemSlowPath(BtContext* ctx);
extern "C" void BtBounceCommit(BtContext* ctx);
extern "C" uint64_t BtStringOp(BtContext* ctx);

}  // namespace btvm
