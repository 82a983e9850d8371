/*
 * smc: self-modifying and cross-modifying code on one CPU (SDM Vol. 3A
 * §10.6 "Self-Modifying Code"). A store to an instruction that follows the
 * store takes effect when that instruction executes, also inside the block
 * that is running and in the same loop iteration; code rewritten by code on
 * another page, by a string instruction, or through another virtual alias
 * of the same physical page runs in its new form (for an alias the SDM asks
 * for a serializing instruction first: CPUID here); a function patched
 * Linux's text_poke_bp way (int3 first, then the tail, then the first byte)
 * runs its old, trapped or new form at every step, never a mix.
 *
 * The kernel's text is writable: the kit's identity map (2 MiB pages, RW,
 * no NX) covers it.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define ALIAS_VA 0xffffff8040000000ull /* PML4 slot 511: 4 KiB aliases of code pages */
#define LOOP_LIMIT 100000

asm(".pushsection .text\n"
    /* u32 smc_next(u32 v): patches the immediate of the very next
       instruction with v (mov $imm32, %eax is b8 imm32). */
    "smc_next:\n"
    "  movl %edi, smc_next_insn+1(%rip)\n"
    "smc_next_insn:\n"
    "  movl $0x11111111, %eax\n"
    "  ret\n"

    /* u32 smc_later(u32 v): the patched instruction comes three
       instructions after the store, in the same straight-line code. */
    "smc_later:\n"
    "  movl %edi, smc_later_insn+1(%rip)\n"
    "  movl %edi, %ecx\n"
    "  addl $1, %ecx\n"
    "  xorl %edx, %edx\n"
    "smc_later_insn:\n"
    "  movl $0x22222222, %eax\n"
    "  ret\n"

    /* u32 smc_loop(u32 n): for i = n..1, store i into the immediate of the
       add that follows, then add it: returns n(n+1)/2 only if every
       iteration runs its own patched add. (05 imm32: add $imm32, %eax.) */
    "smc_loop:\n"
    "  xorl %eax, %eax\n"
    "  movl %edi, %ecx\n"
    "1:\n"
    "  movl %ecx, smc_loop_add+1(%rip)\n"
    "smc_loop_add:\n"
    "  .byte 0x05\n"
    "  .long 0\n"
    "  decl %ecx\n"
    "  jnz 1b\n"
    "  ret\n"

    /* u32 smc_exit_loop(u32 stop): counts iterations; in iteration `stop`
       the loop overwrites its own backward jump (later in the same block)
       with two NOPs and so leaves in that very iteration. Returns the
       count, or LOOP_LIMIT if the patched jump kept running. The caller
       restores the jump (eb xx) before each call. */
    "smc_exit_loop:\n"
    "  xorl %eax, %eax\n"
    "1:\n"
    "  incl %eax\n"
    "  cmpl $100000, %eax\n" /* LOOP_LIMIT */
    "  jae 3f\n"
    "  cmpl %edi, %eax\n"
    "  jne 2f\n"
    "  movw $0x9090, smc_exit_jmp(%rip)\n"
    "2:\n"
    "  nop\n"
    "smc_exit_jmp:\n"
    "  jmp 1b\n"
    "3:\n"
    "  ret\n"

    /* u32 smc_ret_site(u32 v): the callee patches the instruction its
       return lands on. */
    "smc_ret_site:\n"
    "  call smc_patch_ret_site\n"
    "smc_ret_site_insn:\n"
    "  movl $0x33333333, %eax\n"
    "  ret\n"
    "smc_patch_ret_site:\n"
    "  movl %edi, smc_ret_site_insn+1(%rip)\n"
    "  ret\n"

    ".popsection\n");

/* Two pages of code: a function at the start of the first, and one whose
   mov $imm32 straddles the page boundary (b8 at 0xffd, the immediate at
   0xffe..0x1001). Called through function pointers. */
asm(".pushsection .text.smc_pages, \"ax\"\n"
    ".p2align 12\n"
    "smc_page0:\n"
    "  movl $0x44444444, %eax\n"
    "  ret\n"
    ".org smc_page0 + 0xffd, 0xcc\n"
    "smc_straddle:\n"
    "  movl $0x55555555, %eax\n"
    "  ret\n"
    ".org smc_page0 + 0x2000, 0xcc\n"

    /* The text_poke_bp victim, its replacement, and the jump target. */
    ".p2align 12\n"
    "smc_victim_page:\n"
    "smc_victim:\n"
    "  movl $1, %eax\n"
    "  ret\n"
    "  .p2align 4, 0xcc\n"
    "smc_replacement:\n"
    "  movl $2, %eax\n"
    "  ret\n"
    "  .p2align 4, 0xcc\n"

    /* A function body rewritten as a whole, and two templates for it:
       u64 f(u64 x) = 3x + 1 and 5x + 2 (position-independent). */
    "smc_body:\n"
    "  .fill 64, 1, 0xcc\n"
    "smc_tpl_a:\n"
    "  leaq 1(%rdi, %rdi, 2), %rax\n"
    "  ret\n"
    "smc_tpl_a_end:\n"
    "smc_tpl_b:\n"
    "  leaq (%rdi, %rdi, 4), %rax\n"
    "  addq $2, %rax\n"
    "  ret\n"
    "smc_tpl_b_end:\n"
    ".org smc_victim_page + 0x1000, 0xcc\n"
    ".popsection\n");

