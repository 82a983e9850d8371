#pragma once
// BlockEmitter: turns decoded guest instructions into host code with AsmJit.
// The emitters are split by class: emit_ident.cpp (ordinary instructions,
// re-emitted in their own form), emit_memory.cpp (the inline soft-TLB probe
// and its slow path), emit_stack.cpp (push/pop/leave), emit_branch.cpp
// (block exits, jumps, calls, returns).

#include <asmjit/x86.h>
#include <Zydis/Zydis.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "translator/bt_context.h"
#include "translator/context_operand.h"
#include "translator/decoder.h"

namespace btvm {

// A GPR as an instruction names it: index in encoding order, size in bytes,
// and whether it is one of AH, CH, DH, BH.
struct GprRef {
  int index = -1;
  int size = 0;
  bool high8 = false;
};
bool DecodeGpr(ZydisRegister r, GprRef* out);
ZydisRegister OverrideSegment(const DecodedInsn& d);
ZydisRegister EncodeGpr(int index, int size);

// Addresses of the runtime pieces translated code jumps to or calls.
struct Block;

struct EmitEnv {
  unsigned mmu_index = 0;       // which soft TLB (kernel or user) this block probes
  Block* block = nullptr;       // the block being emitted (its chain stubs name it)
  uint64_t block_rip = 0;       // its first guest instruction
  bool single = false;          // a one-instruction block: every exit returns to the runtime
  // Compatibility-mode code (emit_compat.cpp): 32-bit stack and EIP,
  // segment bases on every memory operand, no jump cache or host call/ret.
  bool compat = false;
  bool count_hits = false;      // count inline soft-TLB hits in BtContext::tlb_hits
  // Arithmetic flags the code at a RIP in the block's page may read before
  // writing them (block_builder.cpp); null: all of them.
  std::function<uint32_t(uint64_t)> flags_live_at;
  uint64_t exit_stub = 0;       // stores guest registers and returns to the runtime
  // Compact exits: `call stub; dq rip` (code_cache.cpp).
  uint64_t exit_next = 0;       // RIP = rip, exit_reason = kNext
  uint64_t exit_chain = 0;      // the same, and chain_site = the dq: patch me
  uint64_t exit_rip = 0;        // RIP = rip, exit_reason as a helper set it
  // Stubs (code_cache.cpp) that call BtMemSlowPath and BtBounceCommit
  // keeping all registers, flags and FPU state; result in slow_result.
  uint64_t mem_slow_path = 0;
  uint64_t bounce_commit = 0;
  uint64_t string_op = 0;       // uint64_t (*)(BtContext*): slow_info in (emit_string.cpp)
  // Where a call's continuation goes when the host return that reached it
  // does not match the guest's (code_cache.cpp): the jump cache, else the
  // runtime, for this block's MmuIndex.
  uint64_t ret_miss = 0;
  // The entry sentinels (code_cache.cpp), by MmuIndex: an inline syscall
  // or sysret puts the other index's in place of its own.
  uint64_t underflow[2] = {};
};

// Access info passed to the slow path helper: size in bits 0..7, read and
// write in bits 8 and 9.
inline constexpr uint64_t kAccessRead = 1u << 8, kAccessWrite = 1u << 9;
// The largest memory operand an ident instruction may have (fnsave/frstor:
// 108 bytes); it must fit the size field and the bounce buffer.
inline constexpr unsigned kMaxAccessSize = 128;
// The access is a stack-segment reference (RSP/RBP-based, or push/pop):
// a non-canonical address raises #SS(0), not #GP(0) (SDM Vol. 3 §6.15).
inline constexpr uint64_t kAccessStack = 1u << 10;

// Restores the guest arithmetic flags SaveArith kept at `slot`, keeping
// every register (emit_memory.cpp).
void EmitRestoreArith(asmjit::x86::Assembler& a, int32_t slot);
// out = the byte offset of the jump-cache entry of the guest RIP in `rip`
// (JumpCacheIndex), within one MmuIndex's table; clobbers flags.
void EmitJumpCacheSlot(asmjit::x86::Assembler& a, const asmjit::x86::Gp& rip,
                       const asmjit::x86::Gp& out);

class BlockEmitter {
 public:
  BlockEmitter(asmjit::x86::Assembler& a, const EmitEnv& env) : a_(a), env_(env) {}

