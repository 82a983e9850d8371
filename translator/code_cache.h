#pragma once
// The code cache: host code for translated guest blocks (AsmJit's
// JitRuntime), the entry trampoline and the exit stub every block leaves
// through, and the map from guest block to host code.

#include <asmjit/x86.h>

#include <cstdint>
#include <unordered_map>

#include "translator/bt_context.h"
#include "translator/emitter.h"

namespace btvm {

struct BlockKey {
  uint64_t rip;
  uint64_t phys;  // guest-physical address of rip: a remapped page is a new block
  unsigned mmu_index;
  bool operator==(const BlockKey&) const = default;
};
struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const {
    return std::hash<uint64_t>()(k.rip * 31 + k.phys * 7 + k.mmu_index);
  }
};

class CodeCache {
 public:
  CodeCache();
  CodeCache(const CodeCache&) = delete;
  CodeCache& operator=(const CodeCache&) = delete;

  // Runs translated code from `block` until it exits to the runtime.
  void Enter(BtContext* ctx, void* block) { enter_(ctx, block); }

  void* Find(const BlockKey& key) const {
    auto it = blocks_.find(key);
    return it == blocks_.end() ? nullptr : it->second;
  }
  void Insert(const BlockKey& key, void* code) { blocks_[key] = code; }
  void Flush();
  size_t block_count() const { return blocks_.size(); }

  const asmjit::Environment& environment() const { return runtime_.environment(); }
  EmitEnv EmitEnvFor(unsigned mmu_index) const;
  // Adds finished code; nullptr if the host refuses.
  void* Add(asmjit::CodeHolder& code);

 private:
  void BuildTrampolines();

  asmjit::JitRuntime runtime_;
  using EnterFn = void (*)(BtContext*, void*);
  EnterFn enter_ = nullptr;
  void* exit_stub_ = nullptr;
  std::unordered_map<BlockKey, void*, BlockKeyHash> blocks_;
};

// Helpers translated code calls (helpers.cpp).
extern "C" uint8_t* BtMemSlowPath(BtContext* ctx);
extern "C" void BtBounceCommit(BtContext* ctx);

}  // namespace btvm
