/*
 * Reproducer: lfs, lgs and lss load a segment register from memory
 * (SDM Vol. 2 LDS/LES/LFS/LGS/LSS). The selector is the guest's: the host's
 * segment registers must never see it.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

struct __attribute__((packed)) far32 {
  u32 offset;
  u16 selector;
};

int main(void) {
  static struct far32 p = {0x12345678, KERNEL_DS};
  /* volatile: they live across catch_begin's setjmp. */
  volatile u32 value = 0;
  volatile u16 fs = 0;
  struct fault f;
  if (catch_begin(&f) == 0) {
    u32 v;
    u16 s;
    asm volatile("lfs %2, %0\n\tmov %%fs, %1" : "=r"(v), "=r"(s) : "m"(p) : "memory");
    value = v;
    fs = s;
    catch_end();
  }
  report(f.vector == FAULT_NONE && value == 0x12345678 && fs == KERNEL_DS,
         "lfs: fs %#x (want %#x), offset %#x (vector %d)", fs, KERNEL_DS, value, f.vector);
  p.selector = KERNEL_TSS; /* a system descriptor */
  if (catch_begin(&f) == 0) {
    asm volatile("lgs %1, %0" : "=r"(value) : "m"(p) : "memory");
    catch_end();
  }
  report(f.vector == GP_VECTOR && f.error_code == KERNEL_TSS,
         "lgs of the TSS selector: #GP(%#x) (vector %d, error %#llx)", KERNEL_TSS, f.vector,
         (unsigned long long)f.error_code);
  asm volatile("mov %0, %%fs\n\tmov %0, %%gs" : : "r"((u32)KERNEL_DS));
  return report_summary();
}
