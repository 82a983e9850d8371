// Micro-benchmarks of the bt engine's three costs that every guest
// workload multiplies:
//   - translation: guest instructions translated per second, and host code
//     bytes per guest instruction, over the blocks of a real kernel's text;
//   - a soft-TLB hit: a translated load whose inline probe hits, per access;
//   - block dispatch: one iteration of a one-block loop (sub; jnz) run by
//     BtEngine. Without block chaining every iteration leaves translated
//     code and finds its block again; with chaining it is a patched jump.
// The last two run guest code assembled here (AsmJit) on BtEngine, through
// the Engine interface, on the entry state of docs/entry-contract.md.

#include <asmjit/x86.h>
#include <benchmark/benchmark.h>
#include <elf.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "base/check.h"
#include "base/counters.h"
#include "devices/bus.h"
#include "mmu/guest_memory.h"
#include "runtime/bt_engine.h"
#include "runtime/loader.h"
#include "runtime/machine.h"
#include "translator/block_builder.h"
#include "translator/code_cache.h"
#include "translator/decoder.h"

namespace btvm {
namespace {

// ---- Translation speed -------------------------------------------------

// The default guest's ELF image: its code sections and a fetch function
// that reads guest-virtual addresses of its PT_LOAD segment.
class KernelText {
 public:
  explicit KernelText(std::span<const uint8_t> image) : image_(image) {
    BTVM_CHECK(image.size() >= sizeof(Elf64_Ehdr));
    Elf64_Ehdr eh;
    std::memcpy(&eh, image.data(), sizeof eh);
    BTVM_CHECK(eh.e_phnum >= 1 && eh.e_shstrndx < eh.e_shnum);
    std::memcpy(&load_, image.data() + eh.e_phoff, sizeof load_);  // the one PT_LOAD
    BTVM_CHECK(load_.p_type == PT_LOAD);
    std::vector<Elf64_Shdr> sh(eh.e_shnum);
    std::memcpy(sh.data(), image.data() + eh.e_shoff, eh.e_shnum * sizeof(Elf64_Shdr));
    const char* names = reinterpret_cast<const char*>(image.data() + sh[eh.e_shstrndx].sh_offset);
    for (const Elf64_Shdr& s : sh) {
      // .text (kernel) and .user (user-mode code and data; data decodes as
      // some instructions too, which does no harm to a speed figure).
      std::string_view name = names + s.sh_name;
      if (name == ".text" || name == ".user") ranges_.push_back({s.sh_addr, s.sh_addr + s.sh_size});
    }
    BTVM_CHECK(!ranges_.empty());
  }

  size_t Fetch(uint64_t rip, uint8_t* buf, size_t len) const {
    if (rip < load_.p_vaddr || rip >= load_.p_vaddr + load_.p_filesz) return 0;
    size_t n = std::min<uint64_t>(len, load_.p_vaddr + load_.p_filesz - rip);
    std::memcpy(buf, image_.data() + load_.p_offset + (rip - load_.p_vaddr), n);
    return n;
  }

  struct Range {
    uint64_t begin, end;
  };
  const std::vector<Range>& ranges() const { return ranges_; }

