/*
 * The kit's own 4-level page tables (SDM Vol. 3A §4.5).
 *
 * vm_init() identity-maps [0, 4 GiB) with 2 MiB pages (present, writable,
 * supervisor) and loads CR3; the other functions call it first if needed.
 * Non-leaf entries are present | writable | user, so a leaf alone decides
 * its permissions. Mapping a 4 KiB page inside a 2 MiB page splits that
 * page into 512 4 KiB ones with the same flags.
 */
#pragma once

#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/types.h"

#define PTE_P (1ull << 0)
#define PTE_W (1ull << 1)
#define PTE_U (1ull << 2)
#define PTE_PWT (1ull << 3)
#define PTE_PCD (1ull << 4)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_G (1ull << 8)
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

void vm_init(void);
u64 vm_root(void); /* physical address of the PML4 */

/* A zeroed 4 KiB page from the kit's pool (identity-mapped, so its address
   is physical and virtual). Exits with a failure when the pool is empty. */
void* alloc_page(void);

/* Maps the 4 KiB page at va to pa with flags (PTE_P etc.; give PTE_P
   yourself), creating tables as needed, and invalidates the TLB entry. */
void vm_map(u64 va, u64 pa, u64 flags);
/* Clears the leaf entry for va (made a 4 KiB one first) and invalidates. */
void vm_unmap(u64 va);
/* Sets and clears flags on every 4 KiB leaf in [va, va + size). */
void vm_set_flags(u64 va, u64 size, u64 set, u64 clear);

/* The leaf entry for va as a 4 KiB PTE (splitting a 2 MiB page, creating
   tables): for tests that read A/D bits or edit entries by hand (then
   invlpg). Volatile: the CPU writes A and D behind the compiler's back. */
volatile u64* vm_pte(u64 va);
/* The entry at a level (4 = PML4E, 3 = PDPTE, 2 = PDE, 1 = PTE) on the way
   to va, or NULL where the walk ends earlier. No side effects. */
volatile u64* vm_entry(u64 va, int level);

/* One 64-bit access at a virtual address, as the compiler must emit it. */
static inline u64 read_u64(u64 va) {
  return *(volatile u64*)(uintptr_t)va;
}
static inline void write_u64(u64 va, u64 v) {
  *(volatile u64*)(uintptr_t)va = v;
}
/* read_u64(va) with any exception caught (vector FAULT_NONE: none). */
struct fault read_caught(u64 va);
