/*
 * sysret: syscall and sysretq in detail (SDM Vol. 2 SYSCALL, SYSRET), from
 * a kernel entry of this test's own.
 *   - syscall: RCX = the next RIP, R11 = RFLAGS, the kernel runs with
 *     RFLAGS & ~FMASK, CS = STAR[47:32], SS = that + 8 (FMASK here
 *     clears every arithmetic flag the user sets: QEMU TCG, the reference,
 *     clears all of them on syscall, whatever FMASK says);
 *   - sysretq: RFLAGS = R11 (AC, DF and the arithmetic flags as the user
 *     set them), CS = STAR[63:48] + 16 and SS = + 8, both RPL 3;
 *   - a sysretq that sets IF while an interrupt waits takes it before the
 *     first user instruction;
 *   - a sysretq that sets TF traps (#DB) at once, before the first user
 *     instruction (as Linux's entry code says: "restoring TF results in a
 *     trap from userspace immediately after SYSRET");
 *   - syscall with EFER.SCE clear is #UD; sysretq at CPL 3 is #GP(0).
 * (btvm translates syscall from user code and sysretq inline.)
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/x86.h"

#define FLAG_CF 0x1ull
#define FLAG_PF 0x4ull
#define FLAG_ZF 0x40ull
#define FLAG_TF 0x100ull
#define FLAG_IF 0x200ull
#define FLAG_DF 0x400ull
#define FLAG_AC 0x40000ull
/* The kit's FMASK (TF IF DF IOPL NT AC) and CF, PF and ZF. */
#define TEST_FMASK (0x47700ull | FLAG_CF | FLAG_PF | FLAG_ZF)

/* Kernel side (kernel text): what the entry saw. */
u64 entry_rcx, entry_r11, entry_rflags, entry_cs, entry_ss;
u64 entry_kernel_rsp; /* the C stack to return to */
u64 entry_result; /* RSI of the returning syscall */

/* u64 go_user(u64 rip, u64 rflags, u64 rsp): sysretq to rip with RFLAGS =
   rflags and RSP = rsp; returns RDI of the user's `syscall` with RAX = 1.
   With RAX = 0 the entry records what it saw and sysretqs back. */
u64 go_user(u64 rip, u64 rflags, u64 rsp);
void sysret_entry(void);
asm(".text\n"
    ".globl go_user\n"
    "go_user:\n"
    "  push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n"
    "  mov %rsp, entry_kernel_rsp(%rip)\n"
    "  mov %rdi, %rcx\n"
    "  mov %rsi, %r11\n"
    "  mov %rdx, %rsp\n"
    "  sysretq\n"
    ".globl sysret_entry\n"
    "sysret_entry:\n"
    "  pushfq\n" /* on the user's stack: no SMAP */
    "  popq entry_rflags(%rip)\n"
    "  test %rax, %rax\n"
    "  jnz 1f\n"
    "  mov %rcx, entry_rcx(%rip)\n"
    "  mov %r11, entry_r11(%rip)\n"
    "  movq $0, entry_cs(%rip)\n"
    "  movq $0, entry_ss(%rip)\n"
    "  mov %cs, entry_cs(%rip)\n"
    "  mov %ss, entry_ss(%rip)\n"
    "  sysretq\n"
    "1:\n"
    "  mov %rsi, entry_result(%rip)\n"
    "  mov entry_kernel_rsp(%rip), %rsp\n"
    "  mov %rdi, %rax\n"
    "  pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n"
    "  ret\n");

/* User side. */
void u_flags(void), u_flags_back(void), u_irq(void), u_step(void), u_sysret(void);
asm(".section .user.text, \"ax\"\n"
    /* Flags into the syscall, then back: RDI = RFLAGS after the sysretq,
       RSI = CS | SS << 16 there. */
    ".globl u_flags, u_flags_back\n"
    "u_flags:\n"
    "  pushfq\n"
    "  orq $0x40445, (%rsp)\n" /* AC DF ZF PF CF */
    "  popfq\n"
    "  mov $0, %eax\n"
    "  syscall\n"
    "u_flags_back:\n"
    "  pushfq\n"
    "  popq %rdi\n"
    "  cld\n"
    "  pushq $2\n"
    "  popfq\n"
    "  mov %ss, %esi\n"
    "  shl $16, %esi\n"
    "  mov %cs, %ax\n"
    "  or %ax, %si\n"
    "  mov $1, %eax\n"
    "  syscall\n"
    "  ud2\n"
    /* Entered with IF set and an interrupt waiting. */
    ".globl u_irq\n"
    "u_irq:\n"
    "  mov $0x77, %edi\n"
    "  mov $1, %eax\n"
    "  syscall\n"
    "  ud2\n"
    /* Entered with TF set: #DB before the first instruction. */
    ".globl u_step\n"
    "u_step:\n"
    "  mov $0x99, %edi\n"
    "  mov $1, %eax\n"
    "  syscall\n"
    "  ud2\n"
    /* sysretq at CPL 3. */
    ".globl u_sysret\n"
    "u_sysret:\n"
    "  sysretq\n"
    "  ud2\n"
    ".text\n");

