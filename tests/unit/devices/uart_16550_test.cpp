// The 16550A UART, driven qtest style through a PioBus at COM1 (0x3f8,
// IRQ 4), the way Linux's 8250 driver and QEMU's tests/qtest see it.

#include "devices/uart_16550.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "tests/unit/devices/fakes.h"

namespace btvm {
namespace {

using testing::RecordingIrqSink;
using Change = RecordingIrqSink::Change;

// Absolute COM1 ports.
constexpr uint16_t kBase = Uart16550::kCom1Base;
constexpr uint16_t kRbr = kBase + 0, kThr = kBase + 0, kDll = kBase + 0;
constexpr uint16_t kIer = kBase + 1, kDlm = kBase + 1;
constexpr uint16_t kIir = kBase + 2, kFcr = kBase + 2;
constexpr uint16_t kLcr = kBase + 3, kMcr = kBase + 4, kLsr = kBase + 5, kMsr = kBase + 6,
                   kScr = kBase + 7;
constexpr unsigned kIrq = Uart16550::kCom1Irq;

class Uart16550Test : public ::testing::Test {
 protected:
  Uart16550Test() : uart_(IrqLine(&pic_, kIrq), [this](uint8_t b) { output_.push_back(b); }) {
    Status s = bus_.Register(kBase, Uart16550::kRegisterCount, &uart_, "com1");
    BTVM_CHECK(s.ok());
  }

  uint8_t In(uint16_t port) { return static_cast<uint8_t>(bus_.Read(port, 1)); }
  void Out(uint16_t port, uint8_t value) { bus_.Write(port, 1, value); }
  bool Irq() const { return pic_.Level(kIrq); }

  RecordingIrqSink pic_;
  std::string output_;
  Uart16550 uart_;
  PioBus bus_;
};

TEST_F(Uart16550Test, PowerOnRegisterValues) {
  EXPECT_EQ(In(kIer), 0x00);
  EXPECT_EQ(In(kIir), 0x01);  // no interrupt, FIFOs off
  EXPECT_EQ(In(kLcr), 0x00);
  EXPECT_EQ(In(kMcr), 0x08);  // OUT2, as QEMU resets it
  EXPECT_EQ(In(kLsr), 0x60);  // THRE | TEMT
  EXPECT_EQ(In(kMsr), 0xb0);  // DCD | DSR | CTS, no deltas
  EXPECT_EQ(In(kScr), 0x00);
  EXPECT_EQ(uart_.divisor(), 12);  // 9600 baud
  EXPECT_FALSE(Irq());
  EXPECT_TRUE(pic_.changes.empty());
}

TEST_F(Uart16550Test, PortsOutsideTheUartAreUnclaimed) {
  EXPECT_EQ(bus_.Read(kBase - 1, 1), 0xffu);
  EXPECT_EQ(bus_.Read(kBase + 8, 1), 0xffu);
  EXPECT_EQ(bus_.Read(Uart16550::kCom2Base, 1), 0xffu);
}

TEST_F(Uart16550Test, ScratchRegisterReadsBack) {
  for (uint8_t v : {0x55, 0xaa, 0x00, 0xff, 0x5a}) {
    Out(kScr, v);
    EXPECT_EQ(In(kScr), v);
  }
}

TEST_F(Uart16550Test, IerKeepsOnlyTheFourInterruptBits) {
  // autoconfig(): IER=0 reads 0, IER=0x0f reads 0x0f; a 16550A has no UUE
  // bit (0x40), which is how Linux tells it from an XScale UART.
  Out(kIer, 0x00);
  EXPECT_EQ(In(kIer), 0x00);
  Out(kIer, 0x0f);
  EXPECT_EQ(In(kIer), 0x0f);
  Out(kIer, 0xf0);
  EXPECT_EQ(In(kIer), 0x00);
  Out(kIer, 0x45);
  EXPECT_EQ(In(kIer), 0x05);
}

TEST_F(Uart16550Test, DlabSwitchesOffsets0And1ToTheDivisorLatch) {
  Out(kIer, 0x05);
  Out(kLcr, 0x83);  // DLAB | 8N1
  EXPECT_EQ(In(kLcr), 0x83);
  Out(kDll, 0x01);
  Out(kDlm, 0x00);
  EXPECT_EQ(In(kDll), 0x01);
  EXPECT_EQ(In(kDlm), 0x00);
  Out(kDll, 0x80);
  Out(kDlm, 0x02);
  EXPECT_EQ(In(kDll), 0x80);
  EXPECT_EQ(In(kDlm), 0x02);
  EXPECT_EQ(uart_.divisor(), 0x0280);
  EXPECT_TRUE(output_.empty());  // the DLL write did not transmit

  Out(kLcr, 0x03);  // DLAB off: IER is back, untouched by the DLM writes
  EXPECT_EQ(In(kIer), 0x05);
  EXPECT_EQ(uart_.divisor(), 0x0280);
  EXPECT_EQ(uart_.line_control(), 0x03);
  Out(kThr, 'k');
  EXPECT_EQ(output_, "k");
}

TEST_F(Uart16550Test, TransmittedBytesGoToTheSink) {
  for (char c : std::string("Hello, btvm\n")) Out(kThr, static_cast<uint8_t>(c));
  EXPECT_EQ(output_, "Hello, btvm\n");
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);  // output is immediate: THRE | TEMT stay set
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);  // nothing received
}

