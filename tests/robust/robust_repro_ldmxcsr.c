/*
 * Reproducer: ldmxcsr of a value with a reserved bit set raises #GP(0)
 * (SDM Vol. 2 LDMXCSR), in the guest. QEMU 7.2 TCG loads it, so this one
 * has no QEMU run.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

int main(void) {
  struct fault f;
  const u32 reserved = 0x10000; /* bit 16 */
  if (catch_begin(&f) == 0) {
    asm volatile("ldmxcsr %0" : : "m"(reserved));
    catch_end();
  }
  report(f.vector == GP_VECTOR && f.error_code == 0,
         "ldmxcsr with a reserved bit: #GP(0) (vector %d)", f.vector);
  return report_summary();
}
