/*
 * The robustness kernels' common part (each kernel is one .c file that
 * includes this header once).
 *
 * - An IDT of its own in which every vector uses IST2, so an exception is
 *   delivered on a good stack whatever RSP the code under test left. The
 *   entry stub switches back to the kernel's CR3 (the code under test may
 *   run in a sandbox address space), records the exception in robust_last
 *   and longjmps to the armed trial (robust_jb), at CPL 0.
 * - robust_enter(): loads every GPR and CR3 from a struct and enters code
 *   at CPL 0 or 3 through iretq.
 * - robust_restore(): puts back what code under test may have changed
 *   (segment registers, descriptor tables, CR0, CR4, CR8, DR7).
 * - pt_map(): 4 KiB mappings in any 4-level table tree, from a pool.
 * - A seeded xorshift generator.
 */
#pragma once

#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define ROBUST_IST 2                /* the IST slot every gate uses */
#define ROBUST_STACK_SIZE (16 * 1024)

/* What the last exception was: the CPU's frame and CR2. */
struct robust_trap {
  u64 vector, error_code, rip, cs, rflags, rsp, ss, cr2;
};

/* What robust_enter() loads. Field offsets are used by the assembly below. */
struct robust_ctx {
  u64 gpr[16]; /* rax rcx rdx rbx rsp(ignored) rbp rsi rdi r8..r15 */
  u64 rip, cs, rflags, rsp, ss;
  u64 cr3; /* 0: keep */
};
_Static_assert(__builtin_offsetof(struct robust_ctx, rip) == 128, "robust_enter");
_Static_assert(__builtin_offsetof(struct robust_ctx, cr3) == 168, "robust_enter");

struct robust_trap robust_last;
struct kit_jmp_buf robust_jb;
int robust_armed;
u64 robust_kernel_cr3;
static u8 robust_stack[ROBUST_STACK_SIZE] __attribute__((aligned(4096)));

NORETURN void robust_enter(const struct robust_ctx* c);
extern char robust_isr_stubs[];

/* ---- Entry stubs: 16 bytes apart, as in kit/isr.S. ---------------------- */
asm(".text\n"
    ".p2align 4\n"
    ".globl robust_isr_stubs\n"
    "robust_isr_stubs:\n"
    ".set vec, 0\n"
    ".rept 256\n"
    ".p2align 4\n"
    ".if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || "
    "(vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)\n"
    ".else\n"
    "pushq $0\n"
    ".endif\n"
    "pushq $vec\n"
    "jmp robust_isr_common\n"
    ".set vec, vec + 1\n"
    ".endr\n"
    /* Stack: vector, error code, then the CPU's frame (rip cs rflags rsp ss). */
    "robust_isr_common:\n"
    "pushq %rax\n"
    "movq robust_kernel_cr3(%rip), %rax\n"
    "movq %rax, %cr3\n"
    "movl $0x10, %eax\n" /* KERNEL_DS */
    "movl %eax, %ds\n"
    "movl %eax, %es\n"
    "movl %eax, %ss\n"
    "movq %cr2, %rax\n"
    "movq %rax, robust_last+56(%rip)\n"
    "leaq 8(%rsp), %rdi\n"
    "cld\n"
    "call robust_trap\n"
    "ud2\n"

    /* void robust_enter(const struct robust_ctx* c) */
    ".globl robust_enter\n"
    "robust_enter:\n"
    "pushq 160(%rdi)\n" /* ss */
    "pushq 152(%rdi)\n" /* rsp */
    "pushq 144(%rdi)\n" /* rflags */
    "pushq 136(%rdi)\n" /* cs */
    "pushq 128(%rdi)\n" /* rip */
    "movq 168(%rdi), %rax\n"
    "testq %rax, %rax\n"
    "jz 1f\n"
    "movq %rax, %cr3\n"
    "1:\n"
    "movq 0(%rdi), %rax\n"
    "movq 8(%rdi), %rcx\n"
    "movq 16(%rdi), %rdx\n"
    "movq 24(%rdi), %rbx\n"
    "movq 40(%rdi), %rbp\n"
    "movq 48(%rdi), %rsi\n"
    "movq 64(%rdi), %r8\n"
    "movq 72(%rdi), %r9\n"
    "movq 80(%rdi), %r10\n"
    "movq 88(%rdi), %r11\n"
    "movq 96(%rdi), %r12\n"
    "movq 104(%rdi), %r13\n"
    "movq 112(%rdi), %r14\n"
    "movq 120(%rdi), %r15\n"
    "movq 56(%rdi), %rdi\n"
    "iretq\n");

/* Called by robust_isr_common with the frame: vector, error code, rip, cs,
   rflags, rsp, ss. */
NORETURN void robust_trap(const u64* f);
void robust_trap(const u64* f) {
  robust_last.vector = f[0];
  robust_last.error_code = f[1];
  robust_last.rip = f[2];
  robust_last.cs = f[3];
  robust_last.rflags = f[4];
  robust_last.rsp = f[5];
  robust_last.ss = f[6];
  if (!robust_armed) {
    printf("FAIL: exception %llu outside a trial at rip %#llx, error code %#llx\n",
           (unsigned long long)f[0], (unsigned long long)f[2], (unsigned long long)f[1]);
    exit(1);
  }
  robust_armed = 0;
  kit_longjmp(&robust_jb, 1);
}