 private:
  std::span<const uint8_t> image_;
  Elf64_Phdr load_;
  std::vector<Range> ranges_;
};

// Translates every block of the default guest's code, in a linear sweep:
// a block starts where the previous one ended (at its branch or before the
// sensitive instruction that ended it), so the mix of block lengths and
// instruction classes is the kernel's own. The cache is flushed after each
// sweep, outside the timed region.
void BM_TranslateDefaultGuest(benchmark::State& state) {
  KernelText text(DefaultGuestImage());
  const FetchFn fetch = [&](uint64_t rip, uint8_t* buf, size_t len, GuestException* fault) {
    size_t n = text.Fetch(rip, buf, len);
    if (n < len) *fault = GuestException::PageFault(rip, 0x10);
    return n;
  };
  Decoder decoder;
  BtContext ctx;
  CodeCache cache(&ctx, nullptr);
  const PhysFn phys_of = [](uint64_t vpage) { return vpage; };
  uint64_t blocks = 0, insns = 0, bytes = 0;
  for (auto _ : state) {
    for (const KernelText::Range& r : text.ranges()) {
      uint64_t rip = r.begin;
      while (rip < r.end) {
        BuildResult b = BuildBlock(cache, BlockKey{rip, rip, kMmuKernel, 0}, fetch, phys_of);
        if (b.kind == BuildResult::kCacheFull) {
          state.PauseTiming();
          cache.Flush();
          state.ResumeTiming();
          continue;
        }
        unsigned advance = b.kind == BuildResult::kOk ? b.guest_insns : 1;
        if (b.kind == BuildResult::kOk) {
          ++blocks;
          insns += b.guest_insns;
          bytes += b.host_bytes;
        }
        for (unsigned i = 0; i < advance && rip < r.end; ++i) {
          uint8_t buf[ZYDIS_MAX_INSTRUCTION_LENGTH];
          DecodedInsn d;
          size_t n = text.Fetch(rip, buf, sizeof buf);
          rip = decoder.Decode(buf, n, rip, &d) ? d.NextRip() : rip + 1;
        }
      }
    }
    state.PauseTiming();
    cache.Flush();
    state.ResumeTiming();
  }
  state.counters["guest_insns"] =
      benchmark::Counter(static_cast<double>(insns), benchmark::Counter::kIsRate);
  state.counters["host_bytes_per_insn"] =
      benchmark::Counter(insns ? static_cast<double>(bytes) / static_cast<double>(insns) : 0);
  state.counters["insns_per_block"] =
      benchmark::Counter(blocks ? static_cast<double>(insns) / static_cast<double>(blocks) : 0);
}
BENCHMARK(BM_TranslateDefaultGuest)->Unit(benchmark::kMicrosecond);

// ---- Guest loops on BtEngine -------------------------------------------

constexpr uint64_t kCodeBase = MiB(1);
constexpr uint64_t kDataBase = MiB(2);  // a page of RAM the loads read
constexpr uint16_t kStopPort = 0xf4;

// Ends the run when the guest writes to port 0xf4 (as isa-debug-exit).
class StopPort final : public PioDevice {
 public:
  explicit StopPort(std::atomic<bool>& stop) : stop_(stop) {}
  uint32_t PioRead(uint16_t, unsigned) override { return 0; }
  void PioWrite(uint16_t, unsigned, uint32_t) override { stop_.store(true); }

 private:
  std::atomic<bool>& stop_;
};

// How the loop counts: `sub rcx, 1` writes every arithmetic flag, so none
// is live inside the body; `dec rcx` keeps CF, so CF is live from the block's
// start to its exit (the translator cannot know the next block ignores it).
enum class LoopCounter { kSub, kDec };

// A guest that runs `body` (assembled by the caller) RCX times in one
// block, then stops:
//   loop: body; sub rcx, 1 (or dec rcx); jnz loop
//         out 0xf4, al; hlt
class LoopGuest {
 public:
  template <typename BodyFn>
  explicit LoopGuest(BodyFn body, LoopCounter counter = LoopCounter::kSub) : memory_(std::move(GuestMemory::Create(MiB(16)).value())) {
    BTVM_CHECK(pio_.Register(kStopPort, 1, &port_, "stop"));
    asmjit::CodeHolder code;
    code.init(asmjit::Environment::host(), kCodeBase);
    asmjit::x86::Assembler a(&code);
    using namespace asmjit::x86;
    asmjit::Label loop = a.newLabel();
    a.mov(ebx, static_cast<uint32_t>(kDataBase));
    a.bind(loop);
    body(a);
    if (counter == LoopCounter::kSub) {
      a.sub(rcx, 1);
    } else {
      a.dec(rcx);
    }
    a.jnz(loop);
    a.out(asmjit::imm(kStopPort), al);
    a.hlt();
    const asmjit::CodeBuffer& buf = code.textSection()->buffer();
    uint8_t* dst = memory_.HostPointer(GuestPhys(kCodeBase), buf.size());
    BTVM_CHECK(dst != nullptr);
    std::memcpy(dst, buf.data(), buf.size());
    SetUpBootState(memory_, GuestPhys(kCodeBase), &entry_);
    engine_ = std::make_unique<BtEngine>(memory_, pio_, mmio_, stop_, counters_);
  }

  // Runs `iterations` loop iterations; false if the guest did not stop.
  bool Run(uint64_t iterations) {
    stop_.store(false);
    cpu_ = entry_;
    cpu_.gpr[kRcx] = iterations;
    engine_->Run(cpu_);
    return stop_.load() && cpu_.gpr[kRcx] == 0;
  }

