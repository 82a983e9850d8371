/*
 * paging2: more of 4-level paging (SDM Vol. 3A chapter 4). A 1 GiB page at a
 * high address onto physical 0 (reads and writes through it, its A and D
 * bits, a reserved bit in it); CR0.WP (a supervisor write to a read-only
 * page faults with error code 0x3 when WP = 1 and is done when WP = 0);
 * EFER.NXE (a fetch from an NX page faults with 0x11; with NXE = 0 bit 63 is
 * reserved and a fetch fault carries no I/D bit); accessed and dirty bits
 * set by fetches, reads, writes and string stores, on 4 KiB and 2 MiB
 * leaves, never D on a non-leaf entry; reserved bits (bit 51, PS in a
 * PML4E; the error code's P bit is not checked, see is_rsvd_pf); and what invalidation guarantees:
 * after invlpg, after a CR3 load, after a switch to other tables and back, after toggling CR4.PGE
 * for a global page, the new translation is used. (What a stale
 * translation does before that is not architectural and is not tested.)
 *
 * QEMU runs this kernel with -cpu qemu64,+pdpe1gb: its default model does
 * not advertise 1 GiB pages (and maps them all the same).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define GIB (1ull << 30)
#define MIB (1ull << 20)
#define HUGE_VA 0xffff960000000000ull /* PML4 slot 300, PDPT slot 0: the 1 GiB page */
#define HUGE_PHYS_PROBE (112 * MIB)   /* inside RAM, past the first 2 MiB pages */
#define TEST_VA 0xffffff8060000000ull /* 4 KiB test mappings */
#define X86_CR4_PGE (1ull << 7)
#define PTE_RSVD51 (1ull << 51)

static volatile u64 known = 0x1badc0de5eed1e55ull;


static struct fault write_caught(u64 va, u64 v) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    write_u64(va, v);
    catch_end();
  }
  return f;
}

static struct fault call_caught(u64 va) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    ((void (*)(void))(uintptr_t)va)();
    catch_end();
  }
  return f;
}

static bool is_pf(const struct fault* f, u64 error_code, u64 cr2) {
  return f->vector == PF_VECTOR && f->error_code == error_code && f->cr2 == cr2;
}

/* A reserved-bit fault. Hardware sets P with RSVD (SDM Vol. 3A §4.7: RSVD
   can be set only if P is); QEMU TCG 7.2 leaves P clear. Only the other
   bits are checked, and printed. */
static bool is_rsvd_pf(const struct fault* f, u64 error_code, u64 cr2) {
  return f->vector == PF_VECTOR && (f->error_code & ~(u64)PFERR_PRESENT) == error_code &&
         f->cr2 == cr2;
}
static unsigned long long rsvd_bits(const struct fault* f) {
  return f->error_code & ~(u64)PFERR_PRESENT;
}

static void rep_stosq(u64 va, u64 v, u64 n) {
  asm volatile("rep stosq" : "+D"(va), "+c"(n) : "a"(v) : "memory");
}

static void test_1g_pages(void) {
  u32 a = 0x80000001, b, c = 0, d;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
  report(d & (1u << 26), "CPUID.80000001h:EDX.Page1GB is set");

  /* PML4[300] -> a fresh PDPT whose entry 0 maps 1 GiB at physical 0. */
  volatile u64* pml4e = vm_entry(HUGE_VA, 4);
  u64* pdpt = alloc_page();
  *pml4e = (u64)(uintptr_t)pdpt | PTE_P | PTE_W;
  pdpt[0] = 0 | PTE_P | PTE_W | PTE_PS;
  invlpg((void*)(uintptr_t)HUGE_VA);

  const u64 known_va = HUGE_VA + (u64)(uintptr_t)&known;
  report(read_u64(known_va) == known, "1 GiB page: a kernel variable read through it");
  write_u64(HUGE_PHYS_PROBE, 0x0123456789abcdefull);
  report(read_u64(HUGE_VA + HUGE_PHYS_PROBE) == 0x0123456789abcdefull,
         "1 GiB page: physical %#llx read through it (offset bits 29:21 used)",
         (unsigned long long)HUGE_PHYS_PROBE);
  write_u64(HUGE_VA + HUGE_PHYS_PROBE + 8, 0xfedcba9876543210ull);
  report(read_u64(HUGE_PHYS_PROBE + 8) == 0xfedcba9876543210ull,
         "1 GiB page: a write through it seen at the identity address");

  /* A and D on the 1 GiB leaf; never D on the PML4E above it. */
  pdpt[0] &= ~(PTE_A | PTE_D);
  *pml4e &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)known_va);
  read_u64(known_va);
  bool read_ok = (pdpt[0] & (PTE_A | PTE_D)) == PTE_A && (*pml4e & PTE_A);
  write_u64(HUGE_VA + HUGE_PHYS_PROBE, 1);
  report(read_ok && (pdpt[0] & PTE_D) && !(*pml4e & PTE_D),
         "1 GiB page: a read sets A, a write sets D in the PDPTE, not in the PML4E (%#llx)",
         (unsigned long long)pdpt[0]);

  /* Bits 29:13 of a 1 GiB PDPTE are reserved. */
  pdpt[0] |= 1ull << 13;
  invlpg((void*)(uintptr_t)known_va);
  struct fault f = read_caught(known_va);
  report(is_rsvd_pf(&f, PFERR_RSVD, known_va),
         "1 GiB page with bit 13 set: #PF error code %#llx without P (want 0x8)", rsvd_bits(&f));
  pdpt[0] &= ~(1ull << 13);
  invlpg((void*)(uintptr_t)known_va);
  report(read_u64(known_va) == known, "1 GiB page usable again after clearing it");
  *pml4e = 0;
  invlpg((void*)(uintptr_t)known_va);
}

