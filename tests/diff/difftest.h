#pragma once
// Differential testing of the bt engine against the host CPU: a sequence
// runs natively (the reference) and translated at CPL0 and CPL3, and the
// final states are compared — GPRs, the arithmetic flags the last writer
// defines, DF, XMM, MXCSR, every data region, and how the run ended (the
// vector, RIP, error code and address of a fault).

#include <bitset>
#include <chrono>
#include <cstdint>
#include <string>

#include "tests/diff/bt_runner.h"
#include "tests/diff/generator.h"

namespace btvm::diff {

#define BTVM_DIFF_KINDS(X)                                                               \
  X(kOutcome, "outcome", "ended differently: end, vector, RIP, error code, #PF address") \
  X(kGpr, "gpr", "general-purpose registers")                                            \
  X(kFlags, "flags", "defined arithmetic flags, DF")                                     \
  X(kXmm, "xmm", "XMM registers")                                                        \
  X(kMxcsr, "mxcsr", "MXCSR")                                                            \
  X(kMemory, "memory", "data memory")                                                    \
  X(kBtError, "bt-error", "the engine stopped with an error, a host signal or a timeout")

enum class DiffKind : uint8_t {
#define BTVM_DIFF_KIND_ENUM(id, name, text) id,
  BTVM_DIFF_KINDS(BTVM_DIFF_KIND_ENUM)
#undef BTVM_DIFF_KIND_ENUM
      kCount
};
inline constexpr size_t kDiffKindCount = static_cast<size_t>(DiffKind::kCount);
using DiffSet = std::bitset<kDiffKindCount>;
const char* DiffKindName(DiffKind k);

struct Comparison {
  DiffSet kinds;
  std::string text;  // one line per difference
  bool ok() const { return kinds.none(); }
};

// Arithmetic flags (RFLAGS bit positions) that may be undefined where a run
// stopped at `stop_offset`: a forward dataflow over the sequence's control
// flow, where each instruction's Zydis `cpu_flags` says which flags it
// leaves undefined and which it defines.
uint64_t UndefinedFlags(const Encoded& e, uint64_t stop_offset);

// Arithmetic flags dead at `offset`: every path from the instruction there
// (itself included) surely writes them before anything reads them. A
// backward dataflow over the sequence's control flow, to a fixpoint
// (loops); the end of the sequence, and a branch out of it, read all.
uint64_t DeadFlags(const Encoded& e, uint64_t offset);

// How a run that ends in a fault compares the flags of the exception
// frame. The translator counts flags the next instructions overwrite as
// dead, so a soft-TLB probe or a block's entry check may clobber them
// unsaved; when the instruction then faults, the frame shows the clobbered
// values (README.md, Known failures). kMaskDead leaves out the flags dead
// at the faulting instruction (traps, #DB/#BP/#OF, are compared as ever);
// kExact compares them all.
enum class FaultFlags : uint8_t { kMaskDead, kExact };

Comparison Compare(const Encoded& e, const Outcome& native, const Outcome& bt, unsigned cpl,
                   FaultFlags fault_flags = FaultFlags::kMaskDead);

// Formats the registers of a state (for reports).
std::string FormatState(const native::MachineState& s);

class DiffTester {
 public:
  explicit DiffTester(BtRunner& bt, FaultFlags fault_flags = FaultFlags::kMaskDead)
      : bt_(bt), fault_flags_(fault_flags) {}

  struct Run {
    bool encoded = false;
    std::string encode_error;
    Encoded code;
    Outcome native;
    Outcome bt;
    Comparison cmp;
  };
  // Encodes `seq` and runs it natively and on bt at `cpl`. `native` may be
  // passed in to reuse one native run for both CPLs.
  Run RunAt(const Sequence& seq, unsigned cpl, const Outcome* native = nullptr);

  // Drops items (and then single ops) as long as the run still ends as
  // `native` did (end, or a fault with the same vector) and differs in
  // exactly `kinds`: the smallest sequence that shows the same bug.
  Sequence Minimize(const Sequence& seq, unsigned cpl, const Outcome& native, DiffSet kinds);

  // Wall time spent so far in native runs and in bt runs (where a sequence's
  // time goes; the rest is generating, encoding and comparing).
  struct Timing {
    std::chrono::steady_clock::duration native{}, bt{};
  };
  const Timing& timing() const { return timing_; }

 private:
  BtRunner& bt_;
  FaultFlags fault_flags_;
  Timing timing_;
};

}  // namespace btvm::diff
