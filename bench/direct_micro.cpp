// Micro-benchmarks of the direct engine's child (runtime/direct/): a guest
// syscall's round trip through each transport, ptrace and seccomp (the
// guest runs `syscall; jmp back` in the child; each Run loads the guest
// state, lets it run to the syscall and reads the state back), and mapping
// changes batched through the stub, per page.

#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdint>
#include <memory>

#include "mmu/guest_memory.h"
#include "runtime/direct/user_child.h"

namespace btvm::direct {
namespace {

constexpr uint64_t kCode = 0x400000;

struct ChildFixture {
  GuestMemory mem = std::move(GuestMemory::Create(MiB(8)).value());
  std::unique_ptr<UserChild> child;
  CpuState cpu;

  explicit ChildFixture(Transport transport)
      : child(std::move(UserChild::Spawn(mem.fd(), transport).value())) {
    static const uint8_t kLoop[] = {0x0f, 0x05, 0xeb, 0xfc};  // 0: syscall; jmp 0
    BTVM_CHECK(mem.Write(GuestPhys{0}, kLoop).ok());
    BTVM_CHECK(child->Map(kCode, 4096, PROT_READ | PROT_EXEC, 0).ok());
    cpu.seg[kCs].attrib = 0x20fb;
    cpu.rflags = 0x202;
    cpu.rip = kCode;
    uint32_t mxcsr = 0x1f80;
    __builtin_memcpy(cpu.xsave.bytes + 24, &mxcsr, 4);
  }
};

// Argument: the transport (0 ptrace, 1 seccomp).
Transport TransportArg(const benchmark::State& state) {
  return state.range(0) == 0 ? Transport::kPtrace : Transport::kSeccomp;
}

void BM_DirectSyscall(benchmark::State& state) {
  ChildFixture f(TransportArg(state));
  state.SetLabel(TransportName(TransportArg(state)));
  for (auto _ : state) {
    Result<Trap> t = f.child->Run(f.cpu);
    BTVM_CHECK(t.ok() && t->kind == Trap::Kind::kSyscall);
  }
}
BENCHMARK(BM_DirectSyscall)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// Maps 64 scattered pages and unmaps them again: two flushes, 128
// operations; the figure is per operation.
void BM_DirectMapPage(benchmark::State& state) {
  ChildFixture f(TransportArg(state));
  state.SetLabel(TransportName(TransportArg(state)));
  for (auto _ : state) {
    for (uint64_t i = 0; i < 64; ++i) {
      BTVM_CHECK(f.child->Map(0x10000000 + 2 * i * 4096, 4096, PROT_READ, i * 4096).ok());
    }
    BTVM_CHECK(f.child->Flush().ok());
    for (uint64_t i = 0; i < 64; ++i) {
      BTVM_CHECK(f.child->Unmap(0x10000000 + 2 * i * 4096, 4096).ok());
    }
    BTVM_CHECK(f.child->Flush().ok());
  }
  state.SetItemsProcessed(state.iterations() * 128);
}
BENCHMARK(BM_DirectMapPage)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace btvm::direct
