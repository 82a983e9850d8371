/*
 * stack: push, pop, call and ret in runs, on stacks that straddle a page
 * boundary, and faults in the middle of such a run.
 *
 * The translator probes the soft TLB once for a block's whole run of stack
 * accesses (a "stack window") when it knows their offsets from the entry
 * RSP; a window that does not fit one page, or misses, sends the block to
 * a translation without it. This guest checks what hardware does in every
 * position of such a run across a boundary between two pages that are not
 * physically adjacent (SDM Vol. 1 §6.2 "Stacks", Vol. 2 PUSH/POP/CALL/RET),
 * and that a #PF part-way through a run leaves the earlier accesses done,
 * RSP as before the faulting instruction, CR2 and the error code exact
 * (SDM Vol. 3A §4.7).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define STACK_VA 0xffffff80a0000000ull    /* two pages; the boundary at +0x1000 */
#define BOUNDARY (STACK_VA + PAGE_SIZE)

/* Each labelled run is one block: a jmp ends the block that moved RSP. */
asm(".pushsection .text\n"
    /* void win_run(u64 rsp, u64 seed, u64 out[6]): on the stack at rsp,
       pushes seed, seed + 1, seed + 2, 0x5a5a and out, calls win_leaf, and
       pops the five back into out[0..4]; out[5] = win_leaf's result. */
    "win_run:\n"
    "  push %rbx\n"
    "  push %rbp\n"
    "  push %r12\n"
    "  mov %rsp, %r12\n"
    "  mov %rdi, %rsp\n"
    "  jmp 1f\n"
    "1:\n"
    "  lea 1(%rsi), %rbx\n"
    "  lea 2(%rsi), %rbp\n"
    "  push %rsi\n"
    "  push %rbx\n"
    "  push %rbp\n"
    "  push $0x5a5a\n"
    "  push %rdx\n"
    "  call win_leaf\n"
    "win_ret:\n"
    "  mov %rax, 40(%rdx)\n"
    "  pop %rax\n"
    "  mov %rax, 32(%rdx)\n"
    "  pop %rax\n"
    "  mov %rax, 24(%rdx)\n"
    "  pop %rax\n"
    "  mov %rax, 16(%rdx)\n"
    "  pop %rax\n"
    "  mov %rax, 8(%rdx)\n"
    "  pop %rax\n"
    "  mov %rax, (%rdx)\n"
    "  mov %r12, %rsp\n"
    "  pop %r12\n"
    "  pop %rbp\n"
    "  pop %rbx\n"
    "  ret\n"
    /* rax = rbx + rsi, through the stack: push, push, pop, pop, ret. */
    "win_leaf:\n"
    "  push %rsi\n"
    "  push %rbx\n"
    "  mov (%rsp), %rax\n"
    "  add 8(%rsp), %rax\n"
    "  pop %rbx\n"
    "  pop %rsi\n"
    "  ret\n"
    /* void win_push3(u64 rsp): pushes 1, 2, 3 at rsp; the run is expected
       to fault (ud2 otherwise). */
    "win_push3:\n"
    "  mov %rdi, %rsp\n"
    "  jmp 1f\n"
    "1:\n"
    "win_push3_1:\n"
    "  push $1\n"
    "win_push3_2:\n"
    "  push $2\n"
    "win_push3_3:\n"
    "  push $3\n"
    "  ud2\n"
    /* void win_call(u64 rsp): pushes 1, 2 and calls. */
    "win_call:\n"
    "  mov %rdi, %rsp\n"
    "  jmp 1f\n"
    "1:\n"
    "  push $1\n"
    "  push $2\n"
    "win_call_call:\n"
    "  call win_leaf\n"
    "  ud2\n"
    /* void win_pop3(u64 rsp): pops three at rsp. */
    "win_pop3:\n"
    "  mov %rdi, %rsp\n"
    "  jmp 1f\n"
    "1:\n"
    "  pop %rax\n"
    "  pop %rax\n"
    "win_pop3_3:\n"
    "  pop %rax\n"
    "  ud2\n"
    ".popsection\n");
void win_run(u64 rsp, u64 seed, u64* out);
void win_push3(u64 rsp), win_call(u64 rsp), win_pop3(u64 rsp);
extern char win_ret[], win_push3_1[], win_push3_2[], win_push3_3[], win_call_call[], win_pop3_3[];

/* What the #PF handler saw: it runs on IST2 (the faulting stack is the
   broken one) and resumes at pf_jb. */
static volatile struct {
  int count;
  u64 rip, rsp, error_code, cr2;
} pf;
static struct kit_jmp_buf pf_jb;

static void pf_handler(struct ex_regs* r) {
  pf.count++;
  pf.rip = r->rip;
  pf.rsp = r->rsp;
  pf.error_code = r->error_code;
  pf.cr2 = read_cr2();
  kit_longjmp(&pf_jb, 1);
}

static bool faults(void (*fn)(u64), u64 rsp) {
  pf.count = 0;
  if (kit_setjmp(&pf_jb) == 0) {
    fn(rsp);
    return false;
  }
  return pf.count == 1;
}

