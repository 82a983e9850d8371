/*
 * forks: a tiny kernel of its own whose user program forks a thousand times.
 *
 * The kernel has processes with their own address spaces (a PML4 each: the
 * kernel's identity map through the first entry, SDM Vol. 3A §4.5, and the
 * process's pages under UVA) and five system calls, entered by `syscall`
 * through its own LSTAR entry, which builds an interrupt frame and returns
 * by iretq (SDM Vol. 2B, SYSCALL; §6.14 for the frame):
 *   getpid (39), fork (57), exit (60, RDI = code), wait (61: the code of an
 *   exited child in RAX and its pid in RDX, -1 without children), and
 *   anything else returns -38 (ENOSYS).
 * fork copies every page the parent maps under UVA into fresh frames of new
 * tables (no copy-on-write) and the parent's registers: the child returns 0
 * from fork, the parent the child's pid. wait blocks the parent and runs its
 * child; exit frees the child's frames and tables, hands its code to the
 * waiting parent and resumes it. CR3 changes with every switch. The frames
 * come from a pool of POOL_PAGES pages, far fewer than a thousand children
 * use, so every child runs on frames (and page tables) another one used.
 *
 * The user program (init, pid 1) runs at CPL3 with interrupts on (IF = 1,
 * IOPL 0) and Linux's selectors, so that btvm's direct engine runs it and
 * every child in its child process. It forks NFORKS times. Before each fork
 * it writes a word and a page of pattern that depend on the iteration; the
 * fork itself runs with the general registers loaded from a seed and checks
 * them after (in both processes). The child checks that fork returned 0,
 * getpid its pid, IF, the parent's word, page and a stack variable, then
 * overwrites its copies and exits with a code derived from the iteration
 * (and bits for what it found wrong). The parent checks fork's pid, wait's
 * code and pid, and that its own word, page and stack variable are
 * unchanged. The kernel reads init's counts from its frame when it exits,
 * and checks its own: forks, CR3 switches, pages in use.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define NFORKS 1000
#define NPROC 4
#define POOL_PAGES 32
#define FIRST_CHILD_PID 2 /* init is 1; pids are not reused */

#define SYS_GETPID 39
#define SYS_FORK 57
#define SYS_EXIT 60
#define SYS_WAIT 61
#define ENOSYS 38

/* User pages, at the same addresses in every process (PML4 entry 1). */
#define UVA 0x8000000000ull
#define U_DATA UVA                     /* struct udata */
#define U_PAGE (UVA + PAGE_SIZE)       /* a page of pattern */
#define U_STACK (UVA + 16 * PAGE_SIZE) /* two pages of stack */
#define U_STACK_TOP (U_STACK + 2 * PAGE_SIZE)
#define PAGE_WORDS (PAGE_SIZE / 8)

/* What a child found wrong: bits above its code. */
#define CHILD_BAD_REGS (1ull << 32)
#define CHILD_BAD_PID (1ull << 33)
#define CHILD_BAD_FLAGS (1ull << 34)
#define CHILD_BAD_WORD (1ull << 35)
#define CHILD_BAD_PAGE (1ull << 36)
#define CHILD_BAD_STACK (1ull << 37)
#define CHILD_SAW_PARENT (CHILD_BAD_WORD | CHILD_BAD_PAGE | CHILD_BAD_STACK)

/* init's page at U_DATA: the word a child overwrites, and init's counts. */
struct udata {
  u64 word;
  u64 flags, cs, ss, pid;
  u64 wait_before, wait_after, enosys;
  u64 forks_ok;     /* fork returned the expected pid in the parent */
  u64 parent_regs;  /* registers held across fork in the parent */
  u64 waits_ok;     /* wait returned the child's pid and its exact code */
  u64 codes_seen;   /* wait returned the code (whatever the child found) */
  u64 child_ok;     /* children that found nothing wrong */
  u64 child_regs, child_pid_flags, child_saw;
  u64 unchanged;    /* the parent's word, page and stack variable after wait */
};

/* ---- user code ----------------------------------------------------------- */

#define STR_(x) #x
#define STR(x) STR_(x)

/* fork_step prev, next: jumps to 2f unless next - prev == RDX (RCX is free). */
asm(".macro fork_step prev, next\n"
    "  movq %\\next, %rcx\n"
    "  subq %\\prev, %rcx\n"
    "  cmpq %rdx, %rcx\n"
    "  jne 2f\n"
    ".endm\n");
