// Comparison, undefined-flag masking and minimization: see difftest.h.

#include "tests/diff/difftest.h"

#include <Zydis/Zydis.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "base/cpu_state.h"
#include "base/exception.h"

namespace btvm::diff {

namespace {

constexpr uint64_t kArith = rflags::kArith;

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string FlagNames(uint64_t f) {
  static constexpr struct {
    uint64_t bit;
    const char* name;
  } kNames[] = {{rflags::kCF, "CF"}, {rflags::kPF, "PF"}, {rflags::kAF, "AF"}, {rflags::kZF, "ZF"},
                {rflags::kSF, "SF"}, {rflags::kOF, "OF"}, {rflags::kDF, "DF"}};
  std::string s;
  for (const auto& n : kNames) {
    if (f & n.bit) s += std::string(s.empty() ? "" : " ") + n.name;
  }
  return s.empty() ? "-" : s;
}

const char* const kGprNames[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                   "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

std::string XmmText(const uint8_t (&x)[16]) {
  char buf[40];
  uint64_t lo, hi;
  std::memcpy(&lo, x, 8);
  std::memcpy(&hi, x + 8, 8);
  std::snprintf(buf, sizeof buf, "%016llx_%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

std::string OutcomeText(const Outcome& o) {
  // clang-format off
  switch (o.kind) {
    case Outcome::kEnd: return "end";
    case Outcome::kError: return "error (" + o.message + ")";
    case Outcome::kFault: {
      std::string s = "fault vector " + std::to_string(o.vector) + " at +" + Hex(o.rip_offset) +
                      " error " + Hex(o.error_code);
      if (o.vector == kPF) s += " address " + Hex(o.fault_address);
      return s;
    }
  }
  // clang-format on
  return "?";
}

// Which error-code bits both sides report alike. A #PF natively always
// comes from user mode (U set); at CPL0 on bt it does not.
uint32_t ErrorCodeMask(uint8_t vector, unsigned cpl) {
  if (vector == kPF) return cpl == 3 ? 0x1f : 0x1b;
  return ~0u;
}

}  // namespace

const char* DiffKindName(DiffKind k) {
  static constexpr const char* kNames[] = {
#define BTVM_DIFF_KIND_NAME(id, name, text) name,
      BTVM_DIFF_KINDS(BTVM_DIFF_KIND_NAME)
#undef BTVM_DIFF_KIND_NAME
  };
  return kNames[static_cast<size_t>(k)];
}

uint64_t UndefinedFlags(const Encoded& e, uint64_t stop_offset) {
  const size_t n = e.insns.size();
  std::map<uint64_t, size_t> node_at;  // offset -> node; node n is the end
  for (size_t i = 0; i < n; ++i) node_at[e.insns[i].offset] = i;
  node_at[e.code.size()] = n;
  auto node = [&](uint64_t offset) -> long {
    auto it = node_at.find(offset);
    return it == node_at.end() ? -1 : static_cast<long>(it->second);
  };

  // What each instruction defines and leaves undefined.
  std::vector<uint64_t> defines(n, 0), undefines(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const FlagEffect f = FlagEffectOf(e.code.data() + e.insns[i].offset, e.insns[i].length);
    undefines[i] = f.undefined & kArith;
    defines[i] = f.defined & kArith;
  }

  // Forward dataflow to a fixpoint (a ret edge goes backwards).
  std::vector<uint64_t> in(n + 1, 0);
  std::vector<bool> reached(n + 1, false);
  reached[0] = true;
  uint64_t anywhere = 0;
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < n; ++i) {
      if (!reached[i]) continue;
      const uint64_t out = (in[i] & ~defines[i]) | undefines[i];
      anywhere |= out;
      const Encoded::Insn& insn = e.insns[i];
      auto flow_to = [&](long to) {
        if (to < 0) return;
        if (!reached[to] || (in[to] | out) != in[to]) {
          reached[to] = true;
          in[to] |= out;
          changed = true;
        }
      };
      const bool falls = insn.flow == Op::Flow::kNext || insn.flow == Op::Flow::kBranch;
      const bool jumps = insn.flow != Op::Flow::kNext;
      if (falls) flow_to(node(insn.offset + insn.length));
      if (jumps) flow_to(node(insn.target));
    }
  }
  const long stop = node(stop_offset);
  // A stop outside the sequence (a fetch fault after an indirect jump):
  // anything may be undefined.
  return stop < 0 ? anywhere : in[stop];
}

uint64_t DeadFlags(const Encoded& e, uint64_t offset) {
  const size_t n = e.insns.size();
  std::map<uint64_t, size_t> node_at;  // offset -> node; node n is the end
  for (size_t i = 0; i < n; ++i) node_at[e.insns[i].offset] = i;
  node_at[e.code.size()] = n;
  auto live_at = [&](const std::vector<uint64_t>& live_in, uint64_t at) -> uint64_t {
    auto it = node_at.find(at);
    return it == node_at.end() ? kArith : live_in[it->second];
  };
  std::vector<uint64_t> reads(n, 0), writes(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const FlagEffect f = FlagEffectOf(e.code.data() + e.insns[i].offset, e.insns[i].length);
    reads[i] = f.tested & kArith;
    writes[i] = f.written & kArith;
  }
  // Live flags grow from none to a fixpoint; the end (hlt, then the
  // harness) reads them all.
  std::vector<uint64_t> live_in(n + 1, 0);
  live_in[n] = kArith;
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = n; i-- > 0;) {
      const Encoded::Insn& insn = e.insns[i];
      uint64_t out = 0;
      if (insn.flow == Op::Flow::kNext || insn.flow == Op::Flow::kBranch) {
        out |= live_at(live_in, insn.offset + insn.length);
      }
      if (insn.flow != Op::Flow::kNext) out |= live_at(live_in, insn.target);
      const uint64_t in = reads[i] | (out & ~writes[i]);
      if (in != live_in[i]) {
        live_in[i] = in;
        changed = true;
      }
    }
  }
  auto it = node_at.find(offset);
  if (it == node_at.end()) return 0;
  return kArith & ~live_in[it->second];
}

