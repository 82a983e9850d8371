/*
 * Reproducer: an unmasked SIMD floating-point exception. With ZM clear in
 * MXCSR and CR4.OSXMMEXCPT set, divps by zero raises #XM, vector 19, at the
 * divps (SDM Vol. 1 §11.5.1). QEMU 7.2 TCG does not raise SIMD
 * floating-point exceptions, so this one has no QEMU run.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

extern char divps_at[];

static const float ones[4] __attribute__((aligned(16))) = {1, 1, 1, 1};
static const float zeros[4] __attribute__((aligned(16))) = {0, 0, 0, 0};

int main(void) {
  struct fault f;
  const u32 unmasked = 0x1f80 & ~0x200u, masked = 0x1f80;
  if (catch_begin(&f) == 0) {
    asm volatile(
        "ldmxcsr %0\n\t"
        "movaps %1, %%xmm0\n\t"
        ".globl divps_at\n"
        "divps_at: divps %2, %%xmm0\n\t"
        :
        : "m"(unmasked), "m"(ones), "m"(zeros)
        : "memory");
    catch_end();
  }
  asm volatile("ldmxcsr %0" : : "m"(masked));
  report(f.vector == XM_VECTOR && f.rip == (u64)(uintptr_t)divps_at,
         "divps by zero with ZM unmasked: #XM at the divps (vector %d)", f.vector);
  return report_summary();
}