asm(".pushsection .user.text, \"ax\"\n"
    /* u64 fork_regs(u64 seed, u64* ok): fork with RBX RBP RSI RDI R8-R10
       R12-R15 loaded with seed + n * step and RDX with the step; after it
       (in parent and child alike) *ok = 1 if all of them held, else 0.
       Returns fork's RAX. */
    "fork_regs:\n"
    "  pushq %rbx\n"
    "  pushq %rbp\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  pushq %rsi\n" /* ok */
    "  pushq %rdi\n" /* seed */
    "  movabsq $0x0303030303030303, %rdx\n"
    "  leaq (%rdi,%rdx), %rbx\n"
    "  leaq (%rbx,%rdx), %rbp\n"
    "  leaq (%rbp,%rdx), %rsi\n"
    "  leaq (%rsi,%rdx), %rdi\n"
    "  leaq (%rdi,%rdx), %r8\n"
    "  leaq (%r8,%rdx), %r9\n"
    "  leaq (%r9,%rdx), %r10\n"
    "  leaq (%r10,%rdx), %r12\n"
    "  leaq (%r12,%rdx), %r13\n"
    "  leaq (%r13,%rdx), %r14\n"
    "  leaq (%r14,%rdx), %r15\n"
    "  movl $" STR(SYS_FORK) ", %eax\n"
    "  syscall\n"
    "  xorl %r11d, %r11d\n" /* R11: 1 if something changed */
    "  movabsq $0x0303030303030303, %rcx\n"
    "  cmpq %rcx, %rdx\n"
    "  setne %r11b\n"
    "  movq %rbx, %rcx\n"
    "  subq (%rsp), %rcx\n"
    "  cmpq %rdx, %rcx\n"
    "  jne 2f\n"
    "  fork_step rbx, rbp\n"
    "  fork_step rbp, rsi\n"
    "  fork_step rsi, rdi\n"
    "  fork_step rdi, r8\n"
    "  fork_step r8, r9\n"
    "  fork_step r9, r10\n"
    "  fork_step r10, r12\n"
    "  fork_step r12, r13\n"
    "  fork_step r13, r14\n"
    "  fork_step r14, r15\n"
    "  jmp 3f\n"
    "2:\n"
    "  movl $1, %r11d\n"
    "3:\n"
    "  xorl $1, %r11d\n"
    "  addq $8, %rsp\n"
    "  popq %rsi\n"
    "  movq %r11, (%rsi)\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbp\n"
    "  popq %rbx\n"
    "  ret\n"
    ".popsection\n");
u64 fork_regs(u64 seed, u64* ok);

static inline __attribute__((always_inline)) u64 sys0(u64 nr) {
  u64 ret;
  asm volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
  return ret;
}
static inline __attribute__((always_inline)) NORETURN void sys_exit(u64 code) {
  asm volatile("syscall" : : "a"((u64)SYS_EXIT), "D"(code) : "rcx", "r11", "memory");
  __builtin_unreachable();
}
/* wait: the child's code, its pid in *pid. */
static inline __attribute__((always_inline)) u64 sys_wait(u64* pid) {
  u64 ret, p;
  asm volatile("syscall" : "=a"(ret), "=d"(p) : "a"((u64)SYS_WAIT) : "rcx", "r11", "memory");
  *pid = p;
  return ret;
}

static inline __attribute__((always_inline)) u64 word_of(u64 i) {
  return 0xabc0000000000000ull | i;
}
static inline __attribute__((always_inline)) u64 pattern(u64 i, u64 j) {
  return (i << 48) ^ (j * 0x9e3779b97f4a7c15ull);
}
static inline __attribute__((always_inline)) u64 code_of(u64 i) {
  return 0x10000 + i * 3;
}
static inline __attribute__((always_inline)) u64 user_flags(void) {
  u64 f;
  asm volatile("pushfq; popq %0" : "=r"(f));
  return f;
}

#define UDATA ((volatile struct udata*)U_DATA)
#define UPAGE ((volatile u64*)U_PAGE)

static USER_TEXT NORETURN void child(u64 i, volatile u64* marker, u64 regs_ok) {
  volatile struct udata* u = UDATA;
  u64 code = code_of(i);
  if (!regs_ok) code |= CHILD_BAD_REGS;
  if (sys0(SYS_GETPID) != FIRST_CHILD_PID + i) code |= CHILD_BAD_PID;
  if ((user_flags() & (X86_EFLAGS_IF | 0x3000)) != X86_EFLAGS_IF) code |= CHILD_BAD_FLAGS;
  if (u->word != word_of(i)) code |= CHILD_BAD_WORD;
  for (u64 j = 0; j < PAGE_WORDS; j++) {
    if (UPAGE[j] != pattern(i, j)) code |= CHILD_BAD_PAGE;
  }
  if (*marker != ~i) code |= CHILD_BAD_STACK;
  /* Overwrite the child's copies: the parent's must not change. */
  u->word = ~word_of(i);
  for (u64 j = 0; j < PAGE_WORDS; j++) UPAGE[j] = ~pattern(i, j);
  *marker = i;
  sys_exit(code);
}

