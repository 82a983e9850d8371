/*
 * (b) Garbage in CR3 (included by robust_cr3_<case>.c, which defines
 * CR3_CASE).
 *
 * First every load with reserved bits (above MAXPHYADDR = 40, bit 63 with
 * no PCIDs) must raise #GP(0) and leave CR3 as it was (SDM Vol. 2 MOV CRn;
 * not under QEMU, which does not check them). Then the case loads
 * a CR3 that looks valid but points at garbage: a zeroed page, random
 * bytes, the local APIC's MMIO page, or an address past the end of RAM.
 * The next instruction fetch faults, delivering that fault needs the IDT
 * through the same tables and faults too, and so does the double fault: a
 * triple fault, which ends the run (btvm: status 125 and one error line;
 * QEMU with -no-reboot: status 0).
 */
#pragma once

#include "tests/robust/robust.h"

#define CR3_ZERO_PAGE 1
#define CR3_RANDOM_PAGE 2
#define CR3_MMIO 3
#define CR3_BEYOND_RAM 4

static u8 garbage_page[4096] __attribute__((aligned(4096)));

static void reserved_bits(void) {
  const u64 root = read_cr3();
  if (!kit_boot_info) {
    /* QEMU 7.2 TCG loads such values (then walks from an address past its
       physical address space and triple-faults); hardware and btvm #GP. */
    report_info("QEMU TCG does not check CR3 reserved bits: skipped");
    return;
  }
  const u64 bad[] = {root | (1ull << 63), root | (1ull << 52), root | (1ull << 40),
                     root | 0xfff0000000000000ull, 0x0000ff0000000000ull};
  for (volatile unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
    robust_armed = 1;
    robust_last.vector = 0xffff;
    if (kit_setjmp(&robust_jb) == 0) {
      write_cr3(bad[i]);
      robust_armed = 0;
    }
    robust_restore();
    report(robust_last.vector == GP_VECTOR && robust_last.error_code == 0 && read_cr3() == root,
           "mov cr3, %#llx: #GP(0), CR3 unchanged (vector %llu)", (unsigned long long)bad[i],
           (unsigned long long)robust_last.vector);
  }
}

int main(void) {
  vm_init();
  robust_init();
  reserved_bits();
  u64 cr3;
  switch (CR3_CASE) {
    case CR3_ZERO_PAGE:
      memset(garbage_page, 0, sizeof garbage_page);
      cr3 = (u64)(uintptr_t)garbage_page;
      break;
    case CR3_RANDOM_PAGE:
      rng_state = 0x5eed00000301ull;
      for (unsigned i = 0; i < sizeof garbage_page; i++) garbage_page[i] = (u8)rng_next();
      cr3 = (u64)(uintptr_t)garbage_page;
      break;
    case CR3_MMIO:
      cr3 = 0xfee00000ull;
      break;
    default:
      cr3 = 0xff00000000ull; /* 1020 GiB: below MAXPHYADDR, past any RAM here */
      break;
  }
  if (report_failures() == 0) {
    printf("robust_cr3: loading CR3 %#llx; the run ends in a triple fault\n",
           (unsigned long long)cr3);
    write_cr3(cr3);
  }
  printf("FAIL: still running after loading a garbage CR3\n");
  return report_summary();
}
