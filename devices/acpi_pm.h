#pragma once
// The ACPI fixed hardware of btvm's PC-like machine, as the FADT describes it
// (devices/acpi_tables.h): the PM1a event and control register blocks and
// the PM timer in one block of ports at 0x600 (where QEMU's q35 machine has
// its ICH9 PM registers), and the reset control register at 0xcf9 that the
// FADT names as RESET_REG. The ACPI specification (6.0-6.3, §4.8.3 "PM1
// Event Grouping", "PM1 Control Grouping", "Power Management Timer")
// describes the registers; QEMU's hw/acpi/core.c behaves the same way.
//
// Ports (offsets from kBase = 0x600):
//   +0  PM1_STS  16 bits, write 1 to clear
//   +2  PM1_EN   16 bits, read/write
//   +4  PM1_CNT  16 bits
//   +6  unused (reads all ones, like an unclaimed port)
//   +8  PM_TMR   32 bits, read-only: a 24-bit counter at 3.579545 MHz
//                (FADT TMR_VAL_EXT = 0, so bits 31-24 read 0)
// Any access size works at any offset: bytes are taken from or given to the
// registers they fall in, and all bytes of one access see the same instant
// (a 32-bit timer read is never torn).
//
// Fixed events (PM1_STS / PM1_EN, §4.8.3.1): only the timer raises
// one. TMR_STS (bit 0) is set whenever bit 23 of the counter changes (every
// 2^23 ticks, about 2.34 s). The other status bits (GBL, PWRBTN, SLPBTN,
// RTC, WAK...) are never set: the machine has no power or sleep button (the
// FADT says so with PWR_BUTTON and SLP_BUTTON), no BIOS to release the
// global lock, no RTC alarm wake (FIX_RTC) and no sleep to wake from.
//
// SCI: the line is high while a status bit and its enable bit are both set
// (TMR, GBL, PWRBTN, SLPBTN, RTC); it is wired to ISA IRQ 9, level-triggered
// active high (the MADT's interrupt source override says so). Nothing ticks:
// TMR_STS is computed from the Clock at every port access and at Update(),
// and NextEventNs() says when the timer will next set it while TMR_EN is set
// and TMR_STS is clear (Linux does not enable it, so normally kNever).
//
// PM1_CNT (§4.8.3.2.1): SCI_EN (bit 0) always reads 1 — the FADT has no
// SMI_CMD port, so the machine is always in ACPI mode and the bit, which
// hardware owns, ignores writes. BM_RLD (bit 1), bit 9 and SLP_TYP (bits
// 12-10) read back what was written; GBL_RLS (bit 2) and SLP_EN (bit 13)
// are write-only and read 0. A write with SLP_EN set enters the sleep state
// SLP_TYP names: kS5SleepType (0, the value the DSDT's \_S5 package gives)
// powers off through SystemControl::RequestPowerOff(); the machine has no
// other sleep state (the DSDT declares no \_S1-\_S4), so other SLP_TYP values
// are ignored.
//
// The timer runs from construction and is not stopped or cleared by Reset(),
// as QEMU's runs from power-on.
//
// Not thread-safe: the engine calls Update() on the thread that runs the
// guest's port I/O.

#include <cstdint>

#include "devices/bus.h"
#include "devices/clock.h"

namespace btvm {

class AcpiPm final : public PioDevice, public ClockedDevice {
 public:
  // The FADT's PM blocks (ports and lengths).
  static constexpr uint16_t kBase = 0x600;
  static constexpr uint16_t kPortCount = 12;  // 0x600-0x60b
  static constexpr uint16_t kPm1EventBlock = kBase;
  static constexpr uint8_t kPm1EventLength = 4;  // PM1_STS and PM1_EN
  static constexpr uint16_t kPm1ControlBlock = kBase + 4;
  static constexpr uint8_t kPm1ControlLength = 2;
  static constexpr uint16_t kPmTimerBlock = kBase + 8;
  static constexpr uint8_t kPmTimerLength = 4;
  // The SCI: ISA IRQ 9 (also GSI 9), level-triggered, active high.
  static constexpr unsigned kSciIrq = 9;
  static constexpr uint64_t kTimerFrequencyHz = 3'579'545;
  static constexpr uint32_t kTimerMask = 0xffffff;  // 24 bits
  // The SLP_TYP value of S5 (soft off): the first element of \_S5.
  static constexpr uint8_t kS5SleepType = 0;

