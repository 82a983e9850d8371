/*
 * faults: exceptions raised while delivering an exception (SDM Vol. 3A
 * §6.15, "Interrupt 8—Double Fault Exception", Table 6-5). A page fault
 * whose gate is not present (#NP, contributory) becomes #DF; so do #DE and
 * #GP with absent gates (contributory then contributory), a #PF pushed onto
 * an unmapped stack (the kernel stack overflow: page fault then page fault)
 * and a #PF whose IST stack is unmapped. A benign first event (#UD, int n)
 * whose gate is absent gives a plain #NP instead. Every #DF arrives with
 * error code 0 on the kit's IST1 stack; CR2 names the last page fault
 * (Linux's #DF handler compares it with the stack guard page). The last
 * one is a #DF handler that reports and ends the run from the IST stack,
 * as a kernel's would.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define UNMAPPED_VA 0xffffff8090000000ull /* nothing mapped in this 2 MiB */
#define STACK_VA (UNMAPPED_VA + 0x10000)  /* an unmapped "stack" page */
#define IST_VA (UNMAPPED_VA + 0x20000)    /* an unmapped IST stack page */

asm(".pushsection .text\n"
    "do_div0:\n"
    "  xorl %ecx, %ecx\n"
    "  movl $1, %eax\n"
    "  xorl %edx, %edx\n"
    "  divl %ecx\n"
    "  ret\n"
    "do_gp:\n"
    "  movabsq $0x8000000000000000, %rax\n"
    "  movq (%rax), %rax\n"
    "  ret\n"
    "do_ud2:\n"
    "  ud2\n"
    "  ret\n"
    "do_int50:\n"
    "int50_insn:\n"
    "  int $0x50\n"
    "  ret\n"
    /* void overflow_push(u64 rsp): push onto the stack at rsp. */
    "overflow_push:\n"
    "  movq %rdi, %rsp\n"
    "  pushq $0\n"
    "  ud2\n"
    ".popsection\n");
void do_div0(void), do_gp(void), do_ud2(void), do_int50(void);
extern char int50_insn[];
void overflow_push(u64 rsp);

/* What the #DF handler saw. */
static volatile struct {
  int count;
  u64 vector, error_code, frame, cr2;
} df;
static struct kit_jmp_buf df_jb;
static volatile bool df_exit_run;

/* Records the #DF and resumes at df_jb (there is nothing to return to). */
static void df_handler(struct ex_regs* r) {
  df.count++;
  df.vector = r->vector;
  df.error_code = r->error_code;
  df.frame = (u64)(uintptr_t)r;
  df.cr2 = read_cr2();
  if (df_exit_run) {
    u64 top = kit_tss.ist[0];
    report(r->vector == DF_VECTOR && r->error_code == 0 && df.frame < top &&
               df.frame >= top - KIT_DF_STACK_SIZE,
           "kernel stack overflow: the #DF handler runs on IST1 and ends the run");
    report_summary();
  }
  kit_longjmp(&df_jb, 1);
}

static bool on_df_stack(void) {
  u64 top = kit_tss.ist[0];
  return df.frame < top && df.frame >= top - KIT_DF_STACK_SIZE;
}

enum { ARG_NONE = 0 };
/* Runs fn(arg) expecting a #DF; true if one came. */
static bool double_faults(void (*fn)(u64), u64 arg) {
  df.count = 0;
  df.cr2 = 0;
  if (kit_setjmp(&df_jb) == 0) {
    fn(arg);
    return false;
  }
  return df.count == 1;
}

static void read_at(u64 va) {
  read_u64(va);
}
static void call_div0(u64 unused) {
  (void)unused;
  do_div0();
}
static void call_gp(u64 unused) {
  (void)unused;
  do_gp();
}

static void report_df(bool came, const char* what) {
  report(came && df.vector == DF_VECTOR && df.error_code == 0 && on_df_stack(),
         "%s: #DF (error code %#llx) on the IST1 stack", what, (unsigned long long)df.error_code);
}

