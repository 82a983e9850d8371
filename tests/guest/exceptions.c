/*
 * exceptions: the CPU raises the right exception with the right error code,
 * RIP (and CR2 for #PF), and the kernel resumes after it: #DE, #UD, #BP,
 * #GP (non-canonical address, bad selector), #PF (not present at two levels,
 * read and write, write to a read-only page with CR0.WP), #DB single step,
 * and a handler that resumes past the faulting instruction.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

/* Each helper's faulting instruction has a global label for the RIP check. */
asm(".pushsection .text\n"
    "do_div0:\n"
    "  xorl %ecx, %ecx\n"
    "  movl $1, %eax\n"
    "  xorl %edx, %edx\n"
    "div0_insn:\n"
    "  divl %ecx\n"
    "  ret\n"
    "do_ud2:\n"
    "ud2_insn:\n"
    "  ud2\n"
    "  ret\n"
    "do_vex:\n"
    "vex_insn:\n"
    "  vpxor %xmm1, %xmm2, %xmm3\n" /* AVX is not in the CPU model: #UD */
    "  ret\n"
    "do_wrpkru:\n"
    "  xorl %eax, %eax\n"
    "  xorl %ecx, %ecx\n"
    "  xorl %edx, %edx\n"
    "wrpkru_insn:\n"
    "  wrpkru\n" /* no protection keys in the CPU model: #UD */
    "  ret\n"
    "do_int3:\n"
    "int3_insn:\n"
    "  int3\n"
    "  ret\n"
    "do_noncanonical:\n"
    "  movabsq $0x8000000000000000, %rax\n"
    "noncanonical_insn:\n"
    "  movq (%rax), %rax\n"
    "  ret\n"
    "do_bad_selector:\n"
    "  movl $0x1238, %eax\n"
    "bad_selector_insn:\n"
    "  movl %eax, %ds\n"
    "  ret\n"
    "do_read:\n" /* u64 do_read(u64 addr) */
    "read_insn:\n"
    "  movq (%rdi), %rax\n"
    "  ret\n"
    "do_write:\n" /* void do_write(u64 addr, u64 value) */
    "write_insn:\n"
    "  movq %rsi, (%rdi)\n"
    "  ret\n"
    "do_single_step:\n" /* TF from POPF: #DB after the next instruction */
    "  pushfq\n"
    "  orq $0x100, (%rsp)\n"
    "  popfq\n"
    "  nop\n"
    "single_step_after:\n"
    "  ret\n"
    "do_ud2_skip:\n" /* returns 1 if the #UD handler resumed past ud2 */
    "  xorl %eax, %eax\n"
    "  ud2\n"
    "  movl $1, %eax\n"
    "  ret\n"
    ".popsection");

void do_vex(void), do_wrpkru(void);
extern char vex_insn[], wrpkru_insn[];
void do_div0(void), do_ud2(void), do_int3(void), do_noncanonical(void), do_bad_selector(void);
u64 do_read(u64 addr);
void do_write(u64 addr, u64 value);
void do_single_step(void);
int do_ud2_skip(void);
extern char div0_insn[], ud2_insn[], int3_insn[], noncanonical_insn[], bad_selector_insn[];
extern char read_insn[], write_insn[], single_step_after[];

#define RIP(label) ((u64)(uintptr_t)(label))

/* Runs fn under a catch point; returns the fault (vector FAULT_NONE if none). */
static struct fault run_caught(void (*fn)(void)) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    fn();
    catch_end();
  }
  return f;
}

static struct fault read_at_label_caught(u64 addr) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    do_read(addr);
    catch_end();
  }
  return f;
}

static struct fault write_caught(u64 addr, u64 value) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    do_write(addr, value);
    catch_end();
  }
  return f;
}

static void check(const struct fault* f, int vector, u64 error_code, u64 rip, const char* what) {
  report(f->vector == vector && f->error_code == error_code && f->rip == rip,
         "%s: vector %d (want %d), error code %#llx (want %#llx), rip %#llx (want %#llx)", what,
         f->vector, vector, (unsigned long long)f->error_code, (unsigned long long)error_code,
         (unsigned long long)f->rip, (unsigned long long)rip);
}

