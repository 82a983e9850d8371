#include "devices/local_apic.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "base/check.h"

namespace btvm {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
static_assert(kNsPerSecond % LocalApic::kBusFrequencyHz == 0,
              "the timer computes in whole nanoseconds per bus clock");
constexpr uint64_t kBusClockNs = kNsPerSecond / LocalApic::kBusFrequencyHz;

// Register indices: offset >> 4 (SDM Vol. 3A §11.4.1, Table 11-1).
constexpr unsigned kRegId = 0x02;
constexpr unsigned kRegVersion = 0x03;
constexpr unsigned kRegTpr = 0x08;
constexpr unsigned kRegApr = 0x09;
constexpr unsigned kRegPpr = 0x0a;
constexpr unsigned kRegEoi = 0x0b;
constexpr unsigned kRegRrd = 0x0c;
constexpr unsigned kRegLdr = 0x0d;
constexpr unsigned kRegDfr = 0x0e;
constexpr unsigned kRegSvr = 0x0f;
constexpr unsigned kRegIsr = 0x10;  // ISR, TMR and IRR: 8 registers each
constexpr unsigned kRegTmr = 0x18;
constexpr unsigned kRegIrr = 0x20;
constexpr unsigned kRegEsr = 0x28;
constexpr unsigned kRegIcrLow = 0x30;
constexpr unsigned kRegIcrHigh = 0x31;
constexpr unsigned kRegLvt = 0x32;  // kLvtCount registers
constexpr unsigned kRegInitialCount = 0x38;
constexpr unsigned kRegCurrentCount = 0x39;
constexpr unsigned kRegDivideConfig = 0x3e;

constexpr uint32_t kLvtMasked = 1u << 16;
// Writable bits of each LVT entry (§11.5.1, Figure 11-8): vector, delivery
// mode where there is one, mask; the timer's mode; LINT's polarity and
// trigger mode. Delivery status and LINT's remote IRR are read-only (and
// always 0 here: delivery is immediate, and LINT in fixed level mode has no
// source).
constexpr uint32_t kLvtWritable[LocalApic::kLvtCount] = {
    0x000700ff,  // timer
    0x000107ff,  // thermal
    0x000107ff,  // performance
    0x0001a7ff,  // LINT0
    0x0001a7ff,  // LINT1
    0x000100ff,  // error
};
constexpr uint32_t kLvtReset = kLvtMasked;

// ICR (§11.6.1, Figure 11-12).
constexpr uint32_t kIcrLowWritable = 0x000ccfff;  // delivery status (bit 12) reads 0
constexpr uint32_t kIcrHighWritable = 0xff000000;
enum : unsigned { kShorthandNone = 0, kShorthandSelf = 1, kShorthandAll = 2, kShorthandOthers = 3 };

constexpr uint32_t kSvrWritable = 0x1ff;  // vector and enable; focus checking and
                                          // EOI-broadcast suppression not supported
constexpr uint32_t kDfrModelMask = 0xf0000000;
constexpr uint32_t kDfrFlat = 0xf;
constexpr uint32_t kLdrMask = 0xff000000;
constexpr uint32_t kDivideWritable = 0xb;
constexpr uint8_t kBroadcast = 0xff;

constexpr uint8_t Class(unsigned vector) {
  return uint8_t(vector >> 4);
}

}  // namespace

// --- FixedRateTsc ------------------------------------------------------------

uint64_t FixedRateTsc::NsToTsc(uint64_t ns) const {
  if (ns <= origin_ns_) return 0;
  return static_cast<uint64_t>(static_cast<unsigned __int128>(ns - origin_ns_) * frequency_hz_ /
                               kNsPerSecond);
}

uint64_t FixedRateTsc::TscToNs(uint64_t tsc) const {
  const unsigned __int128 ns =
      origin_ns_ +
      (static_cast<unsigned __int128>(tsc) * kNsPerSecond + frequency_hz_ - 1) / frequency_hz_;
  return ns >= ClockedDevice::kNever ? ClockedDevice::kNever : static_cast<uint64_t>(ns);
}

