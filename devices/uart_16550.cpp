#include "devices/uart_16550.h"

#include <utility>

namespace btvm {
namespace {

// Register offsets.
enum : uint16_t {
  kRbrThr = 0,  // DLL with DLAB
  kIer = 1,     // DLM with DLAB
  kIirFcr = 2,
  kLcr = 3,
  kMcr = 4,
  kLsr = 5,
  kMsr = 6,
  kScr = 7,
};

// IER: the four interrupt sources.
constexpr uint8_t kIerRdi = 0x01;   // received data available (and timeout)
constexpr uint8_t kIerThri = 0x02;  // transmitter holding register empty
constexpr uint8_t kIerRlsi = 0x04;  // receiver line status
constexpr uint8_t kIerMsi = 0x08;   // modem status
constexpr uint8_t kIerMask = 0x0f;  // bits 4-7 read as zero on a 16550A

// IIR identification, highest priority first (PC16550D Table IV).
constexpr uint8_t kIirNoInt = 0x01;
constexpr uint8_t kIirRlsi = 0x06;
constexpr uint8_t kIirRdi = 0x04;
constexpr uint8_t kIirCti = 0x0c;  // character timeout (FIFO mode)
constexpr uint8_t kIirThri = 0x02;
constexpr uint8_t kIirMsi = 0x00;
constexpr uint8_t kIirIdMask = 0x0f;
constexpr uint8_t kIirFifosEnabled = 0xc0;  // "16550A" to Linux's autoconfig

// FCR.
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrClearTx = 0x04;
constexpr uint8_t kFcrStoredMask = 0xc9;  // enable, DMA mode, trigger level

// LCR.
constexpr uint8_t kLcrDlab = 0x80;

// MCR.
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR.
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrErrors = 0x1e;  // OE, PE, FE, BI: the line-status sources
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// MSR.
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
// With no modem control from the host side, the line looks like a connected
// terminal: carrier, data set ready and clear to send (QEMU does the same).
constexpr uint8_t kMsrExternal = kMsrDcd | kMsrDsr | kMsrCts;

constexpr uint16_t kDefaultDivisor = 12;  // 115200 / 12 = 9600 baud

}  // namespace

Uart16550::Uart16550(IrqLine irq, OutputSink output) : irq_(irq), output_(std::move(output)) {
  Reset();
}

void Uart16550::Reset() {
  divisor_ = kDefaultDivisor;
  ier_ = 0;
  fcr_ = 0;
  lcr_ = 0;
  // QEMU resets MCR to OUT2 so that a guest which only programs IER still
  // gets interrupts; a PC16550D resets it to 0. Guests (Linux, SeaBIOS) write
  // MCR before relying on it, so QEMU's choice is the compatible one.
  mcr_ = kMcrOut2;
  scr_ = 0;
  lsr_errors_ = 0;
  msr_deltas_ = 0;
  last_rx_ = 0;
  thr_ipending_ = false;
  rx_.clear();
  UpdateIrq();
}

// The registers are 8 bits wide. A wider access is split into byte accesses
// at consecutive offsets, as QEMU's memory core does for this device; bytes
// beyond the last register read as ones and are not written.
uint32_t Uart16550::PioRead(uint16_t offset, unsigned size) {
  uint32_t value = 0;
  for (unsigned i = 0; i < size; ++i) {
    const uint32_t reg = uint32_t{offset} + i;
    const uint8_t byte = reg < kRegisterCount ? ReadRegister(static_cast<uint16_t>(reg)) : 0xff;
    value |= uint32_t{byte} << (8 * i);
  }
  return value;
}

void Uart16550::PioWrite(uint16_t offset, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size; ++i) {
    const uint32_t reg = uint32_t{offset} + i;
    if (reg < kRegisterCount) {
      WriteRegister(static_cast<uint16_t>(reg), static_cast<uint8_t>(value >> (8 * i)));
    }
  }
}

uint8_t Uart16550::ReadRegister(uint16_t offset) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr:
      if (dlab) return static_cast<uint8_t>(divisor_);
      if (!rx_.empty()) {
        last_rx_ = rx_.front();
        rx_.pop_front();
        UpdateIrq();
      }
      return last_rx_;
    case kIer:
      if (dlab) return static_cast<uint8_t>(divisor_ >> 8);
      return ier_;
    case kIirFcr: {
      // Reading IIR while it names the THRE interrupt acknowledges it
      // (PC16550D Table IV, "Reading the IIR register (if source of
      // interrupt)").
      const uint8_t iir = Iir();
      if ((iir & kIirIdMask) == kIirThri) {
        thr_ipending_ = false;
        UpdateIrq();
      }
      return iir;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      const uint8_t lsr = Lsr();
      if (lsr_errors_) {  // error bits clear on read
        lsr_errors_ = 0;
        UpdateIrq();
      }
      return lsr;
    }
    case kMsr: {
      const uint8_t msr = ModemInputs() | msr_deltas_;
      if (msr_deltas_) {  // delta bits clear on read
        msr_deltas_ = 0;
        UpdateIrq();
      }
      return msr;
    }
    case kScr:
      return scr_;
  }
  return 0xff;
}

