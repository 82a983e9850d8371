/*
 * timer: external interrupts (the i8254 PIT's IRQ 0 through the i8259 PIC)
 * arriving wherever the CPU is. At CPL3, in a loop that reads memory and
 * in one that does not (the handler ends it by moving the saved RIP): the
 * frame says CPL3, the handler runs on the TSS.RSP0 stack, iretq goes back.
 * At CPL0 in tight loops: one that only a variable set by the handler ends,
 * a `jmp .` that only a change of the saved RIP ends, and one on a register
 * that only a change of the saved RCX ends (no memory access in the last
 * two: an engine must still poll for interrupts in them). And inside a
 * long rep stosq: the interrupt is taken between iterations (RIP at the
 * instruction, RCX part-way) and the store completes after the iretq.
 *
 * Nothing printed depends on timing. If the timer never ticks, the loops
 * that only an interrupt can end are skipped (and the first check fails).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/x86.h"

#define SPIN_LIMIT 10000000ull /* iterations: far more than 3 ms of ticks anywhere */
#define TICKS 3
#define INT_STACK_BYTES (16 * 1024) /* the kit's TSS.RSP0 stack */
#define REP_QWORDS (64 * 1024)
#define REP_ATTEMPTS 200

enum mode { COUNT, USER_FLAG, USER_JMP, KERNEL_FLAG, KERNEL_JMP, KERNEL_RCX, REP_STOS };

asm(".pushsection .text\n"
    /* void kernel_flag_loop(void): sti, spin until kernel_flag is set. */
    "kernel_flag_loop:\n"
    "  sti\n"
    "1:\n"
    "  cmpb $0, kernel_flag(%rip)\n"
    "  je 1b\n"
    "  cli\n"
    "  ret\n"
    /* void kernel_jmp_loop(void): sti, jmp . until the handler moves RIP. */
    "kernel_jmp_loop:\n"
    "  sti\n"
    "kernel_jmp_insn:\n"
    "  jmp kernel_jmp_insn\n"
    "kernel_jmp_exit:\n"
    "  cli\n"
    "  ret\n"
    /* void kernel_rcx_loop(void): spins while RCX != 0, registers only. */
    "kernel_rcx_loop:\n"
    "  sti\n"
    "  movl $1, %ecx\n"
    "kernel_rcx_start:\n"
    "  testq %rcx, %rcx\n"
    "  jnz kernel_rcx_start\n"
    "kernel_rcx_end:\n"
    "  cli\n"
    "  ret\n"
    /* u64 rep_stos_irq(u64* buf, u64 value, u64 n): rep stosq with IF = 1;
       returns RCX after it. */
    "rep_stos_irq:\n"
    "  movq %rsi, %rax\n"
    "  movq %rdx, %rcx\n"
    "  sti\n"
    "  nop\n" /* not in STI's shadow: QEMU would hold the IRQ for the whole rep */
    "rep_stos_insn:\n"
    "  rep stosq\n"
    "  cli\n"
    "  movq %rcx, %rax\n"
    "  ret\n"
    ".popsection\n"

    ".pushsection .user.text, \"ax\"\n"
    /* At CPL3: jmp . until the handler moves RIP; returns 1. */
    "user_jmp_loop:\n"
    "user_jmp_insn:\n"
    "  jmp user_jmp_insn\n"
    "user_jmp_exit:\n"
    "  movl $1, %eax\n"
    "  ret\n"
    ".popsection\n");
void kernel_flag_loop(void), kernel_jmp_loop(void), kernel_rcx_loop(void);
u64 rep_stos_irq(u64* buf, u64 value, u64 n);
u64 user_jmp_loop(u64);
extern char kernel_jmp_insn[], kernel_jmp_exit[], kernel_rcx_start[], kernel_rcx_end[];
extern char rep_stos_insn[], user_jmp_insn[], user_jmp_exit[];

#define ADDR(label) ((u64)(uintptr_t)(label))

static volatile enum mode mode;
static volatile int ticks;
volatile u8 kernel_flag; /* read by kernel_flag_loop */
USER_DATA static volatile u64 user_done;

/* What the handler saw in the current phase. */
static volatile struct {
  int in_target; /* interrupts that hit the phase's loop or instruction */
  u64 cs, ss, rflags, frame;
  bool mid_rep; /* an interrupt inside rep stosq, RCX part-way */
} seen;