// --- Construction and reset --------------------------------------------------

LocalApic::LocalApic(const Clock& clock, const TscModel& tsc, unsigned phys_addr_bits)
    : clock_(clock),
      tsc_(tsc),
      // §11.4.4, Figure 11-5: bits 0-7 and 9 are reserved, 10 is the x2APIC
      // enable (not exposed), and the base is MAXPHYADDR bits wide.
      reserved_base_bits_(0xff | 1u << 9 | kBaseX2apic |
                          (phys_addr_bits >= 64 ? 0 : ~uint64_t{0} << phys_addr_bits)) {
  BTVM_CHECK(phys_addr_bits > 32);
  Reset();
}

Status LocalApic::RegisterOn(MmioBus& bus) {
  return bus.Register(GuestPhys(kDefaultBase), kMmioSize, this, "local-apic");
}

void LocalApic::Reset() {
  base_msr_ = kDefaultBase | kBaseBsp | kBaseEnable;
  nmi_pending_ = false;
  ResetRegisters();
}

// §11.4.7.1: after power-up or reset.
void LocalApic::ResetRegisters() {
  id_ = 0;
  tpr_ = 0;
  ldr_ = 0;
  dfr_ = 0xffffffff;
  svr_ = 0xff;
  isr_ = {};
  tmr_ = {};
  irr_ = {};
  esr_ = pending_esr_ = 0;
  icr_low_ = icr_high_ = 0;
  lvt_.fill(kLvtReset);
  initial_count_ = 0;
  divide_config_ = 0;
  timer_next_ns_ = kNever;
  timer_period_ns_ = 0;
  tsc_deadline_ = 0;
  signalled_ = false;
  Sync();
}

void LocalApic::ProgramVirtualWire() {
  const uint64_t now = clock_.NowNs();
  WriteRegister(kRegSvr, svr_ | kSvrEnable, now);
  WriteRegister(kRegLvt + kLvtLint0, 0x8700, now);  // ExtINT, level, unmasked
  WriteRegister(kRegLvt + kLvtLint1, 0x8400, now);  // NMI, unmasked
}

void LocalApic::SetInterruptListener(std::function<void()> listener) {
  interrupt_listener_ = std::move(listener);
}

void LocalApic::SetEoiListener(std::function<void(uint8_t)> listener) {
  eoi_listener_ = std::move(listener);
}

// --- Vector bitmaps and priorities ------------------------------------------

void LocalApic::Set(VectorBits& bits, uint8_t vector, bool value) {
  const uint32_t bit = 1u << (vector % 32);
  bits[vector / 32] = value ? bits[vector / 32] | bit : bits[vector / 32] & ~bit;
}

int LocalApic::Highest(const VectorBits& bits) {
  for (int word = 7; word >= 0; --word) {
    if (bits[word]) return word * 32 + 31 - std::countl_zero(bits[word]);
  }
  return -1;
}

// §11.8.3.1: PPR is TPR if TPR's class is at least that of the highest
// vector in service, else that class with sub-class 0.
uint8_t LocalApic::Ppr() const {
  const int isrv = std::max(Highest(isr_), 0);
  if (Class(tpr_) >= Class(isrv)) return tpr_;
  return uint8_t(isrv & 0xf0);
}

// §11.6.2.4 (lowest-priority delivery): APR is TPR if TPR's class is at
// least that of the highest requested vector and above that of the highest
// in service; else the highest of the three classes.
uint8_t LocalApic::Apr() const {
  const int irrv = std::max(Highest(irr_), 0);
  const int isrv = std::max(Highest(isr_), 0);
  if (Class(tpr_) >= Class(irrv) && Class(tpr_) > Class(isrv)) return tpr_;
  return uint8_t(std::max({Class(tpr_), Class(isrv), Class(irrv)}) << 4);
}

// §11.8.3.1: only a class above the processor-priority class is delivered.
int LocalApic::DeliverableVector() const {
  if (!hardware_enabled()) return -1;
  const int irrv = Highest(irr_);
  if (irrv < 0 || Class(irrv) <= Class(Ppr())) return -1;
  return irrv;
}

