/* The native host program of a workload loop: bench_loop_<name> [N] runs N
   iterations (default: the loop's short run) and prints what the guest
   kernel prints (loop.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/loops/loop.h"

int main(int argc, char** argv) {
  uint64_t n = bench_loop_default_iters;
  if (argc > 2) {
    fprintf(stderr, "usage: %s [ITERATIONS]\n", argv[0]);
    return 2;
  }
  if (argc == 2) {
    char* end;
    n = strtoull(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0') {
      fprintf(stderr, "%s: not a number: %s\n", argv[0], argv[1]);
      return 2;
    }
  }
  printf("loop %s: %" PRIu64 " iterations\n", bench_loop_name, n);
  bench_loop_setup();
  uint64_t t0 = bench_rdtsc();
  uint64_t r = bench_loop_run(n);
  uint64_t t1 = bench_rdtsc();
  printf("result: 0x%016" PRIx64 "\n", r);
  printf("measured: %" PRIu64 " cycles\n", t1 - t0);
  return 0;
}
