/*
 * usercpuid: cpuid in user mode (CPL 3, interrupts on, Linux's selectors)
 * shows the machine the kernel sees: leaves 0 (highest leaf, vendor), 1
 * (signature, brand/APIC ID, feature flags) and 0x80000001 (extended
 * features) are the same at CPL 3 as at CPL 0 (SDM Vol. 2A CPUID: it is
 * not privileged, and without CPUID faulting nothing traps it).
 *
 * Under btvm's direct engine user code that runs in the child process on
 * a host without CPUID faulting executes cpuid on the host CPU and sees
 * the host's values (runtime/direct/README.md): the values user mode saw
 * are printed as a "measured:" line, which compare.sh does not compare
 * with QEMU's, and which tests/guest/expect_cpuid.sh checks against the
 * host's CPU for that case.
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/x86.h"

/* cpuid's eax, ebx, ecx, edx for leaves 0, 1 and 0x80000001. */
USER_DATA static u32 user_regs[3][4];
static u32 kernel_regs[3][4];

#define CPUID(leaf, r)                                                              \
  asm volatile("cpuid" : "=a"((r)[0]), "=b"((r)[1]), "=c"((r)[2]), "=d"((r)[3]) \
               : "a"(leaf), "c"(0))

/* The first thing the user program does (no .rodata: leaves inline). */
static USER_TEXT u64 user_cpuid(u64 arg) {
  CPUID(0, user_regs[0]);
  CPUID(1, user_regs[1]);
  CPUID(0x80000001, user_regs[2]);
  return arg;
}

static bool same(const u32* a, const u32* b) {
  return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

int main(void) {
  pic_init(); /* nothing may interrupt: user mode runs with IF = 1 */
  user_init();
  kit_user_rflags = 0x202;

  enter_user(user_cpuid, 0);
  CPUID(0, kernel_regs[0]);
  CPUID(1, kernel_regs[1]);
  CPUID(0x80000001, kernel_regs[2]);

  char vendor[13];
  for (int i = 0; i < 4; i++) {
    vendor[i] = (char)(user_regs[0][1] >> (8 * i));     /* ebx */
    vendor[4 + i] = (char)(user_regs[0][3] >> (8 * i)); /* edx */
    vendor[8 + i] = (char)(user_regs[0][2] >> (8 * i)); /* ecx */
  }
  vendor[12] = 0;
  printf("measured: user-mode cpuid: vendor %s, signature %#x\n", vendor, user_regs[1][0]);

  report(same(user_regs[0], kernel_regs[0]), "user-mode cpuid leaf 0 (highest leaf, vendor) is the kernel's");
  report(same(user_regs[1], kernel_regs[1]), "leaf 1 (signature, features) is the kernel's");
  report(same(user_regs[2], kernel_regs[2]), "leaf 0x80000001 (extended features) is the kernel's");
  return report_summary();
}
