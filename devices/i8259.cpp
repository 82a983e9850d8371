#include "devices/i8259.h"

#include <utility>

#include "base/check.h"
#include "devices/byte_port.h"

namespace btvm {
namespace {

// Command port (offset 0) writes are told apart by bits 4 and 3.
constexpr uint8_t kIcw1 = 0x10;  // bit 4: ICW1
constexpr uint8_t kOcw3 = 0x08;  // bit 3 (bit 4 clear): OCW3; neither: OCW2

// ICW1.
constexpr uint8_t kIcw1Ic4 = 0x01;   // ICW4 follows
constexpr uint8_t kIcw1Sngl = 0x02;  // single chip: no ICW3
constexpr uint8_t kIcw1Ltim = 0x08;  // level-triggered inputs
// ICW4.
constexpr uint8_t kIcw4Aeoi = 0x02;
constexpr uint8_t kIcw4Sfnm = 0x10;

// OCW2 commands: bits 7-5 (R, SL, EOI).
enum : uint8_t {
  kOcw2ClearRotateAeoi = 0,
  kOcw2NonSpecificEoi = 1,
  kOcw2Nop = 2,
  kOcw2SpecificEoi = 3,
  kOcw2SetRotateAeoi = 4,
  kOcw2RotateNonSpecificEoi = 5,
  kOcw2SetPriority = 6,
  kOcw2RotateSpecificEoi = 7,
};

// OCW3.
constexpr uint8_t kOcw3ReadIsr = 0x01;  // RIS
constexpr uint8_t kOcw3ReadReg = 0x02;  // RR: RIS is valid
constexpr uint8_t kOcw3Poll = 0x04;     // P
constexpr uint8_t kOcw3Smm = 0x20;      // SMM
constexpr uint8_t kOcw3SetSmm = 0x40;   // ESMM: SMM is valid

constexpr uint8_t kPollRequest = 0x80;  // poll word: an interrupt was pending
constexpr unsigned kSpuriousInput = 7;

}  // namespace

// --- One chip ---------------------------------------------------------------

void I8259Pair::Chip::Reset() {
  irr_ = isr_ = imr_ = elcr_ = 0;
  vector_base_ = 0;
  lowest_ = 7;
  init_step_ = 0;
  icw4_needed_ = single_ = level_all_ = false;
  auto_eoi_ = fully_nested_ = rotate_on_aeoi_ = false;
  special_mask_ = read_isr_ = poll_ = false;
}

bool I8259Pair::Chip::LevelTriggered(unsigned pin) const {
  return level_all_ || (elcr_ >> pin & 1);
}

void I8259Pair::Chip::SetInput(unsigned pin, bool level) {
  const uint8_t bit = uint8_t(1u << pin);
  const bool was = lines_ & bit;
  lines_ = level ? lines_ | bit : lines_ & ~bit;
  if (LevelTriggered(pin)) {
    irr_ = level ? irr_ | bit : irr_ & ~bit;
  } else if (level && !was) {
    irr_ |= bit;  // latched until acknowledged, even if the line falls again
  }
}

unsigned I8259Pair::Chip::Priority(uint8_t bits) const {
  if (bits == 0) return 8;
  unsigned priority = 0;
  while (!(bits >> ((priority + lowest_ + 1) & 7) & 1)) ++priority;
  return priority;
}

// 8259A data sheet, "Interrupt Sequence" and "Special Mask Mode": a request
// interrupts if it is unmasked and of higher priority than everything in
// service. In special mask mode, masked inputs in service do not block (the
// routine masks itself to let lower priorities in); in special fully nested
// mode, the master's cascade input in service does not block the slave's
// higher-priority requests.
int I8259Pair::Chip::PendingInput() const {
  const unsigned request = Priority(irr_ & ~imr_);
  if (request == 8) return -1;
  uint8_t in_service = isr_;
  if (special_mask_) in_service &= ~imr_;
  if (fully_nested_ && is_master_) in_service &= ~(1u << kCascadeLine);
  if (request >= Priority(in_service)) return -1;
  return static_cast<int>((request + lowest_ + 1) & 7);
}

void I8259Pair::Chip::Acknowledge(unsigned pin) {
  const uint8_t bit = uint8_t(1u << pin);
  if (auto_eoi_) {
    if (rotate_on_aeoi_) lowest_ = uint8_t(pin);
  } else {
    isr_ |= bit;
  }
  if (!LevelTriggered(pin)) irr_ &= ~bit;  // a level request follows its line
}

// The poll command (OCW3.P) makes the next read an acknowledge: it returns
// 0x80 | input if a request was pending (and puts it in service), else 0.
uint8_t I8259Pair::Chip::Poll() {
  poll_ = false;
  const int pin = PendingInput();
  if (pin < 0) return 0;
  Acknowledge(unsigned(pin));
  return uint8_t(kPollRequest | pin);
}

uint8_t I8259Pair::Chip::ReadCommandPort() {
  if (poll_) return Poll();
  return read_isr_ ? isr_ : irr_;
}

uint8_t I8259Pair::Chip::ReadDataPort() {
  if (poll_) return Poll();
  return imr_;
}

void I8259Pair::Chip::WriteIcw1(uint8_t value) {
  // Initialisation resets everything ICW1-4 and the OCWs program (the ELCR
  // is not the 8259's and stays).
  const uint8_t elcr = elcr_;
  Reset();
  elcr_ = elcr;
  icw4_needed_ = value & kIcw1Ic4;
  single_ = value & kIcw1Sngl;
  level_all_ = value & kIcw1Ltim;
  init_step_ = 2;
  // Edge detectors start over; level requests follow their lines.
  for (unsigned pin = 0; pin < 8; ++pin) {
    if (LevelTriggered(pin) && (lines_ >> pin & 1)) irr_ |= uint8_t(1u << pin);
  }
  // ICW1.ADI (call address interval) only matters in 8080 mode; ignored.
}

void I8259Pair::Chip::WriteOcw2(uint8_t value) {
  const unsigned pin = value & 7;
  switch (value >> 5) {
    case kOcw2ClearRotateAeoi:
      rotate_on_aeoi_ = false;
      break;
    case kOcw2SetRotateAeoi:
      rotate_on_aeoi_ = true;
      break;
    case kOcw2NonSpecificEoi:
    case kOcw2RotateNonSpecificEoi: {
      // Ends the highest-priority interrupt in service.
      const unsigned priority = Priority(isr_);
      if (priority == 8) break;
      const unsigned done = (priority + lowest_ + 1) & 7;
      isr_ &= ~(1u << done);
      if (value >> 5 == kOcw2RotateNonSpecificEoi) lowest_ = uint8_t(done);
      break;
    }
    case kOcw2SpecificEoi:
      isr_ &= ~(1u << pin);
      break;
    case kOcw2RotateSpecificEoi:
      isr_ &= ~(1u << pin);
      lowest_ = uint8_t(pin);
      break;
    case kOcw2SetPriority:
      lowest_ = uint8_t(pin);
      break;
    case kOcw2Nop:
    default:
      break;
  }
}

void I8259Pair::Chip::WriteOcw3(uint8_t value) {
  if (value & kOcw3SetSmm) special_mask_ = value & kOcw3Smm;
  if (value & kOcw3ReadReg) read_isr_ = value & kOcw3ReadIsr;
  if (value & kOcw3Poll) poll_ = true;
}

void I8259Pair::Chip::WriteCommandPort(uint8_t value) {
  if (value & kIcw1) {
    WriteIcw1(value);
  } else if (value & kOcw3) {
    WriteOcw3(value);
  } else {
    WriteOcw2(value);
  }
}

void I8259Pair::Chip::WriteDataPort(uint8_t value) {
  switch (init_step_) {
    case 0:  // OCW1
      imr_ = value;
      break;
    case 2:  // ICW2: vector base (bits 2-0 are the input number in 8086 mode)
      vector_base_ = value & 0xf8;
      init_step_ = single_ ? (icw4_needed_ ? 4 : 0) : 3;
      break;
    case 3:  // ICW3: cascade wiring, fixed on a PC
      init_step_ = icw4_needed_ ? 4 : 0;
      break;
    case 4:  // ICW4 (µPM, BUF and M/S do not change what a guest sees)
      auto_eoi_ = value & kIcw4Aeoi;
      fully_nested_ = value & kIcw4Sfnm;
      init_step_ = 0;
      break;
    default:
      BTVM_CHECK(false);
  }
}

uint32_t I8259Pair::Chip::PioRead(uint16_t offset, unsigned size) {
  const uint32_t value = ReadByteWise(offset, size, kPortCount, [this](unsigned port) {
    return port == 0 ? ReadCommandPort() : ReadDataPort();
  });
  pair_->Sync();  // a poll acknowledges
  return value;
}

void I8259Pair::Chip::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  WriteByteWise(offset, size, value, kPortCount, [this](unsigned port, uint8_t byte) {
    if (port == 0) {
      WriteCommandPort(byte);
    } else {
      WriteDataPort(byte);
    }
    pair_->Sync();
  });
}