  // Each returns false (with why()) when the instruction cannot be
  // translated yet; the block then ends before it.
  // `flags_live` = guest arithmetic flags live before the instruction.
  bool EmitIdent(const DecodedInsn& d, uint32_t flags_live);
  bool EmitStack(const DecodedInsn& d, uint32_t flags_live);
  // push m64 (64-bit mode): the source loaded, then pushed (emit_stack.cpp).
  bool EmitPushMemory(const DecodedInsn& d, uint32_t flags_live);
  bool EmitBranch(const DecodedInsn& d, uint32_t flags_live);
  bool EmitString(const DecodedInsn& d);
  bool EmitXlat(const DecodedInsn& d, uint32_t flags_live);
  bool EmitMaskMove(const DecodedInsn& d, uint32_t flags_live);
  // cli, sti, pushfq (InsnClass::kSystem, emit_system.cpp); `live_after` =
  // flags live after the instruction. sti ends the block.
  bool EmitSystem(const DecodedInsn& d, uint32_t live_after);
  bool EmitPushf(const DecodedInsn& d, uint32_t live_after);
  // syscall from 64-bit user code and sysretq from 64-bit supervisor code
  // (emit_syscall.cpp): the change of privilege in CpuState, then on into
  // the code at the target through the jump cache. Both end the block.
  bool EmitSyscall(const DecodedInsn& d);
  bool EmitSysret(const DecodedInsn& d);
  // Compatibility mode (emit_compat.cpp): push/pop/leave on the 32-bit
  // stack, and near call/ret/indirect jmp with a 32-bit EIP.
  bool EmitCompatStack(const DecodedInsn& d, uint32_t flags_live);
  bool EmitCompatBranch(const DecodedInsn& d, uint32_t flags_live, uint64_t target);

  // Leaves the block: RIP = rip, exit reason as given.
  void EmitExit(uint64_t rip, BlockExit reason);
  // Leaves the block for a guest RIP known now: a patchable jump when the
  // target is in the block's page (chaining), else an inline jump-cache
  // probe, else the runtime.
  // With `jcc`, only when that condition holds (else falls through).
  // `target_flags`: the key flags the target block must have
  // (kBlockPlainStack for a stack window's miss; Block::Exit::flags).
  // A patchable jump forward (to a RIP above the current instruction's)
  // is linked past the target's entry check, unless `checked` (calls).
  void EmitJumpTo(uint64_t target, asmjit::InstId jcc = asmjit::x86::Inst::kIdNone,
                  uint32_t target_flags = 0, bool checked = false);
  // Before the block's first instruction that may change the x87 state:
  // the exit saves it in full (BtContext::x87_dirty). No register or flag
  // changes.
  void MarkX87Dirty() { a_.mov(CtxPtr(offsetof(BtContext, x87_dirty), 1), 1); }
  // At block entry: return to the runtime if it asked (exit_request).
  // Forward chained jumps enter past it (Block::unchecked_offset): a chain
  // of them cannot loop, as RIP grows along it. Everything else that can
  // close a loop comes through it: backward jumps, calls, jump-cache
  // lookups (cross-page jumps, indirect branches, missed returns) and the
  // runtime. Returns that hit their call's continuation do not, but each
  // uses up a host frame that only a call, which does, makes.
  void EmitEntryCheck(bool flags_live);
  // Emits the out-of-line code collected while emitting the block (slow
  // paths, chain stubs).
  void EmitOutOfLine();

  // A direct exit, by labels (BuildBlock turns them into Block::Exit).
  struct ExitLabels {
    asmjit::Label jmp, stub;
    uint64_t target;
    uint32_t flags = 0;  // Block::Exit::flags
    bool forward = false;  // Block::Exit::forward
  };
  const std::vector<ExitLabels>& exits() const { return exits_; }
  // Host registers whose guest values sat in CpuState while the last
  // emitted instruction's own code ran (for the host-fault side table).
  uint16_t last_scratch() const { return last_scratch_; }
  // Whether the guest arithmetic flags sat in saved_flags (not in host
  // RFLAGS) while it ran.
  bool last_flags_saved() const { return last_flags_saved_; }
  // The guest exception (kGP or kSS, with error code 0) that a host fault
  // below one page in the last emitted instruction's own code stands for:
  // its probe let a non-canonical address through to a null host page (the
  // soft TLB's empty stack copy, an empty loop page pair); 0 if none.
  uint8_t last_null_page_fault() const { return last_null_page_fault_; }

