/* report(), the summary line, and the ways a test kernel ends. */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

#define DEBUG_EXIT_PORT 0xf4
#define I8042_COMMAND_PORT 0x64
#define I8042_CMD_RESET 0xfe /* pulse the CPU reset line */

static int tests, failures;

void report(bool pass, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s: ", pass ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  tests++;
  if (!pass) failures++;
}

void report_info(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("INFO: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

int report_failures(void) {
  return failures;
}

int report_summary(void) {
  printf("SUMMARY: %d tests, %d failures\n", tests, failures);
  exit(failures ? 1 : 0);
}

void exit(int code) {
  outb(DEBUG_EXIT_PORT, (u8)code);
  /* No isa-debug-exit device: stop here for good. */
  for (;;) {
    cli();
    halt();
  }
}

void reboot(void) {
  outb(I8042_COMMAND_PORT, I8042_CMD_RESET);
  for (;;) {
    cli();
    halt();
  }
}

void panic(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  exit(1);
}
