#include "runtime/trace.h"

#include <Zydis/Zydis.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/format.h"

namespace btvm {
namespace {

bool ParseNumber(const std::string& text, uint64_t* value) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *value = std::strtoull(text.c_str(), &end, 0);
  return errno == 0 && end && *end == '\0';
}

std::string Bytes(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, "%s%02x", i ? " " : "", p[i]);
    s += b;
  }
  return s;
}

std::string Format(const ZydisDecodedInstruction& insn, const ZydisDecodedOperand* ops,
                   uint64_t address) {
  static const ZydisFormatter formatter = [] {
    ZydisFormatter f;
    ZydisFormatterInit(&f, ZYDIS_FORMATTER_STYLE_INTEL);
    return f;
  }();
  char text[256];
  if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&formatter, &insn, ops,
                                                    insn.operand_count_visible, text,
                                                    sizeof text, address, nullptr))) {
    return "(?)";
  }
  return text;
}

bool HasMemoryAccess(const DecodedInsn& d) {
  for (unsigned i = 0; i < d.insn.operand_count_visible; ++i) {
    const ZydisDecodedOperand& op = d.ops[i];
    if (op.type == ZYDIS_OPERAND_TYPE_MEMORY && op.mem.type == ZYDIS_MEMOP_TYPE_MEM) return true;
  }
  return false;
}

bool IndirectBranch(const DecodedInsn& d) {
  return d.insn.operand_count_visible > 0 && d.ops[0].type != ZYDIS_OPERAND_TYPE_IMMEDIATE;
}

// What a call or jmp into the cache's shared code goes to, by name; a
// compact exit (`call stub; dq rip`) has its guest RIP after the call.
const char* TrampolineName(const EmitEnv& env, uint64_t target, bool* compact) {
  *compact = target == env.exit_next || target == env.exit_chain || target == env.exit_rip;
  if (target == env.exit_next) return "exit to the runtime: next block at the RIP below";
  if (target == env.exit_chain) return "exit to the runtime, then chained: target RIP below";
  if (target == env.exit_rip) return "exit to the runtime after a helper, at the RIP below";
  if (target == env.exit_stub) return "exit to the runtime";
  if (target == env.mem_slow_path) return "soft-TLB miss: the MMU's slow path";
  if (target == env.bounce_commit) return "page-crossing or MMIO store: write back";
  if (target == env.string_op) return "string helper";
  if (target == env.ret_miss) return "return miss: jump cache, else the runtime";
  return nullptr;
}

// Host code [from, to) disassembled, one line each, with `kind` first;
// calls and jumps into the shared code named, compact exits' RIPs shown.
void Disassemble(std::FILE* out, const char* kind, const EmitEnv& env, const uint8_t* from,
                 const uint8_t* to) {
  static const ZydisDecoder decoder = [] {
    ZydisDecoder d;
    ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    return d;
  }();
  while (from < to) {
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    const uint64_t at = reinterpret_cast<uint64_t>(from);
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, from, static_cast<size_t>(to - from),
                                             &insn, ops))) {
      std::fprintf(out, "    %s  %s  (bytes %s)\n", kind, Hex(at).c_str(),
                   Bytes(from, std::min<size_t>(static_cast<size_t>(to - from), 8)).c_str());
      return;
    }
    const char* name = nullptr;
    bool compact = false;
    if ((insn.mnemonic == ZYDIS_MNEMONIC_CALL || insn.mnemonic == ZYDIS_MNEMONIC_JMP) &&
        ops[0].type == ZYDIS_OPERAND_TYPE_IMMEDIATE) {
      uint64_t target = 0;
      if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&insn, &ops[0], at, &target))) {
        name = TrampolineName(env, target, &compact);
      }
    }
    std::fprintf(out, "    %s  %s  %s%s%s\n", kind, Hex(at).c_str(), Format(insn, ops, at).c_str(),
                 name ? "  ; " : "", name ? name : "");
    from += insn.length;
    if (compact && to - from >= 8) {
      uint64_t rip;
      std::memcpy(&rip, from, 8);
      std::fprintf(out, "    %s  %s  dq %s  ; guest RIP\n", kind,
                   Hex(reinterpret_cast<uint64_t>(from)).c_str(), Hex(rip).c_str());
      from += 8;
    }
  }
}

}  // namespace

