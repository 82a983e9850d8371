#include "devices/i8254.h"

#include "base/check.h"
#include "devices/byte_port.h"

namespace btvm {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
// Port B bit 4 toggles with every DRAM refresh request (PC/AT: 15.085 µs).
constexpr uint64_t kRefreshPeriodNs = 15'085;

// Control word (port 0x43).
constexpr unsigned kControlPort = 3;
constexpr uint8_t kSelectReadBack = 3;       // bits 7-6
constexpr uint8_t kReadBackNoCount = 0x20;   // read-back: do not latch the count
constexpr uint8_t kReadBackNoStatus = 0x10;  // read-back: do not latch status
// Access (bits 5-4).
enum : uint8_t { kAccessLatch = 0, kAccessLsb = 1, kAccessMsb = 2, kAccessLsbMsb = 3 };

// Port B.
constexpr uint8_t kPortBGate2 = 0x01;
constexpr uint8_t kPortBWritable = 0x0f;
constexpr uint8_t kPortBRefresh = 0x10;
constexpr uint8_t kPortBOut2 = 0x20;

uint64_t NsToTicks(uint64_t ns) {
  return static_cast<uint64_t>(static_cast<unsigned __int128>(ns) * I8254::kFrequencyHz /
                               kNsPerSecond);
}

// The first nanosecond at which NsToTicks() reaches `ticks`.
uint64_t TicksToNs(uint64_t ticks) {
  const unsigned __int128 ns =
      (static_cast<unsigned __int128>(ticks) * kNsPerSecond + I8254::kFrequencyHz - 1) /
      I8254::kFrequencyHz;
  return ns > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(ns);
}

uint16_t ToBcd(uint32_t value) {  // value < 10000
  return static_cast<uint16_t>(value % 10 | (value / 10 % 10) << 4 | (value / 100 % 10) << 8 |
                               (value / 1000 % 10) << 12);
}

// Invalid BCD digits (a-f) count with their binary weight, as a decimal
// counter fed them would mostly do.
uint32_t FromBcd(uint16_t value) {
  return (value & 0xf) + (value >> 4 & 0xf) * 10 + (value >> 8 & 0xf) * 100 +
         (value >> 12 & 0xf) * 1000;
}

}  // namespace

I8254::I8254(IrqLine irq0, const Clock& clock) : irq_(irq0), clock_(clock) {
  Reset();
}

Status I8254::RegisterOn(PioBus& bus) {
  Status s = bus.Register(kBase, kPortCount, this, "pit");
  if (!s) return s;
  return bus.Register(kPortB, 1, &port_b_, "port-b");
}

void I8254::Reset() {
  const uint64_t tick = NowTick();
  for (unsigned i = 0; i < kChannelCount; ++i) {
    Channel& ch = channels_[i];
    ch = Channel{};
    ch.gate = i != 2;
    Start(ch, tick);
  }
  port_b_bits_ = 0;
  missed_irqs_ = 0;
  irq_.Set(false);
  Reschedule(tick);
}

uint64_t I8254::NowTick() const {
  return NsToTicks(clock_.NowNs());
}

// --- The counting element ---------------------------------------------------

I8254::View I8254::ViewAt(const Channel& ch, uint64_t tick) const {
  if (ch.phase != Phase::kCounting) return {false, 0, 0};
  if (ch.held) return {true, ch.cycle_count, ch.held_elapsed};
  uint32_t n = ch.cycle_count;
  uint64_t start = ch.start_tick;
  if (ch.reload_pending && tick >= ch.reload_tick) {
    n = ch.count_register;
    start = ch.reload_tick;
  }
  return {true, n, tick >= start ? tick - start : 0};
}

