/*
 * The guest kernel of a workload loop (built with the guest kit; boots on
 * btvm and on QEMU TCG). The iteration count arrives as a decimal line on
 * COM1 (`echo N | btvm run --kernel bench_loop_reg.elf`); without input
 * within about a second of TSC cycles, the loop's short default runs.
 * Prints what native_main.c prints, then exits through isa-debug-exit with
 * 0 (status 1).
 *
 * Under QEMU, a byte that arrives before serial_init() resets the receive
 * FIFO is lost: the sender starts with a newline, which this parser skips
 * like any other non-digit before the number.
 */
#include "bench/loops/loop.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

KIT_MINIMAL_RUNTIME;

#define COM1 0x3f8
#define UART_RBR 0
#define UART_LSR 5
#define UART_LSR_DR 0x01

/* One byte from COM1, or -1 when none arrives within `cycles` TSC cycles. */
static int serial_getc_timeout(u64 cycles) {
  u64 start = bench_rdtsc();
  while (!(inb(COM1 + UART_LSR) & UART_LSR_DR)) {
    if (bench_rdtsc() - start > cycles) return -1;
  }
  return inb(COM1 + UART_RBR);
}

static u64 read_iterations(void) {
  int c;
  do {
    c = serial_getc_timeout(3000000000ull);
    if (c < 0) return bench_loop_default_iters;
  } while (c < '0' || c > '9');
  u64 n = 0;
  while (c >= '0' && c <= '9') {
    n = n * 10 + (u64)(c - '0');
    c = serial_getc_timeout(1000000000ull);
  }
  return n;
}

int main(void) {
  u64 n = read_iterations();
  printf("loop %s: %llu iterations\n", bench_loop_name, (unsigned long long)n);
  bench_loop_setup();
  u64 t0 = bench_rdtsc();
  u64 r = bench_loop_run(n);
  u64 t1 = bench_rdtsc();
  printf("result: 0x%016llx\n", (unsigned long long)r);
  printf("measured: %llu cycles\n", (unsigned long long)(t1 - t0));
  return 0;
}