Status ParseTraceKinds(const std::string& text, TraceOptions* o) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string kind = text.substr(start, end - start);
    if (kind == "blocks") {
      o->blocks = true;
    } else if (kind == "exits") {
      o->exits = true;
    } else if (kind == "faults") {
      o->faults = true;
    } else {
      return MakeError("--trace takes blocks, exits and faults (comma-separated), not '" + kind +
                       "'");
    }
    start = end + 1;
  }
  return Ok{};
}

Status ParseTraceRange(const std::string& text, TraceOptions* o) {
  const size_t dash = text.find('-');
  uint64_t lo, hi;
  if (dash == std::string::npos || !ParseNumber(text.substr(0, dash), &lo) ||
      !ParseNumber(text.substr(dash + 1), &hi) || lo > hi) {
    return MakeError("--trace-range takes LO-HI (guest addresses, LO <= HI), not '" + text + "'");
  }
  o->lo = lo;
  o->hi = hi;
  return Ok{};
}

Status ParseTraceCpl(const std::string& text, TraceOptions* o) {
  if (text != "0" && text != "3") return MakeError("--trace-cpl takes 0 or 3, not '" + text + "'");
  o->cpl = text[0] - '0';
  return Ok{};
}

std::string HowTranslated(const DecodedInsn& d, bool in_window) {
  const std::string name = ZydisMnemonicGetString(d.insn.mnemonic);
  switch (d.cls) {
    case InsnClass::kIdent:
      return HasMemoryAccess(d) ? "ident, memory operand through the soft TLB" : "ident";
    case InsnClass::kNop: return "nop: no host code";
    case InsnClass::kStack:
      return in_window ? "stack sequence, in the stack window (probed once at block entry)"
                       : "stack sequence, through the soft TLB";
    case InsnClass::kString: return "string: helper call, a page at a time";
    case InsnClass::kSystem: return "sensitive, inline against CpuState (" + name + ")";
    case InsnClass::kRuntime: return "sensitive, handed to the runtime (" + name + ")";
    case InsnClass::kUndefined: return "undefined on the virtual CPU: #UD";
    case InsnClass::kBranch: break;
  }
  const ZydisMnemonic m = d.insn.mnemonic;
  const std::string window = in_window ? ", stack access in the stack window" : "";
  if (m == ZYDIS_MNEMONIC_RET) {
    return "ret: to the host return address its call left if it matches, else a jump-cache "
           "lookup" + window;
  }
  if (m == ZYDIS_MNEMONIC_CALL) {
    return IndirectBranch(d) ? "indirect call: return address pushed, jump-cache lookup" + window
                             : "call: return address pushed, direct exit chained to the "
                               "target" + window;
  }
  if (IndirectBranch(d)) return "indirect branch: jump-cache lookup";
  return m == ZYDIS_MNEMONIC_JMP ? "branch: direct exit, chained to the target"
                                 : "conditional branch: two direct exits, each chained";
}

