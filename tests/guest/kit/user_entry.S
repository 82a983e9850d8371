/*
 * The way into user mode (iretq) and back (the SYSCALL entry; int 0x80 goes
 * through kit/isr.S). kit/user.c is the C side.
 */
#include "tests/guest/kit/layout.h"

	.text
/* u64 kit_enter_user(u64 (*fn)(u64), u64 arg, u64 user_rsp): runs fn(arg) at
   CPL3 with interrupts off; returns when the user code leaves by
   SYS_EXIT_USER (kit_syscall longjmps to kit_user_jb) or returns from fn
   (into kit_user_return, which makes that syscall). */
	.globl kit_enter_user
kit_enter_user:
	leaq kit_user_jb(%rip), %rax
	movq %rbx, JB_RBX(%rax)
	movq %rbp, JB_RBP(%rax)
	movq %r12, JB_R12(%rax)
	movq %r13, JB_R13(%rax)
	movq %r14, JB_R14(%rax)
	movq %r15, JB_R15(%rax)
	leaq 8(%rsp), %rcx
	movq %rcx, JB_RSP(%rax)
	movq (%rsp), %rcx
	movq %rcx, JB_RIP(%rax)
	pushfq
	popq JB_RFLAGS(%rax)

	/* fn is entered as if called from kit_user_return (the 16-byte ABI
	   alignment holds: RSP + 8 is aligned at the first instruction). */
	andq $-16, %rdx
	subq $8, %rdx
	leaq kit_user_return(%rip), %rcx
	movq %rcx, (%rdx)
	pushq $USER_DS
	pushq %rdx
	pushq kit_user_rflags(%rip)
	pushq $USER_CS
	pushq %rdi
	movq %rsi, %rdi
	xorl %eax, %eax
	xorl %ebx, %ebx
	xorl %ecx, %ecx
	xorl %edx, %edx
	xorl %esi, %esi
	xorl %ebp, %ebp
	xorl %r8d, %r8d
	xorl %r9d, %r9d
	xorl %r10d, %r10d
	xorl %r11d, %r11d
	xorl %r12d, %r12d
	xorl %r13d, %r13d
	xorl %r14d, %r14d
	xorl %r15d, %r15d
	iretq

/* SYSCALL entry (LSTAR): RCX = user RIP, R11 = user RFLAGS, RSP still the
   user's (SDM Vol. 2B, SYSCALL). Arguments RAX = number, RDI, RSI, RDX; all
   registers but RAX, RCX and R11 are preserved. */
	.globl kit_syscall_entry
kit_syscall_entry:
	movq %rsp, kit_user_rsp(%rip)
	movq kit_rsp0(%rip), %rsp
	pushq kit_user_rsp(%rip)
	pushq %rcx
	pushq %r11
	pushq %rdi
	pushq %rsi
	pushq %rdx
	pushq %r8
	pushq %r9
	pushq %r10
	subq $8, %rsp          /* 9 pushes: realign to 16 for the call */
	movq %rdx, %rcx
	movq %rsi, %rdx
	movq %rdi, %rsi
	movq %rax, %rdi
	call kit_syscall       /* u64 kit_syscall(u64 nr, u64 a0, u64 a1, u64 a2) */
	addq $8, %rsp
	popq %r10
	popq %r9
	popq %r8
	popq %rdx
	popq %rsi
	popq %rdi
	popq %r11
	popq %rcx
	popq %rsp
	sysretq

	.section .user.text, "ax"
	.globl kit_user_return
kit_user_return:
	movq %rax, %rdi
	movl $SYS_EXIT_USER, %eax
	syscall
	ud2

	.data
	.p2align 3
	.globl kit_user_rflags
kit_user_rflags:
	.quad 0x2              /* RFLAGS for user mode (bit 1 is always set) */

	.bss
	.p2align 4
	.globl kit_user_jb
kit_user_jb:
	.skip JB_SIZE
	.p2align 3
kit_user_rsp:
	.skip 8


	.section .note.GNU-stack, "", @progbits
