#include "runtime/machine.h"

#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>

#include "runtime/bt_engine.h"
#include "runtime/direct/direct_engine.h"
#include "runtime/kvm/kvm_engine.h"
#include "runtime/loader.h"

namespace btvm {

class Machine::ConsolePort final : public PioDevice {
 public:
  ConsolePort(Machine& m, Uart16550& uart) : machine_(m), uart_(uart) {}
  uint32_t PioRead(uint16_t offset, unsigned size) override {
    machine_.PollConsoleInput();
    return uart_.PioRead(offset, size);
  }
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override {
    uart_.PioWrite(offset, size, value);
  }

 private:
  Machine& machine_;
  Uart16550& uart_;
};

// Guest TSC = host TSC (+ the guest's IA32_TSC offset, which only rdtsc
// sees: the TSC deadline follows the host TSC, a small inexactness for a
// guest that both writes IA32_TSC and arms a deadline). Host TSC and
// CLOCK_MONOTONIC are tied once at start-up at HostTscKhz().
class Machine::GuestTscModel final : public TscModel {
 public:
  explicit GuestTscModel(const Clock& clock)
      : khz_(HostTscKhz()), ns0_(clock.NowNs()), tsc0_(__rdtsc()) {}
  uint64_t NsToTsc(uint64_t ns) const override {
    if (ns < ns0_) return tsc0_ - static_cast<uint64_t>((ns0_ - ns) * khz_ / 1'000'000);
    return tsc0_ + static_cast<uint64_t>(static_cast<unsigned __int128>(ns - ns0_) * khz_ / 1'000'000);
  }
  uint64_t TscToNs(uint64_t tsc) const override {
    if (tsc <= tsc0_) return ns0_ - std::min<uint64_t>(ns0_, (tsc0_ - tsc) * 1'000'000 / khz_);
    unsigned __int128 ns = static_cast<unsigned __int128>(tsc - tsc0_) * 1'000'000 / khz_ + ns0_;
    return ns >= ClockedDevice::kNever ? ClockedDevice::kNever : static_cast<uint64_t>(ns) + 1;
  }

