/*
 * ring1: cli, sti and pushfq at CPL 1 (SDM Vol. 2 CLI/STI: allowed when
 * CPL <= IOPL, else #GP(0); PUSHF at any CPL). Translated supervisor code
 * runs cli/sti inline and checks CS.RPL itself; at CPL 1 and 2 they go to
 * the runtime, which applies the IOPL rule.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/x86.h"

#define RING1_CS 0x49 /* 0x48 | RPL 1: 64-bit code, DPL 1 */
#define RING1_DS 0x51 /* 0x50 | RPL 1: data, DPL 1 */
#define GDT_ENTRIES 16
#define IOPL1 (1ull << 12)
#define BACK_VECTOR 0x81 /* int $0x81 from ring 1: back to CPL 0 */

static u64 gdt_copy[GDT_ENTRIES] __attribute__((aligned(16)));
/* Named by enter_ring1's assembly only. */
static u8 ring1_stack[4096] __attribute__((aligned(16), used));

asm(".pushsection .text\n"
    /* At CPL 1: cli (a #GP unless IOPL >= 1), then pushfq, sti, pushfq,
       and back to CPL 0 through int $0x81 with the two images in RAX and
       RBX. */
    "ring1_code:\n"
    "ring1_cli:\n"
    "  cli\n"
    "  pushfq\n"
    "  popq %rax\n"
    "  sti\n"
    "  pushfq\n"
    "  popq %rbx\n"
    "  cli\n"
    "  int $0x81\n"
    "  ud2\n"
    /* void enter_ring1(u64 rflags): iretq to ring1_code at CPL 1. */
    "enter_ring1:\n"
    "  pushq $" "0x51" "\n" /* RING1_DS */
    "  leaq ring1_stack+4096(%rip), %rax\n"
    "  pushq %rax\n"
    "  pushq %rdi\n"
    "  pushq $" "0x49" "\n" /* RING1_CS */
    "  leaq ring1_code(%rip), %rax\n"
    "  pushq %rax\n"
    "  iretq\n"
    ".popsection\n");
void enter_ring1(u64 rflags);
extern char ring1_cli[];

static volatile u64 back_cs, back_rax, back_rbx;
static struct kit_jmp_buf back_jb;

static void back_handler(struct ex_regs* r) {
  back_cs = r->cs;
  back_rax = r->rax;
  back_rbx = r->rbx;
  kit_longjmp(&back_jb, 1);
}

int main(void) {
  pic_init(); /* every 8259 line masked: ring 1 runs with IF = 1 below */
  struct descriptor_table_ptr old;
  sgdt(&old);
  memcpy(gdt_copy, (void*)(uintptr_t)old.base, old.limit + 1u);
  gdt_copy[RING1_CS >> 3] = GDT_CODE64_DPL0 | (1ull << 45); /* DPL 1 */
  gdt_copy[RING1_DS >> 3] = GDT_DATA_DPL0 | (1ull << 45);
  struct descriptor_table_ptr p = {sizeof gdt_copy - 1, (u64)(uintptr_t)gdt_copy};
  lgdt(&p);
  handle_exception(BACK_VECTOR, back_handler);
  set_idt_dpl(BACK_VECTOR, 3);

  /* IOPL 0: cli at CPL 1 raises #GP(0) at the cli. */
  struct fault f;
  if (catch_begin(&f) == 0) {
    enter_ring1(0x2);
    catch_end();
  }
  report(f.vector == GP_VECTOR && f.error_code == 0 && f.rip == (u64)(uintptr_t)ring1_cli &&
             (f.cs & 3) == 1,
         "cli at CPL 1 with IOPL 0: #GP(0) at the cli, from CPL 1");

  /* IOPL 1: cli and sti work; pushfq shows IF as they left it. */
  back_cs = 0;
  if (kit_setjmp(&back_jb) == 0) enter_ring1(0x2 | IOPL1 | X86_EFLAGS_IF);
  report((back_cs & 3) == 1 && !(back_rax & X86_EFLAGS_IF) && (back_rbx & X86_EFLAGS_IF) &&
             (back_rax & IOPL1),
         "cli and sti at CPL 1 with IOPL 1: pushfq shows IF %llu then %llu",
         (unsigned long long)((back_rax >> 9) & 1), (unsigned long long)((back_rbx >> 9) & 1));

  lgdt(&old);
  return report_summary();
}
