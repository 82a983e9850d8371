/*
 * calls: call and ret where the return does not simply go back to the
 * instruction after the matching call, or goes there from far away.
 *
 * btvm pairs a guest call with a host call and the guest ret with a host
 * ret, so that the host CPU predicts guest returns; the continuation after
 * each call checks the guest return address the ret popped, and anything
 * else (a rewritten return address, a switched stack, a longjmp, a return
 * past the point where translated code was last entered, recursion deeper
 * than the host frames it keeps) must still land where the hardware lands
 * (SDM Vol. 2 CALL, RET). Flags must survive a return both ways.
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

asm(".pushsection .text\n"
    /* u64 redirect_caller(void): calls redirect_callee, which rewrites
       its own return address to redirect_alt; redirect_alt returns to
       redirect_caller's caller with 2. The instruction after the call
       (mov $1) never runs. */
    "redirect_caller:\n"
    "  call redirect_callee\n"
    "  mov $1, %eax\n"
    "  ret\n"
    "redirect_callee:\n"
    "  lea redirect_alt(%rip), %rax\n"
    "  mov %rax, (%rsp)\n"
    "  ret\n"
    "redirect_alt:\n"
    "  mov $2, %eax\n"
    "  ret\n"
    /* u64 retpoline(u64 x): a call whose callee overwrites the return
       address with a jump target (the retpoline pattern); the target
       returns x * 3 to the caller. */
    "retpoline:\n"
    "  lea retpoline_target(%rip), %rax\n"
    "  call 1f\n"
    "2:\n"
    "  pause\n"
    "  jmp 2b\n"
    "1:\n"
    "  mov %rax, (%rsp)\n"
    "  ret\n"
    "retpoline_target:\n"
    "  lea (%rdi,%rdi,2), %rax\n"
    "  ret\n"
    /* u64 ret_imm(u64 a, u64 b): pushes a and b, calls pop_args, which
       returns a - b with ret $16; returns that minus the RSP change
       across the call (0 when ret $16 released the arguments). */
    "ret_imm:\n"
    "  mov %rsp, %rcx\n"
    "  push %rdi\n"
    "  push %rsi\n"
    "  call pop_args\n"
    "  sub %rsp, %rcx\n"
    "  sub %rcx, %rax\n"
    "  ret\n"
    "pop_args:\n"
    "  mov 16(%rsp), %rax\n"
    "  sub 8(%rsp), %rax\n"
    "  ret $16\n"
    /* u64 on_stack(u64 (*fn)(u64), u64 arg, void* stack_top): calls
       fn(arg) with RSP = stack_top, then switches back. */
    "on_stack:\n"
    "  push %rbp\n"
    "  mov %rsp, %rbp\n"
    "  mov %rdx, %rsp\n"
    "  mov %rdi, %rax\n"
    "  mov %rsi, %rdi\n"
    "  call *%rax\n"
    "  mov %rbp, %rsp\n"
    "  pop %rbp\n"
    "  ret\n"
    /* u64 fake_frame(void* stack_top): builds a frame on another stack
       whose return address is fake_frame_back, switches to it and
       returns into it: a ret with no call of its own. fake_frame_back
       switches back and returns 7. */
    "fake_frame:\n"
    "  push %rbp\n"
    "  mov %rsp, %rbp\n"
    "  lea fake_frame_back(%rip), %rax\n"
    "  mov %rax, -8(%rdi)\n"
    "  lea -8(%rdi), %rsp\n"
    "  ret\n"
    "fake_frame_back:\n"
    "  mov %rbp, %rsp\n"
    "  pop %rbp\n"
    "  mov $7, %eax\n"
    "  ret\n"
    /* u64 jmp_save(u64 buf[8]) / void jmp_restore(u64 buf[8], u64 v):
       setjmp and longjmp: buf holds RSP, the return address and the
       callee-saved registers. */
    "jmp_save:\n"
    "  mov (%rsp), %rax\n"
    "  mov %rax, 8(%rdi)\n"
    "  lea 8(%rsp), %rax\n"
    "  mov %rax, (%rdi)\n"
    "  mov %rbx, 16(%rdi)\n"
    "  mov %rbp, 24(%rdi)\n"
    "  mov %r12, 32(%rdi)\n"
    "  mov %r13, 40(%rdi)\n"
    "  mov %r14, 48(%rdi)\n"
    "  mov %r15, 56(%rdi)\n"
    "  xor %eax, %eax\n"
    "  ret\n"
    "jmp_restore:\n"
    "  mov (%rdi), %rsp\n"
    "  mov 16(%rdi), %rbx\n"
    "  mov 24(%rdi), %rbp\n"
    "  mov 32(%rdi), %r12\n"
    "  mov 40(%rdi), %r13\n"
    "  mov 48(%rdi), %r14\n"
    "  mov 56(%rdi), %r15\n"
    "  mov %rsi, %rax\n"
    "  jmp *8(%rdi)\n"
    /* Flags across returns: set_cf returns with CF = 1 and ZF = 1, and
       the caller reads them right after the call; again with the return
       address rewritten (the return misses). Each returns
       CF | ZF << 1 | SF << 2 | OF << 3 as the caller saw them. */
    "flags_after_ret:\n"
    "  call set_flags\n"
    "  setc %al\n"
    "  setz %cl\n"
    "  sets %dl\n"
    "  seto %sil\n"
    "  jmp flags_pack\n"
    "set_flags:\n"
    "  mov $0x7f, %al\n"
    "  add $1, %al\n"      /* OF = 1, SF = 1, ZF = 0, CF = 0 */
    "  stc\n"             /* CF = 1 */
    "  ret\n"
    "flags_after_missed_ret:\n"
    "  call set_flags_redirect\n"
    "  ud2\n"
    "flags_missed_back:\n"
    "  setc %al\n"
    "  setz %cl\n"
    "  sets %dl\n"
    "  seto %sil\n"
    "  jmp flags_pack\n"
    "set_flags_redirect:\n"
    "  lea flags_missed_back(%rip), %rax\n"
    "  mov %rax, (%rsp)\n"
    "  xor %eax, %eax\n"  /* ZF = 1, CF = 0, SF = 0, OF = 0 */
    "  ret\n"
    "flags_pack:\n"
    "  movzbl %al, %eax\n"
    "  movzbl %cl, %ecx\n"
    "  movzbl %dl, %edx\n"
    "  movzbl %sil, %esi\n"
    "  shl $1, %ecx\n"
    "  shl $2, %edx\n"
    "  shl $3, %esi\n"
    "  or %ecx, %eax\n"
    "  or %edx, %eax\n"
    "  or %esi, %eax\n"
    "  ret\n"
    ".popsection\n");