static USER_TEXT u64 init_main(u64 arg) {
  volatile struct udata* u = UDATA;
  u->flags = user_flags();
  asm volatile("movq %%cs, %0; movq %%ss, %1" : "=r"(u->cs), "=r"(u->ss));
  u->pid = sys0(SYS_GETPID);
  u64 pid;
  u->wait_before = sys_wait(&pid);
  u->enosys = sys0(12345);

  for (u64 i = 0; i < NFORKS; i++) {
    volatile u64 marker = ~i;
    u->word = word_of(i);
    for (u64 j = 0; j < PAGE_WORDS; j++) UPAGE[j] = pattern(i, j);
    u64 regs_ok = 0;
    const u64 r = fork_regs(0x1000000 * i + arg, &regs_ok);
    if (r == 0) child(i, &marker, regs_ok);

    u->parent_regs += regs_ok;
    u->forks_ok += r == FIRST_CHILD_PID + i;
    const u64 code = sys_wait(&pid);
    u->waits_ok += pid == r && code == code_of(i);
    u->codes_seen += (u32)code == code_of(i);
    u->child_ok += code == code_of(i);
    u->child_regs += !(code & CHILD_BAD_REGS);
    u->child_pid_flags += !(code & (CHILD_BAD_PID | CHILD_BAD_FLAGS));
    u->child_saw += !(code & CHILD_SAW_PARENT);

    bool same = u->word == word_of(i) && marker == ~i;
    for (u64 j = 0; j < PAGE_WORDS; j++) {
      if (UPAGE[j] != pattern(i, j)) same = false;
    }
    u->unchanged += same;
  }
  u->wait_after = sys_wait(&pid);
  sys_exit(0);
}

/* ---- the kernel ---------------------------------------------------------- */

u64 kit_enter_user(user_fn fn, u64 arg, u64 user_rsp); /* kit/user_entry.S */
extern struct kit_jmp_buf kit_user_jb;
void forks_syscall_entry(void);
void forks_syscall(struct ex_regs* r);
u64 forks_user_rsp;

/* The SYSCALL entry: the frame kit/isr.S builds for an interrupt from CPL3
   (struct ex_regs), on the TSS.RSP0 stack, then iretq. */
asm(".pushsection .text\n"
    "forks_syscall_entry:\n"
    "  movq %rsp, forks_user_rsp(%rip)\n"
    "  movq kit_rsp0(%rip), %rsp\n"
    "  pushq $" STR(USER_DS) "\n"
    "  pushq forks_user_rsp(%rip)\n"
    "  pushq %r11\n" /* RFLAGS */
    "  pushq $" STR(USER_CS) "\n"
    "  pushq %rcx\n" /* RIP */
    "  pushq $0\n"   /* error code */
    "  pushq $0\n"   /* vector */
    "  pushq %rax\n"
    "  pushq %rbx\n"
    "  pushq %rcx\n"
    "  pushq %rdx\n"
    "  pushq %rsi\n"
    "  pushq %rdi\n"
    "  pushq %rbp\n"
    "  pushq %r8\n"
    "  pushq %r9\n"
    "  pushq %r10\n"
    "  pushq %r11\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  cld\n"
    "  movq %rsp, %rdi\n"
    "  call forks_syscall\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %r11\n"
    "  popq %r10\n"
    "  popq %r9\n"
    "  popq %r8\n"
    "  popq %rbp\n"
    "  popq %rdi\n"
    "  popq %rsi\n"
    "  popq %rdx\n"
    "  popq %rcx\n"
    "  popq %rbx\n"
    "  popq %rax\n"
    "  addq $16, %rsp\n"
    "  iretq\n"
    ".popsection\n");

/* ---- frames ---- */

static u8 pool[POOL_PAGES][PAGE_SIZE] __attribute__((aligned(4096)));
static u8* free_list[POOL_PAGES];
static int free_count, max_in_use;

static void pool_init(void) {
  for (int i = 0; i < POOL_PAGES; i++) free_list[i] = pool[POOL_PAGES - 1 - i];
  free_count = POOL_PAGES;
}

