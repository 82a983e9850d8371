/*
 * procs: two user processes, each with its own page tables, preempted and
 * switched by the timer, as an operating system runs them. Both run at CPL3
 * with interrupts on (IF = 1, IOPL 0) and Linux's selectors, so that btvm's
 * direct engine runs them in its child process.
 *
 * The same user virtual pages map different frames in the two address
 * spaces (each its own PML4; the kernel's identity map is shared through
 * the first PML4 entry, SDM Vol. 3A §4.5). The PIT's IRQ 0 through the PIC
 * preempts user code; the handler saves the interrupted frame and the SSE
 * state with FXSAVE (SDM Vol. 2A, FXSAVE: XMM0-XMM15 and MXCSR in 64-bit
 * mode), restores the other process's with FXRSTOR, loads its CR3 and
 * returns to it with iretq. SSE is on as an OS turns it on (CR0.EM clear,
 * CR0.MP set, CR4.OSFXSR and CR4.OSXMMEXCPT set: SDM Vol. 3A §14.1.3).
 *
 * Each process fills XMM0-XMM15 with its own values, sets its own MXCSR
 * rounding mode and writes its own pattern over four pages at the same
 * virtual address as the other's. Then, in every iteration, it checks and
 * changes them: the sixteen XMM registers (then adds its increment to each),
 * MXCSR, one of the pages (then rewrites it with the next generation of its
 * pattern), and all general registers but RSP and RCX across a spin that
 * touches no memory. Each also counts how often the other process ran in
 * between its iterations (the other's progress counter, in a page both
 * map). A process loops at least MIN_ITERS times and until it has seen the
 * other run SEEN_MIN times or the other has exited, then exits by
 * `int $0x80`. The kernel checks what each found, its final pages through
 * their frames, and its own count of switches.
 *
 * Nothing printed depends on timing: only thresholds that the loop's end
 * condition guarantees once the timer preempts at all.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define TIMER_HZ 250
#define MIN_ITERS 100
#define MAX_ITERS 1000000  /* a cap for a timer that never preempts (far above the need) */
#define SEEN_MIN 10        /* the first process to finish saw the other run this often */
#define SPINS 2000         /* register-only iterations in gpr_spin */

/* Each process's private user pages, at the same virtual addresses in both
   (PML4 entry 1: nothing of the kernel's identity map is there). */
#define UVA 0x8000000000ull
#define U_CTL UVA                     /* struct ctl */
#define U_DATA (UVA + PAGE_SIZE)      /* DATA_PAGES pages of the pattern */
#define DATA_PAGES 4
#define U_STACK (UVA + 8 * PAGE_SIZE) /* two pages of stack */
#define U_STACK_TOP (U_STACK + 2 * PAGE_SIZE)
#define DATA_WORDS (PAGE_SIZE / 8)

#define SYS_PROC_EXIT 60 /* int $0x80: RAX = 60, RDI = status */

#define MXCSR_DEFAULT 0x1f80u      /* all exceptions masked, round to nearest */
#define MXCSR_RC_DOWN 0x2000u      /* RC = 01 */
#define MXCSR_RC_UP 0x4000u        /* RC = 10 */
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)

/* The private page at U_CTL. */
struct ctl {
  u64 xmm[16][2] __attribute__((aligned(16))); /* what XMM0-XMM15 should hold */
  u64 got[16][2] __attribute__((aligned(16))); /* what they held */
  u64 inc[2] __attribute__((aligned(16)));     /* added to each register every iteration */
  u64 gen[DATA_PAGES];                         /* generation of each page's pattern */
  u64 id, seed, mxcsr;
  u64 flags, cs, ss; /* as the process read them at its start */
  u64 iters, seen;
  u64 bad_xmm, bad_mxcsr, bad_mem, bad_gpr;
};
_Static_assert(sizeof(struct ctl) <= PAGE_SIZE, "struct ctl fits its page");

/* Shared by both processes (a .user page of the kernel image, mapped in both
   address spaces alike). */
USER_DATA static volatile struct {
  u64 progress[2]; /* iterations done */
  u64 exited[2];
} shared;

