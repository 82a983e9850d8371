/*
 * The workload loops of bench/loops.sh. Each loop_<name>.c defines the
 * symbols below; the same object (compiled once, with the guest kit's flags)
 * links into a native host program (native_main.c) and into a guest kernel
 * (guest_main.c), so both run the very same machine code.
 *
 * Both programs print:
 *   loop <name>: <n> iterations
 *   result: 0x<64-bit result>      (identical natively, on btvm, on QEMU)
 *   measured: <c> cycles           (rdtsc around bench_loop_run only)
 */
#pragma once

#include <stdint.h>

/* The loop's name ("reg", "mem", "call"). */
extern const char bench_loop_name[];
/* The iteration count used when none is given: a short run. */
extern const uint64_t bench_loop_default_iters;
/* Untimed preparation (the memory loop fills its buffer). */
void bench_loop_setup(void);
/* The timed loop: n iterations, returns a checksum of the work. */
uint64_t bench_loop_run(uint64_t n);

/* rdtsc as a compiler barrier: memory is neither cached nor reordered
   across it, and the loop is a call into another object file. */
static inline uint64_t bench_rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
  return ((uint64_t)hi << 32) | lo;
}