// --- ELCR -------------------------------------------------------------------

uint32_t I8259Pair::ElcrPort::PioRead(uint16_t offset, unsigned size) {
  return ReadByteWise(offset, size, kPortCount, [this](unsigned port) {
    return port == 0 ? pair_->master_.elcr_ : pair_->slave_.elcr_;
  });
}

void I8259Pair::ElcrPort::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  WriteByteWise(offset, size, value, kPortCount, [this](unsigned port, uint8_t byte) {
    Chip& chip = port == 0 ? pair_->master_ : pair_->slave_;
    chip.SetElcr(byte);
    // An input switched to level-triggered requests while its line is high.
    for (unsigned pin = 0; pin < 8; ++pin) {
      if (chip.LevelTriggered(pin)) chip.SetInput(pin, chip.lines_ >> pin & 1);
    }
    pair_->Sync();
  });
}

// --- The pair ---------------------------------------------------------------

I8259Pair::I8259Pair() {
  Reset();
}

Status I8259Pair::RegisterOn(PioBus& bus) {
  Status s = bus.Register(kMasterBase, kPortCount, &master_, "pic-master");
  if (!s) return s;
  s = bus.Register(kSlaveBase, kPortCount, &slave_, "pic-slave");
  if (!s) return s;
  return bus.Register(kElcrBase, kPortCount, &elcr_port_, "pic-elcr");
}

