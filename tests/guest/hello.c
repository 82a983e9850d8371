/*
 * hello: the first-light guest. Plain integer code and port I/O only (no
 * descriptor tables, no exceptions, no paging changes): prints a greeting
 * and a few computed values, then exits through isa-debug-exit with 0
 * (status 1).
 */
#include "tests/guest/kit/kit.h"

KIT_MINIMAL_RUNTIME;

/* Opaque to the optimiser, so the arithmetic below really runs. */
static volatile u32 seed = 7;
static volatile u64 divisor = 13;

int main(void) {
  printf("Hello from the btvm guest kit!\n");

  u64 sum = 0;
  for (u32 i = 1; i <= 100; i++) sum += i * seed;
  printf("sum of 7*i for i = 1..100: %llu\n", (unsigned long long)sum);

  const char* text = "binary translation";
  printf("strlen(\"%s\") = %d\n", text, (int)strlen(text));

  u64 product = (u64)seed * 0x12345678u;
  u64 quotient = product / divisor, remainder = product % divisor;
  printf("7 * 0x12345678 = %llu = %#llx\n", (unsigned long long)product,
         (unsigned long long)product);
  printf("that / 13 = %llu remainder %llu\n", (unsigned long long)quotient,
         (unsigned long long)remainder);

  s32 negative = -(s32)seed * 1000;
  printf("signed: %d, hex %08x, padded [%5d] [%-5d] [%05d]\n", negative, (u32)negative, 42, 42, 42);

  printf("bye\n");
  return 0;
}
