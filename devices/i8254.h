#pragma once
// The 8254 programmable interval timer and the PC's port B (0x61), as
// QEMU's pc machine has them (hw/timer/i8254.c, hw/audio/pcspk.c) and as
// the Intel 82C54 data sheet describes the counters.
//
// Three counters clocked at 1.193182 MHz: channel 0 drives IRQ 0, channel 1
// (DRAM refresh once) is unconnected, channel 2 drives the speaker and its
// gate and output are in port B. Nothing ticks: a counter remembers when it
// was loaded and computes its value and its OUT level from the Clock.
//
// Modes (82C54 data sheet, "Modes of Operation"; a count is taken at the
// tick it is written, without the data sheet's one-clock load delay, as in
// QEMU):
//   0  interrupt on terminal count: OUT low, high after N clocks, stays high;
//      gate low suspends counting; writing the first byte of a two-byte
//      count stops the counter.
//   1  hardware one-shot: a rising gate starts (or restarts) it; OUT low for
//      N clocks.
//   2  rate generator: period N, OUT low for the last clock of each period;
//      gate low suspends and forces OUT high, a rising gate restarts.
//   3  square wave: period N, OUT high for ceil(N/2), low for floor(N/2);
//      gate as in mode 2.
//   4  software strobe: OUT low for one clock when the count reaches 0 (N
//      clocks), then high; gate low suspends.
//   5  hardware strobe: as 4, started by a rising gate.
// A new count written while mode 2 or 3 is counting takes effect at the end
// of the current period (the data sheet says the end of the current half
// period for mode 3; here the full period, which keeps the phase simple).
// In the other modes it takes effect at once (1 and 5: at the next trigger).
// Counts in BCD (control word bit 0) count in decimal, 0 meaning 10000.
// Channels 0 and 1 have their gate tied high, so modes 1 and 5 never start
// there (QEMU starts them at once).
//
// Control word (port 0x43): counter select, access (latch, LSB, MSB,
// LSB-then-MSB), mode, BCD; the counter-latch command; the read-back command
// (0xc0 | !COUNT<<5 | !STATUS<<4 | counters<<1) latching count and/or status
// (OUT<<7 | null count<<6 | access<<4 | mode<<1 | BCD). A latched count and
// status are held until read (or the counter is reprogrammed); reads of an
// unlatched two-byte count alternate LSB and MSB of the live counter (which
// is what Linux's quick_pit_calibrate() reads).
//
// IRQ 0: each rising edge of channel 0's OUT is an interrupt. Update() sends
// one pulse on the line (raise, then lower: an edge-triggered PIC latches one
// request) for all the edges since the last Update(); when more than one
// edge passed, the others are counted in missed_irqs() rather than replayed
// (a guest that was not running cannot take them late anyway). Every port
// write first catches up the same way, so reprogramming never loses an
// interrupt that was already due.
//
// Port B (0x61, bits): 0 channel 2 gate (r/w), 1 speaker data enable (r/w),
// 2-3 parity/IOCHK check enables (r/w, no effect), 4 refresh toggle
// (flips every 15.085 µs, from the clock), 5 channel 2 OUT, 6-7 NMI sources
// (always 0).
//
// Power-on state is QEMU's: every counter in mode 3, LSB-then-MSB, count
// 65536, channels 0 and 1 counting (IRQ 0 at 18.2 Hz), channel 2's gate low.
//
// Not thread-safe: the engine calls Update() on the thread that runs the
// guest's port I/O.

#include <cstdint>

#include "devices/bus.h"
#include "devices/clock.h"

namespace btvm {

class I8254 final : public PioDevice, public ClockedDevice {
 public:
  static constexpr uint16_t kBase = 0x40;  // counters 0-2, control word at +3
  static constexpr uint16_t kPortCount = 4;
  static constexpr uint16_t kPortB = 0x61;
  static constexpr unsigned kIrq = 0;
  static constexpr uint64_t kFrequencyHz = 1193182;
  static constexpr unsigned kChannelCount = 3;

  I8254(IrqLine irq0, const Clock& clock);
  I8254(const I8254&) = delete;
  I8254& operator=(const I8254&) = delete;

  // Registers the counters at 0x40-0x43 and port B at 0x61.
  Status RegisterOn(PioBus& bus);
  PioDevice& port_b() { return port_b_; }