TEST_F(Uart16550Test, WideAccessIsSplitIntoRegisters) {
  // A 16-bit write at the base writes THR then IER; a 32-bit read from
  // LCR returns LCR, MCR, LSR, MSR in ascending bytes.
  bus_.Write(kBase, 2, 0x0041);
  EXPECT_EQ(output_, "A");
  EXPECT_EQ(In(kIer), 0x00);
  Out(kLcr, 0x03);
  EXPECT_EQ(bus_.Read(kLcr, 4), 0xb0'60'08'03u);
  // Bytes beyond the last register read as ones.
  Out(kScr, 0x42);
  EXPECT_EQ(bus_.Read(kScr, 2), 0xff42u);
}

TEST_F(Uart16550Test, LoopbackReflectsMcrInMsr) {
  // Linux autoconfig: MCR = LOOP | OUT2 | RTS must read MSR & 0xf0 == 0x90.
  Out(kMcr, 0x1a);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x90);
  Out(kMcr, 0x10);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x00);
  Out(kMcr, 0x11);  // DTR -> DSR
  EXPECT_EQ(In(kMsr) & 0xf0, 0x20);
  Out(kMcr, 0x12);  // RTS -> CTS
  EXPECT_EQ(In(kMsr) & 0xf0, 0x10);
  Out(kMcr, 0x14);  // OUT1 -> RI
  EXPECT_EQ(In(kMsr) & 0xf0, 0x40);
  Out(kMcr, 0x18);  // OUT2 -> DCD
  EXPECT_EQ(In(kMsr) & 0xf0, 0x80);
  Out(kMcr, 0x1f);
  EXPECT_EQ(In(kMsr) & 0xf0, 0xf0);
  Out(kMcr, 0x0b);  // out of loopback: the external lines again
  EXPECT_EQ(In(kMsr) & 0xf0, 0xb0);
  EXPECT_EQ(In(kMcr), 0x0b);
}

TEST_F(Uart16550Test, LoopbackMsrDeltaBits) {
  Out(kMcr, 0x10);            // external DCD|DSR|CTS drop to nothing
  EXPECT_EQ(In(kMsr), 0x0b);  // DDCD | DDSR | DCTS
  EXPECT_EQ(In(kMsr), 0x00);  // deltas clear on read
  Out(kMcr, 0x14);            // RI rises: no TERI (trailing edge only)
  EXPECT_EQ(In(kMsr), 0x40);
  Out(kMcr, 0x10);  // RI falls
  EXPECT_EQ(In(kMsr), 0x04);
}

TEST_F(Uart16550Test, LoopbackSendsThrToRbrNotToTheSink) {
  Out(kMcr, 0x10);
  Out(kThr, 0x5a);
  EXPECT_TRUE(output_.empty());
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), 0x5a);
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  Out(kMcr, 0x00);
  Out(kThr, 'x');
  EXPECT_EQ(output_, "x");
}

