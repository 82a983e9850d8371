/*
 * (c) A garbage IDT, then a fault (included by robust_idt_<case>.c, which
 * defines IDT_CASE).
 *
 * First lidt with a non-canonical base must raise #GP(0) and keep the IDT
 * (not under QEMU, which loads it).
 * Then the case loads an IDT that cannot deliver anything, and ud2 raises
 * #UD: the IDT limit 0; the IDT on an unmapped page; gates of random bytes
 * with the present bit cleared. The #UD cannot be delivered, nor the #GP,
 * #NP or #PF that raises, nor the double fault: a triple fault ends the
 * run. IDT_RANDOM loads gates of random bytes as they are: what happens
 * then depends on what they say, and only a clean end is required.
 */
#pragma once

#include "tests/robust/robust.h"

#define IDT_LIMIT_0 1
#define IDT_UNMAPPED 2
#define IDT_NOT_PRESENT 3
#define IDT_RANDOM 4

static u8 garbage_idt[4096] __attribute__((aligned(4096)));

int main(void) {
  vm_init();
  robust_init();
  struct descriptor_table_ptr before, p = {0xfff, 0x0000800000000000ull};
  sidt(&before);
  robust_armed = 1;
  robust_last.vector = 0xffff;
  if (kit_setjmp(&robust_jb) == 0) {
    lidt(&p);
    robust_armed = 0;
  }
  robust_restore();
  struct descriptor_table_ptr after;
  sidt(&after);
  if (kit_boot_info) {
    report(robust_last.vector == GP_VECTOR && after.base == before.base,
           "lidt of a non-canonical base: #GP, IDT unchanged (vector %llu)",
           (unsigned long long)robust_last.vector);
  } else {
    /* QEMU 7.2 TCG loads it; Intel CPUs (as Bochs and KVM model them) #GP. */
    report_info("lidt of a non-canonical base under QEMU: vector %llu",
                (unsigned long long)robust_last.vector);
  }

  rng_state = 0x5eed00000401ull;
  for (unsigned i = 0; i < sizeof garbage_idt; i++) garbage_idt[i] = (u8)rng_next();
  p.limit = sizeof garbage_idt - 1;
  p.base = (u64)(uintptr_t)garbage_idt;
  switch (IDT_CASE) {
    case IDT_LIMIT_0:
      p.limit = 0;
      break;
    case IDT_UNMAPPED:
      p.base = 0x00007fff00000000ull;
      break;
    case IDT_NOT_PRESENT:
      for (unsigned g = 0; g < 256; g++) garbage_idt[16 * g + 5] &= 0x7f;
      break;
    default:
      break;
  }
  if (report_failures() == 0) {
    printf("robust_idt: IDT at %#llx limit %#x, then ud2; the run ends\n",
           (unsigned long long)p.base, p.limit);
    lidt(&p);
    asm volatile("ud2");
  }
  printf("FAIL: still running after a fault with a garbage IDT\n");
  return report_summary();
}
