// The bt side of a differential run: see bt_runner.h for the harness.

#include "tests/diff/bt_runner.h"

#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "base/counters.h"
#include "base/cpu_state.h"
#include "devices/bus.h"
#include "mmu/guest_memory.h"
#include "runtime/bt_engine.h"
#include "tests/diff/generator.h"

namespace btvm::diff {

namespace {

// Guest-physical (and, for the harness, identical virtual) layout.
constexpr uint64_t kGuestRam = MiB(64);
constexpr uint64_t kGdt = 0x1000, kIdt = 0x2000, kTss = 0x3000, kHandlers = 0x4000;
constexpr uint64_t kIstBottom = 0x6000, kIstTop = 0x8000;
constexpr uint64_t kHarnessEnd = 0x8000;
constexpr uint64_t kTablePool = 0x10000, kTablePoolEnd = 0x40000;
constexpr uint64_t kCodePhys = 0x100000, kCodePhysEnd = 0x200000;
constexpr uint64_t kRegionPhys = 0x200000;
constexpr unsigned kVectors = 32;
constexpr uint64_t kHandlerStride = 16;

// Selectors (GDT index << 3 | RPL).
constexpr uint16_t kKernelCs = 0x08, kKernelSs = 0x10, kUserSs = 0x1b, kUserCs = 0x23,
                   kTssSel = 0x28;
// Descriptors (SDM Vol. 3 §3.4.5): G, L or D/B, P, DPL, S, type.
constexpr uint64_t kGdtEntries[] = {
    0,
    0x00af9b000000ffffull,  // kernel code: L, DPL0, execute/read
    0x00cf93000000ffffull,  // kernel data: DPL0, read/write
    0x00cff3000000ffffull,  // user data: DPL3
    0x00affb000000ffffull,  // user code: L, DPL3
};
constexpr uint16_t kKernelCodeAttrib = 0xa09b, kKernelDataAttrib = 0xc093;
constexpr uint16_t kUserCodeAttrib = 0xa0fb, kUserDataAttrib = 0xc0f3;
constexpr uint16_t kTssAttrib = 0x008b;  // present, busy 64-bit TSS
constexpr uint32_t kTssLimit = 0x67;

// Page-table entry bits (SDM Vol. 3 §4.5). Leaves carry A and D already, so
// the MMU never writes the tables.
constexpr uint64_t kPteP = 1, kPteW = 2, kPteU = 4, kPteA = 0x20, kPteD = 0x40, kPteNx = 1ull << 63;

// FXSAVE image offsets (SDM Vol. 1 §10.5.1).
constexpr size_t kFxFcw = 0, kFxMxcsr = 24, kFxMxcsrMask = 28, kFxXmm = 160;

bool HasErrorCode(unsigned v) {
  return v == kDF || (v >= kTS && v <= kPF) || v == kAC || v == kCP;
}

// --- Host-signal guard -----------------------------------------------------
// Translated code that faults in the host is a translator bug; the test
// tool reports it and goes on. The handler jumps back to the runner, which
// throws the engine away.

thread_local sigjmp_buf* t_guard = nullptr;
thread_local int t_signal = 0;
thread_local uint64_t t_signal_pc = 0, t_signal_addr = 0;
constexpr int kGuardedSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP};

void OnHostSignal(int sig, siginfo_t* info, void* ctx) {
  if (t_guard == nullptr) {
    // Not ours: the default action, as if no handler existed.
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  t_signal_pc = static_cast<uint64_t>(static_cast<ucontext_t*>(ctx)->uc_mcontext.gregs[REG_RIP]);
  t_signal_addr = reinterpret_cast<uint64_t>(info->si_addr);
  t_signal = sig;
  sigjmp_buf* guard = t_guard;
  t_guard = nullptr;
  siglongjmp(*guard, sig);
}

void InstallSignalGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnHostSignal;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (int sig : kGuardedSignals) sigaction(sig, &sa, nullptr);
  });
}