TEST_F(Uart16550Test, FifoDetectionAsLinuxDoesIt) {
  // autoconfig(): FCR = ENABLE_FIFO, then IIR >> 6: 0 = 8250/16450,
  // 2 = buggy 16550, 3 = 16550A.
  Out(kFcr, 0x01);
  EXPECT_EQ(In(kIir) >> 6, 3);
  Out(kFcr, 0x07);  // enable and clear both FIFOs (what serial8250_clear_fifos writes)
  EXPECT_EQ(In(kIir) >> 6, 3);
  EXPECT_EQ(In(kIir), 0xc1);
  Out(kFcr, 0x00);
  EXPECT_EQ(In(kIir) >> 6, 0);
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(Uart16550Test, NotA16750) {
  // autoconfig_16550a(): FCR with the 64-byte bit must not show IIR bit 5.
  Out(kLcr, 0x00);
  Out(kFcr, 0x21);
  EXPECT_EQ(In(kIir) & 0xe0, 0xc0);
  Out(kLcr, 0x80);
  Out(kFcr, 0x21);
  EXPECT_EQ(In(kIir) & 0xe0, 0xc0);
}

TEST_F(Uart16550Test, LinuxAutoconfigSequenceFindsA16550A) {
  // A condensed replay of autoconfig() and autoconfig_16550a() from
  // drivers/tty/serial/8250/8250_port.c.
  const uint8_t saved_ier = In(kIer);
  Out(kIer, 0);
  const uint8_t scratch2 = In(kIer) & 0x0f;
  Out(kIer, 0x0f);
  const uint8_t scratch3 = In(kIer) & 0x0f;
  Out(kIer, saved_ier);
  EXPECT_EQ(scratch2, 0);
  EXPECT_EQ(scratch3, 0x0f);

  const uint8_t save_mcr = In(kMcr);
  const uint8_t save_lcr = In(kLcr);
  Out(kMcr, 0x1a);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x90);
  Out(kMcr, save_mcr);

  Out(kLcr, 0xbf);         // UART_LCR_CONF_MODE_B: on a 16650 offset 2 would be EFR
  EXPECT_NE(In(kIir), 0);  // "EFR" is not 0: not a 16650
  Out(kLcr, 0x00);
  Out(kFcr, 0x01);
  EXPECT_EQ(In(kIir) >> 6, 3);  // 16550A
  Out(kLcr, 0x80);              // UART_LCR_CONF_MODE_A
  EXPECT_NE(In(kIir), 0);       // not an ST16C650V1 either
  Out(kLcr, 0x00);
  Out(kIer, 0x40);  // UART_IER_UUE: not an XScale
  EXPECT_EQ(In(kIer) & 0x40, 0);
  Out(kIer, 0);
  Out(kLcr, save_lcr);
  Out(kFcr, 0x07);
  Out(kFcr, 0x00);

  // serial8250_do_startup() refuses a port whose LSR reads 0xff.
  EXPECT_NE(In(kLsr), 0xff);
  EXPECT_TRUE(output_.empty());
}

TEST_F(Uart16550Test, ThreInterruptRaisedByIerClearedByIirRead) {
  Out(kIer, 0x02);  // THRI; OUT2 is already set
  EXPECT_TRUE(Irq());
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_FALSE(Irq());  // reading IIR acknowledged it
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{kIrq, true}, {kIrq, false}}));
}

TEST_F(Uart16550Test, ThreInterruptClearedByDisablingIt) {
  Out(kIer, 0x02);
  EXPECT_TRUE(Irq());
  Out(kIer, 0x00);
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(Uart16550Test, LinuxThreReassertionTestPasses) {
  // serial8250_do_startup(): a real 16550 re-asserts THRE when IER.THRI is
  // re-enabled even after the interrupt was acknowledged.
  Out(kIer, 0x02);
  const uint8_t iir1 = In(kIir);
  Out(kIer, 0x00);
  Out(kIer, 0x02);
  const uint8_t iir = In(kIir);
  Out(kIer, 0x00);
  EXPECT_EQ(iir1 & 0x01, 0);
  EXPECT_EQ(iir & 0x01, 0);  // else Linux would set UART_BUG_THRE
}

TEST_F(Uart16550Test, ThrWriteAcknowledgesAndRearmsThre) {
  Out(kIer, 0x02);
  ASSERT_TRUE(Irq());
  pic_.changes.clear();
  Out(kThr, 'a');
  // The write acknowledges (line drops), the byte leaves at once and THR is
  // empty again (line rises): an edge the PIC sees for every byte.
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{kIrq, false}, {kIrq, true}}));
  EXPECT_EQ(output_, "a");
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_FALSE(Irq());
}