static u64* page_alloc(void) {
  if (free_count == 0) panic("forks: the pool of %d pages is empty", POOL_PAGES);
  u8* p = free_list[--free_count];
  if (POOL_PAGES - free_count > max_in_use) max_in_use = POOL_PAGES - free_count;
  memset(p, 0, PAGE_SIZE);
  return (u64*)p;
}

static void page_free(void* p) {
  free_list[free_count++] = p;
}

/* ---- processes ---- */

enum state { FREE, RUNNABLE, RUNNING, WAITING };

struct proc {
  enum state state;
  u64 pid;
  struct proc* parent;
  u64* pml4; /* pml4[1] -> pdpt[0] -> pd[0] -> pt: the pages under UVA */
  u64* pt;
  struct ex_regs regs; /* the user frame while not running */
};

static struct proc procs[NPROC];
static struct proc* current;
static u64 next_pid = 1;
static u64 forks, cr3_switches;
static struct udata init_result; /* init's counts, copied at its exit */
static u64 init_code = ~0ull;

static struct proc* proc_alloc(void) {
  for (int i = 0; i < NPROC; i++) {
    if (procs[i].state == FREE) {
      memset(&procs[i], 0, sizeof procs[i]);
      procs[i].pid = next_pid++;
      return &procs[i];
    }
  }
  return NULL;
}

/* New tables: the kernel's first PML4 entry, empty tables down to the one
   page table under UVA. */
static void space_new(struct proc* p) {
  u64* pdpt = page_alloc();
  u64* pd = page_alloc();
  p->pml4 = page_alloc();
  p->pt = page_alloc();
  p->pml4[0] = ((u64*)(uintptr_t)vm_root())[0];
  p->pml4[(UVA >> 39) & 511] = (u64)(uintptr_t)pdpt | PTE_P | PTE_W | PTE_U;
  pdpt[(UVA >> 30) & 511] = (u64)(uintptr_t)pd | PTE_P | PTE_W | PTE_U;
  pd[(UVA >> 21) & 511] = (u64)(uintptr_t)p->pt | PTE_P | PTE_W | PTE_U;
}

static u64* table_of(u64 entry) {
  return (u64*)(uintptr_t)(entry & PTE_ADDR);
}

/* Frees the user pages and the tables. */
static void space_free(struct proc* p) {
  for (int i = 0; i < 512; i++) {
    if (p->pt[i] & PTE_P) page_free(table_of(p->pt[i]));
  }
  u64* pdpt = table_of(p->pml4[(UVA >> 39) & 511]);
  u64* pd = table_of(pdpt[(UVA >> 30) & 511]);
  page_free(p->pt);
  page_free(pd);
  page_free(pdpt);
  page_free(p->pml4);
  p->pml4 = p->pt = NULL;
}

static void switch_to(struct ex_regs* r, struct proc* next) {
  *r = next->regs;
  next->state = RUNNING;
  current = next;
  write_cr3((u64)(uintptr_t)next->pml4);
  cr3_switches++;
}

static void k_fork(struct ex_regs* r) {
  struct proc* parent = current;
  struct proc* c = proc_alloc();
  if (!c) {
    r->rax = (u64)-11; /* EAGAIN */
    return;
  }
  space_new(c);
  for (int i = 0; i < 512; i++) {
    const u64 e = parent->pt[i];
    if (!(e & PTE_P)) continue;
    u64* frame = page_alloc();
    memcpy(frame, table_of(e), PAGE_SIZE);
    c->pt[i] = (u64)(uintptr_t)frame | (e & ~PTE_ADDR & ~(PTE_A | PTE_D));
  }
  c->parent = parent;
  c->regs = *r;
  c->regs.rax = 0;
  c->state = RUNNABLE;
  r->rax = c->pid;
  forks++;
}

static void k_wait(struct ex_regs* r) {
  for (int i = 0; i < NPROC; i++) {
    struct proc* c = &procs[i];
    if (c->state == RUNNABLE && c->parent == current) {
      /* Block until it exits (this kernel has no zombies: a child runs only
         while its parent waits). */
      current->regs = *r;
      current->state = WAITING;
      switch_to(r, c);
      return;
    }
  }
  r->rax = (u64)-1;
}

