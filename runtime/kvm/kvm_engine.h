#pragma once
// The kvm engine (`--engine kvm`): the same machine — guest RAM, buses,
// devices, interrupt controllers, virtual CPU model — with the guest's
// instructions run by the host's KVM (hardware assist) instead of
// translated. The column the other engines are measured against where the
// host has VT-x or AMD-V.
//
// KVM runs only the vCPU: no in-kernel interrupt controller, so the local
// APIC, IOAPIC and PICs stay btvm's (runtime/machine.cpp) and every access
// to them exits here (port I/O and MMIO through the same buses as the
// other engines; the APIC base and TSC-deadline MSRs through a KVM MSR
// filter); interrupts are injected with KVM_INTERRUPT when the guest can
// take one; a timer thread kicks the vCPU out of KVM_RUN at the machine's
// next deadline.
//
// Hosts whose /dev/kvm cannot run a guest (none; no permission; a KVM
// that only runs paravirtualized kernels, such as the PVM module) are told
// apart by Probe(), which runs a few instructions in 64-bit kernel mode.

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "base/counters.h"
#include "base/result.h"
#include "devices/bus.h"
#include "mmu/guest_memory.h"
#include "runtime/deadline_timer.h"
#include "runtime/emulate.h"
#include "runtime/engine.h"

struct kvm_run;

namespace btvm {

class KvmEngine final : public Engine {
 public:
  // Whether this host's KVM runs a guest: a tiny 64-bit kernel-mode probe
  // (port output, then hlt) must exit as it should. The error says why not.
  static Status Probe();

  // Opens /dev/kvm and builds the VM around `memory`. `irq` and
  // `platform` are the machine (interrupts and timers; the APIC's MSRs).
  static Result<std::unique_ptr<KvmEngine>> Create(GuestMemory& memory, PioBus& pio, MmioBus& mmio,
                                                   const std::atomic<bool>& stop,
                                                   Counters& counters, InterruptSource* irq,
                                                   CpuPlatform* platform);
  ~KvmEngine() override;

  const char* name() const override { return "kvm"; }
  EngineExit Run(CpuState& cpu) override;
  void PrintStats(std::FILE* out) const override;

 private:
  KvmEngine(GuestMemory& memory, PioBus& pio, MmioBus& mmio, const std::atomic<bool>& stop,
            Counters& counters, InterruptSource* irq, CpuPlatform* platform);
  Status Setup();
  Status SetCpuid(const CpuState& cpu);
  Status LoadState(const CpuState& cpu);
  Status StoreState(CpuState* cpu);
  // Before KVM_RUN: an interrupt injected if the guest can take one, else
  // an exit asked for when it can.
  Status OfferInterrupt();
  bool HandleIo();
  bool HandleMmio();
  bool HandleMsr(bool write);
  // hlt: waits for an interrupt; false (with *exit) when none can come.
  bool Halt(EngineExit* exit);

  GuestMemory& memory_;
  PioBus& pio_;
  MmioBus& mmio_;
  const std::atomic<bool>& stop_;
  Counters& counters_;
  InterruptSource* irq_;
  CpuPlatform* platform_;

  int kvm_ = -1, vm_ = -1, vcpu_ = -1;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
  uint64_t last_cr8_ = 0;

  // Exits by reason, for --stats.
  uint64_t exits_io_ = 0, exits_mmio_ = 0, exits_msr_ = 0, exits_hlt_ = 0, exits_window_ = 0,
           exits_kick_ = 0, exits_other_ = 0, injected_ = 0;

  // The kick at the machine's next deadline: a signal to the vCPU thread,
  // whose handler sets kvm_run.immediate_exit. Last: it goes first.
  pthread_t vcpu_thread_{};
  uint64_t armed_ns_ = 0;  // the kick timer_ was last armed for
  std::unique_ptr<DeadlineTimer> timer_;
};

}  // namespace btvm
