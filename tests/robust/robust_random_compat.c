/*
 * robust_random_compat: random bytes run as 32-bit code at CPL 3 in
 * compatibility mode (CS = USER_CS32: L = 0, D = 1), many times.
 *
 * As robust_random_user, below 4 GiB (where 32-bit code can reach): each
 * trial maps a page of seeded random bytes at a fresh user address, points
 * every GPR into a user scratch page of random bytes and enters the page
 * at a random offset through iretq to the 32-bit code segment. The bytes
 * decode differently there (inc/dec, pusha, BCD, bound, arpl, lds/les, far
 * transfers to either mode...); whatever they do ends in an exception the
 * 64-bit kernel counts. Short jumps and loops are replaced as for the
 * other random kernels, and so is the address-size prefix 67h: 16-bit
 * addressing is not modelled (btvm would end the run there, cleanly).
 */
#include "tests/robust/robust.h"

#ifndef SEED
#define SEED 0x5eed00000c32ull
#endif
#define TRIALS 3000

#define CODE_BASE 0x40000000ull /* trial i runs at CODE_BASE + i pages */
#define SCRATCH_VA 0x50000000ull
#define STACK_VA 0x50002000ull

static u8 code_page[4096] __attribute__((aligned(4096)));
static u8 scratch_page[4096] __attribute__((aligned(4096)));
static u8 stack_page[4096] __attribute__((aligned(4096)));
static u32 counts[256];
static u32 left_compat;

int main(void) {
  vm_init();
  robust_init();
  rng_state = SEED;
  vm_map(SCRATCH_VA, (u64)(uintptr_t)scratch_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  vm_map(STACK_VA, (u64)(uintptr_t)stack_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  printf("robust_random_compat: %d trials of random 32-bit user code, seed %#llx\n", TRIALS,
         (unsigned long long)SEED);

  int done = 0;
  for (int trial = 0; trial < TRIALS; trial++) {
    const u64 va = CODE_BASE + (u64)trial * 4096;
    robust_random_bytes(code_page, sizeof code_page, false);
    for (unsigned i = 0; i < sizeof code_page; i++) {
      if (code_page[i] == 0x67) code_page[i] = 0x90;
    }
    robust_random_bytes(scratch_page, sizeof scratch_page, false);
    robust_random_bytes(stack_page, sizeof stack_page, false);
    vm_map(va, (u64)(uintptr_t)code_page, PTE_P | PTE_U);

    struct robust_ctx c;
    for (int r = 0; r < 16; r++) c.gpr[r] = SCRATCH_VA + (rng_next() & 0xff8);
    c.rip = va + rng_next() % 4000;
    c.cs = USER_CS32 | 3;
    c.rflags = 0x2;
    c.rsp = STACK_VA + 0x800;
    c.ss = USER_DS;
    c.cr3 = 0;
    robust_armed = 1;
    if (kit_setjmp(&robust_jb) == 0) robust_enter(&c);
    robust_restore();
    vm_unmap(va);
    counts[robust_last.vector & 0xff]++;
    if (robust_last.cs != (USER_CS32 | 3)) left_compat++;
    done++;
  }

  for (int v = 0; v < 256; v++) {
    if (counts[v]) report_info("vector %d (%s): %u", v, exception_mnemonic((unsigned)v), counts[v]);
  }
  report_info("%u trials ended outside the 32-bit code segment", left_compat);
  report(done == TRIALS, "%d of %d random compatibility-mode trials came back", done, TRIALS);
  report(counts[DF_VECTOR] == 0, "no double fault");
  return report_summary();
}
