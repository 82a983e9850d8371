/* GDT, TSS, IDT and the C side of exception dispatch. */
#include "tests/guest/kit/desc.h"

#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

#define INT_STACK_SIZE (16 * 1024)
#define ISR_STUB_SIZE 16 /* kit/isr.S: stub i is at kit_isr_stubs + 16 * i */

extern char kit_isr_stubs[];

struct __attribute__((packed)) idt_gate {
  u16 offset0;
  u16 selector;
  u8 ist;
  u8 type_attr; /* P, DPL, type */
  u16 offset1;
  u32 offset2;
  u32 reserved;
};
_Static_assert(sizeof(struct idt_gate) == 16, "64-bit IDT gate");

static u64 gdt[KIT_GDT_ENTRIES] __attribute__((aligned(16)));
static struct idt_gate idt[256] __attribute__((aligned(16)));
struct tss64 kit_tss __attribute__((aligned(16)));
u64 kit_rsp0;
static u8 int_stack[INT_STACK_SIZE] __attribute__((aligned(16)));
static u8 df_stack[KIT_DF_STACK_SIZE] __attribute__((aligned(16)));
static exception_handler handlers[256];

/* The armed catch point (catch_begin in kit/isr.S writes these). */
struct kit_jmp_buf kit_catch_jb;
struct fault* kit_catch_fault;
int kit_catch_armed;

static void set_gate(u8 vector, u64 addr, u8 type_attr, u8 ist) {
  struct idt_gate* g = &idt[vector];
  g->offset0 = (u16)addr;
  g->selector = KERNEL_CS;
  g->ist = ist;
  g->type_attr = type_attr;
  g->offset1 = (u16)(addr >> 16);
  g->offset2 = (u32)(addr >> 32);
  g->reserved = 0;
}

void set_idt_dpl(u8 vector, int dpl) {
  idt[vector].type_attr = (u8)((idt[vector].type_attr & ~0x60) | ((dpl & 3) << 5));
}

void set_idt_type(u8 vector, enum gate_type type) {
  idt[vector].type_attr = (u8)((idt[vector].type_attr & ~0x0f) | type);
}

void set_idt_present(u8 vector, bool present) {
  idt[vector].type_attr = (u8)((idt[vector].type_attr & ~0x80) | (present ? 0x80 : 0));
}

void set_idt_ist(u8 vector, int ist) {
  idt[vector].ist = (u8)(ist & 7);
}

exception_handler handle_exception(u8 vector, exception_handler h) {
  exception_handler old = handlers[vector];
  handlers[vector] = h;
  return old;
}

void setup_descriptors(void) {
  u64 tss = (u64)(uintptr_t)&kit_tss;
  gdt[0] = 0;
  gdt[KERNEL_CS >> 3] = GDT_CODE64_DPL0;
  gdt[KERNEL_DS >> 3] = GDT_DATA_DPL0;
  /* 64-bit available TSS (type 9), limit 103 (SDM Vol. 3A §8.2.3). */
  gdt[KERNEL_TSS >> 3] = (sizeof(struct tss64) - 1) | ((tss & 0xffffff) << 16) | (0x89ull << 40) |
                         ((tss >> 24) & 0xff) << 56;
  gdt[(KERNEL_TSS >> 3) + 1] = tss >> 32;
  gdt[USER_CS32 >> 3] = GDT_CODE32_DPL3;
  gdt[USER_DS >> 3] = GDT_DATA_DPL3;
  gdt[USER_CS >> 3] = GDT_CODE64_DPL3;

  kit_rsp0 = (u64)(uintptr_t)(int_stack + sizeof int_stack);
  memset(&kit_tss, 0, sizeof kit_tss);
  kit_tss.rsp0 = kit_rsp0;
  kit_tss.ist[0] = (u64)(uintptr_t)(df_stack + sizeof df_stack);
  kit_tss.iomap_base = sizeof(struct tss64); /* no I/O bitmap: CPL3 port I/O faults */

  for (int v = 0; v < 256; v++) {
    set_gate((u8)v, (u64)(uintptr_t)(kit_isr_stubs + ISR_STUB_SIZE * v), 0x80 | GATE_INTERRUPT, 0);
  }
  idt[DF_VECTOR].ist = 1;

  struct descriptor_table_ptr gdtr = {sizeof gdt - 1, (u64)(uintptr_t)gdt};
  struct descriptor_table_ptr idtr = {sizeof idt - 1, (u64)(uintptr_t)idt};
  lgdt(&gdtr);
  /* Reload CS with a far return, then the data segments. */
  asm volatile(
      "pushq %0\n\t"
      "leaq 1f(%%rip), %%rax\n\t"
      "pushq %%rax\n\t"
      "lretq\n"
      "1:\n\t"
      "movl %1, %%eax\n\t"
      "movl %%eax, %%ds\n\t"
      "movl %%eax, %%es\n\t"
      "movl %%eax, %%ss\n\t"
      "movl %%eax, %%fs\n\t"
      "movl %%eax, %%gs"
      :
      : "i"(KERNEL_CS), "i"(KERNEL_DS)
      : "rax", "memory");
  ltr(KERNEL_TSS);
  lidt(&idtr);
}

