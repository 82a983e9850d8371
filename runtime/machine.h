#pragma once
// Machine: the one composition root (STYLE.md habit 4). It owns guest RAM,
// the buses, the devices, the vCPU state and the engine; everything else
// holds references. No globals: a test can build many machines.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "base/counters.h"
#include "base/cpu_state.h"
#include "base/result.h"
#include "devices/acpi_pm.h"
#include "devices/acpi_tables.h"
#include "devices/bus.h"
#include "devices/clock.h"
#include "devices/cmos_rtc.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/i8254.h"
#include "devices/i8259.h"
#include "devices/ioapic.h"
#include "devices/local_apic.h"
#include "devices/uart_16550.h"
#include "mmu/guest_memory.h"
#include "runtime/console.h"
#include "runtime/emulate.h"
#include "runtime/engine.h"
#include "runtime/gdb_stub.h"
#include "runtime/trace.h"
#include "runtime/linux_boot.h"

namespace btvm {

struct MachineConfig {
  uint64_t memory = MiB(128);
  std::string engine = "bt";
  std::string direct_transport = "seccomp";  // --engine direct: ptrace or seccomp
  bool direct_check_maps = false;  // --engine direct: check the child's maps (DirectEngine)
  bool direct_always_child = false;  // --engine direct: no adaptive policy (DirectEngine)
  // An ELF64 image per docs/entry-contract.md, or a Linux bzImage (the
  // boot protocol, runtime/linux_boot.h) with `initrd` and `cmdline`.
  std::vector<uint8_t> kernel;
  std::vector<uint8_t> initrd;
  std::string cmdline;
  KernelEntry linux_entry = KernelEntry::kDecompressed;
  int console_in = 0;           // fd read for COM1 input (-1: none)
  std::FILE* console_out = stdout;
  uint64_t code_cache = uint64_t{64} << 20;  // bytes of translated code before a flush
  bool stats = false;           // count what --stats reports (inline TLB hits cost a little)
  TraceOptions trace;           // what --trace shows (runtime/trace.h), into trace_out
  GdbStub* gdb = nullptr;       // --gdb: a debugger may attach (runtime/gdb_stub.h)
  std::FILE* trace_out = stderr;
};

// How a run ended, as the process exit status tells it.
struct RunOutcome {
  int status = 0;       // (v << 1) | 1 for a debug exit of v; 0 for reset/power-off
  bool ok = true;       // false: btvm could not go on; `message` says why
  std::string message;
};

class Machine final : public SystemControl, public IrqSink, public InterruptSource,
                      public CpuPlatform {
 public:
  static Result<std::unique_ptr<Machine>> Create(const MachineConfig& config);
  ~Machine() override;

  RunOutcome Run();

  const Counters& counters() const { return counters_; }
  // --stats: a summary (where the time went, translation, the soft TLB,
  // exits), then every counter and the engine's own.
  void PrintStats(std::FILE* out) const;
  CpuState& cpu() { return cpu_; }
  GuestMemory& memory() { return memory_; }
  PioBus& pio() { return pio_; }
  const Engine& engine() const { return *engine_; }

  // SystemControl
  void RequestExit(int status) override;
  void RequestReset() override;
  void RequestPowerOff() override;
  // IrqSink: ISA interrupt lines go to the i8259 pair and to the IOAPIC
  // (IRQ 0 to GSI 2, as the MADT's override says; levels are also
  // recorded for tests).
  void SetIrqLevel(unsigned line, bool level) override;
  bool irq_level(unsigned line) const { return line < 16 && (irq_levels_ >> line) & 1; }

  // InterruptSource: the local APIC's interrupts, and the PIC's INTR
  // while the APIC takes it (virtual wire), with the timers brought up to
  // host time first, and console input polled.
  bool InterruptPending() override;
  uint8_t AcknowledgeInterrupt() override;
  uint64_t NextDeadlineNs() override;
  void WaitUntil(uint64_t deadline_ns) override;

  // CpuPlatform: the local APIC's MSRs and CR8.
  MsrResult ReadMsr(uint32_t index, uint64_t* value) override;
  MsrResult WriteMsr(uint32_t index, uint64_t value) override;
  uint64_t ReadCr8() override { return apic_->GetCr8(); }
  void WriteCr8(uint64_t value) override { apic_->SetCr8(value); }
  LocalApic& apic() { return *apic_; }
  IoApic& ioapic() { return *ioapic_; }

 private:
  Machine(GuestMemory memory, const MachineConfig& config);
  void PollConsoleInput();

  MachineConfig config_;
  GuestMemory memory_;
  PioBus pio_;
  MmioBus mmio_;
  Counters counters_;
  CpuState cpu_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Tracer> tracer_;  // with --trace
  uint64_t run_tsc_ = 0;            // host TSC cycles in Run
  RunOutcome stop_outcome_;
  uint16_t irq_levels_ = 0;
  bool console_open_ = true;

  // A PioDevice in front of the UART that feeds it console input before the
  // guest reads a register (so input arrives while the guest polls).
  class ConsolePort;
  HostClock clock_;
  I8259Pair pic_;
  // The guest TSC as the engines read it (the host's), against clock_.
  class GuestTscModel;
  std::unique_ptr<GuestTscModel> tsc_model_;
  std::unique_ptr<LocalApic> apic_;
  std::unique_ptr<IoApic> ioapic_;
  std::unique_ptr<I8254> pit_;
  std::unique_ptr<CmosRtc> rtc_;
  uint64_t next_input_poll_ns_ = 0;
  ConsoleEscapes escapes_;  // Ctrl-A x, Ctrl-A h on the console input
  std::unique_ptr<Uart16550> uart_;
  std::unique_ptr<ConsolePort> console_port_;
  std::unique_ptr<DebugExit> debug_exit_;
  std::unique_ptr<I8042> i8042_;
  std::unique_ptr<AcpiPm> acpi_pm_;
  std::unique_ptr<ResetControl> reset_control_;
  std::unique_ptr<Engine> engine_;
};

// The built-in default guest (tests/guest/default.c), linked into btvm.
std::span<const uint8_t> DefaultGuestImage();

}  // namespace btvm