 private:
  uint64_t khz_, ns0_, tsc0_;
};

Machine::Machine(GuestMemory memory, const MachineConfig& config)
    : config_(config), memory_(std::move(memory)) {
  config_.kernel.clear();  // loaded already; no second copy
  // The interrupt controllers first: the other devices drive lines into
  // them from their constructors on.
  tsc_model_ = std::make_unique<GuestTscModel>(clock_);
  apic_ = std::make_unique<LocalApic>(clock_, *tsc_model_);
  ioapic_ = std::make_unique<IoApic>(*apic_);
  apic_->SetEoiListener([this](uint8_t vector) { ioapic_->EndOfInterrupt(vector); });
  // What firmware leaves for an OS: the 8259's INTR through LINT0.
  apic_->ProgramVirtualWire();
  std::FILE* out = config.console_out;
  uart_ = std::make_unique<Uart16550>(IrqLine(this, Uart16550::kCom1Irq), [out](uint8_t byte) {
    std::fputc(byte, out);
    if (byte == '\n') std::fflush(out);
  });
  console_port_ = std::make_unique<ConsolePort>(*this, *uart_);
  debug_exit_ = std::make_unique<DebugExit>(this);
  pit_ = std::make_unique<I8254>(IrqLine(this, I8254::kIrq), clock_);
  // The RTC runs half a second ahead of the host: an OS that sets its clock
  // from the RTC's whole seconds at boot (Linux's hctosys) then starts
  // within half a second of the host's time instead of up to a second
  // behind it.
  rtc_ = std::make_unique<CmosRtc>(IrqLine(this, 8), clock_, HostUnixTimeNs() + 500'000'000);
  i8042_ = std::make_unique<I8042>(this);
  acpi_pm_ = std::make_unique<AcpiPm>(IrqLine(this, AcpiPm::kSciIrq), clock_, this);
  reset_control_ = std::make_unique<ResetControl>(this);
  console_open_ = config.console_in >= 0;
}

Machine::~Machine() = default;

Result<std::unique_ptr<Machine>> Machine::Create(const MachineConfig& config) {
  if (config.engine != "bt" && config.engine != "direct" && config.engine != "kvm") {
    return MakeError("unknown engine '" + config.engine + "' (this build has: bt, direct, kvm)");
  }
  Result<GuestMemory> memory = GuestMemory::Create(config.memory);
  if (!memory) return memory.error();
  std::unique_ptr<Machine> m(new Machine(std::move(memory.value()), config));

  Status s = m->pio_.Register(Uart16550::kCom1Base, Uart16550::kRegisterCount,
                              m->console_port_.get(), "com1");
  if (s) s = m->pio_.Register(DebugExit::kIoBase, DebugExit::kIoSize, m->debug_exit_.get(),
                              "isa-debug-exit");
  if (s) s = m->i8042_->RegisterOn(m->pio_);
  if (s) s = m->pic_.RegisterOn(m->pio_);
  if (s) s = m->pit_->RegisterOn(m->pio_);
  if (s) s = m->rtc_->RegisterOn(m->pio_);
  if (s) s = m->acpi_pm_->RegisterOn(m->pio_);
  if (s) s = m->reset_control_->RegisterOn(m->pio_);
  if (s) s = m->apic_->RegisterOn(m->mmio_);
  if (s) s = m->ioapic_->RegisterOn(m->mmio_);
  if (!s) return s.error();
  {
    uint64_t below = 0, above = 0;
    for (const RamRegion& r : m->memory_.regions()) {
      (r.base.value < GiB(4) ? below : above) += r.size;
    }
    m->rtc_->SetMemorySize(below, above);
  }

  if (IsBzImage(config.kernel)) {
    LinuxBootConfig boot;
    boot.entry = config.linux_entry;
    boot.acpi_rsdp = kAcpiRsdpAddress;
    Result<LinuxBootInfo> info = LoadLinux(config.kernel, config.initrd, config.cmdline, boot,
                                           m->memory_, &m->cpu_);
    if (!info) return info.error();
  } else {
    if (!config.initrd.empty() || !config.cmdline.empty()) {
      return MakeError("--initrd and --append are for Linux kernels (bzImage files)");
    }
    Result<LoadedKernel> k = LoadElfKernel(config.kernel, m->memory_, &m->cpu_);
    if (!k) return k.error();
  }
  // The firmware's tables, where a PC BIOS keeps them (the loaders leave
  // [kAcpiTablesBase, kAcpiTablesLimit) alone and e820 reserves it).
  {
    AcpiTables tables = BuildAcpiTables(kAcpiTablesBase);
    Status w = m->memory_.Write(kAcpiTablesBase, tables.bytes);
    if (!w) return w.error();
  }
  if (config.stats) {
    m->pio_.set_busy_counter(&m->counters_.time.devices);
    m->mmio_.set_busy_counter(&m->counters_.time.devices);
  }
  if (config.trace.any()) m->tracer_ = std::make_unique<Tracer>(config.trace, config.trace_out);
  if (config.engine == "kvm") {
    if (m->tracer_) return MakeError("--trace shows translation: it needs --engine bt or direct");
    if (config.gdb) return MakeError("--gdb needs --engine bt or direct");
    // A host whose KVM cannot run a guest says so here, in one line.
    if (Status probe = KvmEngine::Probe(); !probe) return probe.error();
    Result<std::unique_ptr<KvmEngine>> engine = KvmEngine::Create(
        m->memory_, m->pio_, m->mmio_, m->stop_, m->counters_, m.get(), m.get());
    if (!engine) return engine.error();
    m->engine_ = std::move(engine.value());
  } else if (config.engine == "direct") {
    auto engine = std::make_unique<DirectEngine>(m->memory_, m->pio_, m->mmio_, m->stop_,
                                                 m->counters_, m.get(), config.code_cache);
    engine->bt().set_count_tlb_hits(config.stats);
    engine->bt().set_platform(m.get());
    engine->bt().set_tracer(m->tracer_.get());
    engine->bt().set_gdb(config.gdb);
    engine->set_transport(config.direct_transport == "ptrace" ? direct::Transport::kPtrace
                                                              : direct::Transport::kSeccomp);
    engine->set_check_maps(config.direct_check_maps);
    engine->set_placement(config.direct_always_child ? DirectEngine::Placement::kChild
                                                     : DirectEngine::Placement::kAdaptive);
    m->engine_ = std::move(engine);
  } else {
    auto engine = std::make_unique<BtEngine>(m->memory_, m->pio_, m->mmio_, m->stop_,
                                             m->counters_, m.get(), config.code_cache);
    engine->set_count_tlb_hits(config.stats);
    engine->set_platform(m.get());
    engine->set_tracer(m->tracer_.get());
    engine->set_gdb(config.gdb);
    m->engine_ = std::move(engine);
  }
  return m;
}

void Machine::PollConsoleInput() {
  if (!console_open_) return;
  std::fflush(config_.console_out);  // what the guest printed before it reads
  while (uart_->CanReceive()) {
    pollfd p{config_.console_in, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) return;
    uint8_t byte;
    ssize_t n = read(config_.console_in, &byte, 1);
    if (n <= 0) {  // end of input: the line stays idle
      console_open_ = false;
      return;
    }
    uint8_t deliver = 0;
    switch (escapes_.Feed(byte, &deliver)) {
      case ConsoleEscapes::Action::kNone: break;
      case ConsoleEscapes::Action::kDeliver: uart_->Receive(deliver); break;
      case ConsoleEscapes::Action::kHelp:
        std::fputs(ConsoleEscapes::HelpText().c_str(), config_.console_out);
        std::fflush(config_.console_out);
        break;
      case ConsoleEscapes::Action::kQuit:
        std::fflush(config_.console_out);
        std::fputs("\r\nbtvm: terminated (C-a x)\r\n", stderr);
        RequestExit(0);
        console_open_ = false;
        return;
    }
  }
}

RunOutcome Machine::Run() {
  const uint64_t start = __rdtsc();
  EngineExit e = engine_->Run(cpu_);
  run_tsc_ += __rdtsc() - start;
  std::fflush(config_.console_out);
  if (config_.gdb) config_.gdb->Exited(stop_.load() ? stop_outcome_.status : 125);
  if (stop_.load()) return stop_outcome_;
  RunOutcome o;
  o.ok = false;
  o.status = 125;
  o.message = e.message;
  return o;
}

void Machine::PrintStats(std::FILE* out) const {
  const Counters& c = counters_;
  const double khz = static_cast<double>(HostTscKhz());
  std::fprintf(out, "btvm: summary (engine %s, %.2f s)\n", config_.engine.c_str(),
               static_cast<double>(run_tsc_) / khz / 1e3);
  const Counters::Time& t = c.time;
  const uint64_t parts = t.kernel_code + t.user_code + t.child + t.translator + t.mmu +
                         t.devices + t.idle;
  const std::pair<const char*, uint64_t> rows[] = {
      {"translated kernel code", t.kernel_code},
      {"translated user code", t.user_code},
      {"user code in the child (hand-overs included)", t.child},
      {"translating blocks", t.translator},
      {"soft-TLB misses (the MMU's slow path)", t.mmu},
      {"devices (port I/O and MMIO)", t.devices},
      {"idle in hlt", t.idle},
      {"the rest of the runtime", run_tsc_ > parts ? run_tsc_ - parts : 0},
  };
  std::fprintf(out, "  where the time went:\n");
  for (const auto& [what, tsc] : rows) {
    if (config_.engine == "kvm" && tsc == 0) continue;
    std::fprintf(out, "    %-46s %6.1f%%  %10.3f s\n", what,
                 run_tsc_ ? 100.0 * static_cast<double>(tsc) / static_cast<double>(run_tsc_) : 0,
                 static_cast<double>(tsc) / khz / 1e3);
  }
  if (c.guest_insns_translated) {
    std::fprintf(out,
                 "  %llu blocks translated (%llu guest instructions): %.1f host bytes per guest "
                 "instruction, %.1f in the main paths\n",
                 static_cast<unsigned long long>(c.blocks_translated + c.single_blocks),
                 static_cast<unsigned long long>(c.guest_insns_translated),
                 static_cast<double>(c.host_code_bytes) / c.guest_insns_translated,
                 static_cast<double>(c.host_main_bytes) / c.guest_insns_translated);
  }
  if (const uint64_t probes = c.tlb_hits + c.tlb_misses) {
    std::fprintf(out, "  soft TLB: %.2f%% of probes hit (%llu misses, %llu page walks)\n",
                 100.0 * static_cast<double>(c.tlb_hits) / static_cast<double>(probes),
                 static_cast<unsigned long long>(c.tlb_misses),
                 static_cast<unsigned long long>(c.page_walks));
  }
  std::fprintf(out,
               "  exits to the runtime %llu; instructions emulated there %llu (port I/O %llu, "
               "hlt %llu); events delivered %llu; blocks found by a lookup after an exit %llu; "
               "code-cache flushes %llu\n",
               static_cast<unsigned long long>(c.exits_to_runtime),
               static_cast<unsigned long long>(c.exits_sensitive),
               static_cast<unsigned long long>(c.exits_io),
               static_cast<unsigned long long>(c.exits_hlt),
               static_cast<unsigned long long>(c.exceptions_delivered),
               static_cast<unsigned long long>(c.exits_lookup + c.exits_unlinked),
               static_cast<unsigned long long>(c.cache_flushes));
  engine_->PrintSummary(out);
  std::fprintf(out, "btvm: statistics (engine %s)\n", config_.engine.c_str());
  c.Print(out);
  engine_->PrintStats(out);
}

void Machine::RequestExit(int status) {
  stop_outcome_ = {status, true, ""};
  stop_.store(true);
}

void Machine::RequestReset() {
  // The guest asked for a reboot: as QEMU with -no-reboot, the run ends.
  RequestExit(0);
}

void Machine::RequestPowerOff() { RequestExit(0); }

void Machine::SetIrqLevel(unsigned line, bool level) {
  if (line >= 16) return;
  irq_levels_ = static_cast<uint16_t>(level ? irq_levels_ | (1u << line)
                                            : irq_levels_ & ~(1u << line));
  if (line != I8259Pair::kCascadeLine) pic_.SetIrqLevel(line, level);
  // ISA IRQ n is IOAPIC pin n, but for the PIT's IRQ 0 on pin 2 (the
  // MADT's interrupt source override).
  if (line != I8259Pair::kCascadeLine) ioapic_->SetIrqLevel(line == 0 ? 2 : line, level);
}

bool Machine::InterruptPending() {
  uint64_t now = clock_.NowNs();
  for (ClockedDevice* d : {static_cast<ClockedDevice*>(pit_.get()),
                           static_cast<ClockedDevice*>(rtc_.get()),
                           static_cast<ClockedDevice*>(apic_.get()),
                           static_cast<ClockedDevice*>(acpi_pm_.get())}) {
    if (d->NextEventNs() <= now) d->Update();
  }
  // Console input for a guest that takes it by interrupt, looked at every
  // millisecond at most. (A polling guest gets it when it reads the UART:
  // bytes fed before it set the UART up would be lost in its FIFO reset.)
  if (now >= next_input_poll_ns_ && uart_->receive_interrupt_enabled()) {
    next_input_poll_ns_ = now + 1'000'000;
    PollConsoleInput();
  }
  return apic_->InterruptPending() || (apic_->AcceptsPicInterrupts() && pic_.InterruptPending());
}

// The APIC's own interrupts first, then the 8259's through LINT0 (as
// QEMU's pc machine orders them).
uint8_t Machine::AcknowledgeInterrupt() {
  if (apic_->InterruptPending()) return apic_->Acknowledge();
  return pic_.Acknowledge();
}

uint64_t Machine::NextDeadlineNs() {
  return std::min({pit_->NextEventNs(), rtc_->NextEventNs(), apic_->NextEventNs(),
                   acpi_pm_->NextEventNs()});
}

Machine::MsrResult Machine::ReadMsr(uint32_t index, uint64_t* value) {
  switch (index) {
    case LocalApic::kBaseMsr: *value = apic_->ReadBaseMsr(); return MsrResult::kDone;
    case LocalApic::kTscDeadlineMsr: *value = apic_->ReadTscDeadline(); return MsrResult::kDone;
    default: return MsrResult::kNotMine;
  }
}

Machine::MsrResult Machine::WriteMsr(uint32_t index, uint64_t value) {
  switch (index) {
    case LocalApic::kBaseMsr:
      // Linux never moves the APIC; a guest that does still finds its
      // registers only at the architectural address (not modelled).
      return apic_->WriteBaseMsr(value) ? MsrResult::kDone : MsrResult::kFault;
    case LocalApic::kTscDeadlineMsr:
      apic_->WriteTscDeadline(value);
      return MsrResult::kDone;
    default: return MsrResult::kNotMine;
  }
}

void Machine::WaitUntil(uint64_t deadline_ns) {
  // An idle guest may wait for input after a prompt that ends no line.
  std::fflush(config_.console_out);
  uint64_t now = clock_.NowNs();
  if (deadline_ns <= now) return;
  uint64_t wait_ms = (deadline_ns - now + 999'999) / 1'000'000;
  if (console_open_ && uart_->CanReceive()) {
    pollfd p{config_.console_in, POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::min<uint64_t>(wait_ms, 1000)));
    next_input_poll_ns_ = 0;
  } else {
    timespec ts{static_cast<time_t>((deadline_ns - now) / 1'000'000'000),
                static_cast<long>((deadline_ns - now) % 1'000'000'000)};
    nanosleep(&ts, nullptr);
  }
}

}  // namespace btvm