u32 smc_next(u32 v), smc_later(u32 v), smc_loop(u32 n), smc_exit_loop(u32 stop);
u32 smc_ret_site(u32 v);
extern char smc_exit_jmp[];
extern char smc_page0[], smc_straddle[], smc_victim_page[], smc_victim[], smc_replacement[];
extern char smc_body[], smc_tpl_a[], smc_tpl_a_end[], smc_tpl_b[], smc_tpl_b_end[];

typedef u32 (*u32_fn)(void);
typedef u64 (*u64_fn)(u64);

static void serialize(void) {
  u32 a = 0, b, c = 0, d;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");
}

static u32 call_at(u64 va) {
  return ((u32_fn)(uintptr_t)va)();
}

static void poke32(u64 va, u32 v) {
  *(volatile u32*)(uintptr_t)va = v;
}

/* Copies n bytes with `rep movsb` (the only instruction that writes). */
static void rep_movsb(void* dst, const void* src, u64 n) {
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* text_poke_bp's int3 handler: a call that hits the int3 at the victim
   runs the new instruction (a jump to the replacement) instead. */
static volatile int int3_hits;
static void poke_int3_handler(struct ex_regs* r) {
  if (r->rip - 1 == (u64)(uintptr_t)smc_victim) {
    int3_hits++;
    r->rip = (u64)(uintptr_t)smc_replacement;
  } else {
    panic("unexpected int3 at %#llx", (unsigned long long)r->rip - 1);
  }
}

/* Writes len bytes at addr (code) through the alias at alias + offset, as
   text_poke writes through a temporary mapping, then serializes. */
static void text_poke(u64 alias, u64 addr, const u8* bytes, int len) {
  volatile u8* p = (volatile u8*)(uintptr_t)(alias + (addr & (PAGE_SIZE - 1)));
  for (int i = 0; i < len; i++) p[i] = bytes[i];
  serialize();
}

static void text_poke_bp(u64 alias, u64 addr, const u8* insn, int len, u32* during) {
  const u8 int3 = 0xcc;
  text_poke(alias, addr, &int3, 1);
  during[0] = call_at(addr);
  if (len > 1) text_poke(alias, addr + 1, insn + 1, len - 1);
  during[1] = call_at(addr);
  text_poke(alias, addr, insn, 1);
}

int main(void) {
  vm_init();

  /* The next instruction, and one a few instructions later. */
  u32 a = smc_next(0x2a), b = smc_next(0x55);
  report(a == 0x2a && b == 0x55, "store to the next instruction's immediate: %#x, %#x", a, b);
  a = smc_later(0x1234), b = smc_later(0x5678);
  report(a == 0x1234 && b == 0x5678, "store to an instruction three further on: %#x, %#x", a, b);

  /* A loop that patches an instruction ahead of it in its own body. */
  a = smc_loop(100);
  b = smc_loop(10);
  report(a == 5050 && b == 55, "loop patching its own add each iteration: %u (5050), %u (55)", a,
         b);

  /* A loop that patches its own backward jump away. */
  const u16 jmp_bytes = *(volatile u16*)smc_exit_jmp;
  a = smc_exit_loop(5);
  *(volatile u16*)smc_exit_jmp = jmp_bytes;
  b = smc_exit_loop(300);
  *(volatile u16*)smc_exit_jmp = jmp_bytes;
  report(a == 5 && b == 300,
         "loop overwriting its own jmp leaves in that iteration: %u (5), %u (300)", a, b);

  /* The instruction a return lands on, patched by the callee. */
  a = smc_ret_site(0x77);
  b = smc_ret_site(0x88);
  report(a == 0x77 && b == 0x88, "callee patches its return site: %#x, %#x", a, b);

  /* Code on another page, rewritten from here, then called. */
  const u64 page0 = (u64)(uintptr_t)smc_page0;
  bool ok = true;
  for (u32 i = 0; i < 4; i++) {
    poke32(page0 + 1, 0x1000 + i);
    u32 r = call_at(page0);
    if (r != 0x1000 + i) {
      ok = false;
      report_info("round %u returned %#x", i, r);
    }
  }
  report(ok, "function on another page rewritten and called (4 rounds)");

  /* An instruction that straddles two pages: patch its bytes in each. */
  const u64 straddle = (u64)(uintptr_t)smc_straddle;
  report(((straddle + 1) & (PAGE_SIZE - 1)) == 0xffe, "the straddling mov starts at 0xffd");
  a = call_at(straddle);
  *(volatile u8*)(uintptr_t)(straddle + 4) = 0x66; /* in the second page */
  b = call_at(straddle);
  *(volatile u8*)(uintptr_t)(straddle + 1) = 0x77; /* in the first page */
  u32 c = call_at(straddle);
  report(a == 0x55555555 && b == 0x66555555 && c == 0x66555577,
         "instruction across a page boundary, patched in either page: %#x %#x %#x", a, b, c);

  /* Written by a string instruction. */
  u32 v = 0xabcd0123;
  rep_movsb(smc_page0 + 1, &v, 4);
  a = call_at(page0);
  v = 0x0badf00d;
  rep_movsb(smc_page0 + 1, &v, 4);
  b = call_at(page0);
  report(a == 0xabcd0123 && b == 0x0badf00d, "code written by rep movsb: %#x, %#x", a, b);

  /* Another virtual name for the same physical page. */
  vm_map(ALIAS_VA, page0, PTE_P | PTE_W);
  poke32(page0 + 1, 0x600d);
  a = call_at(page0);
  poke32(ALIAS_VA + 1, 0x5eed);
  serialize();
  b = call_at(page0);
  report(a == 0x600d && b == 0x5eed, "written through an alias, run at identity: %#x, %#x", a, b);
  a = call_at(ALIAS_VA);
  poke32(page0 + 1, 0xa11a5);
  serialize();
  b = call_at(ALIAS_VA);
  report(a == 0x5eed && b == 0xa11a5, "written at identity, run through the alias: %#x, %#x", a, b);
  vm_unmap(ALIAS_VA);

  /* A whole function body replaced. */
  const u64 body = (u64)(uintptr_t)smc_body;
  memcpy(smc_body, smc_tpl_a, (size_t)(smc_tpl_a_end - smc_tpl_a));
  u64 ra = ((u64_fn)(uintptr_t)body)(10);
  memcpy(smc_body, smc_tpl_b, (size_t)(smc_tpl_b_end - smc_tpl_b));
  u64 rb = ((u64_fn)(uintptr_t)body)(10);
  memcpy(smc_body, smc_tpl_a, (size_t)(smc_tpl_a_end - smc_tpl_a));
  u64 rc = ((u64_fn)(uintptr_t)body)(10);
  report(ra == 31 && rb == 52 && rc == 31, "function body replaced twice: %llu %llu %llu",
         (unsigned long long)ra, (unsigned long long)rb, (unsigned long long)rc);

  /* text_poke_bp: `mov $1, %eax` (5 bytes) becomes `jmp smc_replacement`
     and back, written through an alias of the page. */
  handle_exception(BP_VECTOR, poke_int3_handler);
  const u64 victim = (u64)(uintptr_t)smc_victim;
  vm_map(ALIAS_VA, (u64)(uintptr_t)smc_victim_page, PTE_P | PTE_W);
  u8 old_insn[5], jmp_insn[5];
  for (int i = 0; i < 5; i++) old_insn[i] = ((volatile u8*)smc_victim)[i];
  s32 rel = (s32)((u64)(uintptr_t)smc_replacement - (victim + 5));
  jmp_insn[0] = 0xe9;
  memcpy(jmp_insn + 1, &rel, 4);
  u32 before = call_at(victim);
  u32 during[2];
  text_poke_bp(ALIAS_VA, victim, jmp_insn, 5, during);
  u32 after = call_at(victim);
  int hits = int3_hits;
  report(before == 1 && during[0] == 2 && during[1] == 2 && after == 2 && hits == 2,
         "text_poke_bp to a jump: before %u, int3 steps %u %u, after %u, %d int3 hits", before,
         during[0], during[1], after, hits);
  text_poke_bp(ALIAS_VA, victim, old_insn, 5, during);
  after = call_at(victim);
  report(during[0] == 2 && during[1] == 2 && after == 1 && int3_hits == 4,
         "text_poke_bp back: int3 steps %u %u, after %u, %d int3 hits", during[0], during[1], after,
         int3_hits);
  vm_unmap(ALIAS_VA);
  handle_exception(BP_VECTOR, NULL);

  return report_summary();
}