  // PioDevice (offsets 0-3 from kBase).
  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // ClockedDevice: IRQ 0.
  void Update() override;
  uint64_t NextEventNs() const override;

  // Power-on state (see above); IRQ 0 lowered.
  void Reset();

  uint8_t ReadPortB() const;
  void WritePortB(uint8_t value);
  // A counter's gate input (port B sets channel 2's).
  void SetGate(unsigned channel, bool level);
  // A counter's OUT pin now.
  bool Out(unsigned channel) const;
  bool speaker_enabled() const { return port_b_bits_ & 0x02; }
  // IRQ 0 edges that fell between two Update() calls after the first.
  uint64_t missed_irqs() const { return missed_irqs_; }

 private:
  enum class Phase : uint8_t {
    kIdle,     // control word written, no count yet (or mode 0 half-written)
    kArmed,    // modes 1, 5: count written, waiting for a rising gate
    kCounting  // the counting element runs (or is held by a low gate)
  };

  struct Channel {
    // Programming.
    uint8_t mode_bits = 3;  // control word bits 3-1 as written (6, 7 alias 2, 3)
    uint8_t access = 3;     // 1 LSB, 2 MSB, 3 LSB then MSB
    bool bcd = false;
    uint32_t count_register = 0x10000;  // the initial count, 1..65536 (BCD: 10000)
    bool null_count = false;            // a count written, not yet loaded
    // Flip-flops and latches.
    bool write_msb_next = false;
    uint8_t write_lsb = 0;
    bool read_msb_next = false;
    uint8_t latched_access = 0;  // bytes of latched_count left: 0 none, else as `access`
    uint16_t latched_count = 0;
    bool status_latched = false;
    uint8_t latched_status = 0;
    // The counting element.
    Phase phase = Phase::kIdle;
    bool gate = false;
    uint32_t cycle_count = 0x10000;  // N of the running cycle
    uint64_t start_tick = 0;         // when the counter held N (elapsed 0)
    bool held = false;               // gate low in modes 0, 2, 3, 4: frozen
    uint64_t held_elapsed = 0;
    bool reload_pending = false;  // modes 2, 3: count_register takes over at reload_tick
    uint64_t reload_tick = 0;
    uint16_t idle_value = 0;  // what the counter reads while not counting

    uint8_t Mode() const { return mode_bits >= 6 ? mode_bits - 4 : mode_bits; }
    uint32_t Modulus() const { return bcd ? 10000 : 0x10000; }
  };

  // A counter as it is at some tick: whether it counts, N, and the clocks
  // elapsed since it held N.
  struct View {
    bool counting;
    uint32_t n;
    uint64_t elapsed;
  };

  class PortB final : public PioDevice {
   public:
    explicit PortB(I8254* pit) : pit_(pit) {}
    uint32_t PioRead(uint16_t offset, unsigned size) override;
    void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

   private:
    I8254* pit_;
  };

  uint64_t NowTick() const;
  View ViewAt(const Channel& ch, uint64_t tick) const;
  uint16_t CounterAt(const Channel& ch, uint64_t tick) const;  // as the guest reads it
  bool OutAt(const Channel& ch, uint64_t tick) const;
  uint64_t NextRisingEdge(const Channel& ch, uint64_t after) const;
  void ApplyDueReload(Channel& ch, uint64_t tick);
  void Start(Channel& ch, uint64_t tick);

  // Delivers the IRQ 0 edges up to `tick`, then (after a change to channel
  // 0) finds the next one.
  void CatchUp(uint64_t tick);
  void Reschedule(uint64_t tick);

  uint8_t ReadCounter(unsigned channel);
  void WriteCounter(unsigned channel, uint8_t value, uint64_t tick);
  void WriteControl(uint8_t value, uint64_t tick);
  void LoadCount(Channel& ch, uint32_t raw, uint64_t tick);
  void LatchCount(Channel& ch, uint64_t tick);
  void LatchStatus(Channel& ch, uint64_t tick);
  void SetGateAt(unsigned channel, bool level, uint64_t tick);

  IrqLine irq_;
  const Clock& clock_;
  PortB port_b_{this};
  Channel channels_[kChannelCount];
  uint8_t port_b_bits_ = 0;              // bits 0-3 as written
  uint64_t next_irq_tick_ = UINT64_MAX;  // next rising edge of channel 0's OUT
  uint64_t missed_irqs_ = 0;
};

}  // namespace btvm