/* ---- user code ----------------------------------------------------------- */

/* gpr_step prev,next: jumps to 3f unless next - prev == RDX (RCX is free). */
asm(".macro gpr_step prev, next\n"
    "  movq %\\next, %rcx\n"
    "  subq %\\prev, %rcx\n"
    "  cmpq %rdx, %rcx\n"
    "  jne 3f\n"
    ".endm\n");
asm(".pushsection .user.text, \"ax\"\n"
    /* void xmm_load(const u64* v): XMMn = v[2n..2n+1]. */
    "xmm_load:\n"
    "  .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  movdqu \\n*16(%rdi), %xmm\\n\n"
    "  .endr\n"
    "  ret\n"
    /* void xmm_store(u64* v) */
    "xmm_store:\n"
    "  .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  movdqu %xmm\\n, \\n*16(%rdi)\n"
    "  .endr\n"
    "  ret\n"
    /* void xmm_add(const u64* inc): paddq inc (16-byte aligned) to each. */
    "xmm_add:\n"
    "  .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  paddq (%rdi), %xmm\\n\n"
    "  .endr\n"
    "  ret\n"
    /* u64 gpr_spin(u64 seed, u64 spins): loads RAX with seed, RDX with a
       step, and RBX RBP RSI RDI R8-R15 with seed + n * step; counts RCX
       down from spins touching no memory; returns 0 if every register
       still holds its value, else 1. */
    "gpr_spin:\n"
    "  pushq %rbx\n"
    "  pushq %rbp\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  pushq %rdi\n"
    "  movq %rsi, %rcx\n"
    "  movq %rdi, %rax\n"
    "  movabsq $0x0101010101010101, %rdx\n"
    "  leaq (%rax,%rdx), %rbx\n"
    "  leaq (%rbx,%rdx), %rbp\n"
    "  leaq (%rbp,%rdx), %rsi\n"
    "  leaq (%rsi,%rdx), %rdi\n"
    "  leaq (%rdi,%rdx), %r8\n"
    "  leaq (%r8,%rdx), %r9\n"
    "  leaq (%r9,%rdx), %r10\n"
    "  leaq (%r10,%rdx), %r11\n"
    "  leaq (%r11,%rdx), %r12\n"
    "  leaq (%r12,%rdx), %r13\n"
    "  leaq (%r13,%rdx), %r14\n"
    "  leaq (%r14,%rdx), %r15\n"
    "1:\n"
    "  decq %rcx\n"
    "  jnz 1b\n"
    "  movabsq $0x0101010101010101, %rcx\n"
    "  cmpq %rcx, %rdx\n"
    "  jne 3f\n"
    "  cmpq (%rsp), %rax\n"
    "  jne 3f\n"
    "  gpr_step rax, rbx\n"
    "  gpr_step rbx, rbp\n"
    "  gpr_step rbp, rsi\n"
    "  gpr_step rsi, rdi\n"
    "  gpr_step rdi, r8\n"
    "  gpr_step r8, r9\n"
    "  gpr_step r9, r10\n"
    "  gpr_step r10, r11\n"
    "  gpr_step r11, r12\n"
    "  gpr_step r12, r13\n"
    "  gpr_step r13, r14\n"
    "  gpr_step r14, r15\n"
    "  xorl %eax, %eax\n"
    "  jmp 4f\n"
    "3:\n"
    "  movl $1, %eax\n"
    "4:\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbp\n"
    "  popq %rbx\n"
    "  ret\n"
    ".popsection\n");
void xmm_load(const u64* v), xmm_store(u64* v), xmm_add(const u64* inc);
u64 gpr_spin(u64 seed, u64 spins);

#define CTL ((struct ctl*)U_CTL)
#define DATA(p) ((volatile u64*)(U_DATA + (p)*PAGE_SIZE))

static inline __attribute__((always_inline)) u64 proc_seed(u64 id) {
  return 0x0123456789abcdefull * (id + 1) ^ (id << 60);
}

