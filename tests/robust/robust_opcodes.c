/*
 * robust_opcodes: every one-byte opcode 0x00-0xff, at CPL 0 and at CPL 3.
 *
 * Each opcode runs from a page of its own (a fresh address, so no earlier
 * translation is reused): int3 bytes before it (a backward jump lands on
 * one), the opcode, nop padding that also serves as its ModRM, SIB,
 * displacement or immediate bytes (0x90: [rax-0x6f6f6f70], -0x70), and a
 * ud2 landing 16 bytes after the opcode. Every GPR points into a scratch
 * page; the stack holds what a return opcode needs to reach the landing
 * (ret: the address; lret: EIP and CS; iretd: a whole 32-bit frame). The
 * handler records where the opcode ended: at the landing, or with an
 * exception on the way. The identity map around the addresses the padding
 * makes (rel32 and disp32 0x90909090 from these pages: about 266 MiB, past
 * RAM) is removed, so those fault the same way everywhere instead of
 * reaching unassigned memory. hlt (0xf4) is left out at CPL 0: with interrupts
 * off and no interrupt source nothing would ever end it (btvm ends the run
 * with an error; real hardware waits forever).
 */
#include "tests/robust/robust.h"

#define CODE_VA 0x80000000ull       /* + cpl3 * 0x100000 + opcode pages */
#define SCRATCH_VA 0x80200000ull    /* low 16 bits of the GPRs: port 0x800 */
#define STACK_VA 0x80201000ull
#define UNMAPPED_FROM 0x10800000ull /* CODE_VA - 0x6f6f6f70 rounded to 2 MiB pages */
#define UNMAPPED_TO 0x10c00000ull
#define OPCODE_AT 0x800
#define LANDING_AT 0x810

static u8 code_page[4096] __attribute__((aligned(4096)));
static u8 scratch_page[4096] __attribute__((aligned(4096)));
static u8 stack_page[4096] __attribute__((aligned(4096)));

static void put32(u64 off, u32 v) {
  memcpy(stack_page + off, &v, 4);
}
static void put64(u64 off, u64 v) {
  memcpy(stack_page + off, &v, 8);
}

/* Runs opcode `op` at `cpl`; returns true if it ended at the landing. */
static bool run_opcode(int op, int cpl) {
  volatile const u64 va = CODE_VA + (cpl == 3 ? 0x100000 : 0) + (u64)op * 4096;
  volatile const u64 landing = va + LANDING_AT;
  const u64 cs = cpl == 3 ? USER_CS : KERNEL_CS, ss = cpl == 3 ? USER_DS : KERNEL_DS;
  memset(code_page, 0xcc, sizeof code_page);
  code_page[OPCODE_AT] = (u8)op;
  memset(code_page + OPCODE_AT + 1, 0x90, LANDING_AT - OPCODE_AT - 1);
  code_page[LANDING_AT] = 0x0f;
  code_page[LANDING_AT + 1] = 0x0b;
  memset(scratch_page, 0, sizeof scratch_page);
  for (u64 i = 0; i < sizeof stack_page; i += 8) put64(i, 0x2);
  const u64 sp = 0x800;
  if (op == 0xc3 || op == 0xc2) {
    put64(sp, landing);
  } else if (op == 0xcb || op == 0xca) { /* 32-bit operand size: EIP, CS */
    put32(sp, (u32)landing);
    put32(sp + 4, (u32)cs);
  } else if (op == 0xcf) { /* iretd: EIP, CS, EFLAGS, ESP, SS */
    put32(sp, (u32)landing);
    put32(sp + 4, (u32)cs);
    put32(sp + 8, 0x2);
    put32(sp + 12, (u32)(STACK_VA + 0x400));
    put32(sp + 16, (u32)ss);
  }
  vm_map(va, (u64)(uintptr_t)code_page, PTE_P | PTE_U);

  struct robust_ctx c;
  for (int r = 0; r < 16; r++) c.gpr[r] = SCRATCH_VA + 0x800;
  c.rip = va + OPCODE_AT;
  c.cs = cs;
  c.rflags = 0x2;
  c.rsp = STACK_VA + sp;
  c.ss = ss;
  c.cr3 = 0;
  robust_armed = 1;
  if (kit_setjmp(&robust_jb) == 0) robust_enter(&c);
  robust_restore();
  vm_unmap(va);

  const struct robust_trap* t = &robust_last;
  if (t->vector == UD_VECTOR && t->rip == landing) return true;
  printf("op %02x cpl%d: %s (vector %llu) error %#llx at +%#llx\n", op, cpl,
         exception_mnemonic((unsigned)t->vector), (unsigned long long)t->vector,
         (unsigned long long)t->error_code, (unsigned long long)(t->rip - va));
  return false;
}

int main(void) {
  vm_init();
  for (u64 va = UNMAPPED_FROM; va < UNMAPPED_TO; va += 0x200000) *vm_entry(va, 2) = 0;
  write_cr3(read_cr3());
  robust_init();
  vm_map(SCRATCH_VA, (u64)(uintptr_t)scratch_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  vm_map(STACK_VA, (u64)(uintptr_t)stack_page, PTE_P | PTE_W | PTE_U | PTE_NX);
  int ran = 0, landed = 0;
  for (int cpl = 0; cpl <= 3; cpl += 3) {
    for (int op = 0; op < 256; op++) {
      if (cpl == 0 && op == 0xf4) continue;
      landed += run_opcode(op, cpl);
      ran++;
    }
  }
  report(ran == 511, "%d opcode runs came back (%d reached the landing)", ran, landed);
  return report_summary();
}