bool LocalApic::InterruptPending() const {
  return DeliverableVector() >= 0;
}

void LocalApic::Sync() {
  const bool pending = InterruptPending() || nmi_pending_;
  const bool rose = pending && !signalled_;
  signalled_ = pending;
  if (rose && interrupt_listener_) interrupt_listener_();
}

// --- Acceptance, acknowledge, EOI --------------------------------------------

// §11.8.4; §11.5.2: vectors 0-15 are never set in IRR.
bool LocalApic::Accept(uint8_t vector, ApicTriggerMode trigger) {
  if (vector < 16) {
    SetError(kEsrReceiveIllegalVector);
    return false;
  }
  if (Test(irr_, vector)) ++coalesced_interrupts_;
  Set(irr_, vector, true);
  Set(tmr_, vector, trigger == ApicTriggerMode::kLevel);
  Sync();
  return true;
}

uint8_t LocalApic::Acknowledge() {
  const int vector = DeliverableVector();
  if (vector < 0) return uint8_t(svr_);  // §11.9: spurious, no ISR bit
  Set(irr_, uint8_t(vector), false);
  Set(isr_, uint8_t(vector), true);
  Sync();
  return uint8_t(vector);
}

// §11.8.5: an EOI ends the highest-priority interrupt in service; for a
// level-triggered one (TMR set) the EOI goes on to the IOAPICs.
void LocalApic::WriteEoi() {
  const int vector = Highest(isr_);
  if (vector < 0) return;
  Set(isr_, uint8_t(vector), false);
  if (Test(tmr_, uint8_t(vector))) {
    ++eoi_broadcasts_;
    if (eoi_listener_) eoi_listener_(uint8_t(vector));
  }
  Sync();
}

// §11.5.3: errors accumulate until the next ESR write latches them; each
// raises the error LVT's interrupt. An illegal vector in the error LVT
// itself reports one more error but does not recurse.
void LocalApic::SetError(uint32_t bits) {
  pending_esr_ |= bits;
  if (in_error_interrupt_) return;
  in_error_interrupt_ = true;
  RaiseLocal(kLvtError);
  in_error_interrupt_ = false;
}

// A local interrupt source fires (§11.5.1). Timer and error entries have no
// delivery mode field: they are fixed and edge-triggered.
void LocalApic::RaiseLocal(Lvt entry) {
  const uint32_t value = lvt_[entry];
  if (value & kLvtMasked) return;
  const auto mode = entry == kLvtTimer || entry == kLvtError ? ApicDeliveryMode::kFixed
                                                             : ApicDeliveryMode(value >> 8 & 7);
  switch (mode) {
    case ApicDeliveryMode::kFixed:
      Accept(uint8_t(value), ApicTriggerMode::kEdge);
      break;
    case ApicDeliveryMode::kNmi:
      nmi_pending_ = true;
      Sync();
      break;
    default:  // SMI, INIT: not modelled; ExtINT: AcceptsPicInterrupts()
      break;
  }
}

bool LocalApic::AcceptsPicInterrupts() const {
  if (!hardware_enabled()) return true;  // §11.4.3: LINT0 is INTR
  const uint32_t lint0 = lvt_[kLvtLint0];
  return !(lint0 & kLvtMasked) && ApicDeliveryMode(lint0 >> 8 & 7) == ApicDeliveryMode::kExtInt;
}

void LocalApic::SetLint1(bool level) {
  const bool rising = level && !lint1_;
  lint1_ = level;
  if (!rising) return;
  if (!hardware_enabled()) {  // §11.4.3: LINT1 is the NMI pin
    nmi_pending_ = true;
    Sync();
    return;
  }
  RaiseLocal(kLvtLint1);
}

void LocalApic::SetCr8(uint64_t value) {
  tpr_ = uint8_t((value & 0xf) << 4);  // §11.8.6.1: TPR[3:0] cleared
  Sync();
}

// --- Destinations, messages and IPIs -----------------------------------------

