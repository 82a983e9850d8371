/*
 * userdirect: user mode as Linux runs it — interrupts on (IF = 1, IOPL 0)
 * and Linux's selectors — the state in which btvm's direct engine runs user
 * code on the host CPU in its child process (runtime/direct/README.md).
 * Everything a user program can see of its machine must be the same there
 * as translated and under QEMU: its flags and selectors, computing over
 * several pages, syscalls, the accessed and dirty bits its reads and
 * writes set (SDM Vol. 3A §4.8), the page faults of writes to read-only and
 * unmapped pages, of reads of supervisor pages and of fetches from NX
 * pages with their error codes and CR2 (§4.7), #UD, #DE and #BP, and a
 * TSC that moves forward between the kernel's reads.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define FRESH_VA 0x40000000ull /* user pages mapped here by the test */
#define PAGES 6

USER_DATA static u64 user_words[PAGES * PAGE_SIZE / 8] __attribute__((aligned(4096)));

static USER_TEXT u64 user_flags_and_selectors(u64 arg) {
  u64 flags;
  u16 cs, ss;
  asm volatile("pushfq; popq %0" : "=r"(flags));
  asm volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
  return ((flags & 0x3200) << 32) | ((u64)cs << 16) | ss | (arg & 0);
}

/* Fills and sums words across PAGES pages (the words are the user's). */
static USER_TEXT u64 user_compute(u64 n) {
  u64 sum = 0;
  for (u64 i = 0; i < PAGES * PAGE_SIZE / 8; i++) user_words[i] = i * n + (i >> 3);
  for (u64 r = 0; r < 20; r++) {
    for (u64 i = 0; i < PAGES * PAGE_SIZE / 8; i += 7) sum += user_words[i] ^ r;
  }
  return sum;
}

static USER_TEXT u64 user_syscalls(u64 n) {
  u64 sum = 0;
  for (u64 i = 0; i < n; i++) sum += user_syscall(SYS_ECHO, i, 1);
  return sum;
}

static USER_TEXT u64 user_read(u64 addr) {
  return *(volatile u64*)addr;
}

static USER_TEXT u64 user_write(u64 addr) {
  *(volatile u64*)addr = 0x1234;
  return 0;
}

static USER_TEXT u64 user_call(u64 addr) {
  return ((u64(*)(void))addr)();
}

static USER_TEXT u64 user_ud2(u64 arg) {
  asm volatile("ud2");
  return arg;
}

static USER_TEXT u64 user_divide(u64 d) {
  u64 q;
  asm volatile("xor %%edx, %%edx; divq %2" : "=a"(q) : "a"(100ull), "r"(d) : "rdx");
  return q;
}

static USER_TEXT u64 user_int3(u64 arg) {
  asm volatile("int3");
  return arg;
}

static USER_TEXT u64 user_rdtsc(u64 arg) {
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32 | lo) + (arg & 0);
}

static u64 kernel_rdtsc(void) {
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (u64)hi << 32 | lo;
}

static bool pf(const struct fault* f, u64 error, u64 cr2) {
  return f->vector == PF_VECTOR && f->error_code == error && f->cr2 == cr2 && (f->cs & 3) == 3;
}

static u64 compute_expected(u64 n) {
  u64 sum = 0;
  for (u64 r = 0; r < 20; r++) {
    for (u64 i = 0; i < PAGES * PAGE_SIZE / 8; i += 7) sum += (i * n + (i >> 3)) ^ r;
  }
  return sum;
}

