/*
 * User mode (CPL3) for tests.
 *
 * Code that runs at CPL3 goes in the .user section (USER_TEXT functions,
 * USER_DATA objects), whose pages user_init() makes user-accessible; all
 * other kit memory stays supervisor-only. USER_TEXT code must call nothing
 * outside .user and read no .rodata (string literals!): inline functions
 * below are fine.
 *
 * enter_user(fn, arg) runs fn(arg) at CPL3 on the kit's user stack (through
 * iretq) and returns when the user code calls SYS_EXIT_USER, by `syscall`
 * or `int $0x80`, or returns from fn: the value is the exit argument or
 * fn's return value. Exceptions at CPL3 go to handlers or a catch point
 * (kit/desc.h) as at CPL0, on the TSS.RSP0 stack.
 */
#pragma once

#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/layout.h"
#include "tests/guest/kit/types.h"

#define USER_TEXT __attribute__((section(".user.text"), noinline, used))
#define USER_DATA __attribute__((section(".user.data")))

/* Sets EFER.SCE, STAR, LSTAR, FMASK (IF TF DF AC NT IOPL cleared), an
   `int $0x80` gate with DPL 3, and the U bit on the .user pages (this
   builds the kit's page tables, kit/vm.h). */
void user_init(void);

typedef u64 (*user_fn)(u64 arg);
u64 enter_user(user_fn fn, u64 arg);
/* enter_user(fn, arg) with the exception it raises caught (kit/desc.h,
   catch_begin): vector FAULT_NONE if it returned. */
struct fault enter_user_caught(user_fn fn, u64 arg);
/* RFLAGS the user code starts with (default 0x2: interrupts off). */
extern u64 kit_user_rflags;

static inline __attribute__((always_inline)) u64 user_syscall(u64 nr, u64 a0, u64 a1) {
  u64 ret;
  asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1) : "rcx", "r11", "memory");
  return ret;
}

static inline __attribute__((always_inline)) u64 user_int80(u64 nr, u64 a0, u64 a1) {
  u64 ret;
  asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1) : "memory");
  return ret;
}

/* The kernel side of both entries (kit/user.c). */
u64 kit_syscall(u64 nr, u64 a0, u64 a1, u64 a2);
