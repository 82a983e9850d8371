// Micro-benchmarks: the MMU slow path (a full 4-level walk plus TLB fill)
// and a whole run of the built-in default guest on the bt engine
// (translation + execution + device exits), the figure to compare with
// QEMU TCG running the same file.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>

#include "mmu/mmu.h"
#include "runtime/machine.h"

namespace btvm {
namespace {

// An MMU over 64 MiB of RAM with 4-level tables mapping 512 pages at
// 0x400000 (the page walk benchmarks' address space).
struct WalkFixture {
  GuestMemory mem = std::move(GuestMemory::Create(MiB(64)).value());
  MmioBus mmio;
  SoftTlb tlbs[kMmuCount];
  Mmu mmu{mem, mmio, tlbs};
  CpuState cpu;

  WalkFixture() {
    auto pte = [&](uint64_t table, unsigned i) -> uint64_t& {
      return *reinterpret_cast<uint64_t*>(mem.HostPointer(GuestPhys(table + 8 * i), 8));
    };
    pte(0x1000, 0) = 0x2000 | 3;
    pte(0x2000, 0) = 0x3000 | 3;
    pte(0x3000, 2) = 0x4000 | 3;
    for (unsigned i = 0; i < 512; ++i) pte(0x4000, i) = (0x800000 + i * 4096ull) | 3;
    cpu.cr0 = cr0::kPE | cr0::kPG;
    cpu.cr4 = cr4::kPAE;
    cpu.efer = efer::kLME | efer::kLMA;
    cpu.cr3 = 0x1000;
  }
  static GuestVirt Page(uint64_t i) { return GuestVirt(0x400000 + (i % 512) * 4096); }
};

void BM_PageWalkAndFill(benchmark::State& state) {
  auto f = std::make_unique<WalkFixture>();
  uint64_t i = 0;
  for (auto _ : state) {
    // Translate answers from the soft TLB first: drop the entry so that
    // every item is a walk and a fill.
    GuestVirt va = WalkFixture::Page(i++);
    f->tlbs[kMmuKernel].FlushPage(va);
    Mmu::Lookup l = f->mmu.Translate(f->cpu, va, Access::kRead, kMmuKernel);
    benchmark::DoNotOptimize(l.host);
  }
}
BENCHMARK(BM_PageWalkAndFill);

// Translate when the soft TLB already holds the page (the runtime's own
// accesses: instruction fetch, emulated instructions, exception frames).
void BM_TranslateTlbHit(benchmark::State& state) {
  auto f = std::make_unique<WalkFixture>();
  uint64_t i = 0;
  for (auto _ : state) {
    Mmu::Lookup l = f->mmu.Translate(f->cpu, WalkFixture::Page(i++), Access::kRead, kMmuKernel);
    benchmark::DoNotOptimize(l.host);
  }
}
BENCHMARK(BM_TranslateTlbHit);

void BM_DefaultGuestRun(benchmark::State& state) {
  std::FILE* sink = std::fopen("/dev/null", "w");
  for (auto _ : state) {
    MachineConfig config;
    auto image = DefaultGuestImage();
    config.kernel.assign(image.begin(), image.end());
    config.console_in = -1;
    config.console_out = sink;
    auto m = Machine::Create(config);
    RunOutcome o = m.value()->Run();
    if (!o.ok || o.status != 0) state.SkipWithError("default guest failed");
  }
  std::fclose(sink);
}
BENCHMARK(BM_DefaultGuestRun)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace btvm

BENCHMARK_MAIN();