uint16_t I8254::CounterAt(const Channel& ch, uint64_t tick) const {
  const View v = ViewAt(ch, tick);
  if (!v.counting) return ch.idle_value;
  const uint32_t n = v.n;
  const uint32_t modulus = ch.Modulus();
  uint32_t value;
  switch (ch.Mode()) {
    case 2:  // N, N-1, ..., 1, reload
      value = n - static_cast<uint32_t>(v.elapsed % n);
      break;
    case 3: {  // by twos from N through each half period
      const auto phase = static_cast<uint32_t>(v.elapsed % n);
      const uint32_t high = (n + 1) / 2;
      value = n - 2 * (phase < high ? phase : phase - high);
      break;
    }
    default:  // 0, 1, 4, 5: down from N, wrapping past 0
      value = (n + modulus - static_cast<uint32_t>(v.elapsed % modulus)) % modulus;
      break;
  }
  value %= modulus;  // a count of 65536 (10000) reads 0
  return ch.bcd ? ToBcd(value) : static_cast<uint16_t>(value);
}

bool I8254::OutAt(const Channel& ch, uint64_t tick) const {
  const uint8_t mode = ch.Mode();
  const View v = ViewAt(ch, tick);
  if (!v.counting) return mode != 0;  // a control word sets OUT low in mode 0, high otherwise
  if (ch.held && (mode == 2 || mode == 3)) return true;
  const uint64_t n = v.n, d = v.elapsed;
  switch (mode) {
    case 0:
    case 1:
      return d >= n;
    case 2:
      return d % n != n - 1;
    case 3:
      return d % n < (n + 1) / 2;
    default:  // 4, 5
      return d != n;
  }
}

// The first tick after `after` at which OUT rises, or UINT64_MAX.
uint64_t I8254::NextRisingEdge(const Channel& ch, uint64_t after) const {
  if (ch.phase != Phase::kCounting || ch.held) return UINT64_MAX;
  uint64_t n = ch.cycle_count;
  uint64_t start = ch.start_tick;
  if (ch.reload_pending) {
    if (after < ch.reload_tick) return ch.reload_tick;  // the current period's end
    n = ch.count_register;
    start = ch.reload_tick;
  }
  uint64_t edge;
  switch (ch.Mode()) {
    case 0:
    case 1:
      edge = start + n;
      break;
    case 2:
    case 3:
      edge = after < start ? start + n : start + ((after - start) / n + 1) * n;
      break;
    default:  // 4, 5: after the strobe
      edge = start + n + 1;
      break;
  }
  return edge > after ? edge : UINT64_MAX;
}

void I8254::ApplyDueReload(Channel& ch, uint64_t tick) {
  if (!ch.reload_pending || tick < ch.reload_tick) return;
  ch.cycle_count = ch.count_register;
  ch.start_tick = ch.reload_tick;
  ch.reload_pending = false;
  ch.null_count = false;
}

// Loads the count register into the counting element at `tick`.
void I8254::Start(Channel& ch, uint64_t tick) {
  const uint8_t mode = ch.Mode();
  ch.phase = Phase::kCounting;
  ch.cycle_count = ch.count_register;
  ch.start_tick = tick;
  ch.held = !ch.gate && mode != 1 && mode != 5;
  ch.held_elapsed = 0;
  ch.reload_pending = false;
  ch.null_count = false;
}

// --- IRQ 0 ------------------------------------------------------------------

void I8254::CatchUp(uint64_t tick) {
  Channel& ch = channels_[0];
  uint64_t edges = 0;
  while (next_irq_tick_ <= tick) {
    const uint64_t edge = next_irq_tick_;
    ApplyDueReload(ch, edge);
    ++edges;
    uint64_t next = NextRisingEdge(ch, edge);
    const uint8_t mode = ch.Mode();
    if (next <= tick && (mode == 2 || mode == 3) && !ch.reload_pending) {
      // A periodic counter: skip the remaining periods arithmetically.
      const uint64_t more = (tick - next) / ch.cycle_count + 1;
      edges += more;
      next += more * ch.cycle_count;
    }
    next_irq_tick_ = next;
  }
  if (edges == 0) return;
  irq_.Set(true);
  irq_.Set(false);
  missed_irqs_ += edges - 1;
}

void I8254::Reschedule(uint64_t tick) {
  next_irq_tick_ = NextRisingEdge(channels_[0], tick);
}

void I8254::Update() {
  CatchUp(NowTick());
}

uint64_t I8254::NextEventNs() const {
  return next_irq_tick_ == UINT64_MAX ? kNever : TicksToNs(next_irq_tick_);
}

