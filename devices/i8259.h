#pragma once
// The PC's two cascaded 8259A programmable interrupt controllers, as QEMU's
// pc machine has them (hw/intc/i8259.c) and as the Intel 8259A data sheet
// describes them: master at 0x20/0x21 (IRQ 0-7), slave at 0xa0/0xa1 (IRQ
// 8-15) cascaded on master input 2, and the PIIX edge/level control
// registers (ELCR) at 0x4d0/0x4d1.
//
// Each chip: ICW1-ICW4 initialisation; OCW1 (interrupt mask); OCW2
// (non-specific, specific and rotating EOI, set priority, rotate in
// auto-EOI); OCW3 (read IRR or ISR, poll, special mask mode); auto-EOI;
// special fully nested mode (master only); edge- or level-triggered inputs
// (ELCR bit, or ICW1.LTIM for the whole chip).
//
// Edge triggering follows QEMU rather than the data sheet in one point: a
// rising edge latches the request in IRR until it is acknowledged, even if
// the line falls again first, so a device may pulse its line (raise, then
// lower) to request exactly one interrupt (the PIT does). Level-triggered
// requests follow the line. A request that vanishes between INTR and the
// acknowledge (a level line dropped, or the guest masked it) is answered with
// the spurious vector, base+7, and no ISR bit: IRQ 7, or IRQ 15 for the slave
// (then the master's ISR bit 2 is set, as on hardware, and the guest must
// EOI the master).
//
// ICW1 resets the edge detectors (data sheet: after initialisation an input
// must go low to high to request), keeps the line levels, clears IMR, ISR,
// and all edge requests, and keeps level requests whose line is high.
//
// Power-on state is QEMU's: uninitialised chips with vector base 0, nothing
// masked, ELCR 0. Firmware or the kernel initialises them before enabling
// interrupts.
//
// Engine interface: InterruptPending() is the INTR pin; Acknowledge() is the
// INTA cycle and returns the vector. The intr listener is called when INTR
// rises (low to high); INTR can stay high across an Acknowledge() (another
// request is pending), so the engine must also test InterruptPending() after
// every Acknowledge() and whenever the guest enables interrupts.
//
// Not thread-safe: devices raise lines, and the engine acknowledges, on the
// thread that runs the guest.

#include <cstdint>
#include <functional>

#include "devices/bus.h"

namespace btvm {

enum class PicChip { kMaster, kSlave };

class I8259Pair final : public IrqSink {
 public:
  static constexpr uint16_t kMasterBase = 0x20;
  static constexpr uint16_t kSlaveBase = 0xa0;
  static constexpr uint16_t kElcrBase = 0x4d0;  // 0x4d0 master, 0x4d1 slave
  static constexpr uint16_t kPortCount = 2;     // each chip and the ELCR pair
  static constexpr unsigned kLineCount = 16;
  static constexpr unsigned kCascadeLine = 2;  // master input the slave drives

  I8259Pair();
  I8259Pair(const I8259Pair&) = delete;
  I8259Pair& operator=(const I8259Pair&) = delete;

  // Registers master, slave and ELCR at their ports.
  Status RegisterOn(PioBus& bus);
  PioDevice& master_port() { return master_; }
  PioDevice& slave_port() { return slave_; }
  PioDevice& elcr_port() { return elcr_port_; }

  // IrqSink: line 0-15; line 2 is the cascade and not a device input (a
  // device wired to "IRQ 2" on a PC sits on IRQ 9), so setting it is a host
  // bug.
  void SetIrqLevel(unsigned line, bool level) override;

  // The INTR output: an unmasked request of higher priority than every
  // interrupt in service (master, including the cascade).
  bool InterruptPending() const;
  // The INTA cycle: the vector of the highest-priority request, which moves
  // from IRR to ISR (no ISR bit in auto-EOI mode). Spurious vectors as above.
  uint8_t Acknowledge();
  // Called when INTR goes from low to high (from SetIrqLevel, from a guest
  // write such as an EOI or an unmask, ...).
  void SetIntrListener(std::function<void()> listener);

