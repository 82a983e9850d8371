#include "translator/code_cache.h"

#include <asm/prctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace btvm {

using namespace asmjit;

namespace {
// Guest GPRs held in the host register of the same number while
// translated code runs: all but RSP (in kGuestRspHost, as host RSP is the
// monitor's stack) and R15 (in CpuState).
constexpr int kLiveGprs[] = {kRax, kRcx, kRdx, kRbx, kRbp, kRsi, kRdi,
                             kR8,  kR9,  kR10, kR11, kR12, kR13, kR14};
constexpr uint64_t kHostFlagsMask = rflags::kArith | rflags::kDF | rflags::kFixed1;
// The guest's FXSAVE image in CpuState, and its MXCSR and XMM0 (SDM Vol. 1
// Table 10-2).
constexpr int32_t kXsaveOffset = static_cast<int32_t>(offsetof(CpuState, xsave));
constexpr int32_t kMxcsrImage = kXsaveOffset + 24, kXmmImage = kXsaveOffset + 160;

// Copies finished code to `dst`, which the holder was initialised for.
size_t Place(CodeHolder& code, uint8_t* dst, size_t room) {
  if (code.flatten() != kErrorOk || code.resolveUnresolvedLinks() != kErrorOk) return 0;
  if (code.relocateToBase(reinterpret_cast<uint64_t>(dst)) != kErrorOk) return 0;
  size_t size = code.codeSize();
  if (size == 0 || size > room) return 0;
  code.copyFlattenedData(dst, size, CopySectionFlags::kPadSectionBuffer);
  return size;
}
}  // namespace

