#include "devices/acpi_pm.h"

#include "base/check.h"
#include "devices/byte_port.h"

namespace btvm {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;

// Register offsets in the block.
enum : unsigned {
  kPm1Status = 0,
  kPm1Enable = 2,
  kPm1Control = 4,
  kPmTimer = 8,
};

// TMR_STS follows bit 23 of the counter (TMR_VAL_EXT = 0).
constexpr unsigned kTimerMsbShift = 23;

// Status bits that raise the SCI while their enable bit is set (§4.8.3.1:
// the fixed events). BM_STS and WAK_STS have no enable bit.
constexpr uint16_t kSciEvents =
    AcpiPm::kTmrSts | AcpiPm::kGblSts | AcpiPm::kPwrBtnSts | AcpiPm::kSlpBtnSts | AcpiPm::kRtcSts;

// PM1_CNT bits that read back what was written: BM_RLD, bit 9 (which
// OSPM preserves) and SLP_TYP. SCI_EN belongs to hardware; GBL_RLS and
// SLP_EN are write-only.
constexpr uint16_t kControlStored = AcpiPm::kBmRld | (1u << 9) | AcpiPm::kSlpTypMask;

}  // namespace

AcpiPm::AcpiPm(IrqLine sci, const Clock& clock, SystemControl* system)
    : sci_(sci), clock_(clock), system_(system), origin_ns_(clock.NowNs()) {
  BTVM_CHECK(system != nullptr);
}

Status AcpiPm::RegisterOn(PioBus& bus) {
  return bus.Register(kBase, kPortCount, this, "acpi-pm");
}

uint64_t AcpiPm::Ticks(uint64_t now_ns) const {
  const unsigned __int128 ns = now_ns - origin_ns_;
  return static_cast<uint64_t>(ns * kTimerFrequencyHz / kNsPerSecond);
}

uint32_t AcpiPm::TimerValue() const {
  return static_cast<uint32_t>(Ticks(clock_.NowNs())) & kTimerMask;
}

void AcpiPm::Evaluate(uint64_t now_ns) {
  const uint64_t ticks = Ticks(now_ns);
  // Bit 23 changed at least once since the last evaluation.
  if ((ticks >> kTimerMsbShift) != (evaluated_ticks_ >> kTimerMsbShift)) status_ |= kTmrSts;
  evaluated_ticks_ = ticks;
  UpdateSci();
}

void AcpiPm::UpdateSci() {
  const bool level = (status_ & enable_ & kSciEvents) != 0;
  if (level != sci_level_) {
    sci_level_ = level;
    sci_.Set(level);
  }
}

void AcpiPm::Update() {
  Evaluate(clock_.NowNs());
}

uint64_t AcpiPm::NextEventNs() const {
  // Only the timer sets a status bit by itself, and a set bit stays set
  // until the guest clears it by a port write.
  if (!(enable_ & kTmrEn) || (status_ & kTmrSts)) return kNever;
  const uint64_t next_tick = ((evaluated_ticks_ >> kTimerMsbShift) + 1) << kTimerMsbShift;
  // The first clock time at which Ticks() reaches next_tick.
  const unsigned __int128 ns =
      (static_cast<unsigned __int128>(next_tick) * kNsPerSecond + kTimerFrequencyHz - 1) /
      kTimerFrequencyHz;
  return origin_ns_ + static_cast<uint64_t>(ns);
}

void AcpiPm::Reset() {
  Evaluate(clock_.NowNs());
  status_ = 0;
  enable_ = 0;
  control_ = 0;
  UpdateSci();
}

uint32_t AcpiPm::PioRead(uint16_t offset, unsigned size) {
  const uint64_t now = clock_.NowNs();
  Evaluate(now);
  // The block as the guest sees it at this instant; bytes 6-7 are unused.
  uint8_t block[kPortCount];
  auto put = [&block](unsigned at, uint32_t value, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) block[at + i] = static_cast<uint8_t>(value >> (8 * i));
  };
  put(kPm1Status, status_, 2);
  put(kPm1Enable, enable_, 2);
  put(kPm1Control, pm1_control(), 2);
  put(kPm1Control + 2, 0xffff, 2);
  put(kPmTimer, static_cast<uint32_t>(Ticks(now)) & kTimerMask, 4);
  return ReadByteWise(offset, size, kPortCount, [&](unsigned port) { return block[port]; });
}

void AcpiPm::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  Evaluate(clock_.NowNs());
  // Gather the written bytes per 16-bit register, then apply each register
  // once: a word write to PM1_CNT must see SLP_TYP and SLP_EN together.
  uint16_t values[3] = {};
  uint16_t masks[3] = {};
  WriteByteWise(offset, size, value, kPortCount, [&](unsigned port, uint8_t byte) {
    if (port >= kPmTimer) return;  // the timer is read-only; 6-7 are unused
    const unsigned reg = port / 2;
    const unsigned shift = 8 * (port % 2);
    values[reg] |= static_cast<uint16_t>(byte << shift);
    masks[reg] |= static_cast<uint16_t>(0xff << shift);
  });
  // PM1_STS: write 1 to clear.
  status_ &= static_cast<uint16_t>(~(values[kPm1Status / 2] & masks[kPm1Status / 2]));
  const uint16_t en_mask = masks[kPm1Enable / 2];
  enable_ = static_cast<uint16_t>((enable_ & ~en_mask) | (values[kPm1Enable / 2] & en_mask));
  UpdateSci();
  if (masks[kPm1Control / 2]) WriteControl(values[kPm1Control / 2], masks[kPm1Control / 2]);
}

void AcpiPm::WriteControl(uint16_t value, uint16_t byte_mask) {
  const uint16_t mask = byte_mask & kControlStored;
  control_ = static_cast<uint16_t>((control_ & ~mask) | (value & mask));
  // GBL_RLS would tell firmware that OSPM released the global lock; there
  // is no firmware to tell.
  if ((byte_mask & kSlpEn) && (value & kSlpEn)) {
    const unsigned sleep_type = (control_ & kSlpTypMask) >> kSlpTypShift;
    if (sleep_type == kS5SleepType) system_->RequestPowerOff();
    // No other sleep state exists (the DSDT declares only \_S5).
  }
}

// --- ResetControl -----------------------------------------------------------

ResetControl::ResetControl(SystemControl* system) : system_(system) {
  BTVM_CHECK(system != nullptr);
}

Status ResetControl::RegisterOn(PioBus& bus) {
  return bus.Register(kPort, 1, this, "reset-control");
}

uint32_t ResetControl::PioRead(uint16_t offset, unsigned size) {
  if (offset != 0) return 0xffffffff;  // cannot happen with a length-1 range
  return (size > 1 ? 0xffffff00u : 0u) | value_;
}

void ResetControl::PioWrite(uint16_t offset, unsigned /*size*/, uint32_t value) {
  if (offset != 0) return;
  const auto byte = static_cast<uint8_t>(value);
  if (byte & kRstCpu) {
    system_->RequestReset();
    return;
  }
  value_ = byte & (kSysRst | kFullRst);
}

}  // namespace btvm