struct __attribute__((packed)) robust_gate {
  u16 offset0, selector;
  u8 ist, type_attr;
  u16 offset1;
  u32 offset2, reserved;
};
static struct robust_gate robust_idt[256] __attribute__((aligned(16)));
static struct descriptor_table_ptr robust_gdtr, robust_idtr;
static u64 robust_cr0, robust_cr4;

/* Masks every PIC line, installs the IDT (every gate DPL 0, so int n from
   CPL 3 is #GP) and records the state robust_restore() puts back. Call
   after vm_init(). */
static void robust_init(void) {
  /* No interrupts: under QEMU the firmware leaves the PIT running, and an
     sti in code under test would take its IRQ 0 as vector 8. */
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  kit_tss.ist[ROBUST_IST - 1] = (u64)(uintptr_t)(robust_stack + sizeof robust_stack);
  for (int v = 0; v < 256; v++) {
    u64 a = (u64)(uintptr_t)(robust_isr_stubs + 16 * v);
    robust_idt[v] = (struct robust_gate){(u16)a, KERNEL_CS, ROBUST_IST, 0x8e, (u16)(a >> 16),
                                         (u32)(a >> 32), 0};
  }
  robust_idtr = (struct descriptor_table_ptr){sizeof robust_idt - 1, (u64)(uintptr_t)robust_idt};
  lidt(&robust_idtr);
  sgdt(&robust_gdtr);
  robust_cr0 = read_cr0();
  robust_cr4 = read_cr4();
  robust_kernel_cr3 = read_cr3();
}

/* After a trial: what code under test may have changed. */
static void robust_restore(void) {
  write_cr3(robust_kernel_cr3);
  lgdt(&robust_gdtr);
  lidt(&robust_idtr);
  write_cr0(robust_cr0);
  write_cr4(robust_cr4);
  asm volatile(
      "movl %0, %%eax\n\t"
      "movl %%eax, %%ds\n\t"
      "movl %%eax, %%es\n\t"
      "movl %%eax, %%ss\n\t"
      "movl %%eax, %%fs\n\t"
      "movl %%eax, %%gs\n\t"
      "xorl %%eax, %%eax\n\t"
      "movq %%rax, %%cr8\n\t"
      "movq $0x400, %%rax\n\t"
      "movq %%rax, %%db7"
      :
      : "i"(KERNEL_DS)
      : "rax", "memory");
}

/* ---- Page tables ------------------------------------------------------- */
#define ROBUST_POOL_PAGES 96
static u8 robust_pool[ROBUST_POOL_PAGES][4096] __attribute__((aligned(4096)));
static int robust_pool_used;

static u64* robust_page(void) {
  if (robust_pool_used == ROBUST_POOL_PAGES) panic("robust: page pool empty");
  u64* p = (u64*)robust_pool[robust_pool_used++];
  memset(p, 0, 4096);
  return p;
}

/* The PTE for va in the tree at root (identity-mapped tables), creating
   tables (present, writable, user) as needed. No 2 MiB pages on the way. */
static volatile u64* pt_pte(u64 root, u64 va) {
  volatile u64* table = (volatile u64*)(uintptr_t)root;
  for (int level = 4; level > 1; level--) {
    volatile u64* e = &table[(va >> (12 + 9 * (level - 1))) & 511];
    if (!(*e & PTE_P)) *e = (u64)(uintptr_t)robust_page() | PTE_P | PTE_W | PTE_U;
    if (*e & PTE_PS) panic("robust: pt_pte through a large page at %#llx", (unsigned long long)va);
    table = (volatile u64*)(uintptr_t)(*e & PTE_ADDR);
  }
  return &table[(va >> 12) & 511];
}

__attribute__((unused)) static void pt_map(u64 root, u64 va, u64 pa, u64 flags) {
  *pt_pte(root, va) = (pa & PTE_ADDR) | flags;
  if (root == read_cr3()) invlpg((void*)(uintptr_t)va);
}

/* ---- Random numbers ---------------------------------------------------- */
static u64 rng_state;
static u64 rng_next(void) {
  u64 x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 0x2545f4914f6cdd1dull;
}

/* Fills [p, p + n) with random bytes, replacing by nop the bytes that could
   loop forever (short jumps and loops, which can go backwards: a guest
   without a timer cannot stop them) and, for `kernel` code, those that end
   a run for reasons that say nothing about btvm (hlt; out and outs, which
   may reach isa-debug-exit or the reset line). */
__attribute__((unused)) static void robust_random_bytes(u8* p, u64 n, bool kernel) {
  for (u64 i = 0; i < n; i++) {
    u8 b = (u8)rng_next();
    bool loop = (b >= 0x70 && b <= 0x7f) || b == 0xeb || (b >= 0xe0 && b <= 0xe3);
    bool ends = kernel && (b == 0xf4 || b == 0xe6 || b == 0xe7 || b == 0xee || b == 0xef ||
                           b == 0x6e || b == 0x6f);
    p[i] = (loop || ends) ? 0x90 : b;
  }
}