static void test_wp(void) {
  u8* page = alloc_page();
  const u64 pa = (u64)(uintptr_t)page;
  vm_map(TEST_VA, pa, PTE_P); /* read-only, supervisor */
  volatile u64* pte = vm_pte(TEST_VA);

  report(read_cr0() & X86_CR0_WP, "CR0.WP is set");
  struct fault f = write_caught(TEST_VA + 8, 1);
  report(is_pf(&f, PFERR_PRESENT | PFERR_WRITE, TEST_VA + 8) && read_u64(pa + 8) == 0,
         "WP = 1: supervisor write to a read-only page: #PF error code %#llx",
         (unsigned long long)f.error_code);

  write_cr0(read_cr0() & ~X86_CR0_WP);
  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)TEST_VA);
  f = write_caught(TEST_VA + 8, 0x77);
  report(f.vector == FAULT_NONE && read_u64(pa + 8) == 0x77 && (*pte & PTE_D),
         "WP = 0: the same write is done and sets D (pte %#llx)", (unsigned long long)*pte);
  vm_set_flags(TEST_VA, PAGE_SIZE, PTE_U, 0); /* a read-only user page too */
  f = write_caught(TEST_VA + 16, 0x78);
  report(f.vector == FAULT_NONE && read_u64(pa + 16) == 0x78,
         "WP = 0: supervisor write to a read-only user page is done");
  write_cr0(read_cr0() | X86_CR0_WP);
  f = write_caught(TEST_VA + 16, 0x79);
  report(is_pf(&f, PFERR_PRESENT | PFERR_WRITE, TEST_VA + 16) && read_u64(pa + 16) == 0x78,
         "WP = 1 again: it faults again (error code %#llx)", (unsigned long long)f.error_code);
  vm_unmap(TEST_VA);
}

static void test_nx(void) {
  u8* code = alloc_page();
  static const u8 ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov $42, %eax; ret */
  memcpy(code, ret42, sizeof ret42);
  const u64 va = TEST_VA + 0x10000, pa = (u64)(uintptr_t)code;
  const u64 efer = rdmsr(MSR_EFER);
  report(efer & EFER_NXE, "EFER.NXE is set");

  vm_map(va, pa, PTE_P | PTE_NX);
  struct fault f = call_caught(va);
  report(is_pf(&f, PFERR_PRESENT | PFERR_FETCH, va) && f.rip == va,
         "NXE = 1: fetch from an NX page: #PF error code %#llx", (unsigned long long)f.error_code);
  f = read_caught(va);
  report(f.vector == FAULT_NONE, "NXE = 1: a read of the NX page is fine");
  vm_unmap(va);
  f = call_caught(va);
  report(is_pf(&f, PFERR_FETCH, va), "NXE = 1: fetch from an unmapped page: error code %#llx",
         (unsigned long long)f.error_code);

  wrmsr(MSR_EFER, efer & ~EFER_NXE);
  vm_map(va, pa, PTE_P | PTE_NX);
  f = read_caught(va);
  report(is_rsvd_pf(&f, PFERR_RSVD, va),
         "NXE = 0: bit 63 is reserved: a read faults, error code %#llx without P (want 0x8)",
         rsvd_bits(&f));
  f = call_caught(va);
  report(is_rsvd_pf(&f, PFERR_RSVD, va),
         "NXE = 0: a fetch too, without the I/D bit: error code %#llx without P (want 0x8)",
         rsvd_bits(&f));
  vm_unmap(va);
  f = call_caught(va);
  report(is_pf(&f, 0, va), "NXE = 0: fetch from an unmapped page: error code %#llx (want 0)",
         (unsigned long long)f.error_code);
  vm_map(va, pa, PTE_P);
  int r = ((int (*)(void))(uintptr_t)va)();
  report(r == 42, "NXE = 0: code runs from a page without bit 63");
  wrmsr(MSR_EFER, efer);
  vm_unmap(va);
}

