#pragma once
// The local APIC of a uniprocessor PC in xAPIC mode (registers memory-mapped
// at 0xfee00000), as the Intel SDM Vol. 3A chapter 11 ("Advanced
// Programmable Interrupt Controller (APIC)") describes it and as QEMU's
// hw/intc/apic.c models it. Linux's arch/x86/kernel/apic/ is the consumer.
// Section numbers (§) are those of SDM editions where the APIC is chapter
// 11 (chapter 10 in older ones).
//
// Registers (§11.4.1, Table 11-1): 32-bit accesses at 16-byte aligned
// offsets of the 4 KiB page. Any other access reads 0 and is dropped when
// written; an aligned 32-bit access to a reserved register also sets the ESR
// "illegal register address" bit (§11.5.3), as QEMU does.
//   0x020 ID (bits 31:24; 0 at reset, writable as in QEMU)
//   0x030 version: 0x00050014 (version 0x14, max LVT entry 5: timer,
//         thermal, performance, LINT0, LINT1, error), what QEMU 7.2 and KVM
//         without CMCI report. No CMCI LVT (it would be entry 6, and the CPU
//         does not report CMCI in MCG_CAP), so 0x2f0 is reserved; no directed
//         EOI (bit 24 clear), so SVR bit 12 is reserved and reads 0.
//   0x080 TPR, 0x090 APR (read-only, §11.6.2.4), 0x0a0 PPR (read-only,
//         §11.8.3.1), 0x0b0 EOI (write-only), 0x0c0 RRD (reads 0)
//   0x0d0 LDR (bits 31:24), 0x0e0 DFR (bits 31:28; 27:0 read as ones)
//   0x0f0 SVR: vector (7:0), software enable (8); 0xff at reset
//   0x100-0x170 ISR, 0x180-0x1f0 TMR, 0x200-0x270 IRR (read-only)
//   0x280 ESR: write, then read (§11.5.3): a write latches the errors seen
//         since the previous write and clears them; reads show the latch
//   0x300/0x310 ICR low/high (delivery status always reads 0)
//   0x320 LVT timer, 0x330 thermal, 0x340 performance, 0x350 LINT0,
//   0x360 LINT1, 0x370 error (0x00010000 at reset: masked)
//   0x380 timer initial count, 0x390 current count (read-only), 0x3e0
//         divide configuration (bits 0, 1, 3)
//
// Interrupt acceptance (§11.8.4): a fixed interrupt sets its IRR bit, and
// its TMR bit for a level-triggered one (cleared for an edge). Vectors 0-15
// are refused with the ESR "received illegal vector" bit (§11.5.2). A vector
// whose IRR bit is already set is merged into it (counted in
// coalesced_interrupts()); one more may wait in IRR while the same vector
// is in service. The processor priority PPR is TPR or the class of the
// highest vector in service (§11.8.3.1); the highest IRR vector is
// deliverable if its class (bits 7:4) is above PPR's. Acknowledge() is the
// INTA cycle: the deliverable vector moves from IRR to ISR; with nothing
// deliverable it returns the SVR's spurious vector and sets nothing (§11.9).
// An EOI write clears the highest ISR bit and, if that vector's TMR bit is
// set, tells the EOI listener (the IOAPIC) the vector (§11.8.5).
//
// Timer (§11.5.4): the bus clock is kBusFrequencyHz = 1 MHz (one count per
// 1000 ns before the divider), the core crystal clock CPUID leaf 0x15
// reports: Linux takes the APIC timer's period from that crystal, so the
// timer must tick at its rate. The divide configuration register divides it
// by 1-128. Nothing ticks: the current count and the next expiry are
// computed from the Clock. Modes (LVT bits 18:17): 0 one-shot, 1 periodic
// (reloads keep their phase; when several periods passed between two
// Update() calls one interrupt is raised and the others are counted in
// missed_timer_interrupts()), 2 TSC-deadline (§11.5.4.1: the
// IA32_TSC_DEADLINE MSR arms it, the interrupt clears the MSR, writing 0
// disarms it; the initial count is ignored and the current count reads 0),
// 3 reserved, which counts as one-shot. A write to the LVT timer that
// changes the mode disarms the timer (§11.5.4.1): the current count reads 0
// until the initial count is written again. Changing the divider while the
// timer counts keeps the current count (the rest of the period is
// rescaled). A masked timer counts but raises nothing, and its expiries are
// not events for NextEventNs(). The TSC is the guest's, as the machine
// defines it (TscModel).
//
// Local interrupts: the timer and the error LVT deliver fixed,
// edge-triggered interrupts; thermal and performance have no source here.
// LINT0 carries the 8259's INTR: with delivery mode ExtINT and unmasked the
// CPU takes interrupts from the 8259 (virtual wire, §11.5.1 and the MP
// specification), and so it does while the APIC is hardware-disabled
// (IA32_APIC_BASE bit 11 clear: §11.4.3, the processor then behaves as one
// without an APIC, LINT0 being INTR). AcceptsPicInterrupts() answers that;
// the engine asks the APIC first and the 8259 next, as QEMU does. LINT0 in
// fixed mode is not wired (no device drives it). LINT1 is the NMI input
// (SetLint1): a rising edge with LINT1 unmasked latches an NMI (delivery
// mode NMI) or accepts its vector (fixed).
//
// Software disable (SVR bit 8 clear, §11.4.7.2): every LVT is masked and
// stays masked while disabled (so ExtINT through LINT0 stops too, unlike
// QEMU, which keeps LINT0 as written); fixed interrupts from the IOAPIC or
// IPIs are refused (KVM's reading; the SDM names only INIT, NMI, SMI and
// SIPI as still accepted); what already waits in IRR is still delivered
// ("held and require masking or handling by the CPU"). NMI messages are
// accepted.
//
// Power-on state is the SDM's (§11.4.7.1): software-disabled, every LVT
// masked. A BIOS leaves the BSP in virtual wire mode before it boots an OS
// (SeaBIOS: SVR enabled, LINT0 0x8700, LINT1 0x8400); a machine that boots
// a kernel without firmware calls ProgramVirtualWire() to do the same (QEMU
// and KVM reset the BSP's LINT0 to ExtINT for that reason).
//
// ICR (§11.6.1): uniprocessor, so only IPIs that reach this APIC do
// anything: destination shorthand self or all-including-self, or no
// shorthand with a destination that matches (physical: this APIC's ID or
// 0xff; logical: LDR under DFR's flat or cluster model, §11.6.2.2). Fixed
// and lowest-priority IPIs set IRR (edge-triggered: the ICR's trigger mode
// only matters for INIT level de-assert); NMI latches an NMI; INIT, SIPI
// and SMI are ignored (there is no other CPU to start). A fixed IPI with a
// vector below 16 sets "send illegal vector" and, delivered to itself,
// "received illegal vector".
//
// IA32_APIC_BASE (MSR 0x1b): 0xfee00900 at reset (BSP, enabled). Writes
// with reserved bits set (0-7, 9, bits at or above the physical address
// width) or with the x2APIC enable bit 10 (x2APIC is not exposed) are
// refused: the caller raises #GP. Clearing bit 11 hardware-disables the APIC:
// it returns to its power-up state (§11.4.3 allows it), refuses interrupts,
// reads all ones through MMIO and drops MMIO writes. Relocation (a new base)
// is the machine's job: the APIC only stores the address, and the machine
// moves its MMIO registration.
//
// CR8 (§11.8.6.1) is TPR bits 7:4: mov to CR8 sets TPR = CR8 << 4.
//
// Not thread-safe: the engine calls everything on the thread that runs the
// guest.

