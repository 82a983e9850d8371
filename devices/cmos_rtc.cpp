#include "devices/cmos_rtc.h"

#include <algorithm>

#include "base/check.h"
#include "devices/byte_port.h"

namespace btvm {
namespace {

constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kSecondsPerDay = 86'400;
constexpr int64_t kUipNs = 244'000;  // UIP is set this long before each second ends
constexpr int64_t kDividerRestartNs = kNsPerSecond / 2;
constexpr int64_t kDividerHz = 32'768;

// Register indices.
enum : unsigned {
  kSeconds = 0x00,
  kSecondsAlarm = 0x01,
  kMinutes = 0x02,
  kMinutesAlarm = 0x03,
  kHours = 0x04,
  kHoursAlarm = 0x05,
  kDayOfWeek = 0x06,
  kDayOfMonth = 0x07,
  kMonth = 0x08,
  kYear = 0x09,
  kRegA = 0x0a,
  kRegB = 0x0b,
  kRegC = 0x0c,
  kRegD = 0x0d,
  kCentury = 0x32,
};

constexpr uint8_t kIndexMask = 0x7f;  // bit 7 is the NMI mask

// Register A.
constexpr uint8_t kAUip = 0x80;
constexpr uint8_t kADivider = 0x70;
constexpr uint8_t kADividerNormal = 0x20;  // 32.768 kHz time base
constexpr uint8_t kADividerReset = 0x60;   // bits 6-5 both set
constexpr uint8_t kARate = 0x0f;
constexpr uint8_t kAPowerOn = 0x26;  // 32.768 kHz, 1024 Hz periodic rate
// Register B.
constexpr uint8_t kBSet = 0x80;
constexpr uint8_t kBPie = 0x40;
constexpr uint8_t kBAie = 0x20;
constexpr uint8_t kBUie = 0x10;
constexpr uint8_t kBSqwe = 0x08;
constexpr uint8_t kBBinary = 0x04;
constexpr uint8_t kB24Hour = 0x02;
constexpr uint8_t kBPowerOn = kB24Hour;
// Register C (the flag bits line up with B's enables).
constexpr uint8_t kCIrqf = 0x80;
constexpr uint8_t kCPf = 0x40;
constexpr uint8_t kCAf = 0x20;
constexpr uint8_t kCUf = 0x10;
constexpr uint8_t kCFlags = kCPf | kCAf | kCUf;
// Register D.
constexpr uint8_t kDVrt = 0x80;

constexpr uint8_t kHourPm = 0x80;
constexpr uint8_t kAlarmDontCare = 0xc0;  // an alarm byte 0xc0-0xff matches any value

constexpr unsigned kBaseMemoryKiB = 640;

int64_t FloorDiv(int64_t a, int64_t b) {
  return a / b - (a % b != 0 && (a < 0) != (b < 0));
}
int64_t FloorMod(int64_t a, int64_t b) {
  return a - FloorDiv(a, b) * b;
}
__int128 FloorDiv128(__int128 a, __int128 b) {
  return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (the usual
// era-of-400-years arithmetic; months 1-12, days may run past the month).
int64_t DaysFromCivil(int64_t year, unsigned month, unsigned day) {
  year -= month <= 2;
  const int64_t era = FloorDiv(year, 400);
  const int64_t year_of_era = year - era * 400;  // 0..399
  const int64_t day_of_year =
      (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;  // from March 1
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146'097 + day_of_era - 719'468;
}

struct Civil {
  int64_t year;
  unsigned month, day;
};

Civil CivilFromDays(int64_t days) {
  days += 719'468;
  const int64_t era = FloorDiv(days, 146'097);
  const int64_t day_of_era = days - era * 146'097;
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36'524 - day_of_era / 146'096) / 365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t mp = (5 * day_of_year + 2) / 153;  // month from March
  const auto day = static_cast<unsigned>(day_of_year - (153 * mp + 2) / 5 + 1);
  const auto month = static_cast<unsigned>(mp < 10 ? mp + 3 : mp - 9);
  return {year_of_era + era * 400 + (month <= 2), month, day};
}

uint8_t ToBcd(unsigned value) {
  return static_cast<uint8_t>(value / 10 % 10 << 4 | value % 10);
}
unsigned FromBcd(uint8_t value) {
  return (value >> 4) * 10 + (value & 0xf);
}

bool IsTimeRegister(unsigned index) {
  switch (index) {
    case kSeconds:
    case kMinutes:
    case kHours:
    case kDayOfWeek:
    case kDayOfMonth:
    case kMonth:
    case kYear:
    case kCentury:
      return true;
    default:
      return false;
  }
}

}  // namespace

CmosRtc::CmosRtc(IrqLine irq8, const Clock& clock, int64_t unix_time_ns)
    : irq_(irq8), clock_(clock) {
  const uint64_t now = clock_.NowNs();
  cmos_[kRegA] = kAPowerOn;
  cmos_[kRegB] = kBPowerOn;
  offset_ns_ = unix_time_ns - static_cast<int64_t>(now);
  evaluated_ns_ = now;
  LatchTime(now);
}

Status CmosRtc::RegisterOn(PioBus& bus) {
  return bus.Register(kBase, kPortCount, this, "rtc");
}

void CmosRtc::Reset() {
  Evaluate(clock_.NowNs());
  cmos_[kRegB] &= ~(kBPie | kBAie | kBUie | kBSqwe);
  flags_ = 0;
  UpdateIrq();
}

uint8_t CmosRtc::cmos(unsigned index) const {
  BTVM_CHECK(index < kCmosSize);
  return cmos_[index];
}

void CmosRtc::set_cmos(unsigned index, uint8_t value) {
  BTVM_CHECK(index < kCmosSize);
  cmos_[index] = value;
}

void CmosRtc::SetMemorySize(uint64_t below_4g_bytes, uint64_t above_4g_bytes) {
  BTVM_CHECK(below_4g_bytes <= GiB(4));
  cmos_[0x15] = kBaseMemoryKiB & 0xff;
  cmos_[0x16] = kBaseMemoryKiB >> 8;
  const uint64_t total_kib = (below_4g_bytes + above_4g_bytes) / KiB(1);
  const uint64_t extended_kib = std::min<uint64_t>(total_kib > 1024 ? total_kib - 1024 : 0, 65535);
  cmos_[0x17] = cmos_[0x30] = static_cast<uint8_t>(extended_kib);
  cmos_[0x18] = cmos_[0x31] = static_cast<uint8_t>(extended_kib >> 8);
  const uint64_t above_16m = below_4g_bytes > MiB(16)
                                 ? std::min<uint64_t>((below_4g_bytes - MiB(16)) / KiB(64), 65535)
                                 : 0;
  cmos_[0x34] = static_cast<uint8_t>(above_16m);
  cmos_[0x35] = static_cast<uint8_t>(above_16m >> 8);
  const uint64_t above_4g = above_4g_bytes / KiB(64);
  cmos_[0x5b] = static_cast<uint8_t>(above_4g);
  cmos_[0x5c] = static_cast<uint8_t>(above_4g >> 8);
  cmos_[0x5d] = static_cast<uint8_t>(above_4g >> 16);
}

// --- Time -------------------------------------------------------------------

bool CmosRtc::Running() const {
  return !(cmos_[kRegB] & kBSet) && (cmos_[kRegA] & kADivider) <= kADividerNormal;
}

bool CmosRtc::DividerRuns() const {
  return (cmos_[kRegA] & kADivider) <= kADividerNormal;
}

bool CmosRtc::Binary() const {
  return cmos_[kRegB] & kBBinary;
}
bool CmosRtc::Hours24() const {
  return cmos_[kRegB] & kB24Hour;
}

uint8_t CmosRtc::Encode(unsigned value) const {
  return Binary() ? static_cast<uint8_t>(value) : ToBcd(value);
}

unsigned CmosRtc::Decode(uint8_t value) const {
  return Binary() ? value : FromBcd(value);
}

uint8_t CmosRtc::EncodeHour(unsigned hour) const {
  if (Hours24()) return Encode(hour);
  const unsigned hour12 = hour % 12 == 0 ? 12 : hour % 12;
  return static_cast<uint8_t>(Encode(hour12) | (hour >= 12 ? kHourPm : 0));
}

unsigned CmosRtc::DecodeHour(uint8_t value) const {
  if (Hours24()) return Decode(value);
  return Decode(value & ~kHourPm) % 12 + (value & kHourPm ? 12 : 0);
}

void CmosRtc::LatchTime(uint64_t now_ns) {
  const int64_t seconds = FloorDiv(RtcNs(now_ns), kNsPerSecond);
  const int64_t days = FloorDiv(seconds, kSecondsPerDay);
  const auto second_of_day = static_cast<unsigned>(seconds - days * kSecondsPerDay);
  const Civil date = CivilFromDays(days);
  cmos_[kSeconds] = Encode(second_of_day % 60);
  cmos_[kMinutes] = Encode(second_of_day / 60 % 60);
  cmos_[kHours] = EncodeHour(second_of_day / 3600);
  cmos_[kDayOfWeek] = Encode(static_cast<unsigned>(FloorMod(days + 4, 7)) + 1);  // 1970-01-01: Thu
  cmos_[kDayOfMonth] = Encode(date.day);
  cmos_[kMonth] = Encode(date.month);
  cmos_[kYear] = Encode(static_cast<unsigned>(FloorMod(date.year, 100)));
  cmos_[kCentury] = Encode(static_cast<unsigned>(FloorDiv(date.year, 100)));
}

int64_t CmosRtc::RegisterSeconds() const {
  const int64_t year = int64_t{Decode(cmos_[kCentury])} * 100 + Decode(cmos_[kYear]);
  const unsigned month = std::clamp(Decode(cmos_[kMonth]), 1u, 12u);
  const int64_t days = DaysFromCivil(year, month, Decode(cmos_[kDayOfMonth]));
  return days * kSecondsPerDay + int64_t{DecodeHour(cmos_[kHours])} * 3600 +
         int64_t{Decode(cmos_[kMinutes])} * 60 + Decode(cmos_[kSeconds]);
}

void CmosRtc::SetTimeFromRegisters(uint64_t now_ns, int64_t subsecond_ns) {
  offset_ns_ = RegisterSeconds() * kNsPerSecond + subsecond_ns - static_cast<int64_t>(now_ns);
}

int64_t CmosRtc::UnixTimeNs() const {
  return Running() ? RtcNs(clock_.NowNs()) : RegisterSeconds() * kNsPerSecond;
}

// --- Interrupts -------------------------------------------------------------

bool CmosRtc::AlarmMatches(unsigned index, uint8_t value) const {
  return (cmos_[index] & kAlarmDontCare) == kAlarmDontCare || cmos_[index] == value;
}

// The first second after `second`, within a day, at which the time matches
// the alarm, or INT64_MAX. An alarm byte that no value can match (a BCD byte
// with a hex digit, say) never matches; otherwise the loop skips whole hours
// and minutes that do not match and ends within a few hundred steps.
int64_t CmosRtc::NextAlarm(int64_t second) const {
  auto can_match = [this](unsigned index, unsigned count, bool hours) {
    for (unsigned v = 0; v < count; ++v) {
      if (AlarmMatches(index, hours ? EncodeHour(v) : Encode(v))) return true;
    }
    return false;
  };
  if (!can_match(kSecondsAlarm, 60, false) || !can_match(kMinutesAlarm, 60, false) ||
      !can_match(kHoursAlarm, 24, true)) {
    return INT64_MAX;
  }
  for (int64_t s = second + 1; s <= second + kSecondsPerDay;) {
    const auto sod = static_cast<unsigned>(FloorMod(s, kSecondsPerDay));
    if (!AlarmMatches(kHoursAlarm, EncodeHour(sod / 3600))) {
      s += 3600 - sod % 3600;
    } else if (!AlarmMatches(kMinutesAlarm, Encode(sod / 60 % 60))) {
      s += 60 - sod % 60;
    } else if (!AlarmMatches(kSecondsAlarm, Encode(sod % 60))) {
      ++s;
    } else {
      return s;
    }
  }
  return INT64_MAX;
}

// MC146818A data sheet, Table 5: rate select 3-15 divide 32768 Hz by
// 2^(RS-1); 1 and 2 give 256 and 128 Hz (the same as 8 and 9).
uint64_t CmosRtc::PeriodTicks() const {
  unsigned rs = cmos_[kRegA] & kARate;
  if (rs == 0) return 0;
  if (rs <= 2) rs += 7;
  return uint64_t{1} << (rs - 1);
}

void CmosRtc::Evaluate(uint64_t now_ns) {
  if (now_ns <= evaluated_ns_) return;
  const int64_t from = RtcNs(evaluated_ns_), to = RtcNs(now_ns);
  evaluated_ns_ = now_ns;
  // A flag already set needs no looking for; in the steady state of a guest
  // that never reads C (most), this is all an Update() costs.
  if (Running() && (flags_ & (kCUf | kCAf)) != (kCUf | kCAf)) {
    const int64_t first = FloorDiv(from, kNsPerSecond) + 1, last = FloorDiv(to, kNsPerSecond);
    if (first <= last) {
      flags_ |= kCUf;
      // The alarm compares hours, minutes and seconds: the last day of
      // seconds holds every value.
      if (!(flags_ & kCAf) && NextAlarm(std::max(first, last - kSecondsPerDay + 1) - 1) <= last) {
        flags_ |= kCAf;
      }
    }
  }
  if (const uint64_t period = PeriodTicks(); !(flags_ & kCPf) && period != 0 && DividerRuns()) {
    const __int128 p = period;
    if (FloorDiv128(FloorDiv128(__int128{to} * kDividerHz, kNsPerSecond), p) >
        FloorDiv128(FloorDiv128(__int128{from} * kDividerHz, kNsPerSecond), p)) {
      flags_ |= kCPf;
    }
  }
  UpdateIrq();
}

void CmosRtc::UpdateIrq() {
  const bool level = flags_ & cmos_[kRegB] & kCFlags;
  if (level == irq_level_) return;
  irq_level_ = level;
  irq_.Set(level);
}

void CmosRtc::Update() {
  Evaluate(clock_.NowNs());
}

uint64_t CmosRtc::NextEventNs() const {
  if (irq_level_) return kNever;  // the line stays up until the guest reads C
  const uint8_t enabled = cmos_[kRegB] & kCFlags;
  const int64_t now = RtcNs(evaluated_ns_);
  int64_t next = INT64_MAX;  // RTC time of the next enabled event
  if (Running() && (enabled & (kCUf | kCAf))) {
    const int64_t second = FloorDiv(now, kNsPerSecond);
    if (enabled & kCUf) next = std::min(next, (second + 1) * kNsPerSecond);
    if (enabled & kCAf) {
      const int64_t alarm = NextAlarm(second);
      if (alarm != INT64_MAX) next = std::min(next, alarm * kNsPerSecond);
    }
  }
  if (const uint64_t period = PeriodTicks(); (enabled & kCPf) && period != 0 && DividerRuns()) {
    const __int128 tick = FloorDiv128(__int128{now} * kDividerHz, kNsPerSecond);
    const __int128 next_tick = (FloorDiv128(tick, period) + 1) * period;
    // The first nanosecond at which the tick count reaches next_tick.
    const __int128 ns = -FloorDiv128(-next_tick * kNsPerSecond, kDividerHz);
    next = std::min(next, static_cast<int64_t>(ns));
  }
  if (next == INT64_MAX) return kNever;
  const int64_t clock_ns = next - offset_ns_;
  return clock_ns < 0 ? 0 : static_cast<uint64_t>(clock_ns);
}

// --- Guest access -----------------------------------------------------------

uint8_t CmosRtc::ReadRegister(unsigned index, uint64_t now_ns) {
  if (IsTimeRegister(index)) {
    if (Running()) LatchTime(now_ns);
    return cmos_[index];
  }
  switch (index) {
    case kRegA: {
      const bool uip = Running() && FloorMod(RtcNs(now_ns), kNsPerSecond) >= kNsPerSecond - kUipNs;
      return static_cast<uint8_t>(cmos_[kRegA] | (uip ? kAUip : 0));
    }
    case kRegC: {
      const uint8_t value = static_cast<uint8_t>(flags_ | (irq_level_ ? kCIrqf : 0));
      flags_ = 0;
      UpdateIrq();
      return value;
    }
    case kRegD:
      return kDVrt;
    default:
      return cmos_[index];
  }
}

void CmosRtc::WriteRegister(unsigned index, uint8_t value, uint64_t now_ns) {
  if (IsTimeRegister(index)) {
    if (Running()) {
      // Set one field of the running clock; the second keeps its phase.
      LatchTime(now_ns);
      cmos_[index] = value;
      SetTimeFromRegisters(now_ns, FloorMod(RtcNs(now_ns), kNsPerSecond));
    } else {
      cmos_[index] = value;  // taken when the clock starts again
    }
    return;
  }
  switch (index) {
    case kRegA:
    case kRegB:
      WriteControl(index, value, now_ns);
      break;
    case kRegC:
    case kRegD:
      break;  // read-only
    default:
      cmos_[index] = value;
      break;
  }
}

void CmosRtc::WriteControl(unsigned index, uint8_t value, uint64_t now_ns) {
  const bool was_running = Running();
  if (was_running) LatchTime(now_ns);  // the registers hold the time it stopped at
  if (index == kRegA) {
    cmos_[kRegA] = value & ~kAUip;
  } else {
    // Data sheet: setting SET clears UIE.
    cmos_[kRegB] = value & kBSet ? value & ~kBUie : value;
  }
  if ((cmos_[kRegA] & kADividerReset) == kADividerReset) divider_was_reset_ = true;
  if (!was_running && Running()) {
    const int64_t subsecond =
        divider_was_reset_ ? kDividerRestartNs : FloorMod(RtcNs(now_ns), kNsPerSecond);
    SetTimeFromRegisters(now_ns, subsecond);
    divider_was_reset_ = false;
  }
  UpdateIrq();  // an enable may meet a flag already set
}

uint32_t CmosRtc::PioRead(uint16_t offset, unsigned size) {
  const uint64_t now = clock_.NowNs();
  Evaluate(now);
  return ReadByteWise(offset, size, kPortCount, [this, now](unsigned port) -> uint8_t {
    return port == 0 ? 0xff : ReadRegister(index_, now);
  });
}

void CmosRtc::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  const uint64_t now = clock_.NowNs();
  Evaluate(now);
  WriteByteWise(offset, size, value, kPortCount, [this, now](unsigned port, uint8_t byte) {
    if (port == 0) {
      index_ = byte & kIndexMask;
    } else {
      WriteRegister(index_, byte, now);
    }
  });
}

}  // namespace btvm
