/* User mode: syscall/sysret and int 0x80 setup, entering CPL3. */
#include "tests/guest/kit/user.h"

#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define USER_STACK_SIZE (16 * 1024)
#define SYSCALL_VECTOR 0x80
/* Cleared on SYSCALL: TF IF DF IOPL NT AC, as Linux does. */
#define FMASK_VALUE 0x47700ull

extern char __user_start[], __user_end[];
extern void kit_syscall_entry(void);
extern struct kit_jmp_buf kit_user_jb;
u64 kit_enter_user(user_fn fn, u64 arg, u64 user_rsp);

static u8 user_stack[USER_STACK_SIZE] USER_DATA __attribute__((aligned(16)));

u64 kit_syscall(u64 nr, u64 a0, u64 a1, u64 a2) {
  (void)a2;
  switch (nr) {
    case SYS_EXIT_USER:
      kit_longjmp(&kit_user_jb, a0);
    case SYS_ECHO:
      return a0 + a1;
    default:
      return (u64)-1;
  }
}

static void int80_handler(struct ex_regs* r) {
  r->rax = kit_syscall(r->rax, r->rdi, r->rsi, r->rdx);
}

void user_init(void) {
  wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
  wrmsr(MSR_STAR, ((u64)STAR_USER_BASE << 48) | ((u64)KERNEL_CS << 32));
  wrmsr(MSR_LSTAR, (u64)(uintptr_t)kit_syscall_entry);
  wrmsr(MSR_FMASK, FMASK_VALUE);
  handle_exception(SYSCALL_VECTOR, int80_handler);
  set_idt_dpl(SYSCALL_VECTOR, 3);
  vm_set_flags((u64)(uintptr_t)__user_start, (u64)(__user_end - __user_start), PTE_U, 0);
}

u64 enter_user(user_fn fn, u64 arg) {
  return kit_enter_user(fn, arg, (u64)(uintptr_t)(user_stack + sizeof user_stack));
}

struct fault enter_user_caught(user_fn fn, u64 arg) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    enter_user(fn, arg);
    catch_end();
  }
  return f;
}