TEST_F(Uart16550Test, IrqNeedsOut2) {
  Out(kMcr, 0x03);  // DTR | RTS, no OUT2
  Out(kIer, 0x02);
  EXPECT_FALSE(Irq());
  EXPECT_TRUE(pic_.changes.empty());
  Out(kMcr, 0x0b);  // OUT2 opens the gate
  EXPECT_TRUE(Irq());
  Out(kMcr, 0x03);
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0x02);  // IIR still shows it without OUT2
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(Uart16550Test, LoopbackKeepsTheIrqOffTheBus) {
  Out(kMcr, 0x18);  // LOOP | OUT2: the OUT2 pin is forced inactive
  Out(kIer, 0x02);
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0x02);  // the interrupt is still identified
  Out(kIer, 0x00);
  Out(kIer, 0x02);
  Out(kMcr, 0x08);
  EXPECT_TRUE(Irq());
}

TEST_F(Uart16550Test, ReceivePathWithoutFifo) {
  Out(kIer, 0x01);  // RDI
  EXPECT_FALSE(Irq());
  EXPECT_TRUE(uart_.CanReceive());
  uart_.Receive('x');
  EXPECT_TRUE(Irq());
  EXPECT_FALSE(uart_.CanReceive());  // RBR holds one byte with FIFOs off
  EXPECT_EQ(In(kLsr), 0x61);         // DR | THRE | TEMT
  EXPECT_EQ(In(kIir), 0x04);
  EXPECT_TRUE(Irq());  // reading IIR does not acknowledge received data
  EXPECT_EQ(In(kRbr), 'x');
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kLsr), 0x60);
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_TRUE(uart_.CanReceive());
  EXPECT_EQ(pic_.changes, (std::vector<Change>{{kIrq, true}, {kIrq, false}}));
}

TEST_F(Uart16550Test, ReceiveWithInterruptsDisabledOnlySetsDr) {
  uart_.Receive('q');
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), 'q');
}

TEST_F(Uart16550Test, OverrunWithoutFifoOverwritesRbr) {
  uart_.Receive('1');
  uart_.Receive('2');
  EXPECT_EQ(In(kLsr), 0x63);  // DR | OE | THRE | TEMT
  EXPECT_EQ(In(kLsr), 0x61);  // OE clears on read
  EXPECT_EQ(In(kRbr), '2');
}

TEST_F(Uart16550Test, ReceiveFifoTriggerLevelAndTimeout) {
  Out(kFcr, 0xc7);  // FIFOs on, cleared, trigger at 14 bytes
  Out(kIer, 0x01);
  for (int i = 0; i < 3; ++i) uart_.Receive(static_cast<uint8_t>('a' + i));
  // Below the trigger level the timeout interrupt reports the data.
  EXPECT_EQ(In(kIir), 0xcc);
  EXPECT_TRUE(Irq());
  for (int i = 3; i < 14; ++i) uart_.Receive(static_cast<uint8_t>('a' + i));
  EXPECT_EQ(In(kIir), 0xc4);
  EXPECT_TRUE(uart_.CanReceive());
  uart_.Receive('o');
  uart_.Receive('p');
  EXPECT_FALSE(uart_.CanReceive());  // 16 bytes: full
  uart_.Receive('!');                // lost
  EXPECT_EQ(In(kLsr), 0x63);         // DR | OE
  std::string got;
  while (In(kLsr) & 0x01) got.push_back(static_cast<char>(In(kRbr)));
  EXPECT_EQ(got, "abcdefghijklmnop");
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0xc1);
  EXPECT_TRUE(uart_.CanReceive());
}

TEST_F(Uart16550Test, TriggerLevels) {
  Out(kIer, 0x01);
  struct Case {
    uint8_t fcr;
    unsigned level;
  };
  for (const Case c : {Case{0x01, 1}, Case{0x41, 4}, Case{0x81, 8}, Case{0xc1, 14}}) {
    Out(kFcr, static_cast<uint8_t>(c.fcr | 0x02));  // clear RX
    for (unsigned i = 1; i < c.level; ++i) uart_.Receive('.');
    if (c.level > 1) {
      EXPECT_EQ(In(kIir), 0xcc) << int{c.fcr};
    }
    uart_.Receive('.');
    EXPECT_EQ(In(kIir), 0xc4) << int{c.fcr};
  }
}