// §11.6.2: physical mode compares the APIC ID; logical mode compares LDR
// under DFR's model (flat: any common bit; cluster: same cluster, or 0xf
// for all clusters, and a common bit). 0xff is a broadcast in both.
bool LocalApic::MatchesDestination(uint8_t destination, ApicDestinationMode mode) const {
  if (destination == kBroadcast) return true;
  if (mode == ApicDestinationMode::kPhysical) return destination == id_;
  const uint8_t logical_id = uint8_t(ldr_ >> 24);
  if (dfr_ >> 28 == kDfrFlat) return (logical_id & destination) != 0;
  const bool cluster = destination >> 4 == logical_id >> 4 || destination >> 4 == 0xf;
  return cluster && (destination & logical_id & 0xf) != 0;
}

bool LocalApic::Deliver(const ApicMessage& message) {
  if (!hardware_enabled() || !MatchesDestination(message.destination, message.destination_mode)) {
    ++refused_messages_;
    return false;
  }
  switch (message.delivery_mode) {
    case ApicDeliveryMode::kFixed:
    case ApicDeliveryMode::kLowestPriority:  // the only candidate is this APIC
      if (!software_enabled()) {
        ++refused_messages_;
        return false;
      }
      return Accept(message.vector, message.trigger_mode);
    case ApicDeliveryMode::kNmi:
      nmi_pending_ = true;
      Sync();
      return true;
    default:  // INIT, SIPI, SMI: not modelled; ExtINT: see the header
      ++refused_messages_;
      return false;
  }
}

// §11.6.1: writing ICR low sends the IPI; only this APIC can receive it.
void LocalApic::SendIpi() {
  const uint8_t vector = uint8_t(icr_low_);
  const auto mode = ApicDeliveryMode(icr_low_ >> 8 & 7);
  const auto destination_mode = ApicDestinationMode(icr_low_ >> 11 & 1);
  const uint8_t destination = uint8_t(icr_high_ >> 24);
  bool to_self = false;
  switch (icr_low_ >> 18 & 3) {
    case kShorthandNone:
      to_self = MatchesDestination(destination, destination_mode);
      break;
    case kShorthandSelf:
    case kShorthandAll:
      to_self = true;
      break;
    case kShorthandOthers:
      break;
  }
  const bool fixed = mode == ApicDeliveryMode::kFixed || mode == ApicDeliveryMode::kLowestPriority;
  if (fixed && vector < 16) SetError(kEsrSendIllegalVector);
  if (!to_self) {
    ++refused_messages_;  // for CPUs that do not exist
    return;
  }
  if (fixed) {
    if (!software_enabled()) {
      ++refused_messages_;
      return;
    }
    ++self_ipis_;
    Accept(vector, ApicTriggerMode::kEdge);
  } else if (mode == ApicDeliveryMode::kNmi) {
    nmi_pending_ = true;
    Sync();
  } else {
    ++refused_messages_;  // INIT, SIPI, SMI
  }
}

// --- MSRs ----------------------------------------------------------------------

bool LocalApic::WriteBaseMsr(uint64_t value) {
  if (value & reserved_base_bits_) return false;
  const bool was_enabled = hardware_enabled();
  base_msr_ = value;
  if (was_enabled && !hardware_enabled()) ResetRegisters();  // §11.4.3
  Sync();
  return true;
}

// §11.5.4.1: the MSR reads 0 outside TSC-deadline mode, and 0 again once
// the deadline has passed (the timer disarms itself as it fires).
uint64_t LocalApic::ReadTscDeadline() const {
  if (Mode() != TimerMode::kTscDeadline || tsc_deadline_ == 0) return 0;
  return tsc_.NsToTsc(clock_.NowNs()) >= tsc_deadline_ ? 0 : tsc_deadline_;
}

void LocalApic::WriteTscDeadline(uint64_t value) {
  if (!hardware_enabled() || Mode() != TimerMode::kTscDeadline) return;
  CatchUpTimer(clock_.NowNs());  // a deadline already due fires first
  tsc_deadline_ = value;
}

// --- Timer ---------------------------------------------------------------------

