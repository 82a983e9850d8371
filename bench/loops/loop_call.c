/* The call-heavy loop: naive recursive Fibonacci, a call and a return for
   every few instructions. noipa keeps gcc from treating fib as pure (and
   hoisting or folding calls); it may still turn one of the two recursive
   calls into a loop, as it does for any code. */
#include "bench/loops/loop.h"

const char bench_loop_name[] = "call";
const uint64_t bench_loop_default_iters = 20;

__attribute__((noipa)) uint64_t bench_fib(uint64_t k) {
  return k < 2 ? k : bench_fib(k - 1) + bench_fib(k - 2);
}

void bench_loop_setup(void) {}

/* One iteration: fib(20 + i % 4), about 45,000 calls on average. */
uint64_t bench_loop_run(uint64_t n) {
  uint64_t acc = 0;
  for (uint64_t i = 0; i < n; i++) acc = acc * 31 + bench_fib(20 + (i & 3));
  return acc;
}