u64 redirect_caller(void);
u64 retpoline(u64 x);
u64 ret_imm(u64 a, u64 b);
u64 on_stack(u64 (*fn)(u64), u64 arg, void* stack_top);
u64 fake_frame(void* stack_top);
__attribute__((returns_twice)) u64 jmp_save(u64 buf[8]);
NORETURN void jmp_restore(u64 buf[8], u64 v);
u64 flags_after_ret(void);
u64 flags_after_missed_ret(void);

/* Recursion the optimiser keeps: depth d sums d, d-1, ..., 1. */
__attribute__((noipa)) u64 sum_down(u64 d) {
  return d == 0 ? 0 : d + sum_down(d - 1);
}

/* The same, with a runtime exit (cpuid) at every tenth level: each exit
   drops every host frame, so the returns above it miss. */
__attribute__((noipa)) u64 sum_down_exits(u64 d) {
  if (d % 10 == 0) {
    u32 a = 0, b, c, dd;
    asm volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(dd));
  }
  return d == 0 ? 0 : d + sum_down_exits(d - 1);
}

static u64 jump_buf[8];
static volatile u64 unwound;

/* Recurses to depth d, then longjmps out from the bottom. */
__attribute__((noipa)) u64 dive(u64 d) {
  if (d == 0) jmp_restore(jump_buf, 0x1234);
  return dive(d - 1) + 1;
}

/* One million bytes of stack for the deep recursions. */
static u8 big_stack[1 << 20] __attribute__((aligned(16)));

static u64 deep(u64 depth) { return sum_down(depth); }

/* Each case runs several times: the first run of a call or ret leaves
   translated code (its target is not translated yet); later runs go block
   to block, host call to host ret. Reports the first wrong value, else
   the last. */
#define RUNS 4
#define REPEAT(expr, ok_expr, v)              \
  do {                                        \
    for (int run_ = 0; run_ < RUNS; ++run_) { \
      v = (expr);                             \
      if (!(ok_expr)) break;                  \
    }                                         \
  } while (0)

int main(void) {
  u64 v;
  REPEAT(redirect_caller(), v == 2, v);
  report(v == 2, "a callee that rewrites its return address returns there (got %llu)",
         (unsigned long long)v);
  REPEAT(retpoline(5), v == 15, v);
  report(v == 15, "retpoline: call, rewrite the return address, ret (got %llu)",
         (unsigned long long)v);
  REPEAT(ret_imm(100, 58), v == 42, v);
  report(v == 42, "ret $16 returns and releases the arguments (got %llu)", (unsigned long long)v);

  /* Depths around btvm's limit of host frames (64 KiB of them, 8192
     calls) and well past it, on a stack of their own. */
  static const u64 depths[] = {100, 8000, 8200, 20000, 60000};
  for (unsigned i = 0; i < sizeof depths / sizeof depths[0]; ++i) {
    const u64 depth = depths[i];
    v = on_stack(deep, depth, big_stack + sizeof big_stack);
    report(v == depth * (depth + 1) / 2, "recursion %llu deep returns %llu",
           (unsigned long long)depth, (unsigned long long)v);
  }
  REPEAT(sum_down_exits(500), v == 500 * 501 / 2, v);
  report(v == 500 * 501 / 2, "recursion with an exit to the monitor every ten levels (got %llu)",
         (unsigned long long)v);

  REPEAT(fake_frame(big_stack + sizeof big_stack), v == 7, v);
  report(v == 7, "a ret into a frame built on another stack (got %llu)", (unsigned long long)v);

  for (int round = 0; round < RUNS; ++round) {
    unwound = 0;
    v = jmp_save(jump_buf);
    if (v == 0) {
      dive(50 + round);
      unwound = 1;  /* never: dive does not return */
    }
    report(v == 0x1234 && !unwound, "longjmp out of a recursion %d deep, round %d",
           50 + round, round);
    /* The stale returns of the abandoned recursion must not be taken. */
    v = sum_down(30);
    report(v == 465, "  then calls and returns as usual (got %llu)", (unsigned long long)v);
  }

  REPEAT(flags_after_ret(), v == 0xd, v);
  report(v == 0xd, "flags a callee set, read after its ret: CF SF OF (got %#llx)",
         (unsigned long long)v);
  REPEAT(flags_after_missed_ret(), v == 0x2, v);
  report(v == 0x2, "flags after a ret to a rewritten address: ZF (got %#llx)",
         (unsigned long long)v);
  return report_summary();
}