// §11.5.4, Figure 11-10: bits 3 and 1:0 select 2, 4, ..., 128, or 1 (111b).
uint64_t LocalApic::TickNs() const {
  const uint32_t code = (divide_config_ & 3) | (divide_config_ >> 1 & 4);
  const uint64_t divisor = code == 7 ? 1 : uint64_t{2} << code;
  return divisor * kBusClockNs;
}

uint32_t LocalApic::CurrentCount() const {
  if (Mode() == TimerMode::kTscDeadline || timer_next_ns_ == kNever) return 0;
  const uint64_t now = clock_.NowNs();
  uint64_t next = timer_next_ns_;
  if (now >= next) {
    if (Mode() != TimerMode::kPeriodic) return 0;
    next += ((now - next) / timer_period_ns_ + 1) * timer_period_ns_;
  }
  const uint64_t tick = TickNs();
  return static_cast<uint32_t>((next - now + tick - 1) / tick);
}

void LocalApic::FireTimer() {
  if (lvt_[kLvtTimer] & kLvtMasked) return;
  ++timer_interrupts_;
  RaiseLocal(kLvtTimer);
}

// Raises the timer interrupt if an expiry has passed by `now`.
void LocalApic::CatchUpTimer(uint64_t now) {
  if (Mode() == TimerMode::kTscDeadline) {
    if (tsc_deadline_ != 0 && tsc_.NsToTsc(now) >= tsc_deadline_) {
      tsc_deadline_ = 0;
      FireTimer();
    }
    return;
  }
  if (timer_next_ns_ > now) return;  // also when not counting (kNever)
  if (Mode() == TimerMode::kPeriodic) {
    const uint64_t periods = (now - timer_next_ns_) / timer_period_ns_ + 1;
    timer_next_ns_ += periods * timer_period_ns_;  // keeps the phase
    if (!(lvt_[kLvtTimer] & kLvtMasked)) missed_timer_interrupts_ += periods - 1;
  } else {
    timer_next_ns_ = kNever;
  }
  FireTimer();
}

void LocalApic::Update() {
  CatchUpTimer(clock_.NowNs());
}

uint64_t LocalApic::NextEventNs() const {
  if (lvt_[kLvtTimer] & kLvtMasked) return kNever;
  if (Mode() == TimerMode::kTscDeadline) {
    return tsc_deadline_ == 0 ? kNever : tsc_.TscToNs(tsc_deadline_);
  }
  return timer_next_ns_;
}

// §11.5.4: writing the initial count (re)starts the count; 0 stops it. In
// TSC-deadline mode the write is ignored (§11.5.4.1).
void LocalApic::WriteInitialCount(uint32_t value, uint64_t now) {
  if (Mode() == TimerMode::kTscDeadline) return;
  initial_count_ = value;
  if (value == 0) {
    timer_next_ns_ = kNever;
    return;
  }
  timer_period_ns_ = value * TickNs();
  timer_next_ns_ = now + timer_period_ns_;
}

// A new divider while counting: the rest of the period is rescaled so that
// the current count reads the same, and later periods use the new rate.
void LocalApic::WriteDivideConfig(uint32_t value, uint64_t now) {
  const uint64_t old_tick = TickNs();
  divide_config_ = value & kDivideWritable;
  const uint64_t tick = TickNs();
  if (Mode() == TimerMode::kTscDeadline || timer_next_ns_ == kNever) return;
  // CatchUpTimer(now) ran: the next expiry is after now.
  const unsigned __int128 remaining = timer_next_ns_ - now;
  timer_next_ns_ = now + static_cast<uint64_t>((remaining * tick + old_tick - 1) / old_tick);
  timer_period_ns_ = initial_count_ * tick;
}

// --- Registers -----------------------------------------------------------------

void LocalApic::WriteSvr(uint32_t value) {
  svr_ = value & kSvrWritable;
  if (!software_enabled()) {
    for (uint32_t& entry : lvt_) entry |= kLvtMasked;  // §11.4.7.2
  }
  Sync();
}