// --- Guest access -----------------------------------------------------------

uint32_t I8254::PioRead(uint16_t offset, unsigned size) {
  return ReadByteWise(offset, size, kPortCount, [this](unsigned port) -> uint8_t {
    // The control word register is write-only; QEMU reads it as 0.
    return port == kControlPort ? 0 : ReadCounter(port);
  });
}

void I8254::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  const uint64_t tick = NowTick();
  CatchUp(tick);
  WriteByteWise(offset, size, value, kPortCount, [this, tick](unsigned port, uint8_t byte) {
    if (port == kControlPort) {
      WriteControl(byte, tick);
    } else {
      WriteCounter(port, byte, tick);
    }
  });
  Reschedule(tick);
}

uint8_t I8254::ReadCounter(unsigned channel) {
  Channel& ch = channels_[channel];
  if (ch.status_latched) {
    ch.status_latched = false;
    return ch.latched_status;
  }
  if (ch.latched_access != kAccessLatch) {
    const uint16_t latched = ch.latched_count;
    switch (ch.latched_access) {
      case kAccessLsb:
        ch.latched_access = kAccessLatch;
        return static_cast<uint8_t>(latched);
      case kAccessMsb:
        ch.latched_access = kAccessLatch;
        return static_cast<uint8_t>(latched >> 8);
      default:  // LSB now, MSB next
        ch.latched_access = kAccessMsb;
        return static_cast<uint8_t>(latched);
    }
  }
  const uint16_t value = CounterAt(ch, NowTick());
  bool msb = ch.access == kAccessMsb;
  if (ch.access == kAccessLsbMsb) {
    msb = ch.read_msb_next;
    ch.read_msb_next = !msb;
  }
  return static_cast<uint8_t>(msb ? value >> 8 : value);
}

void I8254::WriteControl(uint8_t value, uint64_t tick) {
  const unsigned select = value >> 6;
  if (select == kSelectReadBack) {
    for (unsigned i = 0; i < kChannelCount; ++i) {
      if (!(value & (2u << i))) continue;
      // If both are latched, reads return the status first (ReadCounter()).
      if (!(value & kReadBackNoCount)) LatchCount(channels_[i], tick);
      if (!(value & kReadBackNoStatus)) LatchStatus(channels_[i], tick);
    }
    return;
  }
  Channel& ch = channels_[select];
  const uint8_t access = value >> 4 & 3;
  if (access == kAccessLatch) {
    LatchCount(ch, tick);
    return;
  }
  // A control word resets the counter's control logic: counting stops until
  // a count is written, flip-flops and latches are cleared.
  ApplyDueReload(ch, tick);
  ch.idle_value = CounterAt(ch, tick);
  ch.access = access;
  ch.mode_bits = value >> 1 & 7;
  ch.bcd = value & 1;
  ch.phase = Phase::kIdle;
  ch.held = false;
  ch.reload_pending = false;
  ch.null_count = true;
  ch.write_msb_next = false;
  ch.read_msb_next = false;
  ch.latched_access = kAccessLatch;
  ch.status_latched = false;
}

void I8254::LatchCount(Channel& ch, uint64_t tick) {
  if (ch.latched_access != kAccessLatch) return;  // a second latch is ignored until read
  ch.latched_count = CounterAt(ch, tick);
  ch.latched_access = ch.access;
}

void I8254::LatchStatus(Channel& ch, uint64_t tick) {
  if (ch.status_latched) return;
  const bool null_count = ch.null_count || (ch.reload_pending && tick < ch.reload_tick);
  ch.latched_status = static_cast<uint8_t>(OutAt(ch, tick) << 7 | null_count << 6 | ch.access << 4 |
                                           ch.mode_bits << 1 | ch.bcd);
  ch.status_latched = true;
}

