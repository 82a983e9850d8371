/* Page tables of the kit; see kit/vm.h. */
#include "tests/guest/kit/vm.h"

#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

#define POOL_PAGES 128
#define TABLE_FLAGS (PTE_P | PTE_W | PTE_U)

static u8 pool[POOL_PAGES][PAGE_SIZE] __attribute__((aligned(4096)));
static int pool_used;
static u64* pml4;

void* alloc_page(void) {
  if (pool_used == POOL_PAGES) panic("alloc_page: the pool of %d pages is empty", POOL_PAGES);
  void* p = pool[pool_used++];
  memset(p, 0, PAGE_SIZE);
  return p;
}

static unsigned index_of(u64 va, int level) {
  return (unsigned)(va >> (12 + 9 * (level - 1))) & 511;
}

static volatile u64* table_at(u64 entry) {
  return (volatile u64*)(uintptr_t)(entry & PTE_ADDR);
}

void vm_init(void) {
  if (pml4) return;
  pml4 = alloc_page();
  u64* pdpt = alloc_page();
  pml4[0] = (u64)(uintptr_t)pdpt | TABLE_FLAGS;
  for (u64 g = 0; g < 4; g++) {
    u64* pd = alloc_page();
    pdpt[g] = (u64)(uintptr_t)pd | TABLE_FLAGS;
    for (u64 i = 0; i < 512; i++) pd[i] = (g << 30) | (i << 21) | PTE_P | PTE_W | PTE_PS;
  }
  write_cr3((u64)(uintptr_t)pml4);
}

u64 vm_root(void) {
  vm_init();
  return (u64)(uintptr_t)pml4;
}

/* The entry at `level` for va, creating missing tables above it and
   splitting a 2 MiB page into 4 KiB ones when level is 1. */
static volatile u64* walk_create(u64 va, int level) {
  vm_init();
  volatile u64* table = pml4;
  for (int l = 4; l > level; l--) {
    volatile u64* e = &table[index_of(va, l)];
    if (!(*e & PTE_P)) {
      *e = (u64)(uintptr_t)alloc_page() | TABLE_FLAGS;
    } else if (*e & PTE_PS) {
      if (l != 2) panic("vm: 1 GiB pages are not supported (va %#llx)", (unsigned long long)va);
      /* Split the 2 MiB page; the small pages keep its flags but PS (and
         PAT, bit 12 here, is bit 7 there: the kit sets neither). */
      u64* pt = alloc_page();
      u64 base = *e & 0x000fffffffe00000ull;
      u64 flags = *e & ~0x000fffffffe00000ull & ~PTE_PS;
      for (u64 i = 0; i < 512; i++) pt[i] = (base + (i << 12)) | flags;
      *e = (u64)(uintptr_t)pt | TABLE_FLAGS;
      /* The old 2 MiB translation may be cached for any of its pages. */
      write_cr3(read_cr3());
    }
    table = table_at(*e);
  }
  return &table[index_of(va, level)];
}

volatile u64* vm_pte(u64 va) {
  return walk_create(va, 1);
}

volatile u64* vm_entry(u64 va, int level) {
  vm_init();
  volatile u64* table = pml4;
  for (int l = 4; l > level; l--) {
    u64 e = table[index_of(va, l)];
    if (!(e & PTE_P) || (e & PTE_PS)) return NULL;
    table = table_at(e);
  }
  return &table[index_of(va, level)];
}

void vm_map(u64 va, u64 pa, u64 flags) {
  *vm_pte(va) = (pa & PTE_ADDR) | flags;
  invlpg((void*)(uintptr_t)va);
}

void vm_unmap(u64 va) {
  *vm_pte(va) = 0;
  invlpg((void*)(uintptr_t)va);
}

void vm_set_flags(u64 va, u64 size, u64 set, u64 clear) {
  for (u64 p = ALIGN_DOWN(va, PAGE_SIZE); p < va + size; p += PAGE_SIZE) {
    volatile u64* pte = vm_pte(p);
    *pte = (*pte & ~clear) | set;
    invlpg((void*)(uintptr_t)p);
  }
}

struct fault read_caught(u64 va) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    read_u64(va);
    catch_end();
  }
  return f;
}