void Tracer::Block(const btvm::Block& b, const BlockNotes& notes, const EmitEnv& env,
                   unsigned cpl) {
  const size_t main_bytes = b.main_bytes;
  ++blocks_;
  const uint8_t* code = b.code;
  std::fprintf(out_,
               "block %llu  guest %s  cpl %u  %u instructions, %u bytes%s  host %s  %u bytes "
               "(%zu main path, %zu slow paths and exit stubs)\n",
               static_cast<unsigned long long>(blocks_), Hex(b.key.rip).c_str(), cpl,
               b.guest_insns, b.guest_size,
               b.loop ? ", a loop" : (b.key.flags & kBlockSingle) ? ", alone" : "",
               Hex(reinterpret_cast<uint64_t>(code)).c_str(), b.code_size, main_bytes,
               b.code_size - main_bytes);
  // Each guest instruction's main-path host code: from its record to the
  // next instruction's (records are in host order; out-of-line ones lie
  // past main_bytes).
  std::vector<std::pair<uint32_t, uint64_t>> starts;  // (host offset, guest rip), main path
  for (const btvm::Block::InsnRecord& r : b.insns) {
    if (r.host_offset < main_bytes) starts.push_back({r.host_offset, r.rip});
  }
  for (size_t i = 0; i < notes.insns.size(); ++i) {
    const DecodedInsn& d = notes.insns[i];
    std::fprintf(out_, "  guest  %s  %-30s  %-36s  %s\n", Hex(d.rip).c_str(),
                 Bytes(d.bytes, d.insn.length).c_str(), Format(d.insn, d.ops, d.rip).c_str(),
                 HowTranslated(d, i < 64 && (b.window_insns >> i & 1)).c_str());
    uint32_t from = UINT32_MAX, to = static_cast<uint32_t>(main_bytes);
    for (size_t k = 0; k < starts.size(); ++k) {
      if (starts[k].second != d.rip || from != UINT32_MAX) continue;
      from = starts[k].first;
      for (size_t n = k + 1; n < starts.size(); ++n) {
        if (starts[n].second != d.rip) {
          to = starts[n].first;
          break;
        }
      }
    }
    // The block's entry code (its check of exit_request, a loop's or the
    // stack window's set-up) is shown with the first instruction.
    if (i == 0) {
      if (from == UINT32_MAX) to = starts.empty() ? to : starts.front().first;
      from = 0;
    }
    if (from != UINT32_MAX && from < to) Disassemble(out_, "host", env, code + from, code + to);
  }
  // What follows the last instruction's code up to the slow paths: the
  // block's fall-through exit, if any, was counted with that instruction.
  if (b.code_size > main_bytes) {
    Disassemble(out_, "slow", env, code + main_bytes, code + b.code_size);
  }
  for (const btvm::Block::Exit& x : b.exits) {
    std::fprintf(out_, "  exit  guest %s  jmp at host %s  %s\n", Hex(x.target).c_str(),
                 Hex(reinterpret_cast<uint64_t>(code + x.jmp_offset)).c_str(),
                 x.forward ? "direct, forward: chained past the target's entry check"
                           : "direct: chained to the target once it is translated");
  }
  std::fprintf(out_, "end block %llu\n", static_cast<unsigned long long>(blocks_));
}

void Tracer::Exit(uint64_t rip, unsigned cpl, const char* why, uint64_t ns) {
  std::fprintf(out_, "runtime  guest %s  cpl %u  %s  %llu ns\n", Hex(rip).c_str(), cpl, why,
               static_cast<unsigned long long>(ns));
}

void Tracer::Event(uint64_t rip, unsigned cpl, const char* source, uint8_t vector,
                   bool has_error_code, uint32_t error_code, uint64_t cr2) {
  std::fprintf(out_, "event  guest %s  cpl %u  %s  vector %u", Hex(rip).c_str(), cpl, source,
               vector);
  if (has_error_code) std::fprintf(out_, "  error code %s", Hex(error_code).c_str());
  if (vector == 14) std::fprintf(out_, "  cr2 %s", Hex(cr2).c_str());
  std::fputc('\n', out_);
}

void Tracer::Trap(uint64_t rip, const std::string& what) {
  std::fprintf(out_, "trap  guest %s  cpl 3  %s\n", Hex(rip).c_str(), what.c_str());
}

void Tracer::Emulated(const DecodedInsn& d, unsigned cpl) {
  std::fprintf(out_, "emulate  guest %s  cpl %u  %-30s  %-36s  %s\n", Hex(d.rip).c_str(), cpl,
               Bytes(d.bytes, d.insn.length).c_str(), Format(d.insn, d.ops, d.rip).c_str(),
               HowTranslated(d, false).c_str());
}

}  // namespace btvm
