/*
 * swapgs: SDM Vol. 2 SWAPGS. At CPL 0 in 64-bit mode it exchanges the GS
 * base (IA32_GS_BASE, MSR 0xc0000101) with IA32_KERNEL_GS_BASE (MSR
 * 0xc0000102); a GS-relative access right after it, in the same run of
 * code, uses the new base; twice is the identity. At CPL 3 it raises
 * #GP(0). (btvm translates it inline for supervisor code.)
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/x86.h"

#define MSR_GS_BASE 0xc0000101u
#define MSR_KERNEL_GS_BASE 0xc0000102u

static u64 area_a[2] = {0xaaaa0001, 0xaaaa0002};
static u64 area_b[2] = {0xbbbb0001, 0xbbbb0002};

static USER_TEXT u64 user_swapgs(u64 arg) {
  asm volatile("swapgs");
  return arg;
}

int main(void) {
  pic_init();
  user_init();
  wrmsr(MSR_GS_BASE, (u64)(uintptr_t)area_a);
  wrmsr(MSR_KERNEL_GS_BASE, (u64)(uintptr_t)area_b);

  /* swapgs and the loads around it in one straight run of code. */
  u64 before, after, after2, back;
  asm volatile(
      "mov %%gs:8, %0\n"
      "swapgs\n"
      "mov %%gs:0, %1\n"
      "mov %%gs:8, %2\n"
      "swapgs\n"
      "mov %%gs:0, %3\n"
      : "=&r"(before), "=&r"(after), "=&r"(after2), "=&r"(back));
  report(before == 0xaaaa0002 && after == 0xbbbb0001 && after2 == 0xbbbb0002 &&
             back == 0xaaaa0001,
         "GS-relative loads before, between and after two swapgs use A, B, B, A");

  asm volatile("swapgs");
  report(rdmsr(MSR_GS_BASE) == (u64)(uintptr_t)area_b &&
             rdmsr(MSR_KERNEL_GS_BASE) == (u64)(uintptr_t)area_a,
         "after one swapgs the MSRs hold the bases exchanged");
  asm volatile("swapgs");
  report(rdmsr(MSR_GS_BASE) == (u64)(uintptr_t)area_a &&
             rdmsr(MSR_KERNEL_GS_BASE) == (u64)(uintptr_t)area_b,
         "after a second one they are back");

  /* A store through GS after swapgs goes to the new base. */
  asm volatile("swapgs\n movq $0x1234, %%gs:0\n swapgs" ::: "memory");
  report(area_b[0] == 0x1234 && area_a[0] == 0xaaaa0001, "a GS-relative store after swapgs writes B");

  struct fault f = enter_user_caught(user_swapgs, 0);
  report(f.vector == GP_VECTOR && f.error_code == 0 && (f.cs & 3) == 3,
         "swapgs at CPL 3: #GP(0)");
  report(rdmsr(MSR_GS_BASE) == (u64)(uintptr_t)area_a, "and the GS base is unchanged");
  return report_summary();
}