TEST_F(Uart16550Test, FcrClearsTheReceiveFifo) {
  Out(kFcr, 0x01);
  uart_.Receive('a');
  uart_.Receive('b');
  Out(kFcr, 0x03);
  EXPECT_EQ(In(kLsr) & 0x01, 0);
  Out(kFcr, 0x01);
  uart_.Receive('c');
  Out(kFcr, 0x00);  // turning the FIFOs off flushes them too
  EXPECT_EQ(In(kLsr) & 0x01, 0);
}

TEST_F(Uart16550Test, LineStatusInterruptOnOverrun) {
  Out(kIer, 0x04);  // RLSI only
  uart_.Receive('1');
  EXPECT_FALSE(Irq());
  uart_.Receive('2');
  EXPECT_TRUE(Irq());
  EXPECT_EQ(In(kIir), 0x06);
  EXPECT_EQ(In(kLsr) & 0x02, 0x02);  // reading LSR clears the source
  EXPECT_FALSE(Irq());
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(Uart16550Test, InterruptPriorities) {
  // Arrange all four sources at once: a modem-status delta, an overrun, data
  // and an empty THR. Loopback (OUT2 pin forced off) keeps the line quiet
  // while setting up.
  Out(kMcr, 0x10);  // loopback: MSR inputs change -> deltas
  Out(kThr, '1');
  Out(kThr, '2');   // overruns the single RBR
  Out(kMcr, 0x08);  // back to normal with OUT2: deltas again
  EXPECT_FALSE(Irq());
  Out(kIer, 0x0f);
  EXPECT_TRUE(Irq());

  EXPECT_EQ(In(kIir), 0x06);  // receiver line status first
  EXPECT_EQ(In(kIir), 0x06);  // reading IIR does not clear it
  In(kLsr);
  EXPECT_EQ(In(kIir), 0x04);  // then received data
  EXPECT_EQ(In(kRbr), '2');
  EXPECT_EQ(In(kIir), 0x02);  // then THR empty, which this read acknowledges
  EXPECT_EQ(In(kIir), 0x00);  // then modem status
  EXPECT_TRUE(Irq());
  EXPECT_EQ(In(kMsr), 0xbb);  // DCD|DSR|CTS back, with their delta bits
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_FALSE(Irq());
}

TEST_F(Uart16550Test, DataOutranksThreAndThreComesBack) {
  Out(kIer, 0x03);
  uart_.Receive('z');
  EXPECT_EQ(In(kIir), 0x04);
  // While data is pending, an IIR read does not acknowledge THRE: it was not
  // the reported source.
  EXPECT_EQ(In(kIir), 0x04);
  EXPECT_EQ(In(kRbr), 'z');
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(Uart16550Test, CanReceiveIsFalseInLoopbackAndInputIsDropped) {
  Out(kMcr, 0x10);
  EXPECT_FALSE(uart_.CanReceive());
  uart_.Receive('x');
  EXPECT_EQ(In(kLsr) & 0x01, 0);
  Out(kMcr, 0x08);
  EXPECT_TRUE(uart_.CanReceive());
}

TEST_F(Uart16550Test, ResetRestoresPowerOnStateAndLowersTheLine) {
  Out(kLcr, 0x83);
  Out(kDll, 1);
  Out(kLcr, 0x03);
  Out(kScr, 0x77);
  Out(kFcr, 0x01);
  Out(kIer, 0x03);
  uart_.Receive('r');
  ASSERT_TRUE(Irq());
  uart_.Reset();
  EXPECT_FALSE(Irq());
  EXPECT_EQ(uart_.divisor(), 12);
  EXPECT_EQ(In(kIer), 0x00);
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(In(kLcr), 0x00);
  EXPECT_EQ(In(kMcr), 0x08);
  EXPECT_EQ(In(kLsr), 0x60);
  EXPECT_EQ(In(kScr), 0x00);
}

}  // namespace
}  // namespace btvm