#include <array>
#include <cstdint>
#include <functional>

#include "devices/bus.h"
#include "devices/clock.h"

namespace btvm {

// --- The APIC bus ------------------------------------------------------------

// Delivery modes of LVT entries, the ICR and IOAPIC redirection entries
// (SDM Vol. 3A §11.5.1, §11.6.1; 82093AA data sheet §3.2.4). 3 is reserved.
enum class ApicDeliveryMode : uint8_t {
  kFixed = 0,
  kLowestPriority = 1,
  kSmi = 2,
  kNmi = 4,
  kInit = 5,
  kStartup = 6,
  kExtInt = 7,
};
enum class ApicDestinationMode : uint8_t { kPhysical = 0, kLogical = 1 };
enum class ApicTriggerMode : uint8_t { kEdge = 0, kLevel = 1 };

// An interrupt message as the IOAPIC sends it to the local APICs.
struct ApicMessage {
  uint8_t vector = 0;
  ApicDeliveryMode delivery_mode = ApicDeliveryMode::kFixed;
  ApicDestinationMode destination_mode = ApicDestinationMode::kPhysical;
  ApicTriggerMode trigger_mode = ApicTriggerMode::kEdge;
  uint8_t destination = 0;  // APIC ID (physical) or logical destination
  bool operator==(const ApicMessage&) const = default;
};

// Where an IOAPIC sends its messages: the local APIC(s).
class ApicSink {
 public:
  virtual ~ApicSink() = default;
  // True if a local APIC accepted the message (an IOAPIC sets Remote IRR of
  // a level-triggered entry only then).
  virtual bool Deliver(const ApicMessage& message) = 0;
};

// --- The guest's TSC ---------------------------------------------------------

// The guest time-stamp counter as a function of Clock time, for the
// TSC-deadline timer. The machine supplies the definition rdtsc uses.
class TscModel {
 public:
  virtual ~TscModel() = default;
  // The guest TSC at Clock time `ns`.
  virtual uint64_t NsToTsc(uint64_t ns) const = 0;
  // The first Clock time at which NsToTsc() reaches `tsc` (earlier times
  // are allowed: the deadline has passed), or ClockedDevice::kNever.
  virtual uint64_t TscToNs(uint64_t tsc) const = 0;
};

// A TSC that counts `frequency_hz` from 0 at Clock time `origin_ns` (and
// reads 0 before it).
class FixedRateTsc final : public TscModel {
 public:
  FixedRateTsc(uint64_t frequency_hz, uint64_t origin_ns)
      : frequency_hz_(frequency_hz), origin_ns_(origin_ns) {}
  uint64_t NsToTsc(uint64_t ns) const override;
  uint64_t TscToNs(uint64_t tsc) const override;

