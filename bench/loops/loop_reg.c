/* The register-only loop: an xorshift64 step and a rotate chain per
   iteration; no memory access in the loop body. */
#include "bench/loops/loop.h"

const char bench_loop_name[] = "reg";
const uint64_t bench_loop_default_iters = 1000000;

void bench_loop_setup(void) {}

static inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

uint64_t bench_loop_run(uint64_t n) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  uint64_t y = 0x6a09e667f3bcc909ull;
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    y = rotl(y + x, 23) ^ i;
  }
  return x ^ y;
}