void I8259Pair::Reset() {
  master_.Reset();
  slave_.Reset();
  Sync();
}

void I8259Pair::SetIntrListener(std::function<void()> listener) {
  intr_listener_ = std::move(listener);
}

void I8259Pair::SetIrqLevel(unsigned line, bool level) {
  BTVM_CHECK(line < kLineCount && line != kCascadeLine);
  if (line < 8) {
    master_.SetInput(line, level);
  } else {
    slave_.SetInput(line - 8, level);
  }
  Sync();
}

void I8259Pair::Sync() {
  master_.SetInput(kCascadeLine, slave_.Output());
  const bool intr = master_.Output();
  const bool rose = intr && !intr_;
  intr_ = intr;
  if (rose && intr_listener_) intr_listener_();
}

bool I8259Pair::InterruptPending() const {
  return master_.Output();
}

uint8_t I8259Pair::Acknowledge() {
  uint8_t vector;
  const int pin = master_.PendingInput();
  if (pin < 0) {
    vector = master_.vector_base_ + kSpuriousInput;  // no ISR bit
  } else {
    if (pin == int{kCascadeLine}) {
      const int slave_pin = slave_.PendingInput();
      if (slave_pin < 0) {
        vector = slave_.vector_base_ + kSpuriousInput;
      } else {
        slave_.Acknowledge(unsigned(slave_pin));
        vector = uint8_t(slave_.vector_base_ + slave_pin);
      }
    } else {
      vector = uint8_t(master_.vector_base_ + pin);
    }
    master_.Acknowledge(unsigned(pin));
  }
  Sync();
  return vector;
}

}  // namespace btvm