static void test_accessed_dirty(void) {
  u8* page = alloc_page();
  static const u8 ret7[] = {0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3};
  memcpy(page, ret7, sizeof ret7);
  const u64 va = TEST_VA + 0x20000, pa = (u64)(uintptr_t)page;
  vm_map(va, pa, PTE_P | PTE_W);
  volatile u64* pte = vm_pte(va);

  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)va);
  int r = ((int (*)(void))(uintptr_t)va)();
  report(r == 7 && (*pte & (PTE_A | PTE_D)) == PTE_A, "a fetch sets A, not D (pte %#llx)",
         (unsigned long long)*pte);

  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)va);
  rep_stosq(va + 0x800, 0x5555, 4);
  report((*pte & (PTE_A | PTE_D)) == (PTE_A | PTE_D) && read_u64(pa + 0x818) == 0x5555,
         "rep stosq sets A and D (pte %#llx)", (unsigned long long)*pte);

  /* Non-leaf entries: A on the walk, D never (bit 6 is ignored there). */
  for (int level = 4; level >= 2; level--) *vm_entry(va, level) &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)va);
  write_u64(va + 0x100, 1);
  bool ok = true;
  for (int level = 4; level >= 2; level--) {
    ok = ok && (*vm_entry(va, level) & (PTE_A | PTE_D)) == PTE_A;
  }
  report(ok, "a write sets A but not D in the PML4E, PDPTE and PDE");

  /* A 2 MiB leaf of the identity map: A on a read, D on a write. */
  u64 probe = 64 * MIB + 0x1230;
  volatile u64* pde = vm_entry(probe, 2);
  report(pde && (*pde & PTE_PS), "the identity map at %#llx is a 2 MiB page",
         (unsigned long long)probe);
  if (pde && (*pde & PTE_PS)) {
    *pde &= ~(PTE_A | PTE_D);
    invlpg((void*)(uintptr_t)probe);
    read_u64(probe);
    bool read_ok = (*pde & (PTE_A | PTE_D)) == PTE_A;
    write_u64(probe, 3);
    report(read_ok && (*pde & PTE_D), "2 MiB page: a read sets A only, a write sets D (pde %#llx)",
           (unsigned long long)*pde);
  }
  vm_unmap(va);
}

static void test_reserved(void) {
  u8* page = alloc_page();
  const u64 va = TEST_VA + 0x30000;
  vm_map(va, (u64)(uintptr_t)page, PTE_P | PTE_W | PTE_RSVD51);
  struct fault f = read_caught(va + 8);
  report(is_rsvd_pf(&f, PFERR_RSVD, va + 8),
         "PTE with bit 51 set: read #PF error code %#llx without P (want 0x8)", rsvd_bits(&f));
  f = write_caught(va + 8, 1);
  report(is_rsvd_pf(&f, PFERR_RSVD | PFERR_WRITE, va + 8),
         "PTE with bit 51 set: write #PF error code %#llx without P (want 0xa)", rsvd_bits(&f));
  vm_unmap(va);

  /* PS in a PML4E is reserved. */
  const u64 slot_va = 0xffff980000000000ull; /* PML4 slot 304 */
  volatile u64* pml4e = vm_entry(slot_va, 4);
  *pml4e = (u64)(uintptr_t)alloc_page() | PTE_P | PTE_W | PTE_PS;
  invlpg((void*)(uintptr_t)slot_va);
  f = read_caught(slot_va);
  report(is_rsvd_pf(&f, PFERR_RSVD, slot_va),
         "PML4E with PS set: #PF error code %#llx without P (want 0x8)", rsvd_bits(&f));
  *pml4e = 0;
  invlpg((void*)(uintptr_t)slot_va);
}