const char* exception_mnemonic(unsigned vector) {
  static const char* const names[32] = {
      "#DE", "#DB", "NMI", "#BP", "#OF",  "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS",
      "#NP", "#SS", "#GP", "#PF", "(15)", "#MF", "#AC", "#MC", "#XM", "#VE",    "#CP",
  };
  if (vector < 32) return names[vector] ? names[vector] : "(reserved)";
  return "INT";
}

static NORETURN void unexpected(const struct ex_regs* r, u64 cr2) {
  printf(
      "FAIL: unexpected exception %llu (%s) at rip %#llx, error code %#llx, cs %#llx, cr2 %#llx\n",
      (unsigned long long)r->vector, exception_mnemonic((unsigned)r->vector),
      (unsigned long long)r->rip, (unsigned long long)r->error_code, (unsigned long long)r->cs,
      (unsigned long long)cr2);
  printf("  rax %016llx rbx %016llx rcx %016llx rdx %016llx\n", (unsigned long long)r->rax,
         (unsigned long long)r->rbx, (unsigned long long)r->rcx, (unsigned long long)r->rdx);
  printf("  rsi %016llx rdi %016llx rbp %016llx rsp %016llx\n", (unsigned long long)r->rsi,
         (unsigned long long)r->rdi, (unsigned long long)r->rbp, (unsigned long long)r->rsp);
  printf("  rflags %016llx ss %#llx\n", (unsigned long long)r->rflags, (unsigned long long)r->ss);
  exit(1);
}

/* Resume at the armed catch point, at CPL0, as a second return of
   catch_begin() with 1. */
static void catch_redirect(struct ex_regs* r, u64 cr2) {
  struct fault* f = kit_catch_fault;
  f->vector = (int)r->vector;
  f->error_code = r->error_code;
  f->rip = r->rip;
  f->cs = r->cs;
  f->cr2 = cr2;
  kit_catch_armed = 0;

  const struct kit_jmp_buf* jb = &kit_catch_jb;
  r->rbx = jb->rbx;
  r->rbp = jb->rbp;
  r->r12 = jb->r12;
  r->r13 = jb->r13;
  r->r14 = jb->r14;
  r->r15 = jb->r15;
  r->rsp = jb->rsp;
  r->rip = jb->rip;
  r->rflags = jb->rflags;
  r->cs = KERNEL_CS;
  r->ss = KERNEL_DS;
  r->rax = 1;
}

/* Called by kit/isr.S for every vector. */
void kit_interrupt(struct ex_regs* r) {
  u64 cr2 = r->vector == PF_VECTOR ? read_cr2() : 0;
  exception_handler h = handlers[r->vector];
  if (h) {
    h(r);
  } else if (r->vector < 32 && kit_catch_armed) {
    catch_redirect(r, cr2);
  } else {
    unexpected(r, cr2);
  }
}

void catch_end(void) {
  kit_catch_armed = 0;
}
