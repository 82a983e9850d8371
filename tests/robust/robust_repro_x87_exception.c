/*
 * Reproducer: an unmasked x87 exception. With the zero-divide exception
 * unmasked in the control word, 1/0 leaves it pending and the next waiting
 * x87 instruction (fwait) raises #MF, vector 16 with CR0.NE set (SDM Vol. 1
 * §8.6). The guest's pending exception is guest state: nothing may raise it
 * anywhere else.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

extern char fwait_at[];

int main(void) {
  struct fault f;
  const u16 cw = 0x37b; /* all masked but ZM */
  const float zero = 0;
  if (catch_begin(&f) == 0) {
    asm volatile(
        "fninit\n\t"
        "fldcw %0\n\t"
        "fld1\n\t"
        "fdivs %1\n\t" /* 1 / 0 */
        ".globl fwait_at\n"
        "fwait_at: fwait\n\t"
        :
        : "m"(cw), "m"(zero)
        : "memory");
    catch_end();
  }
  asm volatile("fninit");
  report(f.vector == MF_VECTOR && f.rip == (u64)(uintptr_t)fwait_at,
         "1/0 with ZM unmasked: #MF at the fwait (vector %d, rip %#llx)", f.vector,
         (unsigned long long)f.rip);
  return report_summary();
}
