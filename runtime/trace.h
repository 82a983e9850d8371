#pragma once
// Traces for people learning binary translation (`btvm run --trace=...`).
//
// blocks: each block as it is translated — its guest instructions (address,
// bytes, Intel syntax) each beside the host code it became (disassembled),
// annotated with how it was translated (re-emitted as is, memory operand
// through the soft TLB, stack sequence in or out of the stack window,
// branch chained or looked up, sensitive instruction inline or handed to
// the runtime), then the block's slow paths and exit stubs and its exits.
// An instruction the runtime emulates instead is traced as such.
//
// exits: every return from translated code to the runtime ("runtime"
// lines): the guest RIP, why (the next block needs a lookup or a first
// link, a guest exception, a store into translated code, an instruction
// the runtime emulates, an interrupt that waits), and how long the
// runtime took before translated code ran again.
//
// faults: every exception and interrupt delivered to the guest ("event"
// lines: vector, error code, CR2 for a page fault, where it came from),
// and in the direct engine every trap of the child ("trap" lines: a
// syscall, a shadow miss filled and hidden from the guest, a page fault
// delivered, an interrupt request, an instruction left to the bt engine).
//
// The format is for reading and for scripts alike: every line starts with
// its kind ("block", "guest", "host", "slow", "exit", "end", "emulate");
// fields after the kind are separated by two or more spaces.

#include <cstdint>
#include <cstdio>
#include <string>

#include "base/result.h"
#include "translator/block_builder.h"
#include "translator/code_cache.h"
#include "translator/emitter.h"

namespace btvm {

struct TraceOptions {
  bool blocks = false, exits = false, faults = false;
  bool any() const { return blocks || exits || faults; }
  uint64_t lo = 0, hi = UINT64_MAX;  // guest addresses [lo, hi]
  int cpl = -1;                      // -1: any
};

// Parses --trace's value ("blocks,exits,faults": any of them), --trace-range's ("LO-HI", hex or
// decimal) and --trace-cpl's ("0" or "3") into *o.
Status ParseTraceKinds(const std::string& text, TraceOptions* o);
Status ParseTraceRange(const std::string& text, TraceOptions* o);
Status ParseTraceCpl(const std::string& text, TraceOptions* o);

class Tracer {
 public:
  Tracer(TraceOptions options, std::FILE* out) : o_(options), out_(out) {}

  // Whether a block at guest `rip`, translated at `cpl`, is traced; the
  // same for an exit to the runtime and for an event or trap there.
  bool WantsBlock(uint64_t rip, unsigned cpl) const { return o_.blocks && Selects(rip, cpl); }
  bool WantsExit(uint64_t rip, unsigned cpl) const { return o_.exits && Selects(rip, cpl); }
  bool WantsFault(uint64_t rip, unsigned cpl) const { return o_.faults && Selects(rip, cpl); }
  // An exit to the runtime at `rip`, which took `ns` there.
  void Exit(uint64_t rip, unsigned cpl, const char* why, uint64_t ns);
  // An event delivered to the guest at `rip` (before delivery).
  void Event(uint64_t rip, unsigned cpl, const char* source, uint8_t vector, bool has_error_code,
             uint32_t error_code, uint64_t cr2);
  // A trap of the direct engine's child at `rip`.
  void Trap(uint64_t rip, const std::string& what);
  // `env`: the shared code the block calls (named in the disassembly).
  void Block(const Block& b, const BlockNotes& notes, const EmitEnv& env, unsigned cpl);
  // An instruction the runtime emulates (no block).
  void Emulated(const DecodedInsn& d, unsigned cpl);

 private:
  bool Selects(uint64_t rip, unsigned cpl) const {
    return rip >= o_.lo && rip <= o_.hi && (o_.cpl < 0 || o_.cpl == int(cpl));
  }

  TraceOptions o_;
  std::FILE* out_;
  uint64_t blocks_ = 0;
};

// How the translator dealt with one guest instruction, in words.
std::string HowTranslated(const DecodedInsn& d, bool in_window);

}  // namespace btvm