static void k_exit(struct ex_regs* r) {
  struct proc* p = current;
  struct proc* parent = p->parent;
  if (!parent) {
    /* init: its counts, then back to main() in the kernel's tables. */
    memcpy(&init_result, table_of(p->pt[(U_DATA >> 12) & 511]), sizeof init_result);
    init_code = r->rdi;
    write_cr3(vm_root());
    space_free(p);
    p->state = FREE;
    kit_longjmp(&kit_user_jb, 0);
  }
  if (parent->state != WAITING) panic("forks: pid %llu exits, its parent is not waiting",
                                      (unsigned long long)p->pid);
  parent->regs.rax = r->rdi;
  parent->regs.rdx = p->pid;
  switch_to(r, parent); /* leave the child's tables before freeing them */
  space_free(p);
  p->state = FREE;
}

void forks_syscall(struct ex_regs* r) {
  switch (r->rax) {
    case SYS_GETPID:
      r->rax = current->pid;
      break;
    case SYS_FORK:
      k_fork(r);
      break;
    case SYS_WAIT:
      k_wait(r);
      break;
    case SYS_EXIT:
      k_exit(r);
      break;
    default:
      r->rax = (u64)-ENOSYS;
      break;
  }
}

int main(void) {
  pic_init(); /* nothing may interrupt: user mode runs with IF = 1 */
  user_init();
  wrmsr(MSR_LSTAR, (u64)(uintptr_t)forks_syscall_entry);
  pool_init();

  /* init: its data page, its pattern page and its stack. */
  struct proc* init = proc_alloc();
  space_new(init);
  const u64 va[] = {U_DATA, U_PAGE, U_STACK, U_STACK + PAGE_SIZE};
  for (unsigned i = 0; i < ARRAY_SIZE(va); i++) {
    init->pt[(va[i] >> 12) & 511] = (u64)(uintptr_t)page_alloc() | PTE_P | PTE_W | PTE_U;
  }
  init->state = RUNNING;
  current = init;
  write_cr3((u64)(uintptr_t)init->pml4);
  kit_user_rflags = 0x202;
  kit_enter_user(init_main, 0x5eed, U_STACK_TOP);
  kit_user_rflags = 0x2;

  const struct udata* u = &init_result;
  report(u->cs == USER_CS && u->ss == USER_DS &&
             (u->flags & (X86_EFLAGS_IF | 0x3000)) == X86_EFLAGS_IF,
         "init ran at CPL3 with IF set, IOPL 0, cs %#llx, ss %#llx", (unsigned long long)u->cs,
         (unsigned long long)u->ss);
  report(u->pid == 1, "getpid in init: %lld", (long long)u->pid);
  report(u->wait_before == (u64)-1, "wait without children: %lld", (long long)u->wait_before);
  report(u->enosys == (u64)-ENOSYS, "an unknown syscall: %lld", (long long)u->enosys);
  report(u->forks_ok == NFORKS, "%llu of %d forks returned the child's pid (%d, %d, ...) to the parent",
         (unsigned long long)u->forks_ok, NFORKS, FIRST_CHILD_PID, FIRST_CHILD_PID + 1);
  report(u->parent_regs == NFORKS, "%llu of %d forks kept the parent's general registers",
         (unsigned long long)u->parent_regs, NFORKS);
  report(u->child_regs == NFORKS,
         "%llu of %d children started with the parent's general registers (fork returned 0)",
         (unsigned long long)u->child_regs, NFORKS);
  report(u->child_pid_flags == NFORKS, "%llu of %d children: getpid their pid, IF set, IOPL 0",
         (unsigned long long)u->child_pid_flags, NFORKS);
  report(u->child_saw == NFORKS,
         "%llu of %d children saw the parent's word, page and stack variable of their iteration",
         (unsigned long long)u->child_saw, NFORKS);
  report(u->codes_seen == NFORKS && u->waits_ok == NFORKS && u->child_ok == NFORKS,
         "%llu of %d waits returned the child's pid and exit code", (unsigned long long)u->waits_ok,
         NFORKS);
  report(u->unchanged == NFORKS,
         "%llu of %d times the parent's word, page and stack variable were unchanged after the "
         "child overwrote its copies",
         (unsigned long long)u->unchanged, NFORKS);
  report(u->wait_after == (u64)-1, "wait after the last child: %lld", (long long)u->wait_after);
  report(init_code == 0, "init exited with code %llu", (unsigned long long)init_code);
  report(forks == NFORKS && cr3_switches == 2 * NFORKS,
         "the kernel forked %llu times and switched CR3 %llu times (to each child, back to init)",
         (unsigned long long)forks, (unsigned long long)cr3_switches);
  report(max_in_use == 16 && free_count == POOL_PAGES,
         "%d pages in use at most (init and one child, 8 each) of a pool of %d, all free again",
         max_in_use, POOL_PAGES);
  return report_summary();
}
