/*
 * Reproducer: int n from CPL 3 through a DPL-0 gate.
 *
 * The gate check fails, so the CPU raises #GP with the gate's IDT index as
 * error code ((vector << 3) | 2) and RIP at the int instruction (SDM Vol. 3
 * §6.12.1.1). It is not a double fault even for `int $8`, nor made one by
 * `int $13`: a software interrupt is not an exception, and the
 * double-fault rules (Vol. 3 Table 6-5) do not apply to it.
 * QEMU 7.2 TCG reports the index times 16, so the exact code is checked on
 * btvm only.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"
#include "tests/guest/kit/user.h"

extern char user_int8_at[], user_int13_at[];

static USER_TEXT u64 user_int8(u64 arg) {
  asm volatile(".globl user_int8_at\nuser_int8_at: int $8" ::: "memory");
  return arg;
}
static USER_TEXT u64 user_int13(u64 arg) {
  asm volatile(".globl user_int13_at\nuser_int13_at: int $13" ::: "memory");
  return arg;
}

static void check(user_fn fn, unsigned vector, const char* at) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    enter_user(fn, 0);
    catch_end();
  }
  const u64 want = ((u64)vector << 3) | 2;
  report(f.vector == GP_VECTOR && (f.error_code & 7) == 2 &&
             (!kit_boot_info || f.error_code == want) && f.rip == (u64)(uintptr_t)at,
         "int $%u at CPL 3: #GP error code %#llx (want %#llx), rip %#llx (want %#llx)", vector,
         (unsigned long long)f.error_code, (unsigned long long)want, (unsigned long long)f.rip,
         (unsigned long long)(uintptr_t)at);
}

int main(void) {
  user_init();
  check(user_int13, 13, user_int13_at);
  check(user_int8, 8, user_int8_at);
  return report_summary();
}
