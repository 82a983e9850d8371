#include "translator/block_builder.h"

#include <asmjit/x86.h>

#include "translator/emitter.h"

namespace btvm {

namespace {

constexpr uint32_t kArithFlags = ZYDIS_CPUFLAG_CF | ZYDIS_CPUFLAG_PF | ZYDIS_CPUFLAG_AF |
                                 ZYDIS_CPUFLAG_ZF | ZYDIS_CPUFLAG_SF | ZYDIS_CPUFLAG_OF;

uint32_t FlagsRead(const DecodedInsn& d) {
  return d.insn.cpu_flags ? (d.insn.cpu_flags->tested & kArithFlags) : 0;
}
uint32_t FlagsWritten(const DecodedInsn& d) {
  if (!d.insn.cpu_flags) return 0;
  const auto* f = d.insn.cpu_flags;
  return (f->modified | f->set_0 | f->set_1 | f->undefined) & kArithFlags;
}

}  // namespace

BuildResult BuildBlock(CodeCache& cache, const BlockKey& key, const FetchFn& fetch,
                       const PhysFn& phys_of) {
  BuildResult r;
  const uint64_t rip = key.rip;
  const bool single = key.flags & kBlockSingle;
  const unsigned max_insns = single ? 1 : kMaxBlockInsns;
  Decoder decoder;
  std::vector<DecodedInsn> insns;
  uint64_t page_end = (rip & kPageMask) + kPageSize;
  uint64_t pc = rip;
  bool ended = false;
  while (!ended && insns.size() < max_insns && pc < page_end) {
    uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
    GuestException fault;
    size_t n = fetch(pc, buf, sizeof(buf), &fault);
    DecodedInsn d;
    if (!decoder.Decode(buf, n, pc, &d)) {
      if (!insns.empty()) break;  // let the runtime meet it as a block of its own
      if (n < sizeof(buf)) {
        // Undecodable with the bytes we could read: the missing bytes fault
        // first, since the instruction may need them (fetch precedes #UD).
        r.kind = BuildResult::kFault;
        r.fault = fault;
      } else {
        r.kind = BuildResult::kUndefined;
      }
      return r;
    }
    if (d.cls == InsnClass::kRuntime) {
      if (insns.empty()) {  // the runtime emulates it; no block
        r.kind = BuildResult::kEmulate;
        return r;
      }
      break;
    }
    // An instruction reaching into the next page ends the block before it,
    // unless it is the first: such a block depends on two pages.
    if (d.NextRip() > page_end && !insns.empty()) break;
    ended = d.cls == InsnClass::kBranch;
    pc = d.NextRip();
    insns.push_back(d);
  }

  // Flag liveness, backwards. Unknown successors: all flags live at the end.
  std::vector<uint32_t> live_in(insns.size());
  uint32_t live = kArithFlags;
  for (size_t i = insns.size(); i-- > 0;) {
    live = (live & ~FlagsWritten(insns[i])) | FlagsRead(insns[i]);
    live_in[i] = live;
  }

  std::unique_ptr<Block> block = cache.NewBlock(key);
  asmjit::CodeHolder code;
  code.init(cache.environment(), cache.next_address());
  asmjit::x86::Assembler a(&code);
  EmitEnv env = cache.EmitEnvFor(key.mmu_index);
  env.block = block.get();
  env.block_rip = rip;
  env.single = single;
  BlockEmitter e(a, env);
  if (!single) e.EmitEntryCheck(live_in.empty() ? true : live_in[0] != 0);
  struct InsnLabel {
    asmjit::Label label;
    uint16_t scratch;
    uint64_t rip;
  };
  std::vector<InsnLabel> records;
  size_t emitted = 0;
  for (size_t i = 0; i < insns.size(); ++i) {
    const DecodedInsn& d = insns[i];
    InsnLabel rec{a.newLabel(), 0xffff, d.rip};
    a.bind(rec.label);
    // Flags the probe must keep: those live before this instruction.
    uint32_t keep = live_in[i];
    bool ok = true;
    switch (d.cls) {
      case InsnClass::kIdent:
        ok = e.EmitIdent(d, keep);
        rec.scratch = e.last_scratch();
        break;
      case InsnClass::kNop: break;
      case InsnClass::kStack: ok = e.EmitStack(d, keep); break;
      case InsnClass::kString: ok = e.EmitString(d); break;
      case InsnClass::kBranch: ok = e.EmitBranch(d, keep); break;
      case InsnClass::kRuntime: ok = false; break;
    }
    if (!ok) {
      if (emitted == 0) {
        r.kind = BuildResult::kUnsupported;
        r.message = e.why();
        return r;
      }
      // End the block before it; it will start a block of its own and be
      // reported there.
      e.EmitExit(d.rip, BlockExit::kNext);
      pc = d.rip;
      break;
    }
    records.push_back(rec);
    ++emitted;
    if (d.cls == InsnClass::kBranch) break;
  }
  if (emitted == insns.size() && (insns.empty() || insns.back().cls != InsnClass::kBranch)) {
    e.EmitJumpTo(pc);
  }
  e.EmitOutOfLine();

  block->guest_insns = static_cast<uint32_t>(emitted);
  block->guest_size = static_cast<uint32_t>(pc - rip);
  if (pc > page_end) {
    block->spans_pages = true;
    block->phys2 = phys_of(page_end);
  }
  // Offsets are final once the cache has placed the code.
  Block* b = block.get();
  if (!cache.Install(std::move(block), code)) {
    r.kind = BuildResult::kCacheFull;
    return r;
  }
  for (const auto& x : e.exits()) {
    b->exits.push_back({static_cast<uint32_t>(code.labelOffsetFromBase(x.jmp)),
                        static_cast<uint32_t>(code.labelOffsetFromBase(x.stub)), x.target,
                        nullptr});
  }
  for (const InsnLabel& rec : records) {
    b->insns.push_back({static_cast<uint32_t>(code.labelOffsetFromBase(rec.label)), rec.scratch,
                        0, rec.rip});
  }
  r.block = b;
  r.guest_insns = static_cast<unsigned>(emitted);
  r.host_bytes = b->code_size;
  return r;
}

}  // namespace btvm
