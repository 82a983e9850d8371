/*
 * robust_random_kernel: kernel-mode (CPL 0) code made of random bytes.
 *
 * As robust_random_user, but at CPL 0 and in a sandbox address space: the
 * kernel image is mapped read-only (CR0.WP) except the exception stack, and
 * the code, scratch and stack pages are the only other mappings, so most
 * stray writes fault instead of damaging the kernel. Besides short jumps
 * and loops, the bytes lose hlt, out and outs (they would end the run
 * through a halt, isa-debug-exit or the reset line). Code at CPL 0 can
 * still do what no sandbox stops (load a garbage IDT, GDT or CR3, clear
 * CR0.WP), so a run may end early: with a triple fault or any other clean
 * end. btvm must not crash or hang, whichever way it ends.
 */
#include "tests/robust/robust.h"

#ifndef SEED
#define SEED 0x5eed00000101ull
#endif
#define TRIALS 3000

#define CODE_BASE 0x0000100000000000ull /* trial i runs at CODE_BASE + i pages */
#define SCRATCH_VA 0x0000200000000000ull
#define STACK_VA 0x0000200000002000ull

static u8 code_page[4096] __attribute__((aligned(4096)));
static u8 scratch_page[4096] __attribute__((aligned(4096)));
static u8 stack_page[4096] __attribute__((aligned(4096)));
static u32 counts[256];

int main(void) {
  vm_init();
  robust_init();
  rng_state = SEED;

  /* The sandbox: the image read-only and executable, the IST stack
     writable, then the test pages. */
  const u64 sandbox = (u64)(uintptr_t)robust_page();
  for (u64 p = (u64)(uintptr_t)__image_start; p < (u64)(uintptr_t)__image_end; p += 4096) {
    pt_map(sandbox, p, p, PTE_P);
  }
  for (u64 p = (u64)(uintptr_t)robust_stack; p < (u64)(uintptr_t)robust_stack + sizeof robust_stack;
       p += 4096) {
    pt_map(sandbox, p, p, PTE_P | PTE_W | PTE_NX);
  }
  pt_map(sandbox, SCRATCH_VA, (u64)(uintptr_t)scratch_page, PTE_P | PTE_W | PTE_NX);
  pt_map(sandbox, STACK_VA, (u64)(uintptr_t)stack_page, PTE_P | PTE_W | PTE_NX);
  printf("robust_random_kernel: %d trials of random kernel code, seed %#llx\n", TRIALS,
         (unsigned long long)SEED);

  int done = 0;
  for (int trial = 0; trial < TRIALS; trial++) {
    const u64 va = CODE_BASE + (u64)trial * 4096;
    robust_random_bytes(code_page, sizeof code_page, true);
    robust_random_bytes(scratch_page, sizeof scratch_page, true);
    robust_random_bytes(stack_page, sizeof stack_page, true);
    pt_map(sandbox, va, (u64)(uintptr_t)code_page, PTE_P);

    struct robust_ctx c;
    for (int r = 0; r < 16; r++) c.gpr[r] = SCRATCH_VA + (rng_next() & 0xff8);
    c.rip = va + rng_next() % 4000;
    c.cs = KERNEL_CS;
    c.rflags = 0x2;
    c.rsp = STACK_VA + 0x800;
    c.ss = KERNEL_DS;
    c.cr3 = sandbox;
    robust_armed = 1;
    if (kit_setjmp(&robust_jb) == 0) robust_enter(&c);
    robust_restore();
    pt_map(sandbox, va, 0, 0);
    counts[robust_last.vector & 0xff]++;
    done++;
    if (done % 500 == 0) printf("robust_random_kernel: %d trials\n", done);
  }

  for (int v = 0; v < 256; v++) {
    if (counts[v]) report_info("vector %d (%s): %u", v, exception_mnemonic((unsigned)v), counts[v]);
  }
  report(done == TRIALS, "%d of %d random kernel-mode trials came back", done, TRIALS);
  return report_summary();
}
