#pragma once
// Faults the host CPU raises inside translated code (DESIGN.md, Precise
// exceptions). Ident-translated instructions run natively, so a guest
// division by zero, a misaligned SSE access or an unmasked SIMD exception
// arrives as a host signal. The handler maps the host PC back to the guest
// instruction through the block's side table, stores the guest registers
// from the signal context, and resumes at the cache's fault exit, so the
// runtime sees an ordinary guest exception at a precise RIP.

#include "translator/bt_context.h"
#include "translator/code_cache.h"

namespace btvm {

// Installs the process-wide handlers once (SIGFPE, SIGSEGV, SIGBUS, SIGILL).
void InstallHostFaultHandlers();

// While alive, host faults in `cache`'s code on this thread belong to `ctx`.
class HostFaultScope {
 public:
  HostFaultScope(BtContext* ctx, const CodeCache* cache);
  ~HostFaultScope();
  HostFaultScope(const HostFaultScope&) = delete;
  HostFaultScope& operator=(const HostFaultScope&) = delete;

 private:
  BtContext* saved_ctx_;
  const CodeCache* saved_cache_;
};

}  // namespace btvm