/* Word j of page p in generation g of the pattern of the process with seed. */
static inline __attribute__((always_inline)) u64 pattern(u64 seed, u64 g, u64 p, u64 j) {
  return seed ^ ((g << 8 | p) << 40) ^ (j * 0x9e3779b97f4a7c15ull);
}

static inline __attribute__((always_inline)) void ldmxcsr(u32 v) {
  asm volatile("ldmxcsr %0" : : "m"(v));
}
static inline __attribute__((always_inline)) u32 stmxcsr(void) {
  u32 v;
  asm volatile("stmxcsr %0" : "=m"(v));
  return v;
}

static USER_TEXT u64 proc_main(u64 id) {
  struct ctl* c = CTL;
  const u64 other = id ^ 1;
  const u64 seed = proc_seed(id);
  c->id = id;
  c->seed = seed;
  asm volatile("pushfq; popq %0" : "=r"(c->flags));
  asm volatile("movq %%cs, %0; movq %%ss, %1" : "=r"(c->cs), "=r"(c->ss));

  c->mxcsr = MXCSR_DEFAULT | (id ? MXCSR_RC_UP : MXCSR_RC_DOWN);
  ldmxcsr((u32)c->mxcsr);
  for (u64 k = 0; k < 16; k++) {
    c->xmm[k][0] = seed + k * 0x1111111111111111ull;
    c->xmm[k][1] = ~seed ^ (k << 56);
  }
  c->inc[0] = 2 * id + 1;
  c->inc[1] = (id + 1) << 32;
  xmm_load(&c->xmm[0][0]);
  for (u64 p = 0; p < DATA_PAGES; p++) {
    c->gen[p] = 0;
    for (u64 j = 0; j < DATA_WORDS; j++) DATA(p)[j] = pattern(seed, 0, p, j);
  }

  u64 last = shared.progress[other];
  u64 i;
  for (i = 0;; i++) {
    /* The SSE state. */
    xmm_store(&c->got[0][0]);
    bool bad = false;
    for (u64 k = 0; k < 16; k++) {
      if (c->got[k][0] != c->xmm[k][0] || c->got[k][1] != c->xmm[k][1]) bad = true;
    }
    if (bad) {
      c->bad_xmm++;
      xmm_load(&c->xmm[0][0]);
    }
    if (stmxcsr() != c->mxcsr) {
      c->bad_mxcsr++;
      ldmxcsr((u32)c->mxcsr);
    }
    xmm_add(c->inc);
    for (u64 k = 0; k < 16; k++) {
      c->xmm[k][0] += c->inc[0];
      c->xmm[k][1] += c->inc[1];
    }

    /* One page: check this generation, write the next. */
    const u64 p = i % DATA_PAGES;
    volatile u64* w = DATA(p);
    bad = false;
    for (u64 j = 0; j < DATA_WORDS; j++) {
      if (w[j] != pattern(seed, c->gen[p], p, j)) bad = true;
    }
    if (bad) c->bad_mem++;
    c->gen[p]++;
    for (u64 j = 0; j < DATA_WORDS; j++) w[j] = pattern(seed, c->gen[p], p, j);

    /* The general registers. */
    if (gpr_spin(seed ^ i, SPINS)) c->bad_gpr++;

    /* Progress, and did the other run since the last iteration? */
    shared.progress[id]++;
    const u64 now = shared.progress[other];
    if (now != last) {
      c->seen++;
      last = now;
    }
    if (i + 1 >= MIN_ITERS && (c->seen >= SEEN_MIN || shared.exited[other])) break;
    if (i + 1 >= MAX_ITERS) break;
  }
  c->iters = i + 1;
  shared.exited[id] = 1;
  const u64 status = c->bad_xmm | c->bad_mxcsr | c->bad_mem | c->bad_gpr;
  user_int80(SYS_PROC_EXIT, status != 0, 0);
  for (;;) {
  }
  return 0;
}

/* ---- the kernel ---------------------------------------------------------- */

u64 kit_enter_user(user_fn fn, u64 arg, u64 user_rsp); /* kit/user_entry.S */
extern struct kit_jmp_buf kit_user_jb;

