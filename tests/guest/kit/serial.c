/* COM1 16550 UART, polled output (the kit's console). */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

#define COM1 0x3f8
#define UART_THR 0 /* transmit holding (DLAB = 0) */
#define UART_DLL 0 /* divisor latch low (DLAB = 1) */
#define UART_IER 1 /* interrupt enable (DLAB = 0) */
#define UART_DLM 1 /* divisor latch high (DLAB = 1) */
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_LCR_8N1 0x03
#define UART_LCR_DLAB 0x80
#define UART_FCR_ENABLE_CLEAR_14 0xc7 /* FIFO on, clear RX and TX, RX trigger 14 */
#define UART_MCR_DTR_RTS 0x03         /* OUT2 stays off: no UART interrupts */
#define UART_LSR_THRE 0x20

void serial_init(void) {
  outb(COM1 + UART_IER, 0);
  outb(COM1 + UART_LCR, UART_LCR_DLAB);
  outb(COM1 + UART_DLL, 1); /* 115200 baud: 1.8432 MHz / 16 / 1 */
  outb(COM1 + UART_DLM, 0);
  outb(COM1 + UART_LCR, UART_LCR_8N1);
  outb(COM1 + UART_FCR, UART_FCR_ENABLE_CLEAR_14);
  outb(COM1 + UART_MCR, UART_MCR_DTR_RTS);
}

void serial_putc(char c) {
  while (!(inb(COM1 + UART_LSR) & UART_LSR_THRE)) {
  }
  outb(COM1 + UART_THR, (u8)c);
}
