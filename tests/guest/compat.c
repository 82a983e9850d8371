/*
 * compat: 32-bit user code in IA-32e compatibility mode (CS = USER_CS32,
 * L = 0, D = 1; SDM Vol. 3A §5.2.1) under the kit's 64-bit kernel.
 *
 * The kernel enters the 32-bit code at CPL3 by iretq. There it computes
 * (loops with loop and with dec/jnz, the one-byte inc/dec of 40h-4Fh,
 * recursive calls, a stdcall `ret 8`, enter/leave, push/pop of registers
 * and immediates, pushad/popad, pushfd/popfd, addressing modes through
 * [disp32], [base + index * 4 + disp], EBP and ESP bases, sign and zero
 * extension, xlat, 16-bit operations, an FS-relative load through a data
 * segment with a base, rep movsb/stosd, repne scasb, repe cmpsb, and the
 * BCD adjustments daa, das, aaa, aas, aam, aad), makes
 * a far call and a far return, an iretd at CPL3, far jumps to 64-bit user
 * code and back (the same bytes called from both modes mean different
 * things), takes a #PF and a #GP that the 64-bit kernel handles and resumes
 * from, and calls the kernel by int $0x80 and by syscall (CSTAR; the
 * kernel returns by sysretl). It writes what it computed into user memory
 * and leaves by int $0x80; the kernel then reports every value.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define STR(x) #x
#define XSTR(x) STR(x)

#define CS32 0x23       /* USER_CS32 | 3 */
#define BASED_DS 0x48   /* extra GDT entry: DPL 3 data, base = based_area */
#define BASED_SEL 0x4b  /* BASED_DS | 3 */
#define GDT_ENTRIES 16
#define COMPAT_STACK_SIZE 4096

/* Result slots the 32-bit code writes (cres[N], offsets 4 * N). */
#define R_LOOP_SUM 0
#define R_FIB 1
#define R_INCDEC 2
#define R_FACT 3
#define R_STDCALL 4
#define R_STDCALL_ESP 5
#define R_ENTER 6
#define R_PUSHPOP 7
#define R_PUSHPOP_ESP 8
#define R_PUSHAD_SUM 9
#define R_PUSHAD_ESP 10
#define R_PUSHFD 11
#define R_POPFD 12
#define R_DISP32 13
#define R_SIB 14
#define R_FRAME 15
#define R_MOVSX 16
#define R_MOVZX 17
#define R_XLAT 18
#define R_WORD16 19
#define R_FS_LOAD 20
#define R_SCAS_LEN 21
#define R_CMPS 22
#define R_INT80 23
#define R_INT80_EBX 24
#define R_SYSCALL 25
#define R_SYSCALL_ECX 26
#define R_PF_RESUMED 27
#define R_PF_ESP 28
#define R_GP_RESUMED 29
#define R_FARCALL 30
#define R_IRET32 31
#define R_DUAL32 32
#define R_DUAL64 33
#define R_BACK32 34
#define R_SHIFT64 35
#define R_DAA 36
#define R_DAA_FL 37
#define R_DAS 38
#define R_DAS_FL 39
#define R_AAA 40
#define R_AAA_FL 41
#define R_AAS 42
#define R_AAS_FL 43
#define R_AAM 44
#define R_AAD 45
#define R_AAD_FL 46
#define R_COUNT 48

#define SLOT(n) "cres+" XSTR(n) "*4"

USER_DATA static u32 cres[R_COUNT] __attribute__((used));
USER_DATA static u32 fixup __attribute__((used)); /* where the fault handler resumes */
USER_DATA static u32 based_area[16] __attribute__((used, aligned(16)));
USER_DATA static u8 compat_stack[COMPAT_STACK_SIZE] __attribute__((used, aligned(16)));
USER_DATA static char dst_buf[64] __attribute__((used));
/* A supervisor-only word: reading it at CPL3 is #PF(P | U). */
static volatile u32 kernel_secret __attribute__((used)) = 0x5ec2e7;