 private:
  uint64_t frequency_hz_;
  uint64_t origin_ns_;
};

// --- The local APIC ----------------------------------------------------------

class LocalApic final : public MmioDevice, public ClockedDevice, public ApicSink {
 public:
  static constexpr uint64_t kDefaultBase = 0xfee00000;
  static constexpr uint64_t kMmioSize = 0x1000;
  static constexpr uint32_t kBaseMsr = 0x1b;          // IA32_APIC_BASE
  static constexpr uint32_t kTscDeadlineMsr = 0x6e0;  // IA32_TSC_DEADLINE
  // The timer's input clock before the divider: what CPUID leaf 0x15 (core
  // crystal clock, which Linux takes as the APIC timer's rate) or a
  // hypervisor timing leaf must report if the machine reports one.
  static constexpr uint64_t kBusFrequencyHz = 1'000'000;
  static constexpr uint32_t kVersion = 0x00050014;
  static constexpr unsigned kDefaultPhysAddrBits = 40;

  // LVT entries in register order (0x320 + 0x10 * index).
  enum Lvt : unsigned { kLvtTimer, kLvtThermal, kLvtPerf, kLvtLint0, kLvtLint1, kLvtError };
  static constexpr unsigned kLvtCount = 6;

  // ESR bits (§11.5.3, Pentium 4 and later).
  static constexpr uint32_t kEsrSendIllegalVector = 1u << 5;
  static constexpr uint32_t kEsrReceiveIllegalVector = 1u << 6;
  static constexpr uint32_t kEsrIllegalRegister = 1u << 7;

