#pragma once
// The MC146818 real-time clock and its 128 bytes of CMOS RAM at ports
// 0x70/0x71, as QEMU's pc machine has them (hw/rtc/mc146818rtc.c) and as the
// Motorola MC146818A data sheet describes the chip.
//
// Port 0x70 (write) selects a register: bits 6-0; bit 7 is the PC's NMI
// mask and is ignored. Port 0x70 reads 0xff (QEMU). Port 0x71 reads and
// writes the selected register:
//   0x00 seconds  0x01 seconds alarm  0x02 minutes  0x03 minutes alarm
//   0x04 hours    0x05 hours alarm    0x06 day of week (1 = Sunday)
//   0x07 day of month  0x08 month  0x09 year (00-99)  0x32 century
//   0x0a A: UIP (bit 7, read-only), divider (6-4), periodic rate (3-0)
//   0x0b B: SET, PIE, AIE, UIE, SQWE, DM (binary), 24/12, DSE
//   0x0c C: IRQF, PF, AF, UF; read-only, cleared by reading
//   0x0d D: VRT (always 0x80)
//   0x0e-0x7f: RAM (firmware configuration, memory sizes)
// Time and date registers, alarms included, are BCD or binary per B.DM, and
// the hour is 0-23 or 1-12 with bit 7 for PM per B.24/12. The century at
// 0x32 counts like the other date registers (QEMU's RTC_CENTURY, which the
// ACPI FADT century field names).
//
// Time: UTC, from the Clock (so the guest clock keeps wall time) plus an
// offset, set at construction from the given wall time and changed by the
// guest writing the time registers. It runs unless B.SET is set or the
// divider (A bits 6-4) is not 0-2 (QEMU's condition); while stopped the time
// registers hold what the guest wrote. When it starts again the second
// continues where the divider left it, except after a divider reset (A bits
// 6-5 = 11), from which the first update comes half a second later (data
// sheet). Day of week is computed from the date, as QEMU does.
//
// While the clock runs, the time registers are computed from the time in
// the current format, so a DM or 24/12 change shows at once (as in QEMU);
// while stopped they hold the bytes written, and the guest must write them
// all in the format in effect when the clock starts again (as on the chip).
//
// UIP (A bit 7) is set during the last 244 µs of each second while the clock
// runs: the data sheet's "244 µs before the update cycle", made
// deterministic; the update itself (the registers changing) is instant at
// the second boundary.
//
// Interrupts on IRQ 8: the flags in C are set whether or not enabled —
// UF at every second boundary while running, AF when the time matches the
// alarm at a second boundary (alarm bytes 0xc0-0xff match anything), PF at
// every edge of the periodic rate (32768 >> (RS-1) Hz; RS 1 and 2 alias 8
// and 9) while the divider runs, in phase with the seconds. IRQF = an
// enabled flag is set; the line is IRQF, a level, cleared by reading C.
// Flags are brought up to date by every port access and by Update();
// NextEventNs() says when an enabled one will next raise the line.
//
// Not thread-safe: the engine calls Update() on the thread that runs the
// guest's port I/O.

#include <cstdint>

#include "devices/bus.h"
#include "devices/clock.h"

namespace btvm {

class CmosRtc final : public PioDevice, public ClockedDevice {
 public:
  static constexpr uint16_t kBase = 0x70;  // index; data at 0x71
  static constexpr uint16_t kPortCount = 2;
  static constexpr unsigned kIrq = 8;
  static constexpr unsigned kCmosSize = 128;

  // `unix_time_ns` is the wall time (UTC, nanoseconds since the Unix epoch)
  // the RTC shows now, that is when `clock` reads clock.NowNs(); a machine
  // passes HostUnixTimeNs(), a test a fixed time.
  CmosRtc(IrqLine irq8, const Clock& clock, int64_t unix_time_ns);
  CmosRtc(const CmosRtc&) = delete;
  CmosRtc& operator=(const CmosRtc&) = delete;

  Status RegisterOn(PioBus& bus);

  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // ClockedDevice: IRQ 8.
  void Update() override;
  uint64_t NextEventNs() const override;

  // The memory-size bytes firmware and Linux read, as QEMU's pc machine
  // fills them: 0x15/0x16 base memory (640 KiB), 0x17/0x18 and 0x30/0x31
  // KiB above 1 MiB (at most 65535), 0x34/0x35 64-KiB units between 16 MiB
  // and 4 GiB, 0x5b-0x5d 64-KiB units above 4 GiB.
  void SetMemorySize(uint64_t below_4g_bytes, uint64_t above_4g_bytes = 0);

  // Machine reset (QEMU's): interrupt enables in B and flags in C cleared,
  // IRQ 8 lowered; time and RAM are kept.
  void Reset();

  // CMOS RAM for the machine to fill (indices 0x0e-0x7f; 0x32 is the
  // century).
  uint8_t cmos(unsigned index) const;
  void set_cmos(unsigned index, uint8_t value);
  // The time the RTC shows (ns since the Unix epoch, UTC), for status output
  // and tests. While stopped, the time the registers hold.
  int64_t UnixTimeNs() const;
  bool irq_level() const { return irq_level_; }

 private:
  int64_t RtcNs(uint64_t now_ns) const { return offset_ns_ + static_cast<int64_t>(now_ns); }
  bool Running() const;
  bool DividerRuns() const;  // for the periodic rate
  bool Binary() const;
  bool Hours24() const;
  uint8_t Encode(unsigned value) const;
  unsigned Decode(uint8_t value) const;
  uint8_t EncodeHour(unsigned hour) const;
  unsigned DecodeHour(uint8_t value) const;
  bool AlarmMatches(unsigned alarm_index, uint8_t value) const;
  int64_t NextAlarm(int64_t second) const;  // in seconds since the epoch
  uint64_t PeriodTicks() const;             // periodic rate in 32768 Hz ticks, 0 if off

  // Fills the time registers from the running clock at `now_ns`.
  void LatchTime(uint64_t now_ns);
  // The time the registers hold, in seconds since the epoch.
  int64_t RegisterSeconds() const;
  // Sets the clock from the time registers; `subsecond_ns` into the second.
  void SetTimeFromRegisters(uint64_t now_ns, int64_t subsecond_ns);

  // Sets the flags for everything that happened up to `now_ns`, then the line.
  void Evaluate(uint64_t now_ns);
  void UpdateIrq();

  uint8_t ReadRegister(unsigned index, uint64_t now_ns);
  void WriteRegister(unsigned index, uint8_t value, uint64_t now_ns);
  void WriteControl(unsigned index, uint8_t value, uint64_t now_ns);  // A or B

  IrqLine irq_;
  const Clock& clock_;
  uint8_t cmos_[kCmosSize] = {};  // registers 0x00-0x0d (C and D unused) and RAM
  uint8_t index_ = 0;
  int64_t offset_ns_ = 0;      // RTC time = clock time + offset, in ns
  uint64_t evaluated_ns_ = 0;  // the flags are up to date to this clock time
  uint8_t flags_ = 0;          // C bits 6-4: PF, AF, UF
  bool irq_level_ = false;
  bool divider_was_reset_ = false;  // during the current stop
};

}  // namespace btvm