static void timer_handler(struct ex_regs* r) {
  ticks++;
  switch (mode) {
    case COUNT:
      break;
    case USER_FLAG:
    case USER_JMP:
      if ((r->cs & 3) == 3) {
        seen.in_target++;
        seen.cs = r->cs;
        seen.ss = r->ss;
        seen.rflags = r->rflags;
        seen.frame = (u64)(uintptr_t)r;
        if (mode == USER_FLAG && seen.in_target >= TICKS) user_done = 1;
        if (mode == USER_JMP && r->rip == ADDR(user_jmp_insn)) r->rip = ADDR(user_jmp_exit);
      }
      break;
    case KERNEL_FLAG:
      if (++seen.in_target >= TICKS) kernel_flag = 1;
      break;
    case KERNEL_JMP:
      if (r->rip == ADDR(kernel_jmp_insn)) {
        seen.in_target++;
        r->rip = ADDR(kernel_jmp_exit);
      }
      break;
    case KERNEL_RCX:
      if (r->rip >= ADDR(kernel_rcx_start) && r->rip < ADDR(kernel_rcx_end)) {
        seen.in_target++;
        r->rcx = 0;
      }
      break;
    case REP_STOS:
      if (r->rip == ADDR(rep_stos_insn) && r->rcx > 0 && r->rcx < REP_QWORDS) {
        seen.mid_rep = true;
      }
      break;
  }
  pic_eoi(0);
}

static void start_phase(enum mode m) {
  memset((void*)&seen, 0, sizeof seen);
  mode = m;
}

/* Spins with IF = 1 until `n` more ticks arrived or SPIN_LIMIT. */
static bool wait_ticks(int n) {
  int target = ticks + n;
  sti();
  for (u64 i = 0; i < SPIN_LIMIT && ticks < target; i++) pause();
  cli();
  return ticks >= target;
}

static USER_TEXT u64 user_flag_loop(u64 arg) {
  while (!user_done) {
  }
  return arg;
}

static u64 rep_buf[REP_QWORDS];

int main(void) {
  handle_exception(PIT_VECTOR, timer_handler);
  pic_init();
  pit_start(1000);
  pic_unmask(0);

  start_phase(COUNT);
  bool ticking = wait_ticks(TICKS);
  report(ticking, "the PIT ticks through the PIC (IRQ 0 at vector %#x)", PIT_VECTOR);
  if (!ticking) {
    pic_mask(0);
    return report_summary();
  }

  /* CPL3, interrupts on. */
  user_init();
  kit_user_rflags = 0x202;
  start_phase(USER_FLAG);
  user_done = 0;
  u64 r = enter_user(user_flag_loop, 7);
  const u64 frame = seen.frame;
  report(r == 7 && seen.in_target >= TICKS,
         "IRQ 0 at CPL3 ends a user loop on a variable, back in user mode each time");
  report(seen.cs == USER_CS && seen.ss == USER_DS && (seen.rflags & X86_EFLAGS_IF),
         "  the frame: cs %#llx, ss %#llx, IF set", (unsigned long long)seen.cs,
         (unsigned long long)seen.ss);
  report(frame < kit_rsp0 && frame >= kit_rsp0 - INT_STACK_BYTES,
         "  the handler ran on the TSS.RSP0 stack");
  start_phase(USER_JMP);
  r = enter_user(user_jmp_loop, 0);
  report(r == 1 && seen.in_target == 1, "IRQ 0 at CPL3 in `jmp .`: the handler moved RIP out");
  kit_user_rflags = 0x2;

  /* CPL0 tight loops. */
  start_phase(KERNEL_FLAG);
  kernel_flag = 0;
  kernel_flag_loop();
  report(kernel_flag && seen.in_target >= TICKS, "CPL0 loop on a variable the handler sets");
  start_phase(KERNEL_JMP);
  kernel_jmp_loop();
  report(seen.in_target == 1, "CPL0 `jmp .` ended by the handler moving the saved RIP");
  start_phase(KERNEL_RCX);
  kernel_rcx_loop();
  report(seen.in_target >= 1, "CPL0 register-only loop ended by the handler clearing RCX");

  /* Inside rep stosq. */
  start_phase(REP_STOS);
  bool done_ok = true;
  int attempt;
  for (attempt = 0; attempt < REP_ATTEMPTS && !seen.mid_rep; attempt++) {
    const u64 v = 0x5a5a000000000000ull + (u64)attempt;
    u64 rcx = rep_stos_irq(rep_buf, v, REP_QWORDS);
    for (u64 i = 0; i < REP_QWORDS; i++) {
      if (rep_buf[i] != v) done_ok = false;
    }
    if (rcx != 0) done_ok = false;
  }
  report(seen.mid_rep, "IRQ 0 taken inside rep stosq (RIP at it, RCX part-way)");
  report(done_ok, "  and every rep stosq completed after the iretq");

  pic_mask(0);
  return report_summary();
}