  // `phys_addr_bits` is the CPU's MAXPHYADDR (CPUID 0x80000008): base MSR
  // bits at or above it are reserved.
  LocalApic(const Clock& clock, const TscModel& tsc,
            unsigned phys_addr_bits = kDefaultPhysAddrBits);
  LocalApic(const LocalApic&) = delete;
  LocalApic& operator=(const LocalApic&) = delete;

  // Registers the page at kDefaultBase.
  Status RegisterOn(MmioBus& bus);

  // MmioDevice: offsets within the page.
  uint64_t MmioRead(uint64_t offset, unsigned size) override;
  void MmioWrite(uint64_t offset, unsigned size, uint64_t value) override;

  // ClockedDevice: the timer.
  void Update() override;
  uint64_t NextEventNs() const override;

  // ApicSink: a message from the IOAPIC.
  bool Deliver(const ApicMessage& message) override;

  // --- The engine's side ---
  // A fixed interrupt deliverable now (above PPR).
  bool InterruptPending() const;
  // The INTA cycle: the deliverable vector, moved from IRR to ISR, or the
  // spurious vector (nothing in ISR) if nothing is deliverable.
  uint8_t Acknowledge();
  // Whether the CPU takes the 8259's INTR (LINT0 in ExtINT mode and
  // unmasked, or the APIC hardware-disabled).
  bool AcceptsPicInterrupts() const;
  // An NMI latched from LINT1, an NMI IPI or an NMI message.
  bool NmiPending() const { return nmi_pending_; }
  void AcknowledgeNmi() { nmi_pending_ = false; }
  // The LINT1 pin (the PC's NMI line).
  void SetLint1(bool level);
  // Called when an interrupt becomes deliverable or an NMI is latched (to
  // wake a halted vCPU); InterruptPending() may already be true before.
  void SetInterruptListener(std::function<void()> listener);
  // Called with the vector on an EOI of a level-triggered interrupt (TMR
  // bit set): the EOI message to the IOAPICs.
  void SetEoiListener(std::function<void(uint8_t)> listener);

  // --- The CPU's side ---
  uint64_t GetCr8() const { return tpr_ >> 4; }
  void SetCr8(uint64_t value);  // the caller has checked bits 63:4 (#GP)
  uint64_t ReadBaseMsr() const { return base_msr_; }
  // False for a value the CPU refuses with #GP (see above).
  bool WriteBaseMsr(uint64_t value);
  // IA32_TSC_DEADLINE: 0 outside TSC-deadline mode; writes are ignored there.
  uint64_t ReadTscDeadline() const;
  void WriteTscDeadline(uint64_t value);

  // --- Firmware ---
  // What a BIOS leaves before booting an OS: software-enabled, LINT0 ExtINT
  // (virtual wire), LINT1 NMI.
  void ProgramVirtualWire();

  // Power-on state (the base MSR included); the NMI latch is cleared.
  void Reset();

  // For the machine's status output and for tests.
  GuestPhys base() const { return GuestPhys(base_msr_ & kBaseAddressMask); }
  bool hardware_enabled() const { return base_msr_ & kBaseEnable; }
  bool software_enabled() const { return svr_ & kSvrEnable; }
  uint8_t id() const { return id_; }
  uint8_t tpr() const { return tpr_; }
  uint8_t ppr() const { return Ppr(); }
  uint32_t lvt(Lvt entry) const { return lvt_[entry]; }
  bool irr(uint8_t vector) const { return Test(irr_, vector); }
  bool isr(uint8_t vector) const { return Test(isr_, vector); }
  bool tmr(uint8_t vector) const { return Test(tmr_, vector); }
  uint32_t CurrentCount() const;
  // Timer interrupts raised (masked expiries not counted).
  uint64_t timer_interrupts() const { return timer_interrupts_; }
  // Periodic expiries merged into another because Update() came late.
  uint64_t missed_timer_interrupts() const { return missed_timer_interrupts_; }
  // Fixed interrupts merged into an IRR bit already set.
  uint64_t coalesced_interrupts() const { return coalesced_interrupts_; }
  // Messages and IPIs refused: not for this APIC, APIC disabled, or a
  // delivery mode with no effect here (INIT, SIPI, SMI, ExtINT).
  uint64_t refused_messages() const { return refused_messages_; }
  uint64_t self_ipis() const { return self_ipis_; }
  uint64_t eoi_broadcasts() const { return eoi_broadcasts_; }