struct proc {
  u8 fx[512] __attribute__((aligned(16))); /* FXSAVE image */
  struct ex_regs regs;                     /* the user frame while not running */
  u64 cr3;
  struct ctl* ctl; /* the frames of its private pages */
  u64* data[DATA_PAGES];
  bool alive;
  u64 status;
};

static struct proc procs[2];
static int current;
static u64 switches;      /* timer switches while both processes were alive */
static u64 kernel_ticks;  /* ticks that arrived at CPL0 (none should) */

static inline void fxsave(void* area) {
  asm volatile("fxsave64 %0" : "=m"(*(u8(*)[512])area));
}
static inline void fxrstor(const void* area) {
  asm volatile("fxrstor64 %0" : : "m"(*(const u8(*)[512])area));
}

/* Leaves the running process (its frame is *r) for procs[next]. */
static void switch_to(struct ex_regs* r, int next, bool save) {
  struct proc* cur = &procs[current];
  struct proc* n = &procs[next];
  if (save) {
    cur->regs = *r;
    fxsave(cur->fx);
  }
  *r = n->regs;
  fxrstor(n->fx);
  write_cr3(n->cr3);
  current = next;
}

static void timer_tick(struct ex_regs* r) {
  pic_eoi(0);
  if ((r->cs & 3) != 3) {
    kernel_ticks++;
    return;
  }
  const int next = current ^ 1;
  if (!procs[next].alive) return;
  switches++;
  switch_to(r, next, true);
}

static void proc_syscall(struct ex_regs* r) {
  if (r->rax != SYS_PROC_EXIT) {
    r->rax = (u64)-38; /* ENOSYS */
    return;
  }
  struct proc* cur = &procs[current];
  cur->alive = false;
  cur->status = r->rdi;
  const int next = current ^ 1;
  if (procs[next].alive) {
    switch_to(r, next, false);
    return;
  }
  /* Both gone: back to main() (kit_enter_user's return) in the kernel's
     address space. */
  pic_mask(0);
  write_cr3(vm_root());
  kit_longjmp(&kit_user_jb, 0);
}

/* A private page of the process, mapped at va in its tables. */
static u64* map_private(u64* pt, u64 va) {
  u64* page = alloc_page();
  pt[(va >> 12) & 511] = (u64)(uintptr_t)page | PTE_P | PTE_W | PTE_U;
  return page;
}

/* The process's address space: the kernel's first PML4 entry (identity map,
   the .user pages) and its own pages under UVA. */
static void make_proc(int id, const u8* fx_template) {
  struct proc* p = &procs[id];
  u64* pml4 = alloc_page();
  u64* pdpt = alloc_page();
  u64* pd = alloc_page();
  u64* pt = alloc_page();
  pml4[0] = ((u64*)(uintptr_t)vm_root())[0];
  pml4[(UVA >> 39) & 511] = (u64)(uintptr_t)pdpt | PTE_P | PTE_W | PTE_U;
  pdpt[(UVA >> 30) & 511] = (u64)(uintptr_t)pd | PTE_P | PTE_W | PTE_U;
  pd[(UVA >> 21) & 511] = (u64)(uintptr_t)pt | PTE_P | PTE_W | PTE_U;
  p->ctl = (struct ctl*)map_private(pt, U_CTL);
  for (int i = 0; i < DATA_PAGES; i++) p->data[i] = map_private(pt, U_DATA + i * PAGE_SIZE);
  map_private(pt, U_STACK);
  map_private(pt, U_STACK + PAGE_SIZE);
  p->cr3 = (u64)(uintptr_t)pml4;
  memcpy(p->fx, fx_template, sizeof p->fx);
  p->alive = true;

  /* The first frame: proc_main(id) at CPL3, IF set, a return address of 0
     (it never returns). */
  memset(&p->regs, 0, sizeof p->regs);
  p->regs.rip = (u64)(uintptr_t)proc_main;
  p->regs.cs = USER_CS;
  p->regs.rflags = 0x202;
  p->regs.rsp = U_STACK_TOP - 8;
  p->regs.ss = USER_DS;
  p->regs.rdi = (u64)id;
}