static void check_pf(const struct fault* f, u64 error_code, u64 rip, u64 cr2, const char* what) {
  check(f, PF_VECTOR, error_code, rip, what);
  report(f->cr2 == cr2, "%s: cr2 %#llx (want %#llx)", what, (unsigned long long)f->cr2,
         (unsigned long long)cr2);
}

static volatile u64 db_rip, db_dr6;
static volatile int db_count;

static void db_handler(struct ex_regs* r) {
  u64 dr6;
  asm volatile("mov %%dr6, %0" : "=r"(dr6));
  db_rip = r->rip;
  db_dr6 = dr6;
  db_count++;
  r->rflags &= ~0x100ull; /* TF */
}

static void ud_skip_handler(struct ex_regs* r) {
  r->rip += 2; /* ud2 is 0f 0b */
}

int main(void) {
  struct fault f;

  f = run_caught(do_div0);
  check(&f, DE_VECTOR, 0, RIP(div0_insn), "#DE from div by zero");
  f = run_caught(do_ud2);
  check(&f, UD_VECTOR, 0, RIP(ud2_insn), "#UD from ud2");
  f = run_caught(do_vex);
  check(&f, UD_VECTOR, 0, RIP(vex_insn), "#UD from a VEX-encoded instruction (no AVX)");
  f = run_caught(do_wrpkru);
  check(&f, UD_VECTOR, 0, RIP(wrpkru_insn), "#UD from wrpkru (no protection keys)");
  f = run_caught(do_int3);
  check(&f, BP_VECTOR, 0, RIP(int3_insn) + 1, "#BP from int3 (a trap: rip after it)");
  f = run_caught(do_noncanonical);
  check(&f, GP_VECTOR, 0, RIP(noncanonical_insn), "#GP from a non-canonical access");
  f = run_caught(do_bad_selector);
  check(&f, GP_VECTOR, 0x1238, RIP(bad_selector_insn), "#GP from a selector past the GDT limit");

  /* Page faults, on the kit's page tables. */
  report((read_cr0() & X86_CR0_WP) != 0, "CR0.WP is set");
  vm_init();
  const u64 far = 0x40000000000ull; /* 4 TiB: no PML4 entry */
  f = read_at_label_caught(far);
  check_pf(&f, 0, RIP(read_insn), far, "#PF read, no PML4 entry");
  f = write_caught(far + 8, 1);
  check_pf(&f, PFERR_WRITE, RIP(write_insn), far + 8, "#PF write, no PML4 entry");

  u8* page = alloc_page();
  const u64 va = 0x50000000ull; /* inside the identity map: a 4 KiB PTE after a split */
  vm_map(va, (u64)(uintptr_t)page, PTE_P | PTE_W);
  do_write(va + 16, 0x1122334455667788ull);
  report(*(volatile u64*)(page + 16) == 0x1122334455667788ull, "write through a mapped page");
  vm_unmap(va);
  f = read_at_label_caught(va + 0x100);
  check_pf(&f, 0, RIP(read_insn), va + 0x100, "#PF read, PTE not present");

  vm_map(va, (u64)(uintptr_t)page, PTE_P); /* read-only */
  f = read_at_label_caught(va + 16);
  report(f.vector == FAULT_NONE, "read of a read-only page does not fault");
  f = write_caught(va + 24, 5);
  check_pf(&f, PFERR_PRESENT | PFERR_WRITE, RIP(write_insn), va + 24,
           "#PF write to a read-only page (CR0.WP)");
  report(*(volatile u64*)(page + 24) == 0, "the faulting write changed nothing");

  /* #DB single step: a trap after the instruction that follows POPF. */
  handle_exception(DB_VECTOR, db_handler);
  do_single_step();
  handle_exception(DB_VECTOR, NULL);
  report(db_count == 1 && db_rip == RIP(single_step_after) && (db_dr6 & 0x4000),
         "#DB single step: %d trap(s), rip %#llx (want %#llx), DR6 %#llx (BS set)", db_count,
         (unsigned long long)db_rip, (unsigned long long)RIP(single_step_after),
         (unsigned long long)db_dr6);

  /* A handler that resumes past the faulting instruction. */
  handle_exception(UD_VECTOR, ud_skip_handler);
  int resumed = do_ud2_skip();
  handle_exception(UD_VECTOR, NULL);
  report(resumed == 1, "#UD handler resumed after the ud2");

  return report_summary();
}
