/*
 * Reproducer: mov with a 64-bit absolute address (moffs64, opcodes a0-a3)
 * uses all 64 bits (SDM Vol. 2 MOV): an address above 4 GiB reads that
 * address, and a non-canonical one raises #GP(0).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"
#include "tests/guest/kit/vm.h"

#define HIGH_VA 0x0000000500001000ull /* 20 GiB + 4 KiB: mapped below */

static u64 page[512] __attribute__((aligned(4096)));

int main(void) {
  vm_map(HIGH_VA, (u64)(uintptr_t)page, PTE_P | PTE_W | PTE_NX);
  page[0] = 0x1122334455667788ull;
  u64 v = 0;
  struct fault f;
  if (catch_begin(&f) == 0) {
    asm volatile("movabs 0x0000000500001000, %%rax" : "=a"(v) : : "memory");
    catch_end();
  }
  report(f.vector == FAULT_NONE && v == 0x1122334455667788ull,
         "mov rax, [moffs64 above 4 GiB] reads it: %#llx (vector %d)", (unsigned long long)v,
         f.vector);
  if (catch_begin(&f) == 0) {
    asm volatile("movabs 0x9090909090909090, %%al" : : : "rax", "memory");
    catch_end();
  }
  report(f.vector == GP_VECTOR && f.error_code == 0,
         "mov al, [non-canonical moffs64]: #GP(0) (vector %d, cr2 %#llx)", f.vector,
         (unsigned long long)f.cr2);
  return report_summary();
}