static void report_fault(bool came, const char* what, const char* rip_name, u64 rip, u64 rsp,
                         u64 cr2, u64 error_code) {
  report(came && pf.rip == rip && pf.rsp == rsp && pf.cr2 == cr2 && pf.error_code == error_code,
         "%s: #PF at %s, RSP boundary%+lld, CR2 boundary%+lld, error code %#llx", what, rip_name,
         (long long)(pf.rsp - BOUNDARY), (long long)(pf.cr2 - BOUNDARY),
         (unsigned long long)pf.error_code);
}

int main(void) {
  vm_init();
  /* The two pages in the opposite physical order, so that a run which
     crossed the boundary by adding to a host pointer would land in the
     wrong page. */
  u64 upper = (u64)(uintptr_t)alloc_page(), lower = (u64)(uintptr_t)alloc_page();
  vm_map(STACK_VA, lower, PTE_P | PTE_W);
  vm_map(BOUNDARY, upper, PTE_P | PTE_W);

  /* Every position of the runs against the boundary: win_run's window is
     48 bytes (five pushes and the call), win_leaf's 24; each position runs
     twice (the second time with the translation and the TLB warm). */
  for (int k = -72; k <= 72; k += 8) {
    u64 rsp = BOUNDARY + k;
    bool ok = true;
    for (int pass = 0; pass < 2; ++pass) {
      u64 seed = 0x1000 * (k + 100) + pass;
      u64 out[6] = {0};
      win_run(rsp, seed, out);
      ok &= out[0] == seed && out[1] == seed + 1 && out[2] == seed + 2 && out[3] == 0x5a5a &&
            out[4] == (u64)(uintptr_t)out && out[5] == 2 * seed + 1;
      /* What the runs left in memory, read back through the mapping. */
      ok &= read_u64(rsp - 8) == seed && read_u64(rsp - 16) == seed + 1 &&
            read_u64(rsp - 24) == seed + 2 && read_u64(rsp - 32) == 0x5a5a &&
            read_u64(rsp - 40) == (u64)(uintptr_t)out &&
            read_u64(rsp - 48) == (u64)(uintptr_t)win_ret && read_u64(rsp - 56) == seed &&
            read_u64(rsp - 64) == seed + 1;
    }
    report(ok, "runs of pushes, a call, pops and rets at RSP boundary%+d", k);
  }
  /* Nothing landed outside the two pages' own bytes: each page holds
     only what the runs put at its own offsets. */
  report(read_u64(lower + 0xff8) == read_u64(BOUNDARY - 8) &&
             read_u64(upper) == read_u64(BOUNDARY),
         "both physical pages hold their own halves of the runs");

  /* Faults part-way through a run: the handler gets its own stack. */
  static u8 ist_stack[4096] __attribute__((aligned(16)));
  kit_tss.ist[1] = (u64)(uintptr_t)(ist_stack + sizeof ist_stack);
  set_idt_ist(PF_VECTOR, 2);
  handle_exception(PF_VECTOR, pf_handler);

  vm_unmap(STACK_VA);
  write_u64(BOUNDARY + 8, 0);
  write_u64(BOUNDARY, 0);
  bool came = faults(win_push3, BOUNDARY + 16);
  report_fault(came, "push, push, push into an unmapped page", "the third push",
               (u64)(uintptr_t)win_push3_3, BOUNDARY, BOUNDARY - 8, 0x2);
  report(read_u64(BOUNDARY + 8) == 1 && read_u64(BOUNDARY) == 2,
         "  the first two pushes are done");
  came = faults(win_push3, BOUNDARY + 8);
  report_fault(came, "push, push into an unmapped page", "the second push",
               (u64)(uintptr_t)win_push3_2, BOUNDARY, BOUNDARY - 8, 0x2);
  came = faults(win_call, BOUNDARY + 16);
  report_fault(came, "push, push, call into an unmapped page", "the call",
               (u64)(uintptr_t)win_call_call, BOUNDARY, BOUNDARY - 8, 0x2);
  vm_map(STACK_VA, lower, PTE_P | PTE_W);

  vm_unmap(BOUNDARY);
  came = faults(win_pop3, BOUNDARY - 16);
  report_fault(came, "pop, pop, pop from an unmapped page", "the third pop",
               (u64)(uintptr_t)win_pop3_3, BOUNDARY, BOUNDARY, 0x0);
  vm_map(BOUNDARY, upper, PTE_P | PTE_W);

  /* Read-only upper page (CR0.WP set): the pushes into it fault with
     the protection bit, the pops from it do not. */
  write_cr0(read_cr0() | X86_CR0_WP);
  vm_map(BOUNDARY, upper, PTE_P);
  came = faults(win_push3, BOUNDARY + 24);
  report_fault(came, "push into a read-only page", "the first push",
               (u64)(uintptr_t)win_push3_1, BOUNDARY + 24, BOUNDARY + 16, 0x3);
  vm_map(BOUNDARY, upper, PTE_P | PTE_W);

  set_idt_ist(PF_VECTOR, 0);
  handle_exception(PF_VECTOR, NULL);
  return report_summary();
}