  // State carried from one instruction to the next inside a block. At a
  // block boundary every guest GPR is in its host register and the guest
  // arithmetic flags are in host RFLAGS; inside a block, host registers
  // taken as scratch stay taken (their guest values in CpuState) until an
  // instruction names them, and flags saved around a soft-TLB probe stay in
  // saved_flags until an instruction reads or writes flags.
  //
  // Before each instruction (at `rip`): `flags_live` = flags live before
  // it (saved flags that are dead are forgotten); `lookahead` = the host
  // registers the next few instructions name (scratch is taken elsewhere if
  // it can). Clears last_scratch() and last_flags_saved().
  void BeginInsn(uint64_t rip, uint32_t flags_live, uint16_t lookahead);
  // Back to the block-boundary state (before exits).
  void Materialize();
  // The same on a path out of the block emitted out of line, from state
  // captured when the path was planned: the arithmetic flags back from
  // saved_flags if `flags_saved`, the guest values of `regs` reloaded.
  void RestoreBoundary(bool flags_saved, uint16_t regs);
  // A block whose last instruction branches back to its start (a loop):
  // `regs` are taken as scratch once, before the loop head, and stay taken
  // around the back edge; the exit_request check moves to the loop head.
  void EnterLoop(uint16_t regs, bool flags_live);
  // With count_hits: one more execution of the block (Block::executions),
  // keeping every register and flag.
  void EmitCountExecution();
  // The scratch registers taken when the block's back edge was reached
  // (what EnterLoop should take on a second translation).
  uint16_t back_edge_borrowed() const { return back_edge_borrowed_; }

  // Page registers of a loop: each memory instruction of a loop body may
  // keep the page of its last access in two registers of its own across
  // iterations, NT = minus the page's guest address and HB = its host
  // address. Its probe is then `s = address + NT; cmp s, 4096 - size; ja
  // miss; access [s + HB]`, with no load from the soft TLB. A miss probes
  // the address's own soft-TLB slot and refills the pair from a hit; else
  // it empties the pair and takes the slow path. The empty pair (NT = 2^63,
  // HB = 0) lets only a non-canonical address through, which must fault
  // anyway: the access then faults on the host below one page, which the
  // host-fault handler turns into the guest's #GP(0) or #SS(0)
  // (last_null_page_fault). A pair may outlive its soft-TLB entry (a
  // hardware TLB may keep a translation past an eviction too), but not a
  // TLB flush: flushes happen in the runtime, and the way back from there
  // into the loop goes through EnterLoop, which empties the pairs.
  //
  // On the first translation of a loop, PlanLoopPages(names) reserves the
  // pairs (`names`: registers any instruction of the block names);
  // loop_pages() then says which instruction (by RIP) got which pair;
  // UseLoopPages hands that to the second translation.
  struct LoopPage {
    uint64_t rip;
    int nt, hb;
    uint16_t regs() const { return static_cast<uint16_t>((1u << nt) | (1u << hb)); }
  };
  void PlanLoopPages(uint16_t names) {
    plan_pages_ = true;
    block_names_ = names;
  }
  const std::vector<LoopPage>& loop_pages() const { return loop_pages_; }
  void UseLoopPages(const std::vector<LoopPage>& pages) {
    loop_pages_ = pages;
    for (const LoopPage& lp : pages) sticky_ |= lp.regs();
  }
  // The stack window (emit_stack.cpp). A block whose stack accesses lie at
  // offsets from its entry RSP known at translation time probes the soft
  // TLB once, at entry, for the whole range [RSP + lo, RSP + lo + size);
  // each access is then a plain load or store at a fixed offset from the
  // host pointer kept in a register no instruction of the block names
  // (`names`). A miss (another page, no permission, or a range across two
  // pages) leaves for the same block translated without a window
  // (kBlockPlainStack), through a direct exit chained like any other.
  // False: no register to keep the window in (the block goes without).
  bool EnterStackWindow(int32_t lo, uint32_t size, bool write, bool flags_live, uint16_t names);
  // Before each instruction: the offset of its stack access in the window,
  // or -1 if it is not a window access.
  void SetWindowAccess(int32_t offset) { window_access_ = offset; }

  // Copies of instructions emitted out of line (a slow path runs the
  // instruction on the pointer the MMU gave): they can fault on the host
  // too, so the side table maps them as well.
  struct OutOfLineInsn {
    asmjit::Label label;
    uint16_t scratch;
    bool flags_saved;
    uint64_t rip;
  };
  const std::vector<OutOfLineInsn>& out_of_line_insns() const { return out_of_line_insns_; }

  const std::string& why() const { return why_; }