std::string FormatState(const native::MachineState& s) {
  std::string out;
  char line[160];
  for (int i = 0; i < 16; i += 4) {
    std::snprintf(line, sizeof line, "    %-3s %016llx  %-3s %016llx  %-3s %016llx  %-3s %016llx\n",
                  kGprNames[i], static_cast<unsigned long long>(s.gpr[i]), kGprNames[i + 1],
                  static_cast<unsigned long long>(s.gpr[i + 1]), kGprNames[i + 2],
                  static_cast<unsigned long long>(s.gpr[i + 2]), kGprNames[i + 3],
                  static_cast<unsigned long long>(s.gpr[i + 3]));
    out += line;
  }
  std::snprintf(line, sizeof line, "    rflags %#llx (%s)  mxcsr %#x\n",
                static_cast<unsigned long long>(s.rflags),
                FlagNames(s.rflags & (kArith | rflags::kDF)).c_str(), s.mxcsr);
  out += line;
  for (int i = 0; i < 16; i += 2) {
    std::snprintf(line, sizeof line, "    xmm%-2d %s  xmm%-2d %s\n", i, XmmText(s.xmm[i]).c_str(),
                  i + 1, XmmText(s.xmm[i + 1]).c_str());
    out += line;
  }
  return out;
}

Comparison Compare(const Encoded& e, const Outcome& native, const Outcome& bt, unsigned cpl,
                   FaultFlags fault_flags) {
  Comparison c;
  auto note = [&](DiffKind k, const std::string& line) {
    c.kinds.set(static_cast<size_t>(k));
    c.text += "    " + line + "\n";
  };
  if (bt.kind == Outcome::kError) {
    note(DiffKind::kBtError, bt.message);
    return c;
  }
  const uint32_t ec_mask = ErrorCodeMask(native.vector, cpl);
  const bool same_outcome = native.kind == bt.kind &&
                            (native.kind != Outcome::kFault ||
                             (native.vector == bt.vector && native.rip_offset == bt.rip_offset &&
                              (native.error_code & ec_mask) == (bt.error_code & ec_mask) &&
                              (native.vector != kPF || native.fault_address == bt.fault_address)));
  if (!same_outcome) {
    note(DiffKind::kOutcome, "outcome: native " + OutcomeText(native) + ", bt " + OutcomeText(bt));
    // The states stopped at different points: comparing them says little.
    if (native.kind != bt.kind || native.rip_offset != bt.rip_offset) return c;
  }

  const native::MachineState& a = native.state;
  const native::MachineState& b = bt.state;
  for (int i = 0; i < 16; ++i) {
    if (a.gpr[i] != b.gpr[i]) {
      note(DiffKind::kGpr,
           std::string(kGprNames[i]) + ": native " + Hex(a.gpr[i]) + ", bt " + Hex(b.gpr[i]));
    }
  }
  const uint64_t stop = native.kind == Outcome::kEnd ? e.code.size() : native.rip_offset;
  const uint64_t undefined = UndefinedFlags(e, stop);
  const bool trap = native.vector == kDB || native.vector == kBP || native.vector == kOF;
  const uint64_t dead = native.kind == Outcome::kFault && same_outcome && !trap &&
                                fault_flags == FaultFlags::kMaskDead
                            ? DeadFlags(e, stop)
                            : 0;
  const uint64_t compared = (kArith & ~undefined & ~dead) | rflags::kDF;
  if ((a.rflags & compared) != (b.rflags & compared)) {
    note(DiffKind::kFlags, "flags: native " + FlagNames(a.rflags & compared) + ", bt " +
                               FlagNames(b.rflags & compared) +
                               " (differ: " + FlagNames((a.rflags ^ b.rflags) & compared) +
                               "; undefined here: " + FlagNames(undefined) +
                               "; dead at the fault: " + FlagNames(dead) + ")");
  }
  for (int i = 0; i < 16; ++i) {
    if (std::memcmp(a.xmm[i], b.xmm[i], 16) != 0) {
      note(DiffKind::kXmm, "xmm" + std::to_string(i) + ": native " + XmmText(a.xmm[i]) + ", bt " +
                               XmmText(b.xmm[i]));
    }
  }
  if (a.mxcsr != b.mxcsr) {
    note(DiffKind::kMxcsr, "mxcsr: native " + Hex(a.mxcsr) + ", bt " + Hex(b.mxcsr));
  }
  for (size_t r = 0; r < a.memory.size() && r < b.memory.size(); ++r) {
    const auto& ma = a.memory[r].bytes;
    const auto& mb = b.memory[r].bytes;
    int shown = 0;
    for (size_t i = 0; i < ma.size() && i < mb.size(); ++i) {
      if (ma[i] == mb[i]) continue;
      // One line per run of differing bytes (at most four lines a region).
      size_t j = i;
      while (j < ma.size() && ma[j] != mb[j] && j - i < 16) ++j;
      if (shown++ < 4) {
        std::string na, nb;
        for (size_t k = i; k < j; ++k) {
          char h[4];
          std::snprintf(h, sizeof h, "%02x", ma[k]);
          na += h;
          std::snprintf(h, sizeof h, "%02x", mb[k]);
          nb += h;
        }
        note(DiffKind::kMemory,
             "memory " + Hex(a.memory[r].address + i) + ": native " + na + ", bt " + nb);
      } else {
        c.kinds.set(static_cast<size_t>(DiffKind::kMemory));
      }
      i = j - 1;
    }
  }
  return c;
}

