/*
 * tsc: the time-stamp counter (SDM Vol. 3B §18.17). rdtsc at CPL 0 gives
 * EDX:EAX, the high halves of RAX and RDX cleared; it never goes back
 * between reads; rdtscp reads it too, with ECX = IA32_TSC_AUX; with CR4.TSD
 * set, rdtsc at CPL 3 raises #GP(0) while CPL 0 still reads it. (btvm
 * translates kernel-mode rdtsc and rdtscp inline. IA32_TSC, MSR 0x10, is not
 * checked: QEMU TCG, the reference, keeps it apart from the counter.)
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/x86.h"

#define CR4_TSD (1ull << 2)
#define MSR_TSC_AUX 0xc0000103u

static inline u64 rdtsc_raw(u64* rax, u64* rdx) {
  u64 a = ~0ull, d = ~0ull;
  asm volatile("rdtsc" : "+a"(a), "+d"(d));
  *rax = a;
  *rdx = d;
  return (d << 32) | (a & 0xffffffff);
}

static USER_TEXT u64 user_rdtsc(u64 arg) {
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32 | lo) + (arg & 0);
}

int main(void) {
  pic_init();
  user_init();

  u64 rax, rdx;
  rdtsc_raw(&rax, &rdx);
  report((rax >> 32) == 0 && (rdx >> 32) == 0, "rdtsc clears the high halves of RAX and RDX");

  bool monotonic = true;
  u64 last = rdtsc_raw(&rax, &rdx);
  for (int i = 0; i < 10000; i++) {
    u64 now = rdtsc_raw(&rax, &rdx);
    if (now < last) monotonic = false;
    last = now;
  }
  report(monotonic, "10,000 reads in a row never go back");

  /* rdtscp: the counter, never behind the rdtsc before it, and ECX =
     IA32_TSC_AUX (MSR 0xc0000103), the high half of RCX cleared. */
  wrmsr(MSR_TSC_AUX, 0x12345);
  const u64 before = rdtsc_raw(&rax, &rdx);
  u64 a = ~0ull, d = ~0ull, c = ~0ull;
  asm volatile("rdtscp" : "+a"(a), "+d"(d), "+c"(c));
  const u64 p = (d << 32) | (a & 0xffffffff);
  report(c == 0x12345 && (a >> 32) == 0 && (d >> 32) == 0 && p >= before,
         "rdtscp: the counter, and ECX = TSC_AUX (%#llx)", (unsigned long long)c);
  bool ordered = true;
  for (int i = 0; i < 10000; i++) {
    u64 t = rdtsc_raw(&rax, &rdx);
    asm volatile("rdtscp" : "=a"(a), "=d"(d), "=c"(c));
    if (((d << 32) | (a & 0xffffffff)) < t) ordered = false;
  }
  report(ordered, "10,000 rdtscp never behind the rdtsc before them");

  const u64 after = rdtsc_raw(&rax, &rdx);

  write_cr4(read_cr4() | CR4_TSD);
  struct fault f = enter_user_caught(user_rdtsc, 0);
  report(f.vector == GP_VECTOR && f.error_code == 0 && (f.cs & 3) == 3,
         "with CR4.TSD, rdtsc at CPL 3: #GP(0)");
  const u64 k = rdtsc_raw(&rax, &rdx);
  report(k >= after, "and at CPL 0 it still reads the counter");
  write_cr4(read_cr4() & ~CR4_TSD);
  f = enter_user_caught(user_rdtsc, 0);
  report(f.vector == FAULT_NONE, "without CR4.TSD, rdtsc at CPL 3 works");
  return report_summary();
}