USER_DATA static u8 stack[4096] __attribute__((aligned(16)));
#define USER_RSP ((u64)(uintptr_t)(stack + sizeof stack))

static u64 irq_rip, irq_cs, irq_count;
static void on_pit(struct ex_regs* r) {
  if (irq_count++ == 0) {
    irq_rip = r->rip;
    irq_cs = r->cs;
  }
  pic_mask(0);
  pic_eoi(0);
}

static u64 db_rip, db_cs, db_count;
static void on_db(struct ex_regs* r) {
  if (db_count++ == 0) {
    db_rip = r->rip;
    db_cs = r->cs;
  }
  r->rflags &= ~FLAG_TF;
}

static USER_TEXT u64 user_syscall_ud(u64 arg) {
  user_syscall(SYS_EXIT_USER, arg, 0);
  return 0;
}

static USER_TEXT u64 user_sysret(u64 arg) {
  asm volatile("sysretq");
  return arg;
}

int main(void) {
  pic_init();
  user_init();
  wrmsr(MSR_LSTAR, (u64)(uintptr_t)sysret_entry);
  wrmsr(MSR_FMASK, TEST_FMASK);
  const u64 star = rdmsr(MSR_STAR);
  const u64 user_cs = ((star >> 48) + 16) | 3, user_ss = ((star >> 48) + 8) | 3;

  /* Flags both ways, and the selectors. */
  u64 back = go_user((u64)(uintptr_t)u_flags, 0x2, USER_RSP);
  const u64 user_flags = FLAG_AC | FLAG_DF | FLAG_ZF | FLAG_PF | FLAG_CF | 0x2;
  report(entry_rcx == (u64)(uintptr_t)u_flags_back, "syscall: RCX = the next RIP (%#llx)",
         (unsigned long long)entry_rcx);
  report(entry_r11 == user_flags, "syscall: R11 = the user's RFLAGS (%#llx)",
         (unsigned long long)entry_r11);
  report(entry_rflags == ((user_flags & ~TEST_FMASK) | 0x2),
         "syscall: the kernel runs with RFLAGS & ~FMASK (%#llx)", (unsigned long long)entry_rflags);
  report(entry_cs == ((star >> 32) & 0xfffc) && entry_ss == ((star >> 32) & 0xfffc) + 8,
         "syscall: CS %#llx, SS %#llx from STAR", (unsigned long long)entry_cs,
         (unsigned long long)entry_ss);
  report(back == user_flags, "sysretq: RFLAGS = R11 (%#llx)", (unsigned long long)back);
  report(entry_result == (user_cs | user_ss << 16),
         "sysretq: CS %#llx and SS %#llx from STAR, RPL 3", (unsigned long long)(entry_result & 0xffff),
         (unsigned long long)(entry_result >> 16));

  /* IF set by sysretq with an interrupt waiting: taken at the target. */
  handle_exception(PIT_VECTOR, on_pit);
  pit_start(20000);
  pic_unmask(0);
  for (int i = 0; i < 10000000 && !(pic_read_irr() & 1); ++i) {
  }
  report(pic_read_irr() & 1, "IRQ 0 waits with IF clear");
  back = go_user((u64)(uintptr_t)u_irq, FLAG_IF | 0x2, USER_RSP);
  report(back == 0x77 && irq_count >= 1 && irq_rip == (u64)(uintptr_t)u_irq && irq_cs == user_cs,
         "sysretq setting IF: the waiting interrupt comes at the first user instruction "
         "(rip %#llx, cs %#llx)",
         (unsigned long long)irq_rip, (unsigned long long)irq_cs);
  pic_mask(0);

  /* TF set by sysretq: #DB at once, at the target. */
  handle_exception(1, on_db);
  back = go_user((u64)(uintptr_t)u_step, FLAG_TF | 0x2, USER_RSP);
  report(back == 0x99 && db_count == 1 && db_rip == (u64)(uintptr_t)u_step && db_cs == user_cs,
         "sysretq setting TF: #DB before the first user instruction (rip %#llx, %llu traps)",
         (unsigned long long)db_rip, (unsigned long long)db_count);
  handle_exception(1, NULL);

  /* sysretq at CPL 3: #GP(0). */
  struct fault f = enter_user_caught(user_sysret, 0);
  report(f.vector == GP_VECTOR && f.error_code == 0 && (f.cs & 3) == 3, "sysretq at CPL 3: #GP(0)");

  /* syscall with EFER.SCE clear: #UD. */
  wrmsr(MSR_EFER, rdmsr(MSR_EFER) & ~EFER_SCE);
  f = enter_user_caught(user_syscall_ud, 0);
  report(f.vector == UD_VECTOR && (f.cs & 3) == 3, "syscall with EFER.SCE clear: #UD");
  wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
  return report_summary();
}