void LocalApic::WriteLvt(Lvt entry, uint32_t value) {
  value &= kLvtWritable[entry];
  if (!software_enabled()) value |= kLvtMasked;  // §11.4.7.2
  if (entry == kLvtTimer && (value >> 17 & 3) != (lvt_[entry] >> 17 & 3)) {
    // §11.5.4.1: a write that changes the timer mode disarms the timer.
    timer_next_ns_ = kNever;
    tsc_deadline_ = 0;
  }
  lvt_[entry] = value;
  Sync();
}

uint32_t LocalApic::ReadRegister(unsigned index) {
  if (index >= kRegIsr && index < kRegIsr + 8) return isr_[index - kRegIsr];
  if (index >= kRegTmr && index < kRegTmr + 8) return tmr_[index - kRegTmr];
  if (index >= kRegIrr && index < kRegIrr + 8) return irr_[index - kRegIrr];
  if (index >= kRegLvt && index < kRegLvt + kLvtCount) return lvt_[index - kRegLvt];
  switch (index) {
    case kRegId:
      return uint32_t{id_} << 24;
    case kRegVersion:
      return kVersion;
    case kRegTpr:
      return tpr_;
    case kRegApr:
      return Apr();
    case kRegPpr:
      return Ppr();
    case kRegEoi:  // write-only
    case kRegRrd:  // remote read is not supported (P6 and earlier)
      return 0;
    case kRegLdr:
      return ldr_;
    case kRegDfr:
      return dfr_;
    case kRegSvr:
      return svr_;
    case kRegEsr:
      return esr_;
    case kRegIcrLow:
      return icr_low_;
    case kRegIcrHigh:
      return icr_high_;
    case kRegInitialCount:
      return initial_count_;
    case kRegCurrentCount:
      return CurrentCount();
    case kRegDivideConfig:
      return divide_config_;
    default:
      SetError(kEsrIllegalRegister);
      return 0;
  }
}

void LocalApic::WriteRegister(unsigned index, uint32_t value, uint64_t now) {
  if (index >= kRegLvt && index < kRegLvt + kLvtCount) {
    WriteLvt(Lvt(index - kRegLvt), value);
    return;
  }
  // Read-only registers ignore writes.
  if (index >= kRegIsr && index < kRegIrr + 8) return;
  switch (index) {
    case kRegVersion:
    case kRegApr:
    case kRegPpr:
    case kRegRrd:
    case kRegCurrentCount:
      break;
    case kRegId:
      id_ = uint8_t(value >> 24);
      break;
    case kRegTpr:
      tpr_ = uint8_t(value);
      Sync();
      break;
    case kRegEoi:
      WriteEoi();
      break;
    case kRegLdr:
      ldr_ = value & kLdrMask;
      break;
    case kRegDfr:
      dfr_ = (value & kDfrModelMask) | ~kDfrModelMask;
      break;
    case kRegSvr:
      WriteSvr(value);
      break;
    case kRegEsr:
      esr_ = pending_esr_;
      pending_esr_ = 0;
      break;
    case kRegIcrLow:
      icr_low_ = value & kIcrLowWritable;
      SendIpi();
      break;
    case kRegIcrHigh:
      icr_high_ = value & kIcrHighWritable;
      break;
    case kRegInitialCount:
      WriteInitialCount(value, now);
      break;
    case kRegDivideConfig:
      WriteDivideConfig(value, now);
      break;
    default:
      SetError(kEsrIllegalRegister);
      break;
  }
}

uint64_t LocalApic::MmioRead(uint64_t offset, unsigned size) {
  if (!hardware_enabled()) return ~uint64_t{0};  // not decoded: a floating bus
  if (size != 4 || offset % 16 != 0) return 0;
  return ReadRegister(unsigned(offset / 16));
}

void LocalApic::MmioWrite(uint64_t offset, unsigned size, uint64_t value) {
  if (!hardware_enabled() || size != 4 || offset % 16 != 0) return;
  const uint64_t now = clock_.NowNs();
  CatchUpTimer(now);  // an expiry already due is raised under the old settings
  WriteRegister(unsigned(offset / 16), uint32_t(value), now);
}

}  // namespace btvm