CodeCache::CodeCache(BtContext* ctx, Mmu* mmu, size_t capacity)
    : ctx_(ctx), mmu_(mmu), env_(Environment::host()), capacity_(capacity) {
  // One region, so every jump between blocks and to the stubs is rel32.
  void* p = mmap(nullptr, capacity_, PROT_READ | PROT_WRITE | PROT_EXEC,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  BTVM_CHECK(p != MAP_FAILED);
  region_ = static_cast<uint8_t*>(p);
  BuildTrampolines();
  if (mmu_) mmu_->AddObserver(this);
}

CodeCache::~CodeCache() {
  if (mmu_) mmu_->RemoveObserver(this);
  munmap(region_, capacity_);
}

void CodeCache::BuildTrampolines() {
  CodeHolder code;
  code.init(env_, reinterpret_cast<uint64_t>(region_));
  x86::Assembler a(&code);
  Label exit = a.newLabel(), fault_exit = a.newLabel();
  // XMM0-15 to or from 16 aligned slots of the context at `offset`.
  const auto save_xmm = [&a](int32_t offset) {
    for (int x = 0; x < 16; ++x) a.movaps(CtxPtr(offset + 16 * x, 16), x86::xmm(x));
  };
  const auto load_xmm = [&a](int32_t offset) {
    for (int x = 0; x < 16; ++x) a.movaps(x86::xmm(x), CtxPtr(offset + 16 * x, 16));
  };

  // void Enter(BtContext* ctx /*rdi*/, const void* code /*rsi*/,
  //            const void* sentinel /*rdx*/), with GS base = ctx already
  // (CodeCache::Enter).
  // Saves the monitor's callee-saved registers and stack pointer, pushes
  // the sentinel that a host ret with no call of its own returns to, loads
  // guest GPRs, guest arithmetic flags and DF, and the guest FPU/SSE state,
  // then jumps to the block.
  a.push(x86::rbp);
  a.push(x86::rbx);
  a.push(x86::r12);
  a.push(x86::r13);
  a.push(x86::r14);
  a.push(x86::r15);
  a.push(x86::rdx);
  a.mov(CtxPtr(offsetof(BtContext, host_rsp), 8), x86::rsp);
  a.lea(x86::rax, x86::ptr(x86::rsp, -kShadowBytes));
  a.mov(CtxPtr(offsetof(BtContext, shadow_floor), 8), x86::rax);
  a.mov(CtxPtr(offsetof(BtContext, entry_target), 8), x86::rsi);
  a.stmxcsr(CtxPtr(offsetof(BtContext, host_mxcsr), 4));
  // The guest's x87 state is loaded only if the FPU does not hold it
  // already (x87_reload, CodeCache::Enter); XMM0-15 and MXCSR always.
  Label x87_held = a.newLabel(), fpu_loaded = a.newLabel();
  a.cmp(CtxPtr(offsetof(BtContext, x87_reload), 1), 0);
  a.je(x87_held);
  a.fnstcw(CtxPtr(offsetof(BtContext, host_fcw), 2));
  a.fxrstor64(CtxPtr(kXsaveOffset));
  a.jmp(fpu_loaded);
  a.bind(x87_held);
  load_xmm(kXmmImage);
  a.ldmxcsr(CtxPtr(kMxcsrImage, 4));
  a.bind(fpu_loaded);
  a.mov(x86::rax, CtxPtr(offsetof(BtContext, host_flags), 8));
  a.and_(x86::rax, static_cast<int32_t>(kHostFlagsMask));
  a.push(x86::rax);
  a.popfq();
  for (int g : kLiveGprs) a.mov(x86::gpq(g), CtxPtr(GprOffset(g), 8));
  a.mov(x86::gpq(kGuestRspHost), CtxPtr(GprOffset(kRsp), 8));
  a.jmp(CtxPtr(offsetof(BtContext, entry_target), 8));

  // The exit stub: blocks jump here with RIP and exit_reason stored.
  a.align(AlignMode::kCode, 16);
  a.bind(exit);
  for (int g : kLiveGprs) a.mov(CtxPtr(GprOffset(g), 8), x86::gpq(g));
  a.mov(CtxPtr(GprOffset(kRsp), 8), x86::gpq(kGuestRspHost));
  a.pushfq();
  a.pop(CtxPtr(offsetof(BtContext, host_flags), 8));
  // The fault exit: the host-fault handler already stored GPRs and flags.
  a.bind(fault_exit);
  // Guest code that may have changed the x87 state (x87_dirty) has it all
  // saved; else only XMM0-15 and MXCSR, and the x87 state stays in the
  // FPU for the next entry: the runtime uses no x87 instruction (btvm has
  // no long double), so it cannot disturb it, and an fxsave and fxrstor
  // cost some 200 cycles an exit.
  Label x87_saved = a.newLabel(), fpu_saved = a.newLabel();
  a.cmp(CtxPtr(offsetof(BtContext, x87_dirty), 1), 0);
  a.jne(x87_saved);
  save_xmm(kXmmImage);
  a.stmxcsr(CtxPtr(kMxcsrImage, 4));
  a.jmp(fpu_saved);
  a.bind(x87_saved);
  a.fxsave64(CtxPtr(kXsaveOffset));
  // A pending unmasked x87 exception stays in the guest's saved status
  // word; the monitor's FPU must not raise it (fldcw would). The FPU then
  // holds the monitor's control word: the next entry reloads it all.
  a.fnclex();
  a.fldcw(CtxPtr(offsetof(BtContext, host_fcw), 2));
  a.mov(CtxPtr(offsetof(BtContext, x87_dirty), 1), 0);
  a.mov(CtxPtr(offsetof(BtContext, x87_saved), 1), 1);
  a.bind(fpu_saved);
  a.cld();
  a.ldmxcsr(CtxPtr(offsetof(BtContext, host_mxcsr), 4));
  a.mov(x86::rsp, CtxPtr(offsetof(BtContext, host_rsp), 8));
  a.add(x86::rsp, 8);
  a.pop(x86::r15);
  a.pop(x86::r14);
  a.pop(x86::r13);
  a.pop(x86::r12);
  a.pop(x86::rbx);
  a.pop(x86::rbp);
  a.ret();

  // Helper stubs, called from blocks' slow paths: they keep every host
  // register, the flags and the SSE state as they were, and call a C++
  // helper with the context (result in slow_result). The x87 state stays
  // in the FPU untouched: the helpers (helpers.cpp, BtStringOp, and the
  // MMU code they call) use no x87 instruction, as nothing in btvm does
  // (no long double). Keeping XMM0-15 and MXCSR by hand costs about a
  // tenth of an fxsave and fxrstor (some 200 cycles), on every soft-TLB
  // miss.
  auto helper_stub = [&](Label label, uint64_t fn) {
    constexpr int kCallerSaved[] = {kRax, kRcx, kRdx, kRsi, kRdi, kR8, kR9, kR10, kR11};
    const int32_t xmm_save = static_cast<int32_t>(offsetof(BtContext, helper_xmm));
    a.align(AlignMode::kCode, 16);
    a.bind(label);
    a.pushfq();
    for (int h : kCallerSaved) {
      a.mov(CtxPtr(static_cast<int32_t>(offsetof(BtContext, call_save) + 8 * h), 8),
            x86::gpq(h));
    }
    save_xmm(xmm_save);
    a.stmxcsr(CtxPtr(offsetof(BtContext, helper_mxcsr), 4));
    a.cld();
    a.ldmxcsr(CtxPtr(offsetof(BtContext, host_mxcsr), 4));
    a.mov(CtxPtr(GprOffset(kRsp), 8), x86::gpq(kGuestRspHost));  // current for the helper
    a.mov(x86::rdi, CtxPtr(offsetof(BtContext, self), 8));
    // Host call frames (bt_context.h) leave RSP 8-byte aligned only.
    a.mov(CtxPtr(offsetof(BtContext, helper_rsp), 8), x86::rsp);
    a.and_(x86::rsp, -16);
    a.mov(x86::rax, fn);
    a.call(x86::rax);
    a.mov(x86::rsp, CtxPtr(offsetof(BtContext, helper_rsp), 8));
    a.mov(CtxPtr(offsetof(BtContext, slow_result), 8), x86::rax);
    load_xmm(xmm_save);
    a.ldmxcsr(CtxPtr(offsetof(BtContext, helper_mxcsr), 4));
    for (int h : kCallerSaved) {
      a.mov(x86::gpq(h),
            CtxPtr(static_cast<int32_t>(offsetof(BtContext, call_save) + 8 * h), 8));
    }
    a.popfq();
    a.ret();
  };
  // Compact exits: a block does `call stub; dq rip`. The stub takes the
  // return address (the dq) off the monitor stack, stores RIP from it and
  // leaves through the exit stub.
  auto exit_variant = [&](Label label, bool chain, bool set_reason) {
    a.align(AlignMode::kCode, 16);
    a.bind(label);
    a.mov(CtxPtr(offsetof(BtContext, rax_save), 8), x86::rax);
    a.pop(x86::rax);
    if (chain) a.mov(CtxPtr(offsetof(BtContext, chain_site), 8), x86::rax);
    a.mov(x86::rax, x86::qword_ptr(x86::rax));
    a.mov(CtxPtr(kRipOffset, 8), x86::rax);
    a.mov(x86::rax, CtxPtr(offsetof(BtContext, rax_save), 8));
    if (set_reason) {
      a.mov(CtxPtr(offsetof(BtContext, exit_reason), 4),
            static_cast<uint32_t>(BlockExit::kNext));
    }
    a.jmp(exit);
  };
  Label exit_next = a.newLabel(), exit_chain = a.newLabel(), exit_rip = a.newLabel();
  exit_variant(exit_next, false, true);
  exit_variant(exit_chain, true, true);
  exit_variant(exit_rip, false, false);

  Label mem_stub = a.newLabel(), commit_stub = a.newLabel();
  helper_stub(mem_stub, reinterpret_cast<uint64_t>(&BtMemSlowPath));
  helper_stub(commit_stub, reinterpret_cast<uint64_t>(&BtBounceCommit));

  // The ret-miss stubs, one per MmuIndex: a call's continuation found RCX
  // (the guest return RIP) is not its return address, or a host ret found
  // the entry sentinel. Guest RCX is in CpuState, the guest flags in
  // saved_flags, everything else in place: the jump cache, else the
  // runtime.
  Label ret_miss[2], underflow[2];
  const int32_t rcx_slot = GprOffset(kRcx), rdx_slot = GprOffset(kRdx);
  const int32_t target_slot = offsetof(BtContext, jump_target);
  auto restore_flags = [&] { EmitRestoreArith(a, offsetof(BtContext, saved_flags)); };
  for (unsigned m = 0; m < 2; ++m) {
    ret_miss[m] = a.newLabel();
    underflow[m] = a.newLabel();
    Label runtime = a.newLabel();
    const int32_t jc = static_cast<int32_t>(offsetof(BtContext, jump_cache) +
                                            m * kJumpCacheEntries * sizeof(JumpCacheEntry));
    a.align(AlignMode::kCode, 16);
    a.bind(underflow[m]);
    a.lea(x86::rsp, x86::ptr(x86::rsp, -8));  // the sentinel stays for the next one
    a.bind(ret_miss[m]);
    a.add(CtxPtr(offsetof(BtContext, ret_misses), 8), 1);  // the guest flags are saved
    a.mov(CtxPtr(rdx_slot, 8), x86::rdx);
    EmitJumpCacheSlot(a, x86::rcx, x86::rdx);
    a.cmp(x86::rcx, CtxPtr(x86::rdx, 0, jc, 8));
    a.jne(runtime);
    a.mov(x86::rdx, CtxPtr(x86::rdx, 0, jc + 8, 8));
    a.mov(CtxPtr(target_slot, 8), x86::rdx);
    restore_flags();
    a.mov(x86::rdx, CtxPtr(rdx_slot, 8));
    a.mov(x86::rcx, CtxPtr(rcx_slot, 8));
    a.jmp(CtxPtr(target_slot, 8));
    a.bind(runtime);
    a.mov(CtxPtr(kRipOffset, 8), x86::rcx);
    restore_flags();
    a.mov(x86::rdx, CtxPtr(rdx_slot, 8));
    a.mov(x86::rcx, CtxPtr(rcx_slot, 8));
    a.mov(CtxPtr(offsetof(BtContext, exit_reason), 4), static_cast<uint32_t>(BlockExit::kNext));
    a.jmp(exit);
  }

  size_t size = Place(code, region_, capacity_);
  BTVM_CHECK(size != 0);
  enter_ = reinterpret_cast<EnterFn>(region_);
  exit_stub_ = region_ + code.labelOffsetFromBase(exit);
  fault_exit_stub_ = region_ + code.labelOffsetFromBase(fault_exit);
  exit_next_ = region_ + code.labelOffsetFromBase(exit_next);
  exit_chain_ = region_ + code.labelOffsetFromBase(exit_chain);
  exit_rip_ = region_ + code.labelOffsetFromBase(exit_rip);
  mem_stub_ = region_ + code.labelOffsetFromBase(mem_stub);
  commit_stub_ = region_ + code.labelOffsetFromBase(commit_stub);
  for (unsigned m = 0; m < 2; ++m) {
    ret_miss_[m] = region_ + code.labelOffsetFromBase(ret_miss[m]);
    underflow_[m] = region_ + code.labelOffsetFromBase(underflow[m]);
  }
  blocks_start_ = region_ + ((size + 63) & ~size_t{63});
  next_ = blocks_start_;
}

namespace {
// The context this thread's GS base points at (nothing else in the
// process uses GS).
thread_local const BtContext* t_gs_context = nullptr;
// The context whose guest x87 state this thread's FPU holds, if any.
thread_local const BtContext* t_x87_context = nullptr;
}  // namespace

void CodeCache::Enter(BtContext* ctx, const Block& b) {
  if (t_gs_context != ctx) {
    BTVM_CHECK(syscall(SYS_arch_prctl, ARCH_SET_GS, reinterpret_cast<uintptr_t>(ctx)) == 0);
    t_gs_context = ctx;
  }
  // The FPU holds the guest's x87 state from the last entry unless the
  // last exit saved it in full (and restored the monitor's control word)
  // or the runtime changed it in the image since (an emulated fxrstor or
  // xrstor, a run of user code in the direct engine's child, a new
  // CpuState), or another context ran on this thread since. MXCSR (bytes
  // 24..31) is loaded anyway.
  const uint8_t* image = reinterpret_cast<const uint8_t*>(&ctx->cpu.xsave);
  uint8_t* held = ctx->x87_held;
  const bool changed = std::memcmp(image, held, 24) != 0 ||
                       std::memcmp(image + 32, held + 32, sizeof(ctx->x87_held) - 32) != 0;
  ctx->x87_reload = ctx->x87_saved || changed || t_x87_context != ctx;
  t_x87_context = ctx;
  if (ctx->x87_reload) std::memcpy(held, image, sizeof(ctx->x87_held));
  ctx->x87_saved = 0;
  // The sentinel of b's MmuIndex: an inline syscall or sysret, the only
  // changes of CPL in translated code, swaps in the other's.
  enter_(ctx, b.code, underflow_[b.key.mmu_index]);
}

EmitEnv CodeCache::EmitEnvFor(unsigned mmu_index) const {
  EmitEnv env;
  env.mmu_index = mmu_index;
  env.count_hits = count_tlb_hits_;
  env.exit_stub = reinterpret_cast<uint64_t>(exit_stub_);
  env.exit_next = reinterpret_cast<uint64_t>(exit_next_);
  env.exit_chain = reinterpret_cast<uint64_t>(exit_chain_);
  env.exit_rip = reinterpret_cast<uint64_t>(exit_rip_);
  env.mem_slow_path = reinterpret_cast<uint64_t>(mem_stub_);
  env.bounce_commit = reinterpret_cast<uint64_t>(commit_stub_);
  env.string_op = reinterpret_cast<uint64_t>(&BtStringOp);
  env.ret_miss = reinterpret_cast<uint64_t>(ret_miss_[mmu_index]);
  for (unsigned m = 0; m < 2; ++m) env.underflow[m] = reinterpret_cast<uint64_t>(underflow_[m]);
  return env;
}

std::unique_ptr<Block> CodeCache::NewBlock(const BlockKey& key) const {
  auto b = std::make_unique<Block>();
  b->key = key;
  return b;
}

Block* CodeCache::Install(std::unique_ptr<Block> block, CodeHolder& code) {
  size_t room = static_cast<size_t>(region_ + capacity_ - next_);
  if (code.baseAddress() != next_address()) return nullptr;
  size_t size = Place(code, next_, room);
  if (size == 0) return nullptr;
  Block* b = block.get();
  b->code = next_;
  b->code_size = static_cast<uint32_t>(size);
  next_ += (size + 15) & ~size_t{15};
  order_.push_back(std::move(block));
  if (!(b->key.flags & kBlockSingle)) {
    blocks_[b->key] = b;
    RecentSlot(b->key) = b;
    AddToPage(b->key.phys & ~uint64_t{0xfff}, b);
    if (b->spans_pages) AddToPage(b->phys2, b);
  }
  return b;
}

Block* CodeCache::InstallEmulated(const BlockKey& key, const DecodedInsn& insn) {
  auto block = NewBlock(key);
  Block* b = block.get();
  b->emulated = std::make_unique<DecodedInsn>(insn);
  b->guest_insns = 1;
  b->guest_size = insn.insn.length;
  uint64_t page = key.phys & ~uint64_t{0xfff};
  b->watch_lo = static_cast<uint32_t>(key.phys - page);
  b->watch_hi = static_cast<uint32_t>(std::min<uint64_t>(b->watch_lo + b->guest_size, 0x1000));
  emulated_.push_back(std::move(block));
  blocks_[key] = b;
  RecentSlot(key) = b;
  AddToPage(page, b);
  return b;
}

void CodeCache::AddToPage(uint64_t page, Block* b) {
  std::vector<Block*>& list = pages_[page];
  if (list.empty() && mmu_) mmu_->MarkCodePage(GuestPhys(page));
  list.push_back(b);
}

bool CodeCache::CanLink(const Block& from, uint32_t exit, const Block& to) {
  return from.valid && to.valid && from.code && to.code && !((from.key.flags | to.key.flags) & kBlockSingle) &&
         from.exits[exit].flags == (to.key.flags & kBlockPlainStack) &&
         !((from.key.flags ^ to.key.flags) & (kBlockCompat | kBlockGlobal)) &&
         from.key.mmu_index == to.key.mmu_index &&
         ((from.key.rip ^ to.key.rip) >> 12) == 0;
}

void CodeCache::Patch(Block* from, uint32_t exit, const uint8_t* dest) {
  uint8_t* jmp = from->code + from->exits[exit].jmp_offset;
  // Invariant: the emitter wrote a jmp rel32 (E9) or a jcc rel32 (0F 8x).
  unsigned len = jmp[0] == 0xe9 ? 5 : 6;
  BTVM_CHECK(jmp[0] == 0xe9 || (jmp[0] == 0x0f && (jmp[1] & 0xf0) == 0x80));
  int32_t rel32 = static_cast<int32_t>(dest - (jmp + len));
  std::memcpy(jmp + len - 4, &rel32, 4);
}

bool CodeCache::FindExit(uint64_t site, Block** block, uint32_t* exit) const {
  ExitFind& memo = exit_finds_[(site >> 3) & (kExitFinds - 1)];
  if (memo.site == site && memo.block) {
    *block = memo.block;
    *exit = memo.exit;
    return true;
  }
  const Block* b = FindByHostPc(site);
  if (!b) return false;
  uint32_t call_offset = static_cast<uint32_t>(site - reinterpret_cast<uint64_t>(b->code) - 5);
  for (uint32_t i = 0; i < b->exits.size(); ++i) {
    if (b->exits[i].stub_offset == call_offset) {
      *block = const_cast<Block*>(b);
      *exit = i;
      memo = {site, *block, i};
      return true;
    }
  }
  return false;
}

void CodeCache::Link(Block* from, uint32_t exit, Block* to) {
  Block::Exit& e = from->exits[exit];
  if (e.linked) return;
  Patch(from, exit, to->code + (e.forward ? to->unchecked_offset : 0));
  e.linked = to;
  to->incoming.emplace_back(from, exit);
  if (to->spans_pages) spanning_links_.push_back({from, exit, to});
}

// A block reaching into a second page is valid only while that page maps
// where it did when the block was found (the runtime checks at each
// lookup); a link into it bypasses the check, so TLB flushes, which are
// when the mapping may change, undo such links. They come back at the next
// lookup that finds the mapping unchanged.
void CodeCache::UnlinkSpanning(uint64_t second_vpn, bool all) {
  std::erase_if(spanning_links_, [&](const SpanningLink& l) {
    if (!all && (l.to->key.rip >> 12) + 1 != second_vpn) return false;
    Block::Exit& e = l.from->exits[l.exit];
    if (e.linked == l.to) {
      Patch(l.from, l.exit, l.from->code + e.stub_offset);
      e.linked = nullptr;
      auto& in = l.to->incoming;
      in.erase(std::remove(in.begin(), in.end(), std::make_pair(l.from, l.exit)), in.end());
    }
    return true;
  });
}

void CodeCache::RememberLookup(const Block& b) {
  if ((b.key.flags & (kBlockSingle | kBlockCompat | kBlockPlainStack)) || !b.code) return;
  if (b.key.mmu_index == kMmuKernel && !(b.key.flags & kBlockGlobal)) {
    ctx_->kernel_local_lookups = 1;
  }
  ctx_->FillLookup(b.key.mmu_index, b.key.rip, reinterpret_cast<uint64_t>(b.code));
}

void CodeCache::Invalidate(Block* b) {
  if (!b->valid) return;
  b->valid = false;
  auto it = blocks_.find(b->key);
  if (it != blocks_.end() && it->second == b) blocks_.erase(it);
  // Jumps into it go back to their stubs.
  for (auto [from, exit] : b->incoming) {
    if (from->exits[exit].linked == b) {
      Patch(from, exit, from->code + from->exits[exit].stub_offset);
      from->exits[exit].linked = nullptr;
    }
  }
  b->incoming.clear();
  // Its own links go too: the runtime may still reach its code through a
  // return-address-cache entry, which then exits to the runtime.
  for (uint32_t i = 0; i < b->exits.size(); ++i) {
    Block* to = b->exits[i].linked;
    if (!to) continue;
    auto& in = to->incoming;
    in.erase(std::remove(in.begin(), in.end(), std::make_pair(b, i)), in.end());
    Patch(b, i, b->code + b->exits[i].stub_offset);
    b->exits[i].linked = nullptr;
  }
  JumpCacheEntry& jc = ctx_->jump_cache[b->key.mmu_index][JumpCacheIndex(b->key.rip)];
  if (b->code && jc.code == reinterpret_cast<uint64_t>(b->code)) jc = {kNoRip, 0};
  for (uint64_t page : {b->key.phys & ~uint64_t{0xfff}, b->phys2}) {
    if (page == b->phys2 && !b->spans_pages) continue;
    auto p = pages_.find(page);
    if (p == pages_.end()) continue;
    auto& list = p->second;
    list.erase(std::remove(list.begin(), list.end(), b), list.end());
    if (list.empty()) {
      pages_.erase(p);
      if (mmu_) mmu_->UnmarkCodePage(GuestPhys(page));
    }
  }
}

namespace {
// Whether block b's guest bytes overlap [phys, phys+size) within `page`.
bool BlockOverlaps(const Block& b, uint64_t page, uint64_t phys, uint64_t size) {
  uint64_t first_page = b.key.phys & ~uint64_t{0xfff};
  uint64_t start, end;
  if (page == first_page) {
    start = first_page + b.watch_lo;
    end = first_page + b.watch_hi;
  } else {  // the block's overhang into its second page
    start = b.phys2;
    end = b.phys2 + ((b.key.phys + b.guest_size) & 0xfff);
  }
  return phys < end && start < phys + size;
}
}  // namespace

bool CodeCache::Overlaps(uint64_t phys, uint64_t size) const {
  for (uint64_t page = phys & ~uint64_t{0xfff}; page < phys + size; page += 0x1000) {
    auto p = pages_.find(page);
    if (p == pages_.end()) continue;
    for (const Block* b : p->second) {
      if (BlockOverlaps(*b, page, phys, size)) return true;
    }
  }
  return false;
}

void CodeCache::InvalidateRange(uint64_t phys, uint64_t size) {
  for (uint64_t page = phys & ~uint64_t{0xfff}; page < phys + size; page += 0x1000) {
    auto p = pages_.find(page);
    if (p == pages_.end()) continue;
    std::vector<Block*> hit;
    for (Block* b : p->second) {
      if (BlockOverlaps(*b, page, phys, size)) hit.push_back(b);
    }
    for (Block* b : hit) Invalidate(b);
  }
}

uint64_t CodeCache::executed_insns() const {
  uint64_t n = flushed_insns_;
  for (const auto& b : order_) n += b->executions * b->guest_insns;
  return n;
}

std::vector<const Block*> CodeCache::HottestBlocks(size_t n) const {
  std::vector<const Block*> all;
  for (const auto& b : order_) {
    if (b->executions) all.push_back(b.get());
  }
  auto weight = [](const Block* b) { return b->executions * b->guest_insns; };
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + n, all.end(),
                    [&](const Block* x, const Block* y) { return weight(x) > weight(y); });
  all.resize(n);
  return all;
}

