/*
 * robust_random_user: user-mode code made of random bytes, many times.
 *
 * Each trial fills a code page with seeded random bytes (short jumps and
 * loops replaced, so that nothing loops forever), maps it at a fresh user
 * address (so no translation of an earlier trial's bytes can be reused),
 * points every GPR into a user scratch page of random bytes and enters it
 * at a random offset at CPL 3. Whatever the bytes do ends in an exception
 * (at the latest when execution runs off the page); the handler counts its
 * vector and the next trial starts. The kernel's pages are supervisor-only,
 * so nothing the user code does can damage it: every trial must come back.
 */
#include "tests/robust/robust.h"

#ifndef USER_RFLAGS
#define USER_RFLAGS 0x2 /* interrupts off */
#endif
#ifndef SEED
#define SEED 0x5eed00000001ull
#endif
#define TRIALS 3000

#define CODE_BASE 0x0000100000000000ull    /* trial i runs at CODE_BASE + i pages */
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
  const u64 root = vm_root();
  pt_map(root, SCRATCH_VA, (u64)(uintptr_t)scratch_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  pt_map(root, STACK_VA, (u64)(uintptr_t)stack_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  printf("robust_random_user: %d trials of random user code, seed %#llx\n", TRIALS,
         (unsigned long long)SEED);

  int done = 0;
  for (int trial = 0; trial < TRIALS; trial++) {
    const u64 va = CODE_BASE + (u64)trial * 4096;
    robust_random_bytes(code_page, sizeof code_page, false);
    robust_random_bytes(scratch_page, sizeof scratch_page, false);
    robust_random_bytes(stack_page, sizeof stack_page, false);
    pt_map(root, va, (u64)(uintptr_t)code_page, PTE_P | PTE_U);

    struct robust_ctx c;
    for (int r = 0; r < 16; r++) c.gpr[r] = SCRATCH_VA + (rng_next() & 0xff8);
    c.rip = va + rng_next() % 4000;
    c.cs = USER_CS;
    c.rflags = USER_RFLAGS;
    c.rsp = STACK_VA + 0x800;
    c.ss = USER_DS;
    c.cr3 = 0;
    robust_armed = 1;
    if (kit_setjmp(&robust_jb) == 0) robust_enter(&c);
    robust_restore();
    pt_map(root, va, 0, 0);
    counts[robust_last.vector & 0xff]++;
    done++;
  }

  for (int v = 0; v < 256; v++) {
    if (counts[v]) report_info("vector %d (%s): %u", v, exception_mnemonic((unsigned)v), counts[v]);
  }
  report(done == TRIALS, "%d of %d random user-mode trials came back", done, TRIALS);
  report(counts[DF_VECTOR] == 0, "no double fault");
  return report_summary();
}