/* What the syscall entry saw. */
static volatile u64 syscall_rcx __attribute__((used)), syscall_r11 __attribute__((used));

asm(".pushsection .user.data, \"aw\"\n"
    "table: .long 10, 20, 30, 40, 50, 60, 70, 80\n"
    "bytes: .byte 0x7f, 0x80, 0x01, 0xfe\n"
    "words: .word 0x1234, 0x8765, 0, 0\n"
    "hexdigits: .ascii \"0123456789abcdef\"\n"
    "src_str: .asciz \"compatibility mode, 32!\"\n" /* 23 characters */
    "  .byte 0x21\n"
    "back_ptr: .long back32\n"
    "  .word " XSTR(CS32) "\n"
    ".popsection\n"

    ".pushsection .user.text, \"ax\"\n"
    ".code32\n"
    "compat_main:\n"
    /* ---- loops ---- */
    "  xorl %eax, %eax\n"
    "  movl $100, %ecx\n"
    "1: addl %ecx, %eax\n"
    "  loop 1b\n"
    "  movl %eax, " SLOT(R_LOOP_SUM) "\n"
    "  xorl %eax, %eax\n"
    "  movl $1, %edx\n"
    "  movl $20, %ecx\n"
    "2: leal (%eax,%edx), %ebx\n"
    "  movl %edx, %eax\n"
    "  movl %ebx, %edx\n"
    "  decl %ecx\n"
    "  jnz 2b\n"
    "  movl %eax, " SLOT(R_FIB) "\n"
    /* one-byte inc/dec (40h-4Fh) of every register but ESP */
    "  movl $0x10, %eax\n"
    "  movl $0x20, %ebx\n"
    "  movl $0x30, %ecx\n"
    "  movl $0x40, %edx\n"
    "  movl $0x50, %esi\n"
    "  movl $0x60, %edi\n"
    "  movl $0x70, %ebp\n"
    "  incl %eax\n"
    "  incl %eax\n"
    "  decl %ebx\n"
    "  incl %ecx\n"
    "  decl %edx\n"
    "  decl %edx\n"
    "  decl %edx\n"
    "  incl %esi\n"
    "  decl %edi\n"
    "  incl %ebp\n"
    "  addl %ebx, %eax\n"
    "  addl %ecx, %eax\n"
    "  addl %edx, %eax\n"
    "  addl %esi, %eax\n"
    "  addl %edi, %eax\n"
    "  addl %ebp, %eax\n"
    "  movl %eax, " SLOT(R_INCDEC) "\n"

    /* ---- calls ---- */
    "  pushl $10\n"
    "  call fact\n"
    "  addl $4, %esp\n"
    "  movl %eax, " SLOT(R_FACT) "\n"
    "  movl %esp, %esi\n"
    "  pushl $7\n"
    "  pushl $5\n"
    "  call stdcall_fn\n"
    "  movl %eax, " SLOT(R_STDCALL) "\n"
    "  subl %esp, %esi\n"
    "  movl %esi, " SLOT(R_STDCALL_ESP) "\n"
    "  call enter_fn\n"
    "  movl %eax, " SLOT(R_ENTER) "\n"

    /* ---- push/pop ---- */
    "  movl %esp, %esi\n"
    "  pushl $0x11\n"
    "  pushl $0x2233\n"
    "  pushl $-3\n"
    "  movl $0x44, %eax\n"
    "  pushl %eax\n"
    "  pushw $0x55\n"
    "  popw %ax\n"
    "  popl %ebx\n"
    "  popl %ecx\n"
    "  popl %edx\n"
    "  popl %edi\n"
    "  addl %ebx, %eax\n"
    "  addl %ecx, %eax\n"
    "  addl %edx, %eax\n"
    "  addl %edi, %eax\n"
    "  movl %eax, " SLOT(R_PUSHPOP) "\n"
    "  subl %esp, %esi\n"
    "  movl %esi, " SLOT(R_PUSHPOP_ESP) "\n"
    "  movl $1, %eax\n"
    "  movl $2, %ecx\n"
    "  movl $3, %edx\n"
    "  movl $4, %ebx\n"
    "  movl $5, %ebp\n"
    "  movl $6, %esi\n"
    "  movl $7, %edi\n"
    "  pushal\n"
    "  movl 12(%esp), %eax\n" /* the ESP slot: ESP before pushal */
    "  subl %esp, %eax\n"
    "  movl %eax, " SLOT(R_PUSHAD_ESP) "\n"
    "  xorl %eax, %eax\n"
    "  xorl %ecx, %ecx\n"
    "  xorl %edx, %edx\n"
    "  xorl %ebx, %ebx\n"
    "  xorl %ebp, %ebp\n"
    "  xorl %esi, %esi\n"
    "  xorl %edi, %edi\n"
    "  popal\n"
    "  leal (%eax,%ecx,2), %eax\n"
    "  leal (%eax,%edx,4), %eax\n"
    "  leal (%eax,%ebx,8), %eax\n"
    "  addl %ebp, %eax\n"
    "  addl %esi, %eax\n"
    "  addl %edi, %eax\n"
    "  movl %eax, " SLOT(R_PUSHAD_SUM) "\n"
    "  cmpl %eax, %eax\n"
    "  stc\n"
    "  pushfl\n"
    "  popl %eax\n"
    "  movl %eax, " SLOT(R_PUSHFD) "\n"
    "  pushl $0xcd7\n" /* OF DF SF ZF AF PF CF, and IF (ignored at IOPL 0) */
    "  orl $0x200, (%esp)\n"
    "  popfl\n"
    "  pushfl\n"
    "  popl %eax\n"
    "  cld\n"
    "  movl %eax, " SLOT(R_POPFD) "\n"

    /* ---- addressing ---- */
    "  movl table+8, %eax\n"
    "  movl %eax, " SLOT(R_DISP32) "\n"
    "  movl $table, %ebx\n"
    "  movl $3, %ecx\n"
    "  movl 4(%ebx,%ecx,4), %edx\n"
    "  addl (%ebx), %edx\n"
    "  addl table(,%ecx,8), %edx\n"
    "  movl %edx, " SLOT(R_SIB) "\n"
    "  pushl %ebp\n"
    "  movl %esp, %ebp\n"
    "  subl $8, %esp\n"
    "  movl $0x1234, -4(%ebp)\n"
    "  movl $0x5678, (%esp)\n"
    "  movl -4(%ebp), %eax\n"
    "  addl 0(%esp), %eax\n"
    "  addl $1, 4(%esp)\n"
    "  addl -4(%ebp), %eax\n"
    "  movl %ebp, %esp\n"
    "  popl %ebp\n"
    "  movl %eax, " SLOT(R_FRAME) "\n"
    "  movsbl bytes+1, %eax\n"
    "  movswl words+2, %ecx\n"
    "  addl %ecx, %eax\n"
    "  movl %eax, " SLOT(R_MOVSX) "\n"
    "  movzbl bytes+3, %eax\n"
    "  movzwl words+2, %ecx\n"
    "  addl %ecx, %eax\n"
    "  movl %eax, " SLOT(R_MOVZX) "\n"
    "  movl $hexdigits, %ebx\n"
    "  movl $0x0b, %eax\n"
    "  xlat\n"
    "  movl %eax, " SLOT(R_XLAT) "\n"
    "  movl $0x12345678, %eax\n"
    "  addw $0x1111, %ax\n"
    "  movw %ax, words+4\n"
    "  movw words+4, %cx\n"
    "  movl %ecx, %eax\n"
    "  xchgb %al, %ah\n"
    "  movl %eax, " SLOT(R_WORD16) "\n"
    /* FS with a base: fs:8 is based_area[2] */
    "  movl $" XSTR(BASED_SEL) ", %eax\n"
    "  movl %eax, %fs\n"
    "  movl %fs:8, %eax\n"
    "  movl %eax, " SLOT(R_FS_LOAD) "\n"
    "  xorl %eax, %eax\n"
    "  movl %eax, %fs\n"

    /* ---- string instructions ---- */
    "  movl $src_str, %esi\n"
    "  movl $dst_buf, %edi\n"
    "  movl $24, %ecx\n"
    "  rep movsb\n"
    "  movl $0x2e2e2e2e, %eax\n"
    "  movl $2, %ecx\n"
    "  rep stosl\n"
    "  movl $src_str, %edi\n"
    "  xorl %eax, %eax\n"
    "  movl $-1, %ecx\n"
    "  repne scasb\n"
    "  notl %ecx\n"
    "  decl %ecx\n"
    "  movl %ecx, " SLOT(R_SCAS_LEN) "\n"
    "  movl $src_str, %esi\n"
    "  movl $dst_buf, %edi\n"
    "  movl $30, %ecx\n"
    "  repe cmpsb\n"
    "  movl %esi, %eax\n"
    "  subl $src_str, %eax\n"
    "  movl %eax, " SLOT(R_CMPS) "\n"

    /* ---- BCD adjustments (the arithmetic flags after each) ---- */
    "  movl $0x38, %eax\n"
    "  addb $0x45, %al\n"
    "  daa\n"
    "  pushfl\n"
    "  popl %edx\n"
    "  movl %eax, " SLOT(R_DAA) "\n"
    "  andl $0x8d5, %edx\n"
    "  movl %edx, " SLOT(R_DAA_FL) "\n"
    "  movl $0x35, %eax\n"
    "  subb $0x47, %al\n"
    "  das\n"
    "  pushfl\n"
    "  popl %edx\n"
    "  movl %eax, " SLOT(R_DAS) "\n"
    "  andl $0x8d5, %edx\n"
    "  movl %edx, " SLOT(R_DAS_FL) "\n"
    "  movl $0x0009, %eax\n"
    "  addb $0x08, %al\n"
    "  aaa\n"
    "  pushfl\n"
    "  popl %edx\n"
    "  movl %eax, " SLOT(R_AAA) "\n"
    "  andl $0x8d5, %edx\n"
    "  movl %edx, " SLOT(R_AAA_FL) "\n"
    "  movl $0x0102, %eax\n"
    "  subb $0x03, %al\n"
    "  aas\n"
    "  pushfl\n"
    "  popl %edx\n"
    "  movl %eax, " SLOT(R_AAS) "\n"
    "  andl $0x8d5, %edx\n"
    "  movl %edx, " SLOT(R_AAS_FL) "\n"
    "  movl $75, %eax\n"
    "  aam\n"
    "  movl %eax, " SLOT(R_AAM) "\n"
    "  aad\n"
    "  pushfl\n"
    "  popl %edx\n"
    "  movl %eax, " SLOT(R_AAD) "\n"
    "  andl $0x8d5, %edx\n"
    "  movl %edx, " SLOT(R_AAD_FL) "\n"

    /* ---- int $0x80 and syscall into the 64-bit kernel ---- */
    "  movl $" XSTR(SYS_ECHO) ", %eax\n"
    "  movl $40, %edi\n"
    "  movl $2, %esi\n"
    "  movl $0x5a5a5a5a, %ebx\n"
    "  int $0x80\n"
    "  movl %eax, " SLOT(R_INT80) "\n"
    "  movl %ebx, " SLOT(R_INT80_EBX) "\n"
    "  movl $" XSTR(SYS_ECHO) ", %eax\n"
    "  movl $30, %edi\n"
    "  movl $12, %esi\n"
    "  syscall\n"
    "compat_after_syscall:\n"
    "  movl %eax, " SLOT(R_SYSCALL) "\n"
    "  movl %ecx, " SLOT(R_SYSCALL_ECX) "\n"

    /* ---- a #PF and a #GP, resumed at `fixup` by the 64-bit kernel ---- */
    "  movl $3f, fixup\n"
    "  movl %esp, " SLOT(R_PF_ESP) "\n"
    "compat_pf_insn:\n"
    "  movl kernel_secret, %eax\n"
    "  ud2\n"
    "3: movl $1, " SLOT(R_PF_RESUMED) "\n"
    "  movl $4f, fixup\n"
    "  movl $" XSTR(KERNEL_DS) ", %eax\n"
    "compat_gp_insn:\n"
    "  movl %eax, %ds\n"
    "  ud2\n"
    "4: movl $1, " SLOT(R_GP_RESUMED) "\n"

    /* ---- far call, far return, iretd at CPL3 ---- */
    "  lcall $" XSTR(CS32) ", $far_fn\n"
    "  movl %eax, " SLOT(R_FARCALL) "\n"
    "  movl %esp, %esi\n"
    "  pushfl\n"
    "  pushl $" XSTR(CS32) "\n"
    "  pushl $5f\n"
    "  iretl\n"
    "5: subl %esp, %esi\n"
    "  leal 0x100(%esi), %eax\n"
    "  movl %eax, " SLOT(R_IRET32) "\n"

    /* ---- the same bytes as 32-bit and as 64-bit code ---- */
    "  movl $0x100, %eax\n"
    "  call dual\n"
    "  movl %eax, " SLOT(R_DUAL32) "\n"
    "  ljmp $" XSTR(USER_CS) ", $to64\n"
    ".code64\n"
    "to64:\n"
    "  movl $0x200, %eax\n"
    "  call dual\n"
    "  movl %eax, cres+" XSTR(R_DUAL64) "*4(%rip)\n"
    "  movabsq $0x123456789, %rdx\n"
    "  shrq $4, %rdx\n"
    "  movl %edx, cres+" XSTR(R_SHIFT64) "*4(%rip)\n"
    "  ljmpl *back_ptr(%rip)\n"
    ".code32\n"
    "back32:\n"
    "  movl %cs, %eax\n"
    "  movl %eax, " SLOT(R_BACK32) "\n"

    /* ---- back to the kernel ---- */
    "  movl $" XSTR(SYS_EXIT_USER) ", %eax\n"
    "  movl $0x600d, %edi\n"
    "  int $0x80\n"
    "  ud2\n"

    /* int fact(int n) (cdecl) */
    "fact:\n"
    "  movl 4(%esp), %ecx\n"
    "  cmpl $1, %ecx\n"
    "  jbe 1f\n"
    "  decl %ecx\n"
    "  pushl %ecx\n"
    "  call fact\n"
    "  addl $4, %esp\n"
    "  imull 4(%esp), %eax\n"
    "  ret\n"
    "1: movl $1, %eax\n"
    "  ret\n"

    /* int stdcall_fn(int a, int b): a * 3 - b, callee pops */
    "stdcall_fn:\n"
    "  pushl %ebp\n"
    "  movl %esp, %ebp\n"
    "  movl 8(%ebp), %eax\n"
    "  imull $3, %eax, %eax\n"
    "  subl 12(%ebp), %eax\n"
    "  popl %ebp\n"
    "  ret $8\n"

    /* enter/leave with locals */
    "enter_fn:\n"
    "  enter $16, $0\n"
    "  movl $0x11111111, -4(%ebp)\n"
    "  movl $0x22222222, -8(%ebp)\n"
    "  movl -4(%ebp), %eax\n"
    "  addl -8(%ebp), %eax\n"
    "  leave\n"
    "  ret\n"

    /* Far: EAX = CS here, plus the CS the call pushed, times 0x10000. */
    "far_fn:\n"
    "  movl %cs, %eax\n"
    "  movzwl 4(%esp), %edx\n"
    "  shll $16, %edx\n"
    "  orl %edx, %eax\n"
    "  lret\n"

    /* 32-bit: inc eax; nop; ret. 64-bit: (REX) nop; ret. */
    "dual:\n"
    "  .byte 0x40, 0x90, 0xc3\n"
    ".code64\n"
    ".popsection\n"

    ".text\n"
    /* u64 enter_compat(void): runs compat_main at CPL3 in compatibility
       mode; returns what it passes to SYS_EXIT_USER (kit_syscall longjmps
       to kit_user_jb). */
    "enter_compat:\n"
    "  leaq kit_user_jb(%rip), %rax\n"
    "  movq %rbx, " XSTR(JB_RBX) "(%rax)\n"
    "  movq %rbp, " XSTR(JB_RBP) "(%rax)\n"
    "  movq %r12, " XSTR(JB_R12) "(%rax)\n"
    "  movq %r13, " XSTR(JB_R13) "(%rax)\n"
    "  movq %r14, " XSTR(JB_R14) "(%rax)\n"
    "  movq %r15, " XSTR(JB_R15) "(%rax)\n"
    "  leaq 8(%rsp), %rcx\n"
    "  movq %rcx, " XSTR(JB_RSP) "(%rax)\n"
    "  movq (%rsp), %rcx\n"
    "  movq %rcx, " XSTR(JB_RIP) "(%rax)\n"
    "  pushfq\n"
    "  popq " XSTR(JB_RFLAGS) "(%rax)\n"
    /* DS and ES: the DPL 3 data segment (a DPL 0 one would become null,
       and compatibility mode uses them) */
    "  movl $" XSTR(USER_DS) ", %eax\n"
    "  movl %eax, %ds\n"
    "  movl %eax, %es\n"
    "  pushq $" XSTR(USER_DS) "\n"
    "  leaq compat_stack+" XSTR(COMPAT_STACK_SIZE) "(%rip), %rax\n"
    "  pushq %rax\n"
    "  pushq $2\n"
    "  pushq $" XSTR(CS32) "\n"
    "  leaq compat_main(%rip), %rax\n"
    "  pushq %rax\n"
    "  iretq\n"

    /* The SYSCALL entry from compatibility mode (CSTAR): RCX = EIP after
       the syscall, R11 = EFLAGS; back by sysretl. */
    "compat_syscall_entry:\n"
    "  movq %rsp, compat_user_rsp(%rip)\n"
    "  movq kit_rsp0(%rip), %rsp\n"
    "  movq %rcx, syscall_rcx(%rip)\n"
    "  movq %r11, syscall_r11(%rip)\n"
    "  pushq %rcx\n"
    "  pushq %r11\n"
    "  pushq %rdi\n"
    "  pushq %rsi\n"
    "  pushq %rdx\n"
    "  pushq %r8\n"
    "  pushq %r9\n"
    "  pushq %r10\n"
    "  movq %rdx, %rcx\n"
    "  movq %rsi, %rdx\n"
    "  movq %rdi, %rsi\n"
    "  movq %rax, %rdi\n"
    "  call kit_syscall\n"
    "  popq %r10\n"
    "  popq %r9\n"
    "  popq %r8\n"
    "  popq %rdx\n"
    "  popq %rsi\n"
    "  popq %rdi\n"
    "  popq %r11\n"
    "  popq %rcx\n"
    "  movq compat_user_rsp(%rip), %rsp\n"
    "  sysretl\n"

    ".bss\n"
    ".p2align 3\n"
    "compat_user_rsp: .skip 8\n"
    ".text\n");

