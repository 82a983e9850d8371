/*
 * Constants shared by the kit's assembly and C: segment selectors (the same
 * as btvm's entry contract for 0x08..0x18, then the user segments), the
 * descriptors, stack sizes and the kit's syscall numbers.
 */
#pragma once

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define BOOT_TSS 0x18   /* the entry contract's TR, in the boot GDT (boot.S) */
/* The kit's own GDT (desc.c) puts the user segments where Linux does, so
   that user code can run in btvm's direct engine, whose child shows the
   host's selectors (runtime/direct/user_child.h, RunsAsIs). */
#define USER_CS32 0x20  /* compatibility-mode code, DPL 3 (0x23 with RPL 3) */
#define USER_DS 0x2b    /* 0x28 | RPL 3 */
#define USER_CS 0x33    /* 0x30 | RPL 3 */
#define KERNEL_TSS 0x38 /* 16 bytes: 0x38 and 0x40 */
#define KIT_GDT_ENTRIES 9 /* tests that add descriptors put them from 0x48 on */

/* STAR[63:48]: SYSRET loads CS = this + 16 and SS = this + 8 (SDM Vol. 2B, SYSRET). */
#define STAR_USER_BASE (USER_CS32 | 3)

#define GDT_CODE64_DPL0 0x00af9b000000ffff /* G L P S type=0xb (as btvm's boot GDT) */
#define GDT_DATA_DPL0 0x00cf93000000ffff   /* G DB P S type=0x3 */
#define GDT_CODE32_DPL3 0x00cffb000000ffff
#define GDT_DATA_DPL3 0x00cff3000000ffff
#define GDT_CODE64_DPL3 0x00affb000000ffff

#define KIT_STACK_SIZE (64 * 1024) /* the main kernel stack (.bss) */

/* Syscall numbers of the kit (RAX, by `syscall` or `int $0x80`). */
#define SYS_EXIT_USER 0 /* leave user mode: enter_user() returns RDI */
#define SYS_ECHO 1      /* returns RDI + RSI; checks that arguments arrive */

/* struct kit_jmp_buf (kit/desc.h): offsets used by kit/isr.S. */
#define JB_RBX 0
#define JB_RBP 8
#define JB_R12 16
#define JB_R13 24
#define JB_R14 32
#define JB_R15 40
#define JB_RSP 48
#define JB_RIP 56
#define JB_RFLAGS 64
#define JB_SIZE 72