/* The frames of the process's pages hold its last pattern. */
static bool pages_final(const struct proc* p) {
  const struct ctl* c = p->ctl;
  for (u64 pg = 0; pg < DATA_PAGES; pg++) {
    for (u64 j = 0; j < DATA_WORDS; j++) {
      if (p->data[pg][j] != pattern(c->seed, c->gen[pg], pg, j)) return false;
    }
  }
  return true;
}

int main(void) {
  pic_init();
  user_init();
  handle_exception(0x80, proc_syscall);
  handle_exception(PIT_VECTOR, timer_tick);

  write_cr0((read_cr0() & ~(CR0_EM | CR0_TS)) | X86_CR0_MP);
  write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);
  const u64 cr0 = read_cr0(), cr4 = read_cr4();
  report((cr0 & (X86_CR0_MP | CR0_EM | CR0_TS)) == X86_CR0_MP &&
             (cr4 & (CR4_OSFXSR | CR4_OSXMMEXCPT)) == (CR4_OSFXSR | CR4_OSXMMEXCPT),
         "SSE on: CR0.MP set, CR0.EM and CR0.TS clear, CR4.OSFXSR and CR4.OSXMMEXCPT set");

  /* Both processes start from the same clean state: x87 reset, MXCSR at its
     default, XMM registers zero. */
  static u8 fx_template[512] __attribute__((aligned(16)));
  const u32 mxcsr = MXCSR_DEFAULT;
  asm volatile("fninit; ldmxcsr %0" : : "m"(mxcsr));
  asm volatile(
      ".irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
      "pxor %%xmm\\n, %%xmm\\n\n"
      ".endr" ::);
  fxsave(fx_template);
  make_proc(0, fx_template);
  make_proc(1, fx_template);
  report(procs[0].cr3 != procs[1].cr3 && procs[0].data[0] != procs[1].data[0],
         "two address spaces: the user pages at %#llx map different frames in each",
         (unsigned long long)UVA);

  pit_start(TIMER_HZ);
  pic_unmask(0);
  current = 0;
  write_cr3(procs[0].cr3);
  kit_user_rflags = 0x202;
  fxrstor(procs[0].fx);
  kit_enter_user(proc_main, 0, U_STACK_TOP);
  kit_user_rflags = 0x2;

  for (int id = 0; id < 2; id++) {
    const struct proc* p = &procs[id];
    const struct ctl* c = p->ctl;
    const char name = (char)('A' + id), other = (char)('B' - id);
    report(c->id == (u64)id && c->cs == USER_CS && c->ss == USER_DS &&
               (c->flags & (X86_EFLAGS_IF | 0x3000)) == X86_EFLAGS_IF,
           "process %c ran at CPL3 with IF set, IOPL 0, cs %#llx, ss %#llx", name,
           (unsigned long long)c->cs, (unsigned long long)c->ss);
    report(c->iters >= MIN_ITERS && c->iters < MAX_ITERS && c->seen >= SEEN_MIN - 1,
           "process %c ran its loop (at least %d iterations) and saw process %c run between "
           "its iterations at least %d times",
           name, MIN_ITERS, other, SEEN_MIN - 1);
    report(c->bad_xmm == 0, "process %c: XMM0-XMM15 held its values in every iteration", name);
    report(c->bad_mxcsr == 0, "process %c: MXCSR kept its rounding mode (%s)", name,
           id ? "up" : "down");
    report(c->bad_mem == 0,
           "process %c: its %d pages at %#llx held its own pattern in every iteration", name,
           DATA_PAGES, (unsigned long long)U_DATA);
    report(c->bad_gpr == 0,
           "process %c: the general registers held across spins that touch no memory", name);
    report(!p->alive && p->status == 0, "process %c exited by int $0x80 with status 0", name);
    report(pages_final(p), "process %c: its frames hold its last pattern after both exited",
           name);
  }
  report(switches >= 2 * (SEEN_MIN - 1),
         "the timer switched between the processes at least %d times while both ran",
         2 * (SEEN_MIN - 1));
  report(kernel_ticks == 0, "no timer interrupt arrived at CPL0 (the kernel runs with IF clear)");
  return report_summary();
}