void CodeCache::Flush() {
  ++flushes_;
  flushed_insns_ = executed_insns();
  blocks_.clear();
  pages_.clear();
  order_.clear();
  emulated_.clear();
  next_ = blocks_start_;
  if (mmu_) mmu_->UnmarkAllCodePages();
  ctx_->ClearLookups();
  spanning_links_.clear();
  std::fill(recent_.begin(), recent_.end(), nullptr);
  std::fill(exit_finds_.begin(), exit_finds_.end(), ExitFind{});
}

const Block* CodeCache::FindByHostPc(uint64_t pc) const {
  auto it = std::upper_bound(order_.begin(), order_.end(), pc,
                             [](uint64_t v, const std::unique_ptr<Block>& b) {
                               return v < reinterpret_cast<uint64_t>(b->code);
                             });
  if (it == order_.begin()) return nullptr;
  const Block* b = (--it)->get();
  return pc < reinterpret_cast<uint64_t>(b->code) + b->code_size ? b : nullptr;
}

void CodeCache::OnTlbFlush(bool keep_global) {
  ctx_->ClearLookups(keep_global);
  UnlinkSpanning(0, true);
}

void CodeCache::OnTlbFlushPage(GuestVirt page) {
  // Lookups that go to code in that page, or in the page before it (a
  // block there may reach into this one).
  const uint64_t vpn = page.value >> 12;
  for (unsigned table = 0; table < 2; ++table) {
    ctx_->ForEachLookup(table, [vpn](JumpCacheEntry& e) {
      if ((e.rip >> 12) == vpn || (e.rip >> 12) + 1 == vpn) e = {kNoRip, 0};
    });
  }
  UnlinkSpanning(vpn, false);
}

void CodeCache::OnCodeWrite(GuestPhys addr, uint64_t size) { InvalidateRange(addr.value, size); }

}  // namespace btvm