  // PM1_STS and PM1_EN bits (§4.8.3.1.1, §4.8.3.1.2).
  static constexpr uint16_t kTmrSts = 1u << 0;
  static constexpr uint16_t kBmSts = 1u << 4;
  static constexpr uint16_t kGblSts = 1u << 5;
  static constexpr uint16_t kPwrBtnSts = 1u << 8;
  static constexpr uint16_t kSlpBtnSts = 1u << 9;
  static constexpr uint16_t kRtcSts = 1u << 10;
  static constexpr uint16_t kWakSts = 1u << 15;
  static constexpr uint16_t kTmrEn = kTmrSts;  // enables share the status bits' places
  // PM1_CNT bits (§4.8.3.2.1).
  static constexpr uint16_t kSciEn = 1u << 0;
  static constexpr uint16_t kBmRld = 1u << 1;
  static constexpr uint16_t kGblRls = 1u << 2;
  static constexpr unsigned kSlpTypShift = 10;
  static constexpr uint16_t kSlpTypMask = 7u << kSlpTypShift;
  static constexpr uint16_t kSlpEn = 1u << 13;

  AcpiPm(IrqLine sci, const Clock& clock, SystemControl* system);
  AcpiPm(const AcpiPm&) = delete;
  AcpiPm& operator=(const AcpiPm&) = delete;

  Status RegisterOn(PioBus& bus);

  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // ClockedDevice: the SCI.
  void Update() override;
  uint64_t NextEventNs() const override;

  // Machine reset: status, enables and control cleared (SCI_EN still reads
  // 1), the SCI lowered; the timer keeps counting.
  void Reset();

  // The registers as the guest reads them, for status output and tests.
  uint16_t pm1_status() const { return status_; }
  uint16_t pm1_enable() const { return enable_; }
  uint16_t pm1_control() const { return static_cast<uint16_t>(control_ | kSciEn); }
  uint32_t TimerValue() const;
  bool sci_level() const { return sci_level_; }

 private:
  // Timer ticks since construction at clock time `now_ns` (not wrapped).
  uint64_t Ticks(uint64_t now_ns) const;
  // Sets TMR_STS for every change of counter bit 23 up to `now_ns`, then the SCI.
  void Evaluate(uint64_t now_ns);
  void UpdateSci();
  // Applies the bytes of a PM1_CNT write selected by `byte_mask` (0x00ff, 0xff00).
  void WriteControl(uint16_t value, uint16_t byte_mask);

  IrqLine sci_;
  const Clock& clock_;
  SystemControl* system_;
  uint64_t origin_ns_;            // the clock time at which the timer read 0
  uint64_t evaluated_ticks_ = 0;  // TMR_STS is up to date to this tick
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = 0;  // without SCI_EN, GBL_RLS and SLP_EN
  bool sci_level_ = false;
};

// The reset control register at port 0xcf9 (Intel PIIX4 and ICH9 data
// sheets, "Reset Control Register"), which the FADT names as RESET_REG with
// RESET_VALUE 0x06. Writing it with RST_CPU (bit 2) set resets the machine
// through SystemControl::RequestReset(), whatever the other bits say (SYS_RST,
// bit 1, chooses a hard or soft reset and FULL_RST, bit 3, a power cycle on
// real chipsets; both are one reset here). Without bit 2 the write only
// stores bits 1 and 3, which read back (Linux's "cf9" reboot reads the
// register, sets bit 1, then writes bit 2 as well); bit 2 reads 0. As QEMU's
// ICH9 does it (hw/isa/lpc_ich9.c).
//
// The port sits inside the range of PCI configuration mechanism #1 (0xcf8-
// 0xcff) but is a byte of its own: a PCI host bridge, once the machine has
// one, must register its address register as port 0xcf8 alone (it is only
// accessed as a dword, which the bus hands whole to the device of its first
// port) and its data window as 0xcfc-0xcff, as QEMU splits them. Registered
// with length 1; a wider read returns the register in its low byte and ones
// above it, a wider write uses its low byte.
class ResetControl final : public PioDevice {
 public:
  static constexpr uint16_t kPort = 0xcf9;
  static constexpr uint8_t kSysRst = 1u << 1;
  static constexpr uint8_t kRstCpu = 1u << 2;
  static constexpr uint8_t kFullRst = 1u << 3;
  // What the FADT tells the guest to write.
  static constexpr uint8_t kResetValue = kSysRst | kRstCpu;

  explicit ResetControl(SystemControl* system);
  ResetControl(const ResetControl&) = delete;
  ResetControl& operator=(const ResetControl&) = delete;

  Status RegisterOn(PioBus& bus);

  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // Machine reset: the register reads 0.
  void Reset() { value_ = 0; }
  uint8_t value() const { return value_; }

 private:
  SystemControl* system_;
  uint8_t value_ = 0;
};

}  // namespace btvm