void I8254::WriteCounter(unsigned channel, uint8_t value, uint64_t tick) {
  Channel& ch = channels_[channel];
  ApplyDueReload(ch, tick);
  switch (ch.access) {
    case kAccessLsb:
      LoadCount(ch, value, tick);
      break;
    case kAccessMsb:
      LoadCount(ch, uint32_t{value} << 8, tick);
      break;
    default:
      if (!ch.write_msb_next) {
        ch.write_lsb = value;
        ch.write_msb_next = true;
        // Mode 0: writing the first byte stops the count (and OUT is low).
        if (ch.Mode() == 0 && ch.phase == Phase::kCounting) {
          ch.idle_value = CounterAt(ch, tick);
          ch.phase = Phase::kIdle;
          ch.held = false;
        }
      } else {
        ch.write_msb_next = false;
        LoadCount(ch, ch.write_lsb | uint32_t{value} << 8, tick);
      }
      break;
  }
}

void I8254::LoadCount(Channel& ch, uint32_t raw, uint64_t tick) {
  uint32_t n = ch.bcd ? FromBcd(static_cast<uint16_t>(raw)) : raw;
  if (n == 0) n = ch.Modulus();
  ch.count_register = n;
  switch (ch.Mode()) {
    case 1:
    case 5:
      // Loaded by the next rising gate.
      if (ch.phase == Phase::kIdle) ch.phase = Phase::kArmed;
      ch.null_count = true;
      break;
    case 2:
    case 3:
      if (ch.phase == Phase::kCounting && !ch.held) {
        // Taken at the end of the current period.
        const uint64_t periods = (tick - ch.start_tick) / ch.cycle_count + 1;
        ch.reload_pending = true;
        ch.reload_tick = ch.start_tick + periods * ch.cycle_count;
      } else {
        Start(ch, tick);
      }
      break;
    default:  // 0, 4
      Start(ch, tick);
      break;
  }
}

void I8254::SetGate(unsigned channel, bool level) {
  BTVM_CHECK(channel < kChannelCount);
  const uint64_t tick = NowTick();
  CatchUp(tick);
  SetGateAt(channel, level, tick);
  Reschedule(tick);
}

void I8254::SetGateAt(unsigned channel, bool level, uint64_t tick) {
  Channel& ch = channels_[channel];
  ApplyDueReload(ch, tick);
  if (level == ch.gate) return;
  ch.gate = level;
  const uint8_t mode = ch.Mode();
  if (level) {
    switch (mode) {
      case 1:
      case 5:  // trigger: (re)start from the count register
        if (ch.phase != Phase::kIdle) Start(ch, tick);
        break;
      case 2:
      case 3:  // restart from the count register
        if (ch.phase == Phase::kCounting) Start(ch, tick);
        break;
      default:  // 0, 4: resume
        if (ch.phase == Phase::kCounting && ch.held) {
          ch.start_tick = tick - ch.held_elapsed;
          ch.held = false;
        }
        break;
    }
  } else if (mode != 1 && mode != 5 && ch.phase == Phase::kCounting && !ch.held) {
    ch.held_elapsed = ViewAt(ch, tick).elapsed;
    ch.held = true;
    ch.reload_pending = false;  // a rising gate reloads from the count register anyway
  }
}

bool I8254::Out(unsigned channel) const {
  BTVM_CHECK(channel < kChannelCount);
  return OutAt(channels_[channel], NowTick());
}

// --- Port B -----------------------------------------------------------------

uint8_t I8254::ReadPortB() const {
  uint8_t value = port_b_bits_;
  if (clock_.NowNs() / kRefreshPeriodNs & 1) value |= kPortBRefresh;
  if (Out(2)) value |= kPortBOut2;
  return value;
}

void I8254::WritePortB(uint8_t value) {
  const uint64_t tick = NowTick();
  CatchUp(tick);
  port_b_bits_ = value & kPortBWritable;
  SetGateAt(2, value & kPortBGate2, tick);
  Reschedule(tick);
}

uint32_t I8254::PortB::PioRead(uint16_t offset, unsigned size) {
  if (offset != 0) return 0xffffffff;
  return (size > 1 ? 0xffffff00u : 0u) | pit_->ReadPortB();
}

void I8254::PortB::PioWrite(uint16_t offset, unsigned /*size*/, uint32_t value) {
  if (offset == 0) pit_->WritePortB(static_cast<uint8_t>(value));
}

}  // namespace btvm