 private:
  using VectorBits = std::array<uint32_t, 8>;  // bit v%32 of word v/32, as the registers

  static constexpr uint64_t kBaseBsp = 1u << 8;
  static constexpr uint64_t kBaseX2apic = 1u << 10;
  static constexpr uint64_t kBaseEnable = 1u << 11;
  static constexpr uint64_t kBaseAddressMask = ~uint64_t{0xfff};
  static constexpr uint32_t kSvrEnable = 1u << 8;

  enum class TimerMode : uint8_t { kOneShot = 0, kPeriodic = 1, kTscDeadline = 2, kReserved = 3 };

  static bool Test(const VectorBits& bits, uint8_t vector) {
    return bits[vector / 32] >> (vector % 32) & 1;
  }
  static void Set(VectorBits& bits, uint8_t vector, bool value);
  static int Highest(const VectorBits& bits);  // -1 if none

  uint32_t ReadRegister(unsigned index);
  void WriteRegister(unsigned index, uint32_t value, uint64_t now);

  uint8_t Ppr() const;
  uint8_t Apr() const;
  int DeliverableVector() const;  // -1 if none
  // Sets IRR (and TMR); false if refused (illegal vector).
  bool Accept(uint8_t vector, ApicTriggerMode trigger);
  bool MatchesDestination(uint8_t destination, ApicDestinationMode mode) const;
  void RaiseLocal(Lvt entry);
  void SetError(uint32_t bits);
  void WriteEoi();
  void WriteSvr(uint32_t value);
  void WriteLvt(Lvt entry, uint32_t value);
  void SendIpi();
  void ResetRegisters();
  // Calls the interrupt listener if something new became pending.
  void Sync();

  // Timer.
  TimerMode Mode() const { return TimerMode(lvt_[kLvtTimer] >> 17 & 3); }
  uint64_t TickNs() const;  // nanoseconds per count at the current divider
  void CatchUpTimer(uint64_t now);
  void FireTimer();
  void WriteInitialCount(uint32_t value, uint64_t now);
  void WriteDivideConfig(uint32_t value, uint64_t now);

  const Clock& clock_;
  const TscModel& tsc_;
  const uint64_t reserved_base_bits_;

  uint64_t base_msr_;
  uint8_t id_ = 0;
  uint8_t tpr_ = 0;
  uint32_t ldr_ = 0;
  uint32_t dfr_ = 0xffffffff;
  uint32_t svr_ = 0xff;
  VectorBits isr_{}, tmr_{}, irr_{};
  uint32_t esr_ = 0;          // as last latched by an ESR write
  uint32_t pending_esr_ = 0;  // errors since
  uint32_t icr_low_ = 0, icr_high_ = 0;
  std::array<uint32_t, kLvtCount> lvt_{};
  bool in_error_interrupt_ = false;
  bool nmi_pending_ = false;
  bool lint1_ = false;
  bool signalled_ = false;  // pending as the interrupt listener last heard it

  // Timer: an expiry due at timer_next_ns_ (kNever: not counting), then
  // every timer_period_ns_ in periodic mode.
  uint32_t initial_count_ = 0;
  uint32_t divide_config_ = 0;
  uint64_t timer_next_ns_ = kNever;
  uint64_t timer_period_ns_ = 0;
  uint64_t tsc_deadline_ = 0;

  std::function<void()> interrupt_listener_;
  std::function<void(uint8_t)> eoi_listener_;

  uint64_t timer_interrupts_ = 0;
  uint64_t missed_timer_interrupts_ = 0;
  uint64_t coalesced_interrupts_ = 0;
  uint64_t refused_messages_ = 0;
  uint64_t self_ipis_ = 0;
  uint64_t eoi_broadcasts_ = 0;
};

}  // namespace btvm