  // Power-on state. Input line levels are kept: they belong to the devices.
  void Reset();

  // For the machine's status output and for tests.
  uint8_t irr(PicChip chip) const { return Get(chip).irr_; }
  uint8_t isr(PicChip chip) const { return Get(chip).isr_; }
  uint8_t imr(PicChip chip) const { return Get(chip).imr_; }
  uint8_t elcr(PicChip chip) const { return Get(chip).elcr_; }
  uint8_t vector_base(PicChip chip) const { return Get(chip).vector_base_; }

 private:
  // One 8259A. Its PioDevice face is the command (offset 0) and data
  // (offset 1) ports.
  class Chip final : public PioDevice {
   public:
    Chip(I8259Pair* pair, uint8_t elcr_mask, bool is_master)
        : pair_(pair), elcr_mask_(elcr_mask), is_master_(is_master) {}

    uint32_t PioRead(uint16_t offset, unsigned size) override;
    void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

    void Reset();
    void SetInput(unsigned pin, bool level);
    void SetElcr(uint8_t value) { elcr_ = value & elcr_mask_; }
    // The highest-priority request that would interrupt now (0-7), or -1.
    int PendingInput() const;
    bool Output() const { return PendingInput() >= 0; }
    // Moves `pin` from IRR to ISR (the chip's part of an INTA cycle).
    void Acknowledge(unsigned pin);
    uint8_t ReadCommandPort();
    uint8_t ReadDataPort();
    void WriteCommandPort(uint8_t value);
    void WriteDataPort(uint8_t value);

   private:
    friend class I8259Pair;
    bool LevelTriggered(unsigned pin) const;
    unsigned Priority(uint8_t bits) const;  // 0 highest, 8 if no bit is set
    void WriteIcw1(uint8_t value);
    void WriteOcw2(uint8_t value);
    void WriteOcw3(uint8_t value);
    uint8_t Poll();

    I8259Pair* pair_;
    const uint8_t elcr_mask_;  // inputs that may be level-triggered
    const bool is_master_;

    uint8_t irr_ = 0;
    uint8_t isr_ = 0;
    uint8_t imr_ = 0;
    uint8_t elcr_ = 0;
    uint8_t lines_ = 0;          // input levels as the devices last set them
    uint8_t vector_base_ = 0;    // ICW2 bits 7-3
    uint8_t lowest_ = 7;         // the input with the lowest priority (rotation)
    uint8_t init_step_ = 0;      // 0 ready; 2, 3, 4: expecting that ICW
    bool icw4_needed_ = false;   // ICW1.IC4
    bool single_ = false;        // ICW1.SNGL: no ICW3
    bool level_all_ = false;     // ICW1.LTIM
    bool auto_eoi_ = false;      // ICW4.AEOI
    bool fully_nested_ = false;  // ICW4.SFNM
    bool rotate_on_aeoi_ = false;
    bool special_mask_ = false;
    bool read_isr_ = false;  // OCW3.RIS: command port reads ISR, else IRR
    bool poll_ = false;      // OCW3.P: the next read is a poll
  };

  class ElcrPort final : public PioDevice {
   public:
    explicit ElcrPort(I8259Pair* pair) : pair_(pair) {}
    uint32_t PioRead(uint16_t offset, unsigned size) override;
    void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

   private:
    I8259Pair* pair_;
  };

  const Chip& Get(PicChip chip) const { return chip == PicChip::kMaster ? master_ : slave_; }
  // Propagates the slave's output to master input 2 and the master's output
  // to INTR, calling the listener on a rising INTR. Called after every change.
  void Sync();

  Chip master_{this, 0xf8, true};  // IRQ 0-2 are always edge-triggered
  Chip slave_{this, 0xde, false};  // IRQ 8 and 13 are always edge-triggered
  ElcrPort elcr_port_{this};
  std::function<void()> intr_listener_;
  bool intr_ = false;
};

}  // namespace btvm