 private:
  // Which host registers one instruction uses, and for what.
  struct Plan {
    uint16_t used = 0;     // host registers referenced by the instruction
    bool needs_low = false;  // uses AH..BH: operands must avoid REX registers
    int rename[16];        // guest index -> host register (only rsp, r15 renamed)
    // Host registers whose guest value is in CpuState while the instruction
    // runs: scratch taken by earlier instructions and by this one.
    uint16_t spilled = 0;
    Plan() {
      for (int i = 0; i < 16; ++i) rename[i] = i;
    }
  };
  struct SlowPath {
    asmjit::Label entry, hit, resume, fault;
    int s = -1, t = -1;
    bool index_ready = false;  // t held a slot offset computed earlier (maybe another page's)
    bool stack = false;        // probed the stack copy (EmitAccess)
    int nt = -1, hb = -1;      // probed a loop page pair (EmitAccess)
    uint64_t info = 0;
    bool flags_saved = false;
    bool restore_after = true;  // restore them before the body (else the caller does, later)
    uint16_t spilled = 0;
    uint64_t rip = 0;
    std::function<void()> body;
  };

  bool Fail(std::string why);
  bool PlanInsn(const DecodedInsn& d, Plan* p);
  // Once p->used holds the instruction's own registers: gives back those of
  // them that earlier instructions took as scratch, and starts p->spilled
  // with the ones still taken.
  void TakeRegisters(Plan* p);
  // Notes the registers of a memory operand's address in `p`: RSP and R15
  // to be renamed (rename = -1, assigned by the caller), the others used.
  static void NoteAddressRegisters(const ZydisDecodedOperand& op, Plan* p);
  // A host register for scratch: one already taken if possible, else one
  // the next instructions do not name.
  int PickScratch(Plan* p, bool low_only);
  // Stores the guest values of p's newly taken scratch registers.
  void SpillPlan(const Plan& p);
  // Renames guest RSP for the instruction: into its host register
  // (kGuestRspHost), which holds it everywhere in translated code.
  void RenameRsp(Plan* p);
  // Saves the arithmetic flags (lahf/seto) if they are live and not saved
  // yet; returns whether they are saved.
  bool SaveFlagsIfLive(bool live);
  // Restores saved flags (an instruction is about to read or write them).
  void RestoreSavedFlags();
  void Spill(int host);
  void Reload(int host);
  void LoadRenamed(const Plan& p);
  void StoreRenamed(const DecodedInsn& d, const Plan& p);
  void ReloadSpilled(const Plan& p);

  // t = the byte offset of the soft-TLB entry for the guest address in s.
  void SlotOffset(int s, int t);
  // Offsets from r15, to add to an entry offset, of the block's soft TLB's
  // tag for reads or writes and of its host_page.
  int32_t TlbTagOffset(bool write) const;
  int32_t TlbHostOffset() const;
  // Computes the effective address of memory operand `op` into host `s`,
  // plus host register `plus` if given (a loop page's NT).
  void EmitEffectiveAddress(const DecodedInsn& d, const ZydisDecodedOperand& op, const Plan& p,
                            int s, int plus = -1);
  // Probes the soft TLB for [s, s+size) and leaves the host pointer in s;
  // `body` then does the access through [s]. On a fault the block exits with
  // RIP = d.rip and all guest state as before the instruction.
  // `restore_flags`: false when the caller restores the saved flags itself
  // later (they are still restored on the fault path).
  // Flags saved before the probe (SaveFlagsIfLive) are restored after it
  // when `restore_flags`, else they stay saved (they are restored on the
  // fault path either way).
  // `index_ready`: t already holds the TLB slot offset of an earlier
  // access (a loop's last, or an inline pushfq's); a miss recomputes it for
  // s before the slow path.
  // `stack`: an access at the guest stack, which probes the soft TLB's
  // stack copy (SoftTlb::stack) first; t is not used (may be -1).
  // `page`: a loop's page pair (see LoopPage) for this instruction; s
  // holds the address plus NT, `body` accesses [s + HB] (it gets HB = 0 on
  // the slow path), and t is not used.
  void EmitAccess(const DecodedInsn& d, const Plan& p, int s, int t, unsigned size, bool read,
                  bool write, std::function<void()> body, bool restore_flags,
                  bool index_ready = false, bool stack = false, const LoopPage* page = nullptr);
  // Offsets from GS of the stack copy's tag (reads or writes) and host page.
  int32_t StackTagOffset(bool write) const;
  int32_t StackHostOffset() const;
  // Out of line, after a miss in the stack copy, with s = the guest
  // address of a `size`-byte access: probes the address's own soft-TLB
  // slot; on a hit copies that entry into the stack copy and jumps to
  // `hit` with s = the host pointer; else falls through with s = the guest
  // address. Keeps every other register.
  void EmitStackRefill(int s, unsigned size, bool write, asmjit::Label hit);
  // Out of line, after a miss in a loop page pair, with s = the guest
  // address of a `size`-byte access plus NT: probes the address's own
  // soft-TLB slot; on a hit refills the pair and jumps to `hit` with s =
  // the offset in the page; else empties the pair and falls through with
  // s = the guest address. Keeps every other register.
  void EmitLoopPageRefill(int s, int nt, int hb, unsigned size, bool write, asmjit::Label hit);
  // The empty pair: NT = 2^63, HB = 0 (flags untouched).
  void EmitEmptyLoopPage(int nt, int hb);
  // Full flags (DF too) with pushfq/popfq: around helper calls.
  // s += the base of FS or GS (other segments have none in 64-bit mode).
  void AddSegmentBase(ZydisRegister segment, int s);
  // Compatibility mode: s = (s + the segment's base) mod 2^32, for every
  // segment register (emit_compat.cpp).
  void AddCompatSegmentBase(ZydisRegister segment, int s);
  // s = SS.base + (ESP + delta) mod 2^32, mod 2^32.
  void CompatStackAddress(int s, int32_t delta);
  // ESP += delta, mod 2^32 and zero-extended, flags untouched.
  void AdjustGuestEsp(int32_t delta);
  void SaveFlags(int32_t slot);
  void RestoreFlags(int32_t slot);
  // Arithmetic flags only, with lahf/seto and sahf (much cheaper than
  // popfq): around the inline probes.
  void SaveArith(int32_t slot);
  void RestoreArith(int32_t slot);
  // Jumps to the guest RIP in host register s through the jump cache, else
  // returns to the runtime. Flags were saved in saved_flags if
  // `flags_saved`; `p`'s spilled registers are reloaded on every path.
  void EmitIndirectJump(const Plan& p, int s, int t, bool flags_saved);
  // A call's continuation: where the host ret of the guest's ret lands
  // (emit_branch.cpp).
  void EmitContinuation(uint64_t ret);
  // Leaves for the runtime with RIP = the guest address in host register
  // s: restores saved flags, reloads p's spilled registers.
  void EmitRuntimeExit(const Plan& p, int s, bool flags_saved);
  void EmitLookupConst(uint64_t target);
  void EmitSlowPaths();
  void CallHelper(uint64_t fn);