// --- Watchdog: stops an engine that runs too long ---------------------------
// A translator bug could loop forever inside chained blocks; the watchdog
// raises the stop flag and kicks the engine back to its loop, which then
// sees the flag.

class Watchdog {
 public:
  Watchdog() : thread_([this] { Loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> l(m_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // `on_timeout` runs on the watchdog thread, under the lock Disarm takes:
  // once Disarm returns, it is not running and will not run.
  void Arm(std::chrono::milliseconds timeout, std::function<void()> on_timeout) {
    std::lock_guard<std::mutex> l(m_);
    deadline_ = std::chrono::steady_clock::now() + timeout;
    on_timeout_ = std::move(on_timeout);
    armed_ = true;
    cv_.notify_all();
  }
  void Disarm() {
    std::lock_guard<std::mutex> l(m_);
    armed_ = false;
    on_timeout_ = nullptr;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> l(m_);
    while (!quit_) {
      if (!armed_) {
        cv_.wait(l);
        continue;
      }
      if (cv_.wait_until(l, deadline_) == std::cv_status::timeout && armed_ &&
          std::chrono::steady_clock::now() >= deadline_) {
        on_timeout_();
        armed_ = false;
      }
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  bool armed_ = false, quit_ = false;
  std::chrono::steady_clock::time_point deadline_;
  std::function<void()> on_timeout_;
  std::thread thread_;
};

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

struct BtRunner::Impl {
  explicit Impl(GuestMemory m) : memory(std::move(m)) {}

  GuestMemory memory;
  PioBus pio;
  MmioBus mmio;
  Counters counters;
  std::atomic<bool> stop{false};
  Watchdog watchdog;
  uint64_t next_table = kTablePool;

  uint8_t* Phys(uint64_t addr, uint64_t len) {
    uint8_t* p = memory.HostPointer(GuestPhys(addr), len);
    BTVM_CHECK(p != nullptr);
    return p;
  }
  template <typename T>
  void Put(uint64_t addr, const T& v) {
    std::memcpy(Phys(addr, sizeof(T)), &v, sizeof(T));
  }
  template <typename T>
  T Get(uint64_t addr) {
    T v;
    std::memcpy(&v, Phys(addr, sizeof(T)), sizeof(T));
    return v;
  }

  uint64_t NewTable() {
    BTVM_CHECK(next_table < kTablePoolEnd);
    const uint64_t t = next_table;
    next_table += kPageSize;
    std::memset(Phys(t, kPageSize), 0, kPageSize);
    return t;
  }
  // Maps one 4 KiB page; intermediate entries allow everything, the leaf
  // says what is allowed (SDM Vol. 3 §4.6: permissions combine).
  void Map(uint64_t virt, uint64_t phys, uint64_t leaf_flags) {
    uint64_t table = kTablePool;  // the PML4
    for (int level = 3; level > 0; --level) {
      const uint64_t slot = table + 8 * ((virt >> (12 + 9 * level)) & 511);
      uint64_t e = Get<uint64_t>(slot);
      if (!(e & kPteP)) {
        e = NewTable() | kPteP | kPteW | kPteU | kPteA;
        Put<uint64_t>(slot, e);
      }
      table = e & 0x000ffffffffff000ull;
    }
    Put<uint64_t>(table + 8 * ((virt >> 12) & 511), phys | leaf_flags | kPteP | kPteA | kPteD);
  }

  void BuildHarness() {
    std::memset(Phys(0, kTablePoolEnd), 0, kTablePoolEnd);
    next_table = kTablePool;
    NewTable();  // the PML4
    // Harness pages: supervisor only, identity-mapped; only the handlers
    // are executable.
    for (uint64_t p = kGdt; p < kHarnessEnd; p += kPageSize) {
      const bool code = p == kHandlers;
      Map(p, p, kPteW | (code ? 0 : kPteNx));
    }
    for (size_t i = 0; i < std::size(kGdtEntries); ++i) Put<uint64_t>(kGdt + 8 * i, kGdtEntries[i]);
    // The TSS descriptor: 16 bytes (SDM Vol. 3 §7.2.3).
    const uint64_t tss_low =
        (kTssLimit & 0xffff) | ((kTss & 0xffffff) << 16) | (uint64_t{kTssAttrib & 0xff} << 40) |
        (uint64_t{(kTssLimit >> 16) & 0xf} << 48) | (((kTss >> 24) & 0xff) << 56);
    Put<uint64_t>(kGdt + kTssSel, tss_low);
    Put<uint64_t>(kGdt + kTssSel + 8, kTss >> 32);
    // TSS: RSP0 and IST1 at the top of the IST stack; no I/O bitmap.
    Put<uint64_t>(kTss + 4, kIstTop);
    Put<uint64_t>(kTss + 0x24, kIstTop);
    Put<uint16_t>(kTss + 102, static_cast<uint16_t>(kTssLimit + 1));
    // IDT: a 64-bit interrupt gate per exception vector, IST1; #BP and #OF
    // may be raised from CPL3 by int3/into (gate DPL 3).
    for (unsigned v = 0; v < kVectors; ++v) {
      const uint64_t target = kHandlers + kHandlerStride * v;
      const uint64_t dpl = (v == kBP || v == kOF) ? 3 : 0;
      const uint64_t low = (target & 0xffff) | (uint64_t{kKernelCs} << 16) | (1ull << 32) |
                           (0xeull << 40) | (dpl << 45) | (1ull << 47) |
                           (((target >> 16) & 0xffff) << 48);
      Put<uint64_t>(kIdt + 16 * v, low);
      Put<uint64_t>(kIdt + 16 * v + 8, target >> 32);
      Put<uint8_t>(target, 0xf4);  // hlt
    }
  }
};

BtRunner::BtRunner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BtRunner::~BtRunner() = default;

Result<std::unique_ptr<BtRunner>> BtRunner::Create() {
  Result<GuestMemory> m = GuestMemory::Create(kGuestRam);
  if (!m) return m.error();
  InstallSignalGuard();
  return std::unique_ptr<BtRunner>(new BtRunner(std::make_unique<Impl>(std::move(m.value()))));
}

Outcome BtRunner::Run(std::span<const uint8_t> code, const native::MachineState& initial,
                      unsigned cpl) {
  Impl& m = *impl_;
  Outcome out;
  auto fail = [&](std::string why) {
    out.kind = Outcome::kError;
    out.message = std::move(why);
    return out;
  };

  // --- Memory: harness, code (+ hlt, then int3 filler), regions.
  m.BuildHarness();
  const uint64_t code_pages = (code.size() + 1 + kPageSize - 1) / kPageSize;
  if (kCodePhys + code_pages * kPageSize > kCodePhysEnd) return fail("snippet too large");
  if ((kCodeAddress & ~kPageMask) != 0) return fail("code address not page-aligned");
  uint8_t* code_host = m.Phys(kCodePhys, code_pages * kPageSize);
  std::memset(code_host, 0xcc, code_pages * kPageSize);
  std::memcpy(code_host, code.data(), code.size());
  code_host[code.size()] = 0xf4;  // hlt
  for (uint64_t i = 0; i < code_pages; ++i) {
    m.Map(kCodeAddress + i * kPageSize, kCodePhys + i * kPageSize, kPteU);
  }
  uint64_t phys = kRegionPhys;
  std::vector<uint64_t> region_phys;
  for (const native::MemoryRegion& r : initial.memory) {
    if (phys + r.bytes.size() > kGuestRam) return fail("memory regions too large");
    if (r.address < kHarnessEnd + kPageSize) return fail("memory region overlaps the harness");
    region_phys.push_back(phys);
    std::memcpy(m.Phys(phys, r.bytes.size()), r.bytes.data(), r.bytes.size());
    if (r.access != native::Access::kNone) {
      const uint64_t flags = kPteU | kPteNx | (r.access == native::Access::kReadWrite ? kPteW : 0);
      for (uint64_t off = 0; off < r.bytes.size(); off += kPageSize) {
        m.Map(r.address + off, phys + off, flags);
      }
    }
    phys += r.bytes.size();
  }

  // --- CPU: long mode, paging, SSE; the segments of the chosen CPL.
  auto cpu = std::make_unique<CpuState>();
  CpuState& c = *cpu;
  c.cr0 = cr0::kPE | cr0::kMP | cr0::kET | cr0::kNE | cr0::kWP | cr0::kPG;
  c.cr3 = kTablePool;
  c.cr4 = cr4::kPAE | cr4::kOSFXSR | cr4::kOSXMMEXCPT;
  c.efer = efer::kLME | efer::kLMA | efer::kNXE;
  c.xcr0 = 3;
  const bool user = cpl == 3;
  c.seg[kCs] = SegmentReg{user ? kUserCs : kKernelCs, user ? kUserCodeAttrib : kKernelCodeAttrib,
                          0xffffffff, 0};
  c.seg[kSs] = SegmentReg{user ? kUserSs : kKernelSs, user ? kUserDataAttrib : kKernelDataAttrib,
                          0xffffffff, 0};
  c.gdtr = DescriptorTable{kGdt, static_cast<uint16_t>(8 * 7 - 1), {}};
  c.idtr = DescriptorTable{kIdt, static_cast<uint16_t>(16 * kVectors - 1), {}};
  c.tr = SegmentReg{kTssSel, kTssAttrib, kTssLimit, kTss};
  std::memcpy(c.gpr, initial.gpr, sizeof(c.gpr));
  c.rip = kCodeAddress;
  // IF set, as a user process sees it natively; the arithmetic flags and DF
  // from the input (the same ones the native runner honours).
  c.rflags = rflags::kFixed1 | rflags::kIF | (initial.rflags & (rflags::kArith | rflags::kDF));
  const uint16_t fcw = 0x37f;
  const uint32_t mxcsr_mask = 0xffff;
  std::memcpy(c.xsave.bytes + kFxFcw, &fcw, sizeof fcw);
  std::memcpy(c.xsave.bytes + kFxMxcsr, &initial.mxcsr, sizeof initial.mxcsr);
  std::memcpy(c.xsave.bytes + kFxMxcsrMask, &mxcsr_mask, sizeof mxcsr_mask);
  std::memcpy(c.xsave.bytes + kFxXmm, initial.xmm, sizeof initial.xmm);

  // --- Run, guarded against host signals and endless loops.
  m.stop.store(false);
  EngineExit exit;
  std::unique_ptr<BtEngine> engine =
      std::make_unique<BtEngine>(m.memory, m.pio, m.mmio, m.stop, m.counters);
  sigjmp_buf guard;
  if (sigsetjmp(guard, 1) == 0) {
    t_guard = &guard;
    BtEngine* e = engine.get();
    m.watchdog.Arm(std::chrono::milliseconds(1000), [&m, e] {
      m.stop.store(true);
      e->Kick();
    });
    exit = engine->Run(c);
    m.watchdog.Disarm();
    t_guard = nullptr;
  } else {
    m.watchdog.Disarm();
    // Translated code left the host FPU/SSE control state as the guest had
    // it; restore the ABI's before anything else runs.
    const uint32_t host_mxcsr = 0x1f80;
    const uint16_t host_fcw = 0x37f;
    asm volatile("ldmxcsr %0" : : "m"(host_mxcsr));
    asm volatile("fldcw %0" : : "m"(host_fcw));
    // The engine was stopped between two of its own instructions; nothing
    // it owns is shared, so it is simply destroyed.
    engine.reset();
    const int sig = t_signal;
    return fail(std::string("host signal ") + std::to_string(sig) + " (" + strsignal(sig) +
                ") in the bt engine at host pc " + Hex(t_signal_pc) + ", address " +
                Hex(t_signal_addr));
  }
  if (m.stop.load()) return fail("bt engine did not finish within 1 s");

  // --- Read the result.
  native::MachineState& s = out.state;
  std::memcpy(s.gpr, c.gpr, sizeof(s.gpr));
  s.rflags = c.rflags;
  std::memcpy(s.xmm, c.xsave.bytes + kFxXmm, sizeof(s.xmm));
  std::memcpy(&s.mxcsr, c.xsave.bytes + kFxMxcsr, sizeof(s.mxcsr));
  for (size_t i = 0; i < initial.memory.size(); ++i) {
    const native::MemoryRegion& r = initial.memory[i];
    const uint8_t* p = m.Phys(region_phys[i], r.bytes.size());
    s.memory.push_back(
        native::MemoryRegion{r.address, std::vector<uint8_t>(p, p + r.bytes.size()), r.access});
  }
  if (exit.kind != EngineExit::kHalt) {
    static constexpr const char* kKinds[] = {"stop", "halt", "triple fault", "error"};
    return fail(std::string("bt engine exit: ") + kKinds[exit.kind] + ": " + exit.message);
  }
  const uint64_t end = kCodeAddress + code.size();
  if (!user && c.rip == end + 1) return out;  // the final hlt
  const uint64_t h = c.rip - 1;
  if (h < kHandlers || h >= kHandlers + kHandlerStride * kVectors ||
      (h - kHandlers) % kHandlerStride) {
    return fail("bt engine halted at unexpected rip " + Hex(c.rip));
  }
  const unsigned vector = static_cast<unsigned>((h - kHandlers) / kHandlerStride);
  // The frame IST1 holds: [error code] rip cs rflags rsp ss (SDM Vol. 3 §6.14.2).
  const uint64_t frame = c.gpr[kRsp];
  const uint64_t words = (kIstTop - frame) / 8;
  if (frame < kIstBottom || frame > kIstTop || (words != 5 && words != 6) ||
      (words == 6) != HasErrorCode(vector)) {
    return fail("bt engine left an odd exception frame for vector " + std::to_string(vector));
  }
  uint64_t f = frame;
  uint32_t error = 0;
  if (words == 6) {
    error = static_cast<uint32_t>(m.Get<uint64_t>(f));
    f += 8;
  }
  const uint64_t rip = m.Get<uint64_t>(f), rflags = m.Get<uint64_t>(f + 16),
                 rsp = m.Get<uint64_t>(f + 24);
  s.gpr[kRsp] = rsp;
  s.rflags = rflags;
  if (user && vector == kGP && rip == end) return out;  // the final hlt at CPL3
  out.kind = Outcome::kFault;
  out.vector = static_cast<uint8_t>(vector);
  out.rip_offset = rip - kCodeAddress;
  out.error_code = error;
  if (vector == kPF) out.fault_address = c.cr2;
  return out;
}

Outcome RunNativeOutcome(std::span<const uint8_t> code, const native::MachineState& initial) {
  Outcome out;
  Result<native::RunResult> r = native::RunNative(code, initial, kCodeAddress);
  if (!r) {
    out.kind = Outcome::kError;
    out.message = "native runner: " + r.error().message;
    return out;
  }
  out.state = std::move(r->final);
  if (r->signal == 0) return out;
  out.kind = Outcome::kFault;
  out.vector = static_cast<uint8_t>(r->trap_number);
  out.rip_offset = r->fault_rip_offset;
  out.error_code = static_cast<uint32_t>(r->error_code);
  out.fault_address = r->fault_address;
  return out;
}

}  // namespace btvm::diff