void Uart16550::WriteRegister(uint16_t offset, uint8_t value) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | value);
      } else {
        Transmit(value);
      }
      return;
    case kIer: {
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | (value << 8));
        return;
      }
      const uint8_t changed = (ier_ ^ value) & kIerMask;
      ier_ = value & kIerMask;
      // THR is always empty, so enabling the THRE interrupt makes it pending
      // at once; this is what Linux's THRE re-assertion test in
      // serial8250_do_startup() expects of a real 16550.
      if (changed & kIerThri) thr_ipending_ = (ier_ & kIerThri) != 0;
      UpdateIrq();
      return;
    }
    case kIirFcr: {
      // FCR bits other than the enable bit are only taken while bit 0 is 1
      // (PC16550D, FCR description); clearing bit 0 turns the FIFOs off.
      const bool toggled = (value ^ fcr_) & kFcrEnable;
      if (toggled || (value & kFcrClearRx)) rx_.clear();
      if (toggled || (value & kFcrClearTx)) thr_ipending_ = true;
      fcr_ = (value & kFcrEnable) ? (value & kFcrStoredMask) : 0;
      UpdateIrq();
      return;
    }
    case kLcr:
      lcr_ = value;
      return;
    case kMcr:
      SetMcr(value);
      return;
    case kLsr:
    case kMsr:
      return;  // read-only (factory test on some parts): ignored
    case kScr:
      scr_ = value;
      return;
  }
}

bool Uart16550::Loopback() const {
  return mcr_ & kMcrLoop;
}
bool Uart16550::FifoEnabled() const {
  return fcr_ & kFcrEnable;
}
unsigned Uart16550::ReceiveCapacity() const {
  return FifoEnabled() ? kFifoSize : 1;
}

unsigned Uart16550::TriggerLevel() const {
  static constexpr unsigned kLevels[4] = {1, 4, 8, 14};
  return kLevels[fcr_ >> 6];
}

uint8_t Uart16550::Lsr() const {
  uint8_t lsr = kLsrThre | kLsrTemt | lsr_errors_;
  if (!rx_.empty()) lsr |= kLsrDr;
  return lsr;
}

// In loopback mode the modem control outputs are wired to the modem status
// inputs: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD (PC16550D, MCR bit 4).
// Linux's autoconfig writes MCR = LOOP|OUT2|RTS and expects MSR & 0xf0 = 0x90.
uint8_t Uart16550::ModemInputs() const {
  if (!Loopback()) return kMsrExternal;
  uint8_t msr = 0;
  if (mcr_ & kMcrDtr) msr |= kMsrDsr;
  if (mcr_ & kMcrRts) msr |= kMsrCts;
  if (mcr_ & kMcrOut1) msr |= kMsrRi;
  if (mcr_ & kMcrOut2) msr |= kMsrDcd;
  return msr;
}

void Uart16550::SetMcr(uint8_t value) {
  const uint8_t before = ModemInputs();
  mcr_ = value & kMcrMask;
  const uint8_t after = ModemInputs();
  const uint8_t changed = before ^ after;
  if (changed & kMsrCts) msr_deltas_ |= kMsrDcts;
  if (changed & kMsrDsr) msr_deltas_ |= kMsrDdsr;
  if ((before & kMsrRi) && !(after & kMsrRi)) msr_deltas_ |= kMsrTeri;  // trailing edge
  if (changed & kMsrDcd) msr_deltas_ |= kMsrDdcd;
  UpdateIrq();
}

// The interrupt the IIR reports: the highest-priority source that is both
// enabled in IER and active (PC16550D Table IV).
uint8_t Uart16550::Iir() const {
  uint8_t id = kIirNoInt;
  if ((ier_ & kIerRlsi) && (lsr_errors_ & kLsrErrors)) {
    id = kIirRlsi;
  } else if ((ier_ & kIerRdi) && !rx_.empty()) {
    id = (FifoEnabled() && rx_.size() < TriggerLevel()) ? kIirCti : kIirRdi;
  } else if ((ier_ & kIerThri) && thr_ipending_) {
    id = kIirThri;
  } else if ((ier_ & kIerMsi) && msr_deltas_) {
    id = kIirMsi;
  }
  return id | (FifoEnabled() ? kIirFifosEnabled : 0);
}

// Writing THR acknowledges a THRE interrupt; the byte then leaves at once,
// which empties THR again and re-arms the interrupt.
void Uart16550::Transmit(uint8_t byte) {
  thr_ipending_ = false;
  UpdateIrq();
  if (Loopback()) {
    ReceiveOnLine(byte);
  } else if (output_) {
    output_(byte);
  }
  thr_ipending_ = true;
  UpdateIrq();
}

void Uart16550::Receive(uint8_t byte) {
  if (Loopback()) return;  // serial input is disconnected in loopback mode
  ReceiveOnLine(byte);
}

bool Uart16550::CanReceive() const {
  return !Loopback() && rx_.size() < ReceiveCapacity();
}

// A byte arriving at the receiver. With FIFOs on, a byte arriving at a full
// FIFO is lost (it would overwrite the shift register, not the FIFO); with
// FIFOs off it overwrites RBR. Either way LSR.OE is set.
void Uart16550::ReceiveOnLine(uint8_t byte) {
  if (rx_.size() >= ReceiveCapacity()) {
    lsr_errors_ |= kLsrOe;
    if (!FifoEnabled()) rx_.back() = byte;
  } else {
    rx_.push_back(byte);
  }
  UpdateIrq();
}

// The 16550's INTR pin follows the IIR. On a PC the pin reaches the PIC only
// through a buffer enabled by the OUT2 output, and in loopback mode the chip
// forces its OUT2 pin inactive (PC16550D, MCR bit 4), so no interrupt leaves
// the card then even though IIR still shows one.
void Uart16550::UpdateIrq() {
  const bool pending = (Iir() & kIirNoInt) == 0;
  const bool level = pending && (mcr_ & kMcrOut2) && !Loopback();
  if (level == irq_level_) return;
  irq_level_ = level;
  irq_.Set(level);
}

}  // namespace btvm
