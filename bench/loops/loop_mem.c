/* The memory-walking loop: a Fletcher-style checksum (a sum and a sum of
   sums) over a 4 MiB buffer of 64-bit words, one pass per iteration. The
   buffer is bigger than L2 and spans 1024 guest pages, so the soft TLB
   sees every slot. */
#include "bench/loops/loop.h"

#define BUFFER_WORDS (4u * 1024 * 1024 / 8)

const char bench_loop_name[] = "mem";
const uint64_t bench_loop_default_iters = 4;

static uint64_t buffer[BUFFER_WORDS];

void bench_loop_setup(void) {
  uint64_t x = 0x2545f4914f6cdd1dull;
  for (uint32_t i = 0; i < BUFFER_WORDS; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buffer[i] = x;
  }
}

uint64_t bench_loop_run(uint64_t n) {
  uint64_t a = 1, b = 0;
  for (uint64_t pass = 0; pass < n; pass++) {
    for (uint32_t i = 0; i < BUFFER_WORDS; i++) {
      a += buffer[i];
      b += a;
    }
    a ^= pass;
  }
  return a ^ (b << 1);
}
