/*
 * pushmem: push with a memory operand (SDM Vol. 2 PUSH, 64-bit mode). The
 * source's address is computed before RSP is decremented (push [rsp+8]
 * pushes what was 8 bytes above the old top); a segment override adds
 * the FS/GS base; the source is read, then the value stored at RSP - 8.
 * A fault on either access happens before anything changes: a #PF on
 * the source with CR2 at the source and a read's error code, a #PF on the
 * stack with CR2 at RSP - 8 and a write's. (btvm translates push m64
 * inline in 64-bit code.)
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define MSR_GS_BASE 0xc0000101u
#define UNMAPPED 0x6000000000ull /* nothing maps it (the kit maps the low 4 GiB) */

static u64 words[4] = {0x1111, 0x2222, 0x3333, 0x4444};
USER_DATA static u64 user_words[2] = {0x5555, 0x6666};

/* push [rsp+8] after pushing two markers: the value 8 above the top. */
static u64 push_rsp_relative(void) {
  u64 out;
  asm volatile(
      "pushq $0xa1\n"
      "pushq $0xa2\n"
      "pushq 8(%%rsp)\n" /* pushes 0xa1 */
      "popq %0\n"
      "addq $16, %%rsp\n"
      : "=r"(out) : : "memory");
  return out;
}

static USER_TEXT u64 user_push(u64 addr) {
  u64 out;
  asm volatile("pushq (%1)\n popq %0" : "=r"(out) : "r"(addr) : "memory");
  return out;
}

/* push onto a stack whose page is not mapped. */
static USER_TEXT u64 user_push_unmapped_stack(u64 top) {
  u64 v = (u64)(uintptr_t)user_words;
  asm volatile(
      "movq %%rsp, %%r12\n"
      "movq %0, %%rsp\n"
      "pushq (%1)\n"
      "movq %%r12, %%rsp\n"
      : : "r"(top), "r"(v) : "r12", "memory");
  return 0;
}

int main(void) {
  pic_init();
  user_init();
  kit_user_rflags = 0x202;

  report(push_rsp_relative() == 0xa1, "push [rsp+8] reads at the RSP before the push");

  u64 a, b;
  asm volatile("pushq words+8(%%rip)\n popq %0\n"
               "movq $words, %%rax\n pushq 16(%%rax)\n popq %1"
               : "=r"(a), "=r"(b) : : "rax", "memory");
  report(a == 0x2222 && b == 0x3333, "push of a RIP-relative and of a base+disp operand");

  wrmsr(MSR_GS_BASE, (u64)(uintptr_t)words);
  asm volatile("pushq %%gs:24\n popq %0" : "=r"(a) : : "memory");
  report(a == 0x4444, "push gs:[24] reads at the GS base + 24");

  report(enter_user(user_push, (u64)(uintptr_t)&user_words[1]) == 0x6666, "push [reg] at CPL 3");

  struct fault f = enter_user_caught(user_push, UNMAPPED);
  report(f.vector == PF_VECTOR && f.cr2 == UNMAPPED && f.error_code == PFERR_USER,
         "push from an unmapped page: #PF %#llx at the source", (unsigned long long)f.error_code);

  f = enter_user_caught(user_push_unmapped_stack, UNMAPPED + 0x1000);
  report(f.vector == PF_VECTOR && f.cr2 == UNMAPPED + 0x1000 - 8 &&
             f.error_code == (PFERR_USER | PFERR_WRITE),
         "push onto an unmapped stack: #PF %#llx at RSP - 8", (unsigned long long)f.error_code);
  return report_summary();
}