DiffTester::Run DiffTester::RunAt(const Sequence& seq, unsigned cpl, const Outcome* native) {
  Run r;
  r.encoded = Encode(seq, &r.code, &r.encode_error);
  if (!r.encoded) return r;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0 = Clock::now();
  r.native = native ? *native : RunNativeOutcome(r.code.code, seq.initial);
  const Clock::time_point t1 = Clock::now();
  timing_.native += t1 - t0;
  if (r.native.kind == Outcome::kError) return r;
  r.bt = bt_.Run(r.code.code, seq.initial, cpl);
  timing_.bt += Clock::now() - t1;
  r.cmp = Compare(r.code, r.native, r.bt, cpl, fault_flags_);
  return r;
}

Sequence DiffTester::Minimize(const Sequence& seq, unsigned cpl, const Outcome& native,
                              DiffSet kinds) {
  auto still_differs = [&](const Sequence& s) {
    Run r = RunAt(s, cpl);
    return r.encoded && r.native.kind == native.kind &&
           (native.kind != Outcome::kFault || r.native.vector == native.vector) &&
           r.cmp.kinds == kinds;
  };
  Sequence cur = seq;
  // Items, in halving chunks (a simple ddmin).
  for (size_t chunk = std::max<size_t>(1, cur.items.size() / 2); chunk >= 1; chunk /= 2) {
    for (size_t i = 0; i < cur.items.size();) {
      Sequence trial = cur;
      const size_t end = std::min(i + chunk, trial.items.size());
      trial.items.erase(trial.items.begin() + static_cast<long>(i),
                        trial.items.begin() + static_cast<long>(end));
      if (!trial.items.empty() && still_differs(trial)) {
        cur = std::move(trial);
      } else {
        i += chunk;
      }
    }
    if (chunk == 1) break;
  }
  // Single ops, in items without internal control flow (op indices there
  // are targets).
  for (size_t i = 0; i < cur.items.size(); ++i) {
    bool linked = false;
    for (const Op& op : cur.items[i].ops) linked |= op.target_op >= 0 || op.flow != Op::Flow::kNext;
    if (linked) continue;
    for (size_t j = 0; j < cur.items[i].ops.size() && cur.items[i].ops.size() > 1;) {
      Sequence trial = cur;
      trial.items[i].ops.erase(trial.items[i].ops.begin() + static_cast<long>(j));
      if (still_differs(trial)) {
        cur = std::move(trial);
      } else {
        ++j;
      }
    }
  }
  return cur;
}

}  // namespace btvm::diff
