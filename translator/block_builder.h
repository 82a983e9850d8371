#pragma once
// BlockBuilder: decodes one guest basic block (up to the first control
// transfer or sensitive instruction, never past the guest page it starts
// in, at most kMaxBlockInsns instructions), computes flag liveness, and
// emits it into the code cache.

#include <cstdint>
#include <string>
#include <vector>

#include "base/exception.h"
#include "translator/code_cache.h"
#include "translator/decoder.h"

namespace btvm {

inline constexpr unsigned kMaxBlockInsns = 64;

struct BuildResult {
  enum Kind { kOk, kEmulate, kFault, kUndefined, kUnsupported, kCacheFull } kind = kOk;
  Block* block = nullptr;    // kOk: installed in the cache
  GuestException fault;      // kFault: fetching the first instruction faulted
  DecodedInsn emulate;       // kEmulate: the instruction
  std::string message;       // kUnsupported
  unsigned guest_insns = 0;
  size_t host_bytes = 0;
  size_t host_main_bytes = 0;  // the part before the slow paths and exit stubs
};

// What a trace shows of a block (runtime/trace.h) besides the Block itself:
// its guest instructions as translated. Filled only when asked for.
struct BlockNotes {
  std::vector<DecodedInsn> insns;  // in order; the class is the one emitted
};

// Reads guest code at rip; returns bytes read, or fewer with *fault set.
using FetchFn = std::function<size_t(uint64_t rip, uint8_t* buf, size_t len, GuestException* fault)>;

// The guest-physical page behind a virtual page of code (already fetched).
using PhysFn = std::function<uint64_t(uint64_t vpage)>;

// Translates the block `key` names (key.flags & kBlockSingle: one
// instruction). kCacheFull: the caller flushes the cache and asks again.
BuildResult BuildBlock(CodeCache& cache, const BlockKey& key, const FetchFn& fetch,
                       const PhysFn& phys_of, BlockNotes* notes = nullptr);

}  // namespace btvm