  // Re-encodes an instruction with registers renamed and its memory operand
  // replaced by [s] (s < 0: no memory operand), or [s + index] if given.
  bool Reencode(const DecodedInsn& d, const Plan& p, int s, std::vector<uint8_t>* out,
                int index = -1);

  void StoreImm64(int32_t offset, uint64_t value);
  void EmitCompactExit(uint64_t stub, uint64_t rip);

  asmjit::x86::Assembler& a_;
  EmitEnv env_;
  std::vector<SlowPath> slow_paths_;
  std::vector<std::function<void()>> out_of_line_;
  std::vector<ExitLabels> exits_;
  std::vector<OutOfLineInsn> out_of_line_insns_;
  uint16_t last_scratch_ = 0;
  bool last_flags_saved_ = false;
  uint8_t last_null_page_fault_ = 0;
  uint16_t borrowed_ = 0;      // host registers taken as scratch, guest values in CpuState
  bool flags_saved_ = false;   // guest arithmetic flags in saved_flags, not host RFLAGS
  uint16_t lookahead_ = 0;     // host registers the next instructions name
  uint64_t insn_rip_ = 0;      // the instruction being emitted
  // A scratch register holding the soft-TLB slot offset of the page an
  // inline pushfq last stored to, or -1: the next one probes that slot
  // first (push, pop, call and ret probe SoftTlb::stack instead).
  int stack_slot_in_ = -1;
  // The stack window's host pointer (a scratch register, sticky), or -1
  // once a Materialize has given it back; the current instruction's offset
  // in it, or -1.
  int window_reg_ = -1;
  int32_t window_access_ = -1;
  // The memory operand of the current instruction's window access, if it
  // has one and the window is still there.
  // Sets last_null_page_fault.
  bool WindowMem(unsigned size, asmjit::x86::Mem* out);
  uint16_t loop_regs_ = 0;           // EnterLoop's registers
  bool plan_pages_ = false;          // first translation of a loop: reserve page pairs
  uint16_t block_names_ = 0;
  uint16_t sticky_ = 0;              // page pairs, the window: never picked as scratch
  bool pages_valid_ = true;          // no Materialize since the loop head (pairs hold pages)
  std::vector<LoopPage> loop_pages_;
  asmjit::Label loop_head_;
  uint16_t back_edge_borrowed_ = 0;
  // Branches back to the loop head (jcc or, with kIdNone, jmp): the
  // scratch registers taken now are made EnterLoop's first.
  void EmitBackEdge(asmjit::InstId jcc);
  std::string why_;
};

}  // namespace btvm
