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
  bool blocks = false;
  uint64_t lo = 0, hi = UINT64_MAX;  // guest addresses [lo, hi]
  int cpl = -1;                      // -1: any
};

// Parses --trace's value ("blocks"), --trace-range's ("LO-HI", hex or
// decimal) and --trace-cpl's ("0" or "3") into *o.
Status ParseTraceKinds(const std::string& text, TraceOptions* o);
Status ParseTraceRange(const std::string& text, TraceOptions* o);
Status ParseTraceCpl(const std::string& text, TraceOptions* o);

class Tracer {
 public:
  Tracer(TraceOptions options, std::FILE* out) : o_(options), out_(out) {}

  // Whether a block at guest `rip`, translated at `cpl`, is traced.
  bool WantsBlock(uint64_t rip, unsigned cpl) const {
    return o_.blocks && rip >= o_.lo && rip <= o_.hi && (o_.cpl < 0 || o_.cpl == int(cpl));
  }
  // `env`: the shared code the block calls (named in the disassembly).
  void Block(const Block& b, const BlockNotes& notes, const EmitEnv& env, size_t main_bytes,
             unsigned cpl);
  // An instruction the runtime emulates (no block).
  void Emulated(const DecodedInsn& d, unsigned cpl);

 private:
  TraceOptions o_;
  std::FILE* out_;
  uint64_t blocks_ = 0;
};

// How the translator dealt with one guest instruction, in words.
std::string HowTranslated(const DecodedInsn& d, bool in_window);

}  // namespace btvm