u64 enter_compat(void);
void compat_syscall_entry(void);
extern char compat_after_syscall[], compat_pf_insn[], compat_gp_insn[];

#define ADDR(label) ((u64)(uintptr_t)(label))

/* The #PF and #GP from compatibility mode: what the 64-bit frame held. */
struct frame_seen {
  u64 vector, error_code, rip, cs, rflags, rsp, ss, cr2;
};
static struct frame_seen pf_seen, gp_seen;

static void fault_handler(struct ex_regs* r) {
  struct frame_seen* f = r->vector == PF_VECTOR ? &pf_seen : &gp_seen;
  f->vector = r->vector;
  f->error_code = r->error_code;
  f->rip = r->rip;
  f->cs = r->cs;
  f->rflags = r->rflags;
  f->rsp = r->rsp;
  f->ss = r->ss;
  f->cr2 = r->vector == PF_VECTOR ? read_cr2() : 0;
  r->rip = fixup; /* resume in compatibility mode after the faulting code */
}

static u64 gdt_copy[GDT_ENTRIES] __attribute__((aligned(16)));

/* A copy of the kit's GDT with a DPL 3 data segment based at based_area. */
static void install_gdt(void) {
  struct descriptor_table_ptr old;
  sgdt(&old);
  memcpy(gdt_copy, (void*)(uintptr_t)old.base, old.limit + 1u);
  u64 base = ADDR(based_area);
  gdt_copy[BASED_DS >> 3] = GDT_DATA_DPL3 | ((base & 0xffffff) << 16) | ((base >> 24) << 56);
  struct descriptor_table_ptr p = {sizeof gdt_copy - 1, (u64)(uintptr_t)gdt_copy};
  lgdt(&p);
}

