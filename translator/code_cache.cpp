#include "translator/code_cache.h"

#include "base/check.h"

namespace btvm {

using namespace asmjit;

namespace {
// Guest GPRs held in host registers while translated code runs (all but
// RSP, which is the monitor's stack, and R15, the context pointer).
constexpr int kLiveGprs[] = {kRax, kRcx, kRdx, kRbx, kRbp, kRsi, kRdi,
                             kR8,  kR9,  kR10, kR11, kR12, kR13, kR14};
constexpr uint64_t kHostFlagsMask = rflags::kArith | rflags::kDF | rflags::kFixed1;
}  // namespace

CodeCache::CodeCache() { BuildTrampolines(); }

void CodeCache::BuildTrampolines() {
  CodeHolder code;
  code.init(runtime_.environment());
  x86::Assembler a(&code);
  Label exit = a.newLabel();

  // void Enter(BtContext* ctx /*rdi*/, void* block /*rsi*/)
  // Saves the monitor's callee-saved registers and stack pointer, loads
  // guest GPRs, guest arithmetic flags and DF, and the guest FPU/SSE state,
  // then jumps to the block. RSP stays 16-byte aligned for helper calls.
  a.push(x86::rbp);
  a.push(x86::rbx);
  a.push(x86::r12);
  a.push(x86::r13);
  a.push(x86::r14);
  a.push(x86::r15);
  a.sub(x86::rsp, 8);
  a.mov(x86::r15, x86::rdi);
  a.mov(x86::qword_ptr(x86::r15, offsetof(BtContext, host_rsp)), x86::rsp);
  a.mov(x86::qword_ptr(x86::r15, offsetof(BtContext, entry_target)), x86::rsi);
  a.stmxcsr(x86::dword_ptr(x86::r15, offsetof(BtContext, host_mxcsr)));
  a.fnstcw(x86::word_ptr(x86::r15, offsetof(BtContext, host_fcw)));
  a.fxrstor64(x86::ptr(x86::r15, static_cast<int32_t>(offsetof(CpuState, xsave))));
  a.mov(x86::rax, x86::qword_ptr(x86::r15, offsetof(BtContext, host_flags)));
  a.and_(x86::rax, static_cast<int32_t>(kHostFlagsMask));
  a.push(x86::rax);
  a.popfq();
  for (int g : kLiveGprs) a.mov(x86::gpq(g), x86::qword_ptr(x86::r15, GprOffset(g)));
  a.jmp(x86::qword_ptr(x86::r15, offsetof(BtContext, entry_target)));

  // The exit stub: blocks jump here with RIP and exit_reason stored.
  a.bind(exit);
  for (int g : kLiveGprs) a.mov(x86::qword_ptr(x86::r15, GprOffset(g)), x86::gpq(g));
  a.pushfq();
  a.pop(x86::qword_ptr(x86::r15, offsetof(BtContext, host_flags)));
  a.fxsave64(x86::ptr(x86::r15, static_cast<int32_t>(offsetof(CpuState, xsave))));
  a.cld();
  a.ldmxcsr(x86::dword_ptr(x86::r15, offsetof(BtContext, host_mxcsr)));
  a.fldcw(x86::word_ptr(x86::r15, offsetof(BtContext, host_fcw)));
  a.mov(x86::rsp, x86::qword_ptr(x86::r15, offsetof(BtContext, host_rsp)));
  a.add(x86::rsp, 8);
  a.pop(x86::r15);
  a.pop(x86::r14);
  a.pop(x86::r13);
  a.pop(x86::r12);
  a.pop(x86::rbx);
  a.pop(x86::rbp);
  a.ret();

  void* base = nullptr;
  BTVM_CHECK(runtime_.add(&base, &code) == kErrorOk);
  // Invariant: `base` is the trampoline's first byte and `exit` lies in the
  // same code; both stay valid as long as runtime_ lives.
  enter_ = reinterpret_cast<EnterFn>(base);
  exit_stub_ = static_cast<uint8_t*>(base) + code.labelOffsetFromBase(exit);
}

EmitEnv CodeCache::EmitEnvFor(unsigned mmu_index) const {
  EmitEnv env;
  env.mmu_index = mmu_index;
  env.exit_stub = reinterpret_cast<uint64_t>(exit_stub_);
  env.mem_slow_path = reinterpret_cast<uint64_t>(&BtMemSlowPath);
  env.bounce_commit = reinterpret_cast<uint64_t>(&BtBounceCommit);
  return env;
}

void* CodeCache::Add(CodeHolder& code) {
  void* fn = nullptr;
  if (runtime_.add(&fn, &code) != kErrorOk) return nullptr;
  return fn;
}

void CodeCache::Flush() {
  // Blocks are released with the runtime's allocator when the cache is
  // rebuilt (bounded cache with eviction: issue #3).
  for (auto& [key, code] : blocks_) runtime_.release(code);
  blocks_.clear();
}

}  // namespace btvm