 private:
  GuestMemory memory_;
  PioBus pio_;
  MmioBus mmio_;
  Counters counters_;
  std::atomic<bool> stop_{false};
  StopPort port_{stop_};
  CpuState entry_, cpu_;
  std::unique_ptr<BtEngine> engine_;
};

constexpr uint64_t kLoopIterations = 20000;
constexpr int kBodyInsns = 60;  // with dec and jnz: one block (kMaxBlockInsns)
static_assert(kBodyInsns + 2 <= static_cast<int>(kMaxBlockInsns));

void RunLoop(benchmark::State& state, LoopGuest& guest, int accesses_per_iteration) {
  if (!guest.Run(kLoopIterations)) state.SkipWithError("guest did not run to its stop");
  for (auto _ : state) {
    if (!guest.Run(kLoopIterations)) state.SkipWithError("guest did not run to its stop");
  }
  // Seconds per loop iteration and per access (kInvert: time per item).
  state.counters["per_iteration"] = benchmark::Counter(
      kLoopIterations, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  if (accesses_per_iteration > 0) {
    state.counters["per_access"] =
        benchmark::Counter(static_cast<double>(kLoopIterations * accesses_per_iteration),
                           benchmark::Counter::kIsIterationInvariantRate |
                               benchmark::Counter::kInvert);
  }
}

// Block dispatch: the loop body is empty (sub; jnz).
void BM_BlockDispatch(benchmark::State& state) {
  LoopGuest guest([](asmjit::x86::Assembler&) {});
  RunLoop(state, guest, 0);
}
BENCHMARK(BM_BlockDispatch)->Unit(benchmark::kMillisecond);

// An indirect jump per iteration (to the next instruction, so the loop
// goes on there): the inline jump-cache lookup.
void BM_IndirectJumpLookup(benchmark::State& state) {
  LoopGuest guest([](asmjit::x86::Assembler& a) {
    asmjit::Label next = a.newLabel();
    a.lea(asmjit::x86::rax, asmjit::x86::ptr(next));
    a.jmp(asmjit::x86::rax);
    a.bind(next);
  });
  RunLoop(state, guest, 0);
}
BENCHMARK(BM_IndirectJumpLookup)->Unit(benchmark::kMillisecond);

// A call and a return per iteration: the stack sequences and the host
// call and ret they pair (bt_context.h).
void BM_CallReturn(benchmark::State& state) {
  LoopGuest guest([](asmjit::x86::Assembler& a) {
    asmjit::Label fn = a.newLabel(), over = a.newLabel();
    a.call(fn);
    a.jmp(over);
    a.bind(fn);
    a.ret();
    a.bind(over);
  });
  RunLoop(state, guest, 0);
}
BENCHMARK(BM_CallReturn)->Unit(benchmark::kMillisecond);

// Soft-TLB hits: 60 loads from one page (every probe hits after the first
// iteration). Compare with BM_RegisterMoves, the same block with register
// moves in place of the loads: the difference per access is the price of a
// hit (address computation, probe, host load). With LoopCounter::kDec the
// arithmetic flags are live across every probe and are saved around it.
void LoadBody(asmjit::x86::Assembler& a) {
  for (int i = 0; i < kBodyInsns; ++i) {
    a.mov(asmjit::x86::rax, asmjit::x86::qword_ptr(asmjit::x86::rbx, 8 * i));
  }
}

void BM_SoftTlbHitLoads(benchmark::State& state) {
  LoopGuest guest(LoadBody);
  RunLoop(state, guest, kBodyInsns);
}
BENCHMARK(BM_SoftTlbHitLoads)->Unit(benchmark::kMillisecond);

void BM_SoftTlbHitLoadsFlagsLive(benchmark::State& state) {
  LoopGuest guest(LoadBody, LoopCounter::kDec);
  RunLoop(state, guest, kBodyInsns);
}
BENCHMARK(BM_SoftTlbHitLoadsFlagsLive)->Unit(benchmark::kMillisecond);

void BM_RegisterMoves(benchmark::State& state) {
  LoopGuest guest([](asmjit::x86::Assembler& a) {
    for (int i = 0; i < kBodyInsns; ++i) a.mov(asmjit::x86::rax, asmjit::x86::rdx);
  });
  RunLoop(state, guest, kBodyInsns);
}
BENCHMARK(BM_RegisterMoves)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace btvm
