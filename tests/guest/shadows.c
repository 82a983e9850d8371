/*
 * shadows: what a CR3 write promises about the address space switched
 * back to (SDM Vol. 3A §4.10.4.1: without PCIDs, a MOV to CR3 invalidates
 * every TLB entry but global ones). A kernel may therefore change the
 * page tables of an address space that is not current without invlpg,
 * and the next switch to it must see the change. Two address spaces A
 * and B map the same user address X to different frames; while B is
 * current the kernel edits A's entry for X: points it at another frame,
 * clears its write permission, its present bit, its accessed bit. Back
 * in A, user code must see each change: the new frame, a #PF for the
 * write, a #PF for the read, and A set again by the read.
 *
 * btvm's direct engine keeps a child process (a shadow of the user
 * mappings) per address space across switches: this is what its
 * validation of a cached shadow after a flush must get right.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define X 0x8000000000ull /* PML4 slot 1: each address space has its own */

static USER_TEXT u64 user_read(u64 addr) {
  return *(volatile u64*)addr;
}

static USER_TEXT u64 user_write(u64 addr) {
  *(volatile u64*)addr = 0x5555;
  return 0;
}

/* The leaf entry for va in the tables under root, made as needed (tables
   user and writable: the leaf decides). */
static volatile u64* leaf(u64 root, u64 va) {
  u64* table = (u64*)(uintptr_t)root;
  for (int level = 4; level > 1; level--) {
    u64* e = &table[(va >> (12 + 9 * (level - 1))) & 511];
    if (!(*e & PTE_P)) *e = (u64)(uintptr_t)alloc_page() | PTE_P | PTE_W | PTE_U;
    table = (u64*)(uintptr_t)(*e & PTE_ADDR);
  }
  return &table[(va >> 12) & 511];
}

static u64* frame_with(u64 value) {
  u64* f = alloc_page();
  f[0] = value;
  return f;
}

static bool pf(const struct fault* f, u64 error) {
  return f->vector == PF_VECTOR && f->error_code == error && f->cr2 == X && (f->cs & 3) == 3;
}

int main(void) {
  pic_init(); /* nothing may interrupt: user mode runs with IF = 1 */
  user_init();
  kit_user_rflags = 0x202;

  /* B: a copy of the kit's PML4 (kernel, kit and user code shared) with
     its own slot 1. */
  const u64 a = vm_root();
  u64* b_pml4 = alloc_page();
  memcpy(b_pml4, (void*)(uintptr_t)a, PAGE_SIZE);
  b_pml4[1] = 0;
  const u64 b = (u64)(uintptr_t)b_pml4;
  u64* a1 = frame_with(0xa1);
  u64* a2 = frame_with(0xa2);
  u64* b1 = frame_with(0xb1);
  volatile u64* pte_a = leaf(a, X);
  volatile u64* pte_b = leaf(b, X);
  *pte_a = (u64)(uintptr_t)a1 | PTE_P | PTE_W | PTE_U;
  *pte_b = (u64)(uintptr_t)b1 | PTE_P | PTE_W | PTE_U;

  write_cr3(a);
  report(enter_user(user_read, X) == 0xa1, "A: user read of X gives A's frame");
  write_cr3(b);
  report(enter_user(user_read, X) == 0xb1, "B: user read of X gives B's frame");

  /* While B is current: A's X now maps another frame (no invlpg). */
  *pte_a = (u64)(uintptr_t)a2 | PTE_P | PTE_W | PTE_U;
  write_cr3(a);
  report(enter_user(user_read, X) == 0xa2, "back in A: X gives the frame its entry was changed to");

  /* Writable and dirty, then read-only while away: a write faults. */
  enter_user(user_write, X);
  report(a2[0] == 0x5555 && (*pte_a & PTE_D), "A: a user write to X sets D");
  write_cr3(b);
  enter_user(user_read, X);
  *pte_a &= ~PTE_W;
  write_cr3(a);
  struct fault f = enter_user_caught(user_write, X);
  report(pf(&f, PFERR_PRESENT | PFERR_WRITE | PFERR_USER),
         "back in A after X became read-only: a user write faults %#llx",
         (unsigned long long)f.error_code);

  /* A cleared while away: the read sets it again. */
  write_cr3(b);
  enter_user(user_read, X);
  *pte_a &= ~(PTE_A | PTE_D);
  write_cr3(a);
  report(enter_user(user_read, X) == 0x5555 && (*pte_a & PTE_A) && !(*pte_a & PTE_D),
         "back in A after A and D were cleared: a user read sets A (not D)");

  /* Not present while away: the read faults. */
  write_cr3(b);
  enter_user(user_read, X);
  *pte_a &= ~PTE_P;
  write_cr3(a);
  f = enter_user_caught(user_read, X);
  report(pf(&f, PFERR_USER), "back in A after X was unmapped: a user read faults %#llx",
         (unsigned long long)f.error_code);

  /* B was never touched: its X still gives its frame. */
  write_cr3(b);
  report(enter_user(user_read, X) == 0xb1, "B: X still gives B's frame");
  write_cr3(a);
  return report_summary();
}