int main(void) {
  pic_init(); /* nothing may interrupt: user mode runs with IF = 1 */
  user_init();
  kit_user_rflags = 0x202;

  u64 fs = enter_user(user_flags_and_selectors, 0);
  report(fs == ((0x200ull << 32) | ((u64)USER_CS << 16) | USER_DS),
         "user mode: IF set, IOPL 0, cs %#llx, ss %#llx", (unsigned long long)(fs >> 16) & 0xffff,
         (unsigned long long)fs & 0xffff);

  report(enter_user(user_compute, 3) == compute_expected(3), "computing over %d user pages", PAGES);
  report(enter_user(user_syscalls, 200) == 200 * 199 / 2 + 200, "200 syscalls from user mode");

  /* Accessed and dirty bits of a fresh user page. */
  u64* frame = alloc_page();
  vm_map(FRESH_VA, (u64)(uintptr_t)frame, PTE_P | PTE_W | PTE_U);
  volatile u64* pte = vm_pte(FRESH_VA);
  bool clean = !(*pte & (PTE_A | PTE_D));
  enter_user(user_read, FRESH_VA);
  bool read_sets_a = (*pte & PTE_A) && !(*pte & PTE_D);
  enter_user(user_write, FRESH_VA + 8);
  report(clean && read_sets_a && (*pte & PTE_D) && frame[1] == 0x1234,
         "a user read sets A, a user write sets D (and writes the frame)");

  /* Clear them again (with invlpg): the next accesses set them again. */
  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)FRESH_VA);
  enter_user(user_write, FRESH_VA + 16);
  report((*pte & (PTE_A | PTE_D)) == (PTE_A | PTE_D) && frame[2] == 0x1234,
         "after clearing A and D and invlpg, a user write sets both again");

  /* Read-only: a write faults P | W | U; reads still work. */
  vm_set_flags(FRESH_VA, PAGE_SIZE, 0, PTE_W);
  struct fault f = enter_user_caught(user_write, FRESH_VA + 24);
  report(pf(&f, PFERR_PRESENT | PFERR_WRITE | PFERR_USER, FRESH_VA + 24),
         "user write to a read-only page: #PF %#llx", (unsigned long long)f.error_code);
  report(enter_user(user_read, FRESH_VA + 8) == 0x1234, "and a user read of it still works");

  /* Unmapped: W | U for a write, U for a read. */
  vm_unmap(FRESH_VA);
  f = enter_user_caught(user_write, FRESH_VA + 32);
  report(pf(&f, PFERR_WRITE | PFERR_USER, FRESH_VA + 32),
         "user write to an unmapped page: #PF %#llx", (unsigned long long)f.error_code);
  f = enter_user_caught(user_read, FRESH_VA + 40);
  report(pf(&f, PFERR_USER, FRESH_VA + 40), "user read of an unmapped page: #PF %#llx",
         (unsigned long long)f.error_code);

  /* Supervisor page: P | U. */
  static u64 kernel_word = 7;
  const u64 kw = (u64)(uintptr_t)&kernel_word;
  f = enter_user_caught(user_read, kw);
  report(pf(&f, PFERR_PRESENT | PFERR_USER, kw), "user read of kernel memory: #PF %#llx",
         (unsigned long long)f.error_code);

  /* Mapped again, user and writable, but NX: a call there faults P | U | I. */
  static const u8 kRet42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov eax, 42; ret */
  memcpy(frame, kRet42, sizeof kRet42);
  vm_map(FRESH_VA, (u64)(uintptr_t)frame, PTE_P | PTE_W | PTE_U | PTE_NX);
  f = enter_user_caught(user_call, FRESH_VA);
  report(pf(&f, PFERR_PRESENT | PFERR_USER | PFERR_FETCH, FRESH_VA),
         "user call into an NX page: #PF %#llx", (unsigned long long)f.error_code);
  vm_map(FRESH_VA, (u64)(uintptr_t)frame, PTE_P | PTE_W | PTE_U);
  report(enter_user(user_call, FRESH_VA) == 42, "and without NX the call returns 42");

  f = enter_user_caught(user_ud2, 0);
  report(f.vector == UD_VECTOR && (f.cs & 3) == 3, "ud2 in user mode: #UD");
  f = enter_user_caught(user_divide, 0);
  report(f.vector == DE_VECTOR && (f.cs & 3) == 3, "divide by zero in user mode: #DE");
  report(enter_user(user_divide, 7) == 14, "and a divide that works: 100 / 7 = 14");
  set_idt_dpl(BP_VECTOR, 3); /* int3 from CPL 3 needs a DPL 3 gate (else #GP) */
  f = enter_user_caught(user_int3, 0);
  report(f.vector == BP_VECTOR && (f.cs & 3) == 3 && f.rip > (u64)(uintptr_t)user_int3,
         "int3 in user mode: #BP, a trap");

  u64 before = kernel_rdtsc();
  u64 user_tsc = enter_user(user_rdtsc, 0);
  u64 after = kernel_rdtsc();
  report(before < user_tsc && user_tsc < after, "rdtsc in user mode lies between the kernel's");

  report(enter_user(user_compute, 5) == compute_expected(5), "user mode still works after it all");
  return report_summary();
}