static void test_invalidation(void) {
  u64* p1 = alloc_page();
  u64* p2 = alloc_page();
  p1[0] = 0x1111;
  p2[0] = 0x2222;
  const u64 va = TEST_VA + 0x40000;
  vm_map(va, (u64)(uintptr_t)p1, PTE_P | PTE_W);
  volatile u64* pte = vm_pte(va);
  report(read_u64(va) == 0x1111, "mapped to the first page");

  *pte = (u64)(uintptr_t)p2 | PTE_P | PTE_W;
  invlpg((void*)(uintptr_t)va);
  report(read_u64(va) == 0x2222, "after editing the PTE and invlpg: the second page");

  *pte = (u64)(uintptr_t)p1 | PTE_P | PTE_W;
  write_cr3(read_cr3());
  report(read_u64(va) == 0x1111, "after editing the PTE and reloading CR3: the first page");

  /* A second address space: a copy of the PML4 whose slot for va leads
     to tables mapping va to p2. */
  u64* pml4b = alloc_page();
  memcpy(pml4b, (void*)(uintptr_t)vm_root(), PAGE_SIZE);
  u64* pdpt = alloc_page();
  u64* pd = alloc_page();
  u64* pt = alloc_page();
  pml4b[(va >> 39) & 511] = (u64)(uintptr_t)pdpt | PTE_P | PTE_W;
  pdpt[(va >> 30) & 511] = (u64)(uintptr_t)pd | PTE_P | PTE_W;
  pd[(va >> 21) & 511] = (u64)(uintptr_t)pt | PTE_P | PTE_W;
  pt[(va >> 12) & 511] = (u64)(uintptr_t)p2 | PTE_P | PTE_W;
  const u64 cr3a = read_cr3();
  write_cr3((u64)(uintptr_t)pml4b);
  u64 in_b = read_u64(va);
  write_cr3(cr3a);
  u64 in_a = read_u64(va);
  report(in_b == 0x2222 && in_a == 0x1111, "switch CR3 to other tables and back: %#llx, %#llx",
         (unsigned long long)in_b, (unsigned long long)in_a);

  /* A global page: invlpg and toggling CR4.PGE both drop it. */
  const u64 cr4 = read_cr4();
  write_cr4(cr4 | X86_CR4_PGE);
  *pte = (u64)(uintptr_t)p1 | PTE_P | PTE_W | PTE_G;
  invlpg((void*)(uintptr_t)va);
  u64 g1 = read_u64(va);
  *pte = (u64)(uintptr_t)p2 | PTE_P | PTE_W | PTE_G;
  invlpg((void*)(uintptr_t)va);
  u64 g2 = read_u64(va);
  *pte = (u64)(uintptr_t)p1 | PTE_P | PTE_W | PTE_G;
  write_cr4(cr4 & ~X86_CR4_PGE);
  write_cr4(cr4 | X86_CR4_PGE);
  u64 g3 = read_u64(va);
  write_cr4(cr4);
  report(g1 == 0x1111 && g2 == 0x2222 && g3 == 0x1111,
         "global page: new mapping after invlpg and after toggling CR4.PGE");

  /* A 2 MiB leaf changed to another base: invlpg of an address in it. */
  const u64 big_va = 0xffffff8070000000ull;
  volatile u64* pde = vm_entry(big_va, 2);
  if (!pde) {
    vm_map(big_va + 2 * MIB, 0, PTE_P); /* builds the tables down to a PD */
    pde = vm_entry(big_va, 2);
  }
  *pde = 0x02000000ull | PTE_P | PTE_W | PTE_PS; /* physical 32 MiB */
  invlpg((void*)(uintptr_t)(big_va + 0x1000));
  write_u64(0x02001000ull, 0xaaaa);
  write_u64(0x02201000ull, 0xbbbb);
  u64 first = read_u64(big_va + 0x1000);
  *pde = 0x02200000ull | PTE_P | PTE_W | PTE_PS; /* physical 34 MiB */
  invlpg((void*)(uintptr_t)(big_va + 0x1000));
  u64 second = read_u64(big_va + 0x1000);
  report(first == 0xaaaa && second == 0xbbbb, "2 MiB page moved, invlpg: %#llx then %#llx",
         (unsigned long long)first, (unsigned long long)second);
  *pde = 0;
  invlpg((void*)(uintptr_t)(big_va + 0x1000));
  vm_unmap(va);
}

int main(void) {
  vm_init();
  test_1g_pages();
  test_wp();
  test_nx();
  test_accessed_dirty();
  test_reserved();
  test_invalidation();
  return report_summary();
}
