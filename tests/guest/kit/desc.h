/*
 * Descriptor tables of the kit (GDT, TSS, IDT), exception handlers, and
 * catching an expected exception.
 *
 * Catching: catch_begin() works like setjmp. It returns 0 and arms a catch
 * point; the next exception (vector < 32) that has no handler of its own is
 * recorded in *f and makes catch_begin() return a second time, with 1, in the
 * same frame, at CPL0 (also when the exception came from CPL3). catch_end()
 * disarms. Locals changed between the two returns must be volatile.
 *
 *   struct fault f;
 *   if (catch_begin(&f) == 0) {
 *     (void)*(volatile u64*)addr;
 *     catch_end();
 *   }
 *   report(f.vector == PF_VECTOR && f.cr2 == addr, "...");
 */
#pragma once

#include "tests/guest/kit/layout.h"
#include "tests/guest/kit/types.h"

/* The interrupt frame as kit/isr.S builds it: general registers, then the
   vector and error code (0 when the CPU pushes none), then what the CPU
   pushed (SDM Vol. 3A §6.14.2). Handlers may change any field; the stub
   restores them all and returns with iretq. */
struct ex_regs {
  u64 r15, r14, r13, r12, r11, r10, r9, r8;
  u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
  u64 vector, error_code;
  u64 rip, cs, rflags, rsp, ss;
};
_Static_assert(sizeof(struct ex_regs) == 22 * 8, "kit/isr.S pushes 22 quadwords");

typedef void (*exception_handler)(struct ex_regs* regs);

/* Installs h for vector (NULL: back to the default, which reports an
   unexpected exception as a failure and exits); returns the previous one. */
exception_handler handle_exception(u8 vector, exception_handler h);
/* The DPL of the vector's gate (3: `int n` allowed from user mode). */
void set_idt_dpl(u8 vector, int dpl);
/* Gate type: interrupt gate (IF cleared on entry, the default) or trap gate. */
enum gate_type { GATE_INTERRUPT = 0xe, GATE_TRAP = 0xf };
void set_idt_type(u8 vector, enum gate_type type);
/* The gate's P bit (a not-present gate makes delivery raise #NP). */
void set_idt_present(u8 vector, bool present);
/* The gate's IST index: 0 = no stack switch at the same CPL, 1..7 =
   kit_tss.ist[ist - 1] (the kit uses IST1 for #DF). */
void set_idt_ist(u8 vector, int ist);

const char* exception_mnemonic(unsigned vector); /* "#PF", ... or "IRQ"/"INT" */

#define FAULT_NONE (-1)
struct fault {
  int vector; /* FAULT_NONE if nothing was caught */
  u32 pad;
  u64 error_code;
  u64 rip; /* as pushed: the faulting instruction, or the next one for traps */
  u64 cs;
  u64 cr2; /* read at the exception (meaningful for #PF) */
};

int catch_begin(struct fault* f) __attribute__((returns_twice));
void catch_end(void);

/* A callee-saved register context (kit/isr.S's kit_setjmp/kit_longjmp). */
struct kit_jmp_buf {
  u64 rbx, rbp, r12, r13, r14, r15, rsp, rip, rflags;
};
_Static_assert(__builtin_offsetof(struct kit_jmp_buf, rsp) == JB_RSP, "layout.h JB_RSP");
_Static_assert(__builtin_offsetof(struct kit_jmp_buf, rip) == JB_RIP, "layout.h JB_RIP");
_Static_assert(__builtin_offsetof(struct kit_jmp_buf, rflags) == JB_RFLAGS, "layout.h JB_RFLAGS");
_Static_assert(sizeof(struct kit_jmp_buf) == JB_SIZE, "layout.h JB_SIZE");
int kit_setjmp(struct kit_jmp_buf* jb) __attribute__((returns_twice));
NORETURN void kit_longjmp(const struct kit_jmp_buf* jb, u64 value);

/* The 64-bit TSS (SDM Vol. 3A §8.7). */
struct __attribute__((packed)) tss64 {
  u32 reserved0;
  u64 rsp0, rsp1, rsp2;
  u64 reserved1;
  u64 ist[7]; /* ist[0] is IST1 */
  u64 reserved2;
  u16 reserved3;
  u16 iomap_base;
};
_Static_assert(sizeof(struct tss64) == 104, "64-bit TSS size");
extern struct tss64 kit_tss;
#define KIT_DF_STACK_SIZE (8 * 1024) /* the #DF stack, kit_tss.ist[0] is its top */
extern u64 kit_rsp0; /* top of the stack for CPL3 -> CPL0 transitions (TSS.RSP0, syscall) */

/* Called by kit_start(): loads the kit's GDT (selectors in layout.h), TSS
   (RSP0, IST1 for #DF) and IDT (all 256 vectors to the dispatcher). */
void setup_descriptors(void);
