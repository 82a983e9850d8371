/*
 * interrupts: software interrupts through interrupt and trap gates, and the
 * i8254 PIT's IRQ 0 through the i8259 PIC: delivered while IF = 1, held
 * pending while IF = 0 and taken right after STI's one-instruction shadow,
 * and waking HLT.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/x86.h"

#define TIMER_VECTOR PIT_VECTOR
#define SPIN_LIMIT 200000000ull

static volatile u64 sw_vector, sw_rip, sw_rflags;
static volatile int sw_count;
static volatile int ticks;
static volatile u64 tick_rflags;

static void sw_handler(struct ex_regs* r) {
  sw_vector = r->vector;
  sw_rip = r->rip;
  sw_rflags = read_rflags();
  sw_count++;
}

static volatile u64 tick_rip;
/* Set: the next tick masks IRQ 0, so that a slow host (a loaded machine
   can take more than the PIT's millisecond to run the handler) cannot
   bring a second tick into a check that counts exactly one. */
static volatile bool mask_after_tick;

static void timer_handler(struct ex_regs* r) {
  tick_rip = r->rip;
  tick_rflags = read_rflags();
  ticks++;
  if (mask_after_tick) {
    pic_mask(0);
    mask_after_tick = false;
  }
  pic_eoi(0);
}

asm(".pushsection .text\n"
    "do_int40:\n"
    "  int $0x40\n"
    "int40_after:\n"
    "  ret\n"
    ".popsection");
void do_int40(void);
extern char int40_after[];

/* u64 sti_shadow(u64 x): sti, then x + 1 in the shadow; returns it with
   IF clear again. An interrupt waiting for IF arrives at sti_after. */
asm(".pushsection .text\n"
    "sti_shadow:\n"
    "  movq %rdi, %rax\n"
    "  sti\n"
    "  incq %rax\n"
    "sti_after:\n"
    "  nop\n"
    "  cli\n"
    "  ret\n"
    ".popsection");
u64 sti_shadow(u64 x);
extern char sti_after[];

int main(void) {
  /* Firmware may leave the PIT running with IRQ 0 unmasked at vector 8:
     remap and mask the PICs before any STI. */
  handle_exception(TIMER_VECTOR, timer_handler);
  pic_init();

  /* int n through an interrupt gate: IF cleared in the handler. */
  handle_exception(0x40, sw_handler);
  do_int40();
  report(sw_count == 1 && sw_vector == 0x40 && sw_rip == (u64)(uintptr_t)int40_after,
         "int $0x40: vector %#llx, rip after the instruction", (unsigned long long)sw_vector);
  report(!(sw_rflags & X86_EFLAGS_IF), "interrupt gate: IF clear in the handler");

  /* Through a trap gate: IF as it was (set here). */
  handle_exception(0x41, sw_handler);
  set_idt_type(0x41, GATE_TRAP);
  sti();
  asm volatile("int $0x41");
  cli();
  report(sw_count == 2 && sw_vector == 0x41 && (sw_rflags & X86_EFLAGS_IF),
         "trap gate: IF still set in the handler");

  /* The PIT at 1 kHz through the PIC. */
  pit_start(1000);
  pic_unmask(0);
  sti();
  for (u64 i = 0; i < SPIN_LIMIT && ticks < 3; i++) pause();
  cli();
  /* Tick counts depend on timing: messages print them only on failure, so
     that the output stays the same on every run and every engine. */
  report(ticks >= 3, "PIT IRQ 0 delivered with IF = 1");
  if (ticks < 3) report_info("%d ticks", ticks);
  report(!(tick_rflags & X86_EFLAGS_IF), "IF clear in the IRQ handler");

  if (ticks >= 3) {
    /* A pending IRQ waits for IF, then comes right after STI's shadow. */
    ticks = 0;
    u8 irr = 0;
    for (u64 i = 0; i < SPIN_LIMIT && !(irr & 1); i++) {
      irr = pic_read_irr();
    }
    int held = ticks;
    asm volatile("sti; nop; cli" : : : "memory");
    int taken = ticks;
    bool ok = (irr & 1) && held == 0 && taken >= 1;
    report(ok, "IRQ pending while IF = 0, taken after sti's shadow");
    if (!ok) report_info("IRR %#x, %d taken with IF = 0, %d after sti", irr, held, taken);

    /* The same, exactly: the instruction after sti runs, then the IRQ. */
    irr = 0;
    for (u64 i = 0; i < SPIN_LIMIT && !(irr & 1); i++) {
      irr = pic_read_irr();
    }
    held = ticks;
    mask_after_tick = true;
    u64 y = sti_shadow(41);
    ok = (irr & 1) && ticks == held + 1 && y == 42 && tick_rip == (u64)(uintptr_t)sti_after;
    report(ok, "the pending IRQ interrupts the instruction after sti's shadow");
    pic_unmask(0);

    /* HLT wakes on the next tick. */
    int before = ticks;
    safe_halt();
    cli();
    report(ticks > before, "hlt woken by the timer interrupt");
  }

  /* pushfq shows the virtual IF beside the arithmetic flags and DF; RF
     is clear in the image (SDM Vol. 2 PUSHF). */
  u64 f1, f2;
  asm volatile("cli; stc; std; pushfq; popq %0; cld; sti; clc; pushfq; popq %1; cli"
               : "=r"(f1), "=r"(f2) : : "memory", "cc");
  const u64 kWatch = X86_EFLAGS_IF | X86_EFLAGS_CF | X86_EFLAGS_DF | (1ull << 16);
  report((f1 & kWatch) == (X86_EFLAGS_CF | X86_EFLAGS_DF) && (f2 & kWatch) == X86_EFLAGS_IF,
         "pushfq after cli/stc/std: %#llx, after sti/clc/cld: %#llx",
         (unsigned long long)(f1 & kWatch), (unsigned long long)(f2 & kWatch));

  pic_mask(0); /* mask everything again */
  return report_summary();
}