static struct fault run_caught(void (*fn)(void)) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    fn();
    catch_end();
  }
  return f;
}

int main(void) {
  vm_init();
  handle_exception(DF_VECTOR, df_handler);

  /* Page fault, then #NP delivering it (contributory): #DF. */
  set_idt_present(PF_VECTOR, false);
  bool came = double_faults(read_at, UNMAPPED_VA + 0x18);
  set_idt_present(PF_VECTOR, true);
  report_df(came, "#PF with a not-present #PF gate");
  report(df.cr2 == UNMAPPED_VA + 0x18, "  CR2 holds the page fault's address (%#llx)",
         (unsigned long long)df.cr2);

  /* Contributory, then contributory. */
  set_idt_present(DE_VECTOR, false);
  came = double_faults(call_div0, ARG_NONE);
  set_idt_present(DE_VECTOR, true);
  report_df(came, "#DE with a not-present #DE gate");
  set_idt_present(GP_VECTOR, false);
  came = double_faults(call_gp, ARG_NONE);
  set_idt_present(GP_VECTOR, true);
  report_df(came, "#GP with a not-present #GP gate");

  /* Benign first events: the #NP is delivered as such. Its error code
     names the gate (IDT flag, bit 1); hardware puts the vector in bits
     15:3 and sets EXT for an exception, QEMU 7.2 puts vector * 16 there and
     no EXT, so only the IDT flag is checked. */
  set_idt_present(0x50, false);
  struct fault f = run_caught(do_int50);
  set_idt_present(0x50, true);
  report(f.vector == NP_VECTOR && (f.error_code & 2),
         "int $0x50 with a not-present gate: #NP naming an IDT gate");
  set_idt_present(UD_VECTOR, false);
  f = run_caught(do_ud2);
  set_idt_present(UD_VECTOR, true);
  report(f.vector == NP_VECTOR && (f.error_code & 2),
         "#UD with a not-present gate: #NP (benign, then contributory: no #DF)");

  /* int $0x50 whose IST stack is not mapped: the #PF is a fault of the
     int instruction (RIP at it), delivered on its own; no #DF. */
  kit_tss.ist[1] = IST_VA + PAGE_SIZE;
  set_idt_ist(0x50, 2);
  f = run_caught(do_int50);
  set_idt_ist(0x50, 0);
  report(f.vector == PF_VECTOR && f.rip == (u64)(uintptr_t)int50_insn &&
             ALIGN_DOWN(f.cr2, PAGE_SIZE) == IST_VA,
         "int $0x50 onto an unmapped IST stack: #PF at the int (vector %d)", f.vector);

  /* Page fault, then a page fault pushing its frame (IST2 unmapped). */
  kit_tss.ist[1] = IST_VA + PAGE_SIZE;
  set_idt_ist(PF_VECTOR, 2);
  came = double_faults(read_at, UNMAPPED_VA + 0x28);
  set_idt_ist(PF_VECTOR, 0);
  report_df(came, "#PF whose IST stack is not mapped");
  report(ALIGN_DOWN(df.cr2, PAGE_SIZE) == IST_VA,
         "  CR2 holds the second fault's address, in the IST page (%#llx)",
         (unsigned long long)df.cr2);

  /* A push onto an unmapped stack: #PF, whose frame cannot be pushed on
     that stack either (no IST for #PF): #DF. */
  came = double_faults(overflow_push, STACK_VA + PAGE_SIZE);
  report_df(came, "push onto an unmapped stack (kernel stack overflow)");
  report(ALIGN_DOWN(df.cr2, PAGE_SIZE) == STACK_VA, "  CR2 in the unmapped stack page (%#llx)",
         (unsigned long long)df.cr2);

  /* The same once more; this time the #DF handler ends the run. */
  df_exit_run = true;
  overflow_push(STACK_VA + PAGE_SIZE);
  report(false, "no #DF from the stack overflow");
  return report_summary();
}