static void check(u32 slot, u32 want, const char* what) {
  report(cres[slot] == want, "%s: %#x", what, cres[slot]);
}

int main(void) {
  pic_init();
  user_init();
  install_gdt();
  wrmsr(MSR_CSTAR, ADDR(compat_syscall_entry));
  for (unsigned i = 0; i < ARRAY_SIZE(based_area); i++) based_area[i] = 0xbabe0000u + 4 * i;
  handle_exception(PF_VECTOR, fault_handler);
  handle_exception(GP_VECTOR, fault_handler);

  u64 r = enter_compat();
  asm volatile("movl %0, %%ds; movl %0, %%es" : : "r"(KERNEL_DS));
  handle_exception(PF_VECTOR, NULL);
  handle_exception(GP_VECTOR, NULL);
  report(r == 0x600d, "back from compatibility mode by int $0x80 (exit value %#llx)",
         (unsigned long long)r);

  check(R_LOOP_SUM, 5050, "loop: sum 1..100");
  check(R_FIB, 6765, "dec/jnz loop: fib(20)");
  check(R_INCDEC, 0x12 + 0x1f + 0x31 + 0x3d + 0x51 + 0x5f + 0x71, "one-byte inc/dec");
  check(R_FACT, 3628800, "recursive call/ret: 10!");
  check(R_STDCALL, 8, "stdcall ret $8: 5 * 3 - 7");
  check(R_STDCALL_ESP, 0, "ret $8 released the arguments (ESP difference)");
  check(R_ENTER, 0x33333333, "enter/leave with locals");
  check(R_PUSHPOP, 0x55 + 0x44 - 3 + 0x2233 + 0x11, "push imm8/imm32/reg/16-bit, pop");
  check(R_PUSHPOP_ESP, 0, "push/pop: ESP back");
  check(R_PUSHAD_ESP, 32, "pushad: ESP slot is ESP before it");
  check(R_PUSHAD_SUM, 1 + 2 * 2 + 3 * 4 + 4 * 8 + 5 + 6 + 7, "popad restored every register");
  check(R_PUSHFD, 0x47, "pushfd after cmp/stc: CF PF ZF");
  check(R_POPFD, 0xcd7, "popfd at CPL3, IOPL 0: flags but not IF");
  check(R_DISP32, 30, "[disp32]");
  check(R_SIB, 50 + 10 + 70, "[base + index * 4 + disp], [index * 8 + disp32]");
  check(R_FRAME, 0x1234 + 0x5678 + 0x1235, "[ebp - 4], [esp], [esp + 4]");
  check(R_MOVSX, (u32)(-128 + (s16)0x8765), "movsbl + movswl");
  check(R_MOVZX, 0xfe + 0x8765, "movzbl + movzwl");
  check(R_XLAT, 0x62, "xlat: hexdigits[11]");
  check(R_WORD16, 0x8967, "16-bit add, store and load; xchg of AL and AH");
  check(R_FS_LOAD, 0xbabe0008, "fs:8 through a data segment with a base");
  report(memcmp(dst_buf, "compatibility mode, 32!\0........", 32) == 0,
         "rep movsb then rep stosd: \"%.23s\"", dst_buf);
  check(R_SCAS_LEN, 23, "repne scasb: strlen");
  check(R_CMPS, 25, "repe cmpsb stops after the first difference");
  check(R_DAA, 0x83, "daa after 0x38 + 0x45");
  check(R_DAA_FL, 0x90, "daa: flags AF SF");
  check(R_DAS, 0x88, "das after 0x35 - 0x47");
  check(R_DAS_FL, 0x95, "das: flags CF PF AF SF");
  check(R_AAA, 0x0107, "aaa after 9 + 8");
  check(R_AAA_FL, 0x15, "aaa: CF AF set, PF kept");
  check(R_AAS, 0x0009, "aas after 0x0102 - 3");
  check(R_AAS_FL, 0x95, "aas: CF AF set, PF SF kept");
  check(R_AAM, 0x0705, "aam: 75 -> AH 7, AL 5");
  check(R_AAD, 0x4b, "aad: back to 75");
  check(R_AAD_FL, 0x04, "aad: flags from AL (PF)");
  check(R_INT80, 42, "int $0x80 from compatibility mode: SYS_ECHO(40, 2)");
  check(R_INT80_EBX, 0x5a5a5a5a, "int $0x80 kept EBX");
  check(R_SYSCALL, 42, "syscall from compatibility mode (CSTAR), sysretl back: SYS_ECHO(30, 12)");
  check(R_SYSCALL_ECX, (u32)ADDR(compat_after_syscall), "ECX after syscall: the next EIP");
  report(syscall_rcx == ADDR(compat_after_syscall) && (syscall_r11 & 0x3000) == 0 &&
             (syscall_r11 & 2),
         "syscall entry: RCX = next EIP (%#llx), R11 = EFLAGS (%#llx)",
         (unsigned long long)syscall_rcx, (unsigned long long)syscall_r11);

  report(pf_seen.vector == PF_VECTOR && pf_seen.error_code == 5 &&
             pf_seen.rip == ADDR(compat_pf_insn) && pf_seen.cr2 == ADDR(&kernel_secret),
         "#PF from compatibility mode: error code %#llx, rip %#llx, cr2 %#llx",
         (unsigned long long)pf_seen.error_code, (unsigned long long)pf_seen.rip,
         (unsigned long long)pf_seen.cr2);
  report(pf_seen.cs == CS32 && pf_seen.ss == USER_DS && pf_seen.rsp == cres[R_PF_ESP],
         "#PF: the 64-bit frame holds cs %#llx, ss %#llx, esp %#llx",
         (unsigned long long)pf_seen.cs, (unsigned long long)pf_seen.ss,
         (unsigned long long)pf_seen.rsp);
  check(R_PF_RESUMED, 1, "resumed in compatibility mode after the #PF");
  report(gp_seen.vector == GP_VECTOR && gp_seen.error_code == KERNEL_DS &&
             gp_seen.rip == ADDR(compat_gp_insn) && gp_seen.cs == CS32,
         "#GP(%#llx) from compatibility mode (mov to DS of a DPL 0 segment), rip %#llx, cs %#llx",
         (unsigned long long)gp_seen.error_code, (unsigned long long)gp_seen.rip,
         (unsigned long long)gp_seen.cs);
  check(R_GP_RESUMED, 1, "resumed in compatibility mode after the #GP");

  check(R_FARCALL, (CS32 << 16) | CS32, "lcall ptr16:32 and lret: CS in the callee and pushed");
  check(R_IRET32, 0x100, "iretd at CPL3 (same privilege: no SS:ESP popped)");
  check(R_DUAL32, 0x101, "40 90 c3 called as 32-bit code: inc eax");
  check(R_DUAL64, 0x200, "the same bytes called as 64-bit code: rex nop");
  check(R_SHIFT64, 0x12345678, "64-bit user code reached by ljmp: movabs, shrq");
  check(R_BACK32, CS32, "ljmpl m16:32 back to compatibility mode");
  return report_summary();
}
