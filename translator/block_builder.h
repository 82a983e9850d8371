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
  enum Kind { kOk, kEmulate, kFault, kUndefined, kUnsupported } kind = kOk;
  void* code = nullptr;      // kOk
  GuestException fault;      // kFault: fetching the first instruction faulted
  std::string message;       // kUnsupported
  unsigned guest_insns = 0;
  size_t host_bytes = 0;
};

// Reads guest code at rip; returns bytes read, or fewer with *fault set.
using FetchFn = std::function<size_t(uint64_t rip, uint8_t* buf, size_t len, GuestException* fault)>;

BuildResult BuildBlock(CodeCache& cache, unsigned mmu_index, uint64_t rip, const FetchFn& fetch);

}  // namespace btvm
