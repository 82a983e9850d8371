#pragma once
// An 8250/16550A UART as Linux's 8250 driver probes it
// (drivers/tty/serial/8250/8250_port.c, autoconfig()): scratch register,
// IER read-back, loopback through MSR, and FIFO detection through IIR bits
// 6-7. Behaviour follows the National PC16550D data sheet, with QEMU's
// hw/char/serial.c as the reference for what guests are used to.
//
// Transmission is immediate: a byte written to THR goes to the output sink at
// once, so LSR always shows THRE|TEMT and the THRE interrupt re-arms right
// after each write (the line drops and rises again, an edge for the PIC).
//
// There is no clock, so the FIFO character-timeout interrupt (IIR 0x0c) is
// reported at once whenever the receive FIFO holds fewer bytes than the
// trigger level, instead of after four character times.
//
// Registers (offset from the base; DLAB is LCR bit 7):
//   0  RBR (read) / THR (write); DLL when DLAB=1
//   1  IER;                      DLM when DLAB=1
//   2  IIR (read) / FCR (write)
//   3  LCR   4  MCR   5  LSR   6  MSR   7  SCR
//
// Wiring: PioBus::Register(kCom1Base, kRegisterCount, &uart, "com1") with an
// IrqLine for kCom1Irq. Not thread-safe: call Receive() from the thread that
// runs the guest's port I/O.

#include <cstdint>
#include <deque>
#include <functional>

#include "devices/bus.h"

namespace btvm {

class Uart16550 final : public PioDevice {
 public:
  static constexpr uint16_t kCom1Base = 0x3f8, kCom2Base = 0x2f8;
  static constexpr unsigned kCom1Irq = 4, kCom2Irq = 3;
  static constexpr uint16_t kRegisterCount = 8;
  static constexpr unsigned kFifoSize = 16;

  // Receives each byte the guest transmits (not in loopback mode).
  using OutputSink = std::function<void(uint8_t)>;

  Uart16550(IrqLine irq, OutputSink output);

  uint32_t PioRead(uint16_t offset, unsigned size) override;
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override;

  // Input from the outside world. Receive() queues a byte as if it arrived on
  // the serial line: it sets LSR.DR and raises the received-data interrupt if
  // enabled; if the receiver is full the byte is lost and LSR.OE is set, as on
  // hardware. In loopback mode the serial input is disconnected and the byte
  // is dropped. Call CanReceive() first: it is false in loopback mode and
  // while the receive FIFO (16 bytes, or the single RBR with FIFOs off) is
  // full; it becomes true again when the guest reads RBR.
  void Receive(uint8_t byte);
  bool CanReceive() const;

  // Power-on state, QEMU's: 9600 baud divisor, MCR.OUT2 set, FIFOs off, no
  // interrupts enabled, line lowered.
  void Reset();

  // For the machine's status output and for tests.
  uint16_t divisor() const { return divisor_; }
  uint8_t line_control() const { return lcr_; }
  bool irq_level() const { return irq_level_; }
  // IER.ERBFI: the guest takes received data by interrupt.
  bool receive_interrupt_enabled() const { return ier_ & 1; }

 private:
  uint8_t ReadRegister(uint16_t offset);
  void WriteRegister(uint16_t offset, uint8_t value);

  bool Loopback() const;
  bool FifoEnabled() const;
  unsigned ReceiveCapacity() const;
  unsigned TriggerLevel() const;
  uint8_t Lsr() const;
  uint8_t ModemInputs() const;  // MSR bits 4-7
  uint8_t Iir() const;
  void SetMcr(uint8_t value);
  void Transmit(uint8_t byte);
  void ReceiveOnLine(uint8_t byte);
  void UpdateIrq();

  IrqLine irq_;
  OutputSink output_;

  uint16_t divisor_ = 0;
  uint8_t ier_ = 0;
  uint8_t fcr_ = 0;  // FIFO enable, DMA mode and trigger bits as written
  uint8_t lcr_ = 0;
  uint8_t mcr_ = 0;
  uint8_t scr_ = 0;
  uint8_t lsr_errors_ = 0;  // sticky LSR bits 1-4 (only OE is ever produced)
  uint8_t msr_deltas_ = 0;  // MSR bits 0-3
  uint8_t last_rx_ = 0;     // what RBR reads when the receiver is empty
  bool thr_ipending_ = false;
  bool irq_level_ = false;
  std::deque<uint8_t> rx_;  // receive FIFO (at most ReceiveCapacity() bytes)
};

}  // namespace btvm
