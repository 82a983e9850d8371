/*
 * usermode: entering CPL3 through iretq, and coming back by syscall/sysret,
 * by int 0x80 and by returning; syscalls that return to user mode; and the
 * faults user code must take: a read of a supervisor page (#PF with U), a
 * write to a read-only user page, a privileged instruction (#GP).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

USER_DATA static u64 user_ro_page[PAGE_SIZE / 8] __attribute__((aligned(4096)));

static USER_TEXT u64 user_cpl(u64 arg) {
  u16 cs;
  asm volatile("mov %%cs, %0" : "=r"(cs));
  return (cs & 3) + arg;
}

static USER_TEXT u64 user_exit_by_syscall(u64 arg) {
  user_syscall(SYS_EXIT_USER, arg * 3, 0);
  return 0; /* not reached */
}

static USER_TEXT u64 user_exit_by_int80(u64 arg) {
  user_int80(SYS_EXIT_USER, arg + 7, 0);
  return 0; /* not reached */
}

/* Two calls that return to user mode, then an exit with both results. */
static USER_TEXT u64 user_echo(u64 arg) {
  u64 a = user_syscall(SYS_ECHO, arg, 1);
  u64 b = user_int80(SYS_ECHO, arg, 2);
  user_syscall(SYS_EXIT_USER, (a << 32) | b, 0);
  return 0;
}

static USER_TEXT u64 user_read(u64 addr) {
  return *(volatile u64*)addr;
}

static USER_TEXT u64 user_write(u64 addr) {
  *(volatile u64*)addr = 1;
  return 0;
}

static USER_TEXT u64 user_cli(u64 arg) {
  asm volatile("cli");
  return arg;
}

static u64 supervisor_data = 0x5a5a5a5a;

int main(void) {
  user_init();

  report(enter_user(user_cpl, 100) == 103, "user code runs at CPL3, returns by ret");
  report(enter_user(user_exit_by_syscall, 5) == 15, "leave user mode by syscall");
  report(enter_user(user_exit_by_int80, 5) == 12, "leave user mode by int 0x80");
  u64 echo = enter_user(user_echo, 40);
  report(echo == ((41ull << 32) | 42),
         "syscall/sysret and int 0x80/iretq return to user mode (%#llx)", (unsigned long long)echo);
  report(read_cs() == KERNEL_CS, "back at CPL0 with CS %#x", read_cs());

  /* A user read of a supervisor page: #PF, error code P | U (not W). */
  const u64 sup = (u64)(uintptr_t)&supervisor_data;
  struct fault f = enter_user_caught(user_read, sup);
  report(f.vector == PF_VECTOR && f.error_code == (PFERR_PRESENT | PFERR_USER) && f.cr2 == sup &&
             (f.cs & 3) == 3,
         "user read of a supervisor page: #PF error code %#llx, cr2 %#llx, cs %#llx",
         (unsigned long long)f.error_code, (unsigned long long)f.cr2, (unsigned long long)f.cs);

  /* A user write to a user read-only page: error code P | W | U. */
  const u64 ro = (u64)(uintptr_t)user_ro_page;
  vm_set_flags(ro, PAGE_SIZE, 0, PTE_W);
  report(enter_user(user_read, ro) == 0, "user read of a read-only user page");
  f = enter_user_caught(user_write, ro);
  report(f.vector == PF_VECTOR && f.error_code == (PFERR_PRESENT | PFERR_WRITE | PFERR_USER) &&
             f.cr2 == ro,
         "user write to a read-only user page: #PF error code %#llx, cr2 %#llx",
         (unsigned long long)f.error_code, (unsigned long long)f.cr2);

  /* CLI at CPL3 with IOPL 0: #GP(0). */
  f = enter_user_caught(user_cli, 0);
  report(f.vector == GP_VECTOR && f.error_code == 0 && (f.cs & 3) == 3,
         "cli at CPL3: #GP, error code %#llx", (unsigned long long)f.error_code);

  /* Still working after the faults. */
  report(enter_user(user_cpl, 0) == 3, "user mode again after the faults");

  return report_summary();
}
