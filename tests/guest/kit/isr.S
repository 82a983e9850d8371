/*
 * Interrupt entry stubs, and setjmp/longjmp for catching exceptions.
 */
#include "tests/guest/kit/layout.h"

/* ---- 256 interrupt stubs, 16 bytes apart (kit/desc.c relies on it) ------ */
	.text
	.p2align 4
	.globl kit_isr_stubs
kit_isr_stubs:
	.set vec, 0
	.rept 256
	.p2align 4
	/* Vectors with a CPU-pushed error code (SDM Vol. 3A §6.15): #DF #TS #NP
	   #SS #GP #PF #AC #CP #VC #SX. The others push a 0 in its place. */
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr
	/* Each stub takes at most 2 + 5 + 5 bytes, so .p2align 4 puts them
	   exactly 16 bytes apart. */

/* The frame is struct ex_regs (kit/desc.h). At entry RSP was aligned to 16
   by the CPU before its 5 pushes; error code + vector + 15 registers keep a
   call-aligned stack. */
isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	cld
	movq %rsp, %rdi
	call kit_interrupt
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp         /* vector, error code */
	iretq

/* ---- setjmp / longjmp ---------------------------------------------------- */
/* int kit_setjmp(struct kit_jmp_buf* jb) */
	.globl kit_setjmp
kit_setjmp:
	movq %rbx, JB_RBX(%rdi)
	movq %rbp, JB_RBP(%rdi)
	movq %r12, JB_R12(%rdi)
	movq %r13, JB_R13(%rdi)
	movq %r14, JB_R14(%rdi)
	movq %r15, JB_R15(%rdi)
	leaq 8(%rsp), %rax
	movq %rax, JB_RSP(%rdi)
	movq (%rsp), %rax
	movq %rax, JB_RIP(%rdi)
	pushfq
	popq JB_RFLAGS(%rdi)
	xorl %eax, %eax
	ret

/* void kit_longjmp(const struct kit_jmp_buf* jb, u64 value): kit_setjmp
   returns `value` (at CPL0 on the saved stack). */
	.globl kit_longjmp
kit_longjmp:
	movq JB_RBX(%rdi), %rbx
	movq JB_RBP(%rdi), %rbp
	movq JB_R12(%rdi), %r12
	movq JB_R13(%rdi), %r13
	movq JB_R14(%rdi), %r14
	movq JB_R15(%rdi), %r15
	movq JB_RSP(%rdi), %rsp
	pushq JB_RFLAGS(%rdi)
	popfq
	movq %rsi, %rax
	jmp *JB_RIP(%rdi)

/* int catch_begin(struct fault* f): see kit/desc.h. A tail jump, so that
   kit_setjmp saves the caller's context. */
	.globl catch_begin
catch_begin:
	movl $-1, (%rdi)                     /* f->vector = FAULT_NONE */
	movq %rdi, kit_catch_fault(%rip)
	movl $1, kit_catch_armed(%rip)
	leaq kit_catch_jb(%rip), %rdi
	jmp kit_setjmp

	.section .note.GNU-stack, "", @progbits
