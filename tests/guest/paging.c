/*
 * paging: the kit's own 4-level tables. A page mapped at a high virtual
 * address aliases its physical page (read and written through both names);
 * unmapping it makes accesses fault; the CPU sets the accessed bit on every
 * level of a walk and the dirty bit on a write only; a no-execute page
 * faults on a fetch, an executable one runs.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define HIGH_VA 0xffffff8012345000ull /* PML4 slot 511: tables built from nothing */


static struct fault call_caught(u64 va) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    ((void (*)(void))(uintptr_t)va)();
    catch_end();
  }
  return f;
}

static bool has(u64 entry, u64 bits) {
  return (entry & bits) == bits;
}

int main(void) {
  vm_init();
  report(read_cr3() == vm_root(), "CR3 holds the kit's PML4");
  report((rdmsr(MSR_EFER) & (EFER_LMA | EFER_NXE)) == (EFER_LMA | EFER_NXE), "EFER.LMA and NXE");

  /* Two names for one page. */
  u8* page = alloc_page();
  const u64 pa = (u64)(uintptr_t)page;
  vm_map(HIGH_VA, pa, PTE_P | PTE_W);
  write_u64(pa, 0xfeedfacecafebeefull);
  report(read_u64(HIGH_VA) == 0xfeedfacecafebeefull, "read through the high alias");
  write_u64(HIGH_VA + 8, 0x0123456789abcdefull);
  report(read_u64(pa + 8) == 0x0123456789abcdefull,
         "write through the high alias, read at identity");
  report(read_u64(pa) == 0xfeedfacecafebeefull, "identity alias unchanged");

  /* Accessed and dirty bits (SDM Vol. 3A §4.8): a fresh mapping, then a
     read (A on every level, no D), then a write (D). */
  volatile u64* pte = vm_pte(HIGH_VA);
  for (int level = 4; level >= 2; level--) *vm_entry(HIGH_VA, level) &= ~PTE_A;
  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)HIGH_VA);
  read_u64(HIGH_VA);
  report(has(*pte, PTE_A) && !has(*pte, PTE_D), "read sets A, not D (pte %#llx)",
         (unsigned long long)*pte);
  report(has(*vm_entry(HIGH_VA, 4), PTE_A) && has(*vm_entry(HIGH_VA, 3), PTE_A) &&
             has(*vm_entry(HIGH_VA, 2), PTE_A),
         "the walk set A in the PML4E, PDPTE and PDE");
  write_u64(HIGH_VA + 16, 1);
  report(has(*pte, PTE_A | PTE_D), "write sets D (pte %#llx)", (unsigned long long)*pte);
  *pte &= ~(PTE_A | PTE_D);
  invlpg((void*)(uintptr_t)HIGH_VA);
  write_u64(HIGH_VA + 16, 2);
  report(has(*pte, PTE_A | PTE_D), "first access a write: A and D (pte %#llx)",
         (unsigned long long)*pte);

  /* Unmap: the next access faults with the address in CR2. */
  vm_unmap(HIGH_VA);
  struct fault f = read_caught(HIGH_VA + 0x20);
  report(f.vector == PF_VECTOR && f.error_code == 0 && f.cr2 == HIGH_VA + 0x20,
         "unmapped: #PF vector %d, error code %#llx, cr2 %#llx", f.vector,
         (unsigned long long)f.error_code, (unsigned long long)f.cr2);
  report(read_u64(pa) == 0xfeedfacecafebeefull, "the physical page is still there");

  /* Remap the same page elsewhere. */
  vm_map(HIGH_VA + PAGE_SIZE, pa, PTE_P | PTE_W);
  report(read_u64(HIGH_VA + PAGE_SIZE + 8) == 0x0123456789abcdefull, "remapped at another address");

  /* Execute permission: a page holding `mov $0x2a, %eax; ret`. */
  u8* code = alloc_page();
  static const u8 ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
  memcpy(code, ret42, sizeof ret42);
  const u64 code_va = HIGH_VA + 0x10000;
  vm_map(code_va, (u64)(uintptr_t)code, PTE_P | PTE_NX);
  f = call_caught(code_va);
  report(f.vector == PF_VECTOR && f.error_code == (PFERR_PRESENT | PFERR_FETCH) &&
             f.cr2 == code_va && f.rip == code_va,
         "fetch from an NX page: #PF error code %#llx, cr2 %#llx, rip %#llx",
         (unsigned long long)f.error_code, (unsigned long long)f.cr2, (unsigned long long)f.rip);
  vm_map(code_va, (u64)(uintptr_t)code, PTE_P);
  int r = ((int (*)(void))(uintptr_t)code_va)();
  report(r == 42, "code runs from an executable mapping (returned %d)", r);

  return report_summary();
}
