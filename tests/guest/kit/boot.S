/*
 * Entry code of the guest test kernels: the multiboot header and 32-bit stub
 * that QEMU enters, the btvm entry note, and the 64-bit entry both reach.
 * docs/entry-contract.md describes the machine state at the 64-bit entry.
 */
#include "tests/guest/kit/layout.h"

#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00010000 /* bit 16: the a.out kludge address fields are valid */

#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define EFER_NXE (1 << 11)
#define CR0_BOOT 0x80010033 /* PG WP NE ET MP PE */
#define CR4_BOOT 0x620      /* OSXMMEXCPT OSFXSR PAE */

/* Multiboot header (Multiboot Specification 0.6.96, §3.1.1), with the address
   fields that make QEMU load this ELF64 file raw: the bytes from the header's
   file offset on become memory from header_addr on. */
	.section .multiboot, "a"
	.p2align 2
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mb_header        /* header_addr */
	.long __image_start    /* load_addr (== header_addr: the header opens the image) */
	.long __load_end       /* load_end_addr: end of the file bytes */
	.long __image_end      /* bss_end_addr: QEMU zeroes up to here */
	.long mb_entry32       /* entry_addr */

/* The btvm entry note: name "btvm", type BTVM_NOTE_ENTRY64, 8-byte desc. */
	.section .note.btvm, "a", @note
	.p2align 2
	.long 5                /* namesz, with the NUL */
	.long 8                /* descsz */
	.long 0x4254           /* BTVM_NOTE_ENTRY64 */
	.asciz "btvm"
	.p2align 2
	.quad start64
	.p2align 2

/* ---- 32-bit multiboot entry (QEMU) ------------------------------------- */
	.section .boot.text, "ax"
	.code32
	.globl mb_entry32
mb_entry32:
	/* Multiboot state: 32-bit protected mode, flat segments, paging off,
	   interrupts off; EAX = 0x2badb002, EBX = multiboot info (unused). */
	cli
	cld
	lgdt boot_gdt_desc
	movw $KERNEL_DS, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl $kit_stack_top, %esp

	/* TSS descriptor base (the contract: TR = 0x18, a busy TSS). */
	movl $boot_tss, %eax
	movw %ax, boot_gdt + BOOT_TSS + 2
	shrl $16, %eax
	movb %al, boot_gdt + BOOT_TSS + 4
	movb %ah, boot_gdt + BOOT_TSS + 7

	/* Identity map [0, 4 GiB) with 2 MiB pages: PML4[0] -> PDPT[0..3] -> 4 PDs. */
	movl $boot_pml4, %edi
	movl $(6 * 4096 / 4), %ecx
	xorl %eax, %eax
	rep stosl
	movl $(boot_pdpt + 3), boot_pml4          /* P | RW */
	movl $boot_pd, %eax
	orl $3, %eax
	xorl %ecx, %ecx
1:	movl %eax, boot_pdpt(, %ecx, 8)
	addl $4096, %eax
	incl %ecx
	cmpl $4, %ecx
	jb 1b
	xorl %ecx, %ecx                          /* ecx = 2 MiB page number */
2:	movl %ecx, %eax
	shll $21, %eax
	orl $0x83, %eax                          /* P | RW | PS */
	movl %eax, boot_pd(, %ecx, 8)
	movl %ecx, %eax
	shrl $11, %eax                           /* physical address bits 32.. */
	movl %eax, boot_pd + 4(, %ecx, 8)
	incl %ecx
	cmpl $2048, %ecx
	jb 2b
	movl $boot_pml4, %eax
	movl %eax, %cr3

	movl $CR4_BOOT, %eax
	movl %eax, %cr4

	/* EFER.LME, and NXE where CPUID says NX exists (CPUID.80000001h:EDX[20]). */
	movl $0x80000001, %eax
	cpuid
	xorl %esi, %esi
	btl $20, %edx
	jnc 3f
	movl $EFER_NXE, %esi
3:	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	orl %esi, %eax
	wrmsr

	movl $CR0_BOOT, %eax
	movl %eax, %cr0
	ljmp $KERNEL_CS, $mb_entry64

	.code64
mb_entry64:
	movw $BOOT_TSS, %ax
	ltr %ax
	xorl %edi, %edi        /* no btvm boot info */
	jmp start64

/* ---- 64-bit entry (btvm's note; QEMU via the stub above) ---------------- */
	.text
	.globl start64
start64:
	/* RDI = boot info (btvm) or 0 (QEMU). Own stack, then clear .bss with
	   plain stores (no string instructions: the first-light translator runs
	   this code). */
	movq %rdi, %r12
	leaq kit_stack_top(%rip), %rsp
	leaq __bss_start(%rip), %rax
	leaq __bss_end(%rip), %rcx
1:	cmpq %rcx, %rax
	jae 2f
	movq $0, (%rax)
	addq $8, %rax
	jmp 1b
2:	movq %r12, %rdi
	xorl %ebp, %ebp
	call kit_start
3:	hlt
	jmp 3b

/* ---- data ---------------------------------------------------------------- */
	.data
	.p2align 4
boot_gdt:
	.quad 0
	.quad GDT_CODE64_DPL0  /* 0x08 */
	.quad GDT_DATA_DPL0    /* 0x10 */
	.quad 0x0000890000000067, 0   /* 0x18: 64-bit TSS, available, limit 0x67 */
boot_gdt_end:
	.p2align 3
boot_gdt_desc:
	.word boot_gdt_end - boot_gdt - 1
	.quad boot_gdt
	.p2align 4
boot_tss:
	.fill 104, 1, 0

	.section .boot.bss, "aw", @nobits
	.p2align 12
boot_pml4:	.skip 4096
boot_pdpt:	.skip 4096
boot_pd:	.skip 4 * 4096

/* The kernel stack (in .bss, so cleared by start64 before its first use
   would matter). */
	.bss
	.p2align 4
	.globl kit_stack_top
kit_stack:
	.skip KIT_STACK_SIZE
kit_stack_top:

	.section .note.GNU-stack, "", @progbits
