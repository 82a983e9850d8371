/*
 * iret: iretq to every legal target in long mode (SDM Vol. 2 IRET; Vol. 3A
 * §6.14.3): CPL0 to CPL0 on the same stack, with another RSP, with a null
 * SS; CPL0 to CPL3 (data segments the new CPL may not use become null);
 * an interrupt, a trap and a single step taken at CPL3 and returning to
 * CPL3; a conforming code segment. Which RFLAGS bits iretq may change at
 * each CPL and IOPL (IF, IOPL, AC, NT), TF from the frame, and iretq with
 * NT = 1 (#GP in IA-32e mode). Bad targets: a null, out-of-limit, data,
 * system or not-present CS, a CS whose RPL or DPL does not fit, a bad SS, a
 * non-canonical RIP, and a return to a more privileged level. SYSRET to
 * 64-bit user mode (RCX, R11, CS, SS) and with a non-canonical RCX (#GP(0);
 * Intel raises it at CPL0, AMD at CPL3: only the vector and error code are
 * checked). Last, the 32-bit compatibility-mode targets of iretq and
 * sysretl.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define STR(x) #x
#define XSTR(x) STR(x)

#define RFLAGS_CF (1ull << 0)
#define RFLAGS_ZF (1ull << 6)
#define RFLAGS_TF (1ull << 8)
#define RFLAGS_DF (1ull << 10)
#define RFLAGS_IOPL3 (3ull << 12)
#define RFLAGS_NT (1ull << 14)

/* Extra GDT entries (kit_gdt copied into a larger table). */
#define NP_CODE64_DPL0 0x48    /* code, not present */
#define CONFORMING_CODE64 0x50 /* conforming code, DPL 0 */
#define GDT_ENTRIES 16

/* What the landing code saw, written at CPL0 or CPL3 by the assembly
   below (offsets 0, 8, ... 56). */
struct landing {
  u64 rsp, cs, ss, ds, rflags, rflags2, rcx, r11;
};
_Static_assert(sizeof(struct landing) == 64, "offsets used by the assembly");
USER_DATA static struct landing landing;
USER_DATA static u8 user_stack[4096] __attribute__((aligned(16)));
static u8 alt_stack[4096] __attribute__((aligned(16)));

/* The iretq frame, lowest address first, and a value for RSI at the
   target. */
struct iret_frame {
  u64 rip, cs, rflags, rsp, ss, rsi;
};

asm(".pushsection .text\n"
    /* void do_iret(const struct iret_frame*): iretq through *f. */
    "do_iret:\n"
    "  movq 40(%rdi), %rsi\n"
    "  pushq 32(%rdi)\n"
    "  pushq 24(%rdi)\n"
    "  pushq 16(%rdi)\n"
    "  pushq 8(%rdi)\n"
    "  pushq 0(%rdi)\n"
    "do_iret_insn:\n"
    "  iretq\n"

    /* The same, with RFLAGS.NT set first. */
    "do_iret_nt:\n"
    "  pushfq\n"
    "  orq $0x4000, (%rsp)\n"
    "  popfq\n"
    "  jmp do_iret\n"

    /* struct { u64 rsp_delta, rflags; } iret_same_stack(void): iretq to
       the next instruction on the same stack, with CF and ZF in the frame;
       returns RSP after minus RSP before, and RFLAGS after. */
    "iret_same_stack:\n"
    "  movq %rsp, %rdx\n"
    "  movl %ss, %eax\n"
    "  pushq %rax\n"
    "  pushq %rdx\n"
    "  pushq $0x43\n"
    "  movl %cs, %eax\n"
    "  pushq %rax\n"
    "  leaq 1f(%rip), %rax\n"
    "  pushq %rax\n"
    "  iretq\n"
    "1:\n"
    "  pushfq\n"
    "  popq %rcx\n"
    "  movq %rsp, %rax\n"
    "  subq %rdx, %rax\n"
    "  movq %rcx, %rdx\n"
    "  ret\n"

    /* sysretq with a non-canonical RCX. */
    "do_sysret_noncanonical:\n"
    "  movabsq $0x0000800000000000, %rcx\n"
    "  movl $2, %r11d\n"
    "  sysretq\n"

    /* sysretl to compat_land (32-bit code at CS = STAR[63:48] | 3). */
    "do_sysretl:\n"
    "  movl $compat_land, %ecx\n"
    "  movl $2, %r11d\n"
    "  leaq user_stack+4096(%rip), %rsp\n"
    "  sysretl\n"

    /* The CPL0 target of an iretq with TF: #DB after its first instruction. */
    "tf_target:\n"
    "  nop\n"
    "tf_after:\n"
    "  ud2\n"
    ".popsection\n"

    ".pushsection .user.text, \"ax\"\n"
    /* The landing: records RSP, CS, SS, DS and RFLAGS, then ud2 (caught). */
    "iret_land:\n"
    "  movq %rsp, landing+0(%rip)\n"
    "  movw %cs, landing+8(%rip)\n"
    "  movw %ss, landing+16(%rip)\n"
    "  movw %ds, landing+24(%rip)\n"
    "  pushfq\n"
    "  popq landing+32(%rip)\n"
    "iret_land_ud2:\n"
    "  ud2\n"

    /* At CPL3: iretq to itself (same privilege) with RFLAGS = RSI; records
       RFLAGS before and after. */
    "user_iret_self:\n"
    "  pushfq\n"
    "  popq landing+32(%rip)\n"
    "  movq %rsp, %rax\n"
    "  pushq $" XSTR(USER_DS) "\n"
    "  pushq %rax\n"
    "  pushq %rsi\n"
    "  pushq $" XSTR(USER_CS) "\n"
    "  leaq 1f(%rip), %rax\n"
    "  pushq %rax\n"
    "  iretq\n"
    "1:\n"
    "  pushfq\n"
    "  popq landing+40(%rip)\n"
    "  ud2\n"

    /* At CPL3: int $0x81 (handler adds 10 to RAX), then int3 (a trap),
       then a single step through popf; records RSP after them all. */
    "user_interrupts:\n"
    "  movq %rsp, landing+0(%rip)\n"
    "  movl $5, %eax\n"
    "user_int81:\n"
    "  int $0x81\n"
    "user_int81_after:\n"
    "  movq %rax, landing+48(%rip)\n"
    "  int3\n"
    "user_int3_after:\n"
    "  pushfq\n"
    "  orq $0x100, (%rsp)\n"
    "  popfq\n"
    "  nop\n"
    "user_step_after:\n"
    "  movq %rsp, landing+56(%rip)\n"
    "  movw %cs, landing+8(%rip)\n"
    "  ud2\n"

    /* At CPL3: iretq to CPL0 (must #GP). */
    "user_iret_to_kernel:\n"
    "  movq %rsp, %rax\n"
    "  pushq $" XSTR(KERNEL_DS) "\n"
    "  pushq %rax\n"
    "  pushq $2\n"
    "  pushq $" XSTR(KERNEL_CS) "\n"
    "  leaq iret_land(%rip), %rax\n"
    "  pushq %rax\n"
    "user_iret_to_kernel_insn:\n"
    "  iretq\n"

    /* Entered by enter_user(): syscall with CF and DF set, then records
       RFLAGS, RCX, R11, CS, SS after the sysret; returns the result. */
    "user_sysret:\n"
    "  movl $" XSTR(SYS_ECHO) ", %eax\n"
    "  movl $40, %edi\n"
    "  movl $2, %esi\n"
    "  stc\n"
    "  std\n"
    "  syscall\n"
    "user_sysret_after:\n"
    "  pushfq\n"
    "  popq landing+32(%rip)\n"
    "  cld\n"
    "  movq %rcx, landing+48(%rip)\n"
    "  movq %r11, landing+56(%rip)\n"
    "  movw %cs, landing+8(%rip)\n"
    "  movw %ss, landing+16(%rip)\n"
    "  ret\n"

    /* 32-bit compatibility-mode landing: DS may be null here, so the
       stores go through SS. */
    ".code32\n"
    "compat_land:\n"
    "  movl %esp, %ss:landing+0\n"
    "  movw %cs, %ss:landing+8\n"
    "compat_land_ud2:\n"
    "  ud2\n"
    ".code64\n"
    ".popsection\n");

void do_iret(const struct iret_frame* f);
void do_iret_nt(const struct iret_frame* f);
struct same_stack {
  u64 rsp_delta, rflags;
};
struct same_stack iret_same_stack(void);
void do_sysret_noncanonical(void), do_sysretl(void);
u64 user_sysret(u64);
extern char do_iret_insn[], tf_target[], tf_after[], iret_land[], iret_land_ud2[];
extern char user_iret_self[], user_interrupts[], user_int81_after[], user_int3_after[];
extern char user_step_after[], user_iret_to_kernel[], user_iret_to_kernel_insn[];
extern char user_sysret_after[], compat_land[], compat_land_ud2[];

#define ADDR(label) ((u64)(uintptr_t)(label))
#define USER_STACK_TOP (ADDR(user_stack) + sizeof user_stack)

static struct fault iret_caught(const struct iret_frame* f, bool nt) {
  struct fault flt;
  memset(&landing, 0, sizeof landing);
  if (catch_begin(&flt) == 0) {
    if (nt) {
      do_iret_nt(f);
    } else {
      do_iret(f);
    }
    catch_end();
  }
  return flt;
}

static struct fault call_caught(void (*fn)(void)) {
  struct fault flt;
  memset(&landing, 0, sizeof landing);
  if (catch_begin(&flt) == 0) {
    fn();
    catch_end();
  }
  return flt;
}

/* Arrived: the landing's ud2 was caught. */
static bool landed(const struct fault* f, const char* ud2) {
  return f->vector == UD_VECTOR && f->rip == ADDR(ud2);
}

static struct iret_frame kernel_frame(void) {
  return (struct iret_frame){ADDR(iret_land),         KERNEL_CS, 0x2,
                             ADDR(alt_stack) + 0x800, KERNEL_DS, 0};
}

static struct iret_frame user_frame(u64 rip, u64 rflags, u64 rsi) {
  return (struct iret_frame){rip, USER_CS, rflags, USER_STACK_TOP - 0x100, USER_DS, rsi};
}

/* Handlers for the CPL3 round trips. */
static volatile u64 int81_cs, int81_ss, int81_rsp, int81_rip, int3_cs, int3_rip;
static volatile int db_count;
static volatile u64 db_rip, db_cs, db_dr6;

static void int81_handler(struct ex_regs* r) {
  int81_cs = r->cs;
  int81_ss = r->ss;
  int81_rsp = r->rsp;
  int81_rip = r->rip;
  r->rax += 10;
}

static void int3_handler(struct ex_regs* r) {
  int3_cs = r->cs;
  int3_rip = r->rip;
}

static void db_handler(struct ex_regs* r) {
  u64 dr6;
  asm volatile("mov %%dr6, %0" : "=r"(dr6));
  if (db_count++ == 0) {
    db_rip = r->rip;
    db_cs = r->cs;
    db_dr6 = dr6;
  }
  r->rflags &= ~RFLAGS_TF;
}

static void check_fault(const struct fault* f, int vector, u64 error_code, u64 rip,
                        const char* what) {
  report(f->vector == vector && f->error_code == error_code && f->rip == rip,
         "%s: %s error code %#llx (want %s %#llx)", what,
         f->vector == FAULT_NONE ? "no fault," : exception_mnemonic((unsigned)f->vector),
         (unsigned long long)f->error_code, exception_mnemonic((unsigned)vector),
         (unsigned long long)error_code);
}

static u64 gdt_copy[GDT_ENTRIES] __attribute__((aligned(16)));

/* A copy of the kit's GDT with the extra entries (TR stays loaded). */
static void install_gdt(void) {
  struct descriptor_table_ptr old;
  sgdt(&old);
  memcpy(gdt_copy, (void*)(uintptr_t)old.base, old.limit + 1u);
  gdt_copy[NP_CODE64_DPL0 >> 3] = GDT_CODE64_DPL0 & ~(1ull << 47);
  gdt_copy[CONFORMING_CODE64 >> 3] = GDT_CODE64_DPL0 | (1ull << 42); /* type 0xb -> 0xf */
  struct descriptor_table_ptr p = {sizeof gdt_copy - 1, (u64)(uintptr_t)gdt_copy};
  lgdt(&p);
}

static void test_kernel_targets(void) {
  struct same_stack s = iret_same_stack();
  report(s.rsp_delta == 0 && (s.rflags & 0xfff) == 0x43,
         "CPL0 -> CPL0, same stack: RSP back where it was, flags from the frame (%#llx)",
         (unsigned long long)s.rflags);

  struct iret_frame f = kernel_frame();
  f.rsp = ADDR(alt_stack) + 0x7f8; /* 8 mod 16: iretq does not realign */
  struct fault flt = iret_caught(&f, false);
  report(landed(&flt, iret_land_ud2) && landing.rsp == f.rsp && landing.cs == KERNEL_CS &&
             landing.ss == KERNEL_DS,
         "CPL0 -> CPL0, another stack: rsp %#llx, cs %#llx, ss %#llx",
         (unsigned long long)(landing.rsp - ADDR(alt_stack)), (unsigned long long)landing.cs,
         (unsigned long long)landing.ss);

  f = kernel_frame();
  f.ss = 0;
  flt = iret_caught(&f, false);
  report(landed(&flt, iret_land_ud2) && landing.ss == 0 && landing.rsp == f.rsp,
         "CPL0 -> CPL0 with a null SS (allowed below CPL3 in 64-bit mode)");

  f = kernel_frame();
  f.rflags = 0x2 | 0x8d5; /* all arithmetic flags */
  flt = iret_caught(&f, false);
  report(landed(&flt, iret_land_ud2) && (landing.rflags & 0xfff) == 0x8d7,
         "CPL0 -> CPL0: arithmetic flags from the frame (%#llx)",
         (unsigned long long)landing.rflags);

  /* IF, IOPL, AC, NT from the frame at CPL0 (the PICs are masked). */
  f = kernel_frame();
  f.rflags = 0x2 | X86_EFLAGS_IF | RFLAGS_IOPL3 | X86_EFLAGS_AC | RFLAGS_NT;
  flt = iret_caught(&f, false);
  report(landed(&flt, iret_land_ud2) && landing.rflags == f.rflags,
         "CPL0 -> CPL0: IF, IOPL, AC and NT from the frame (rflags %#llx)",
         (unsigned long long)landing.rflags);
  report((read_rflags() & (X86_EFLAGS_IF | RFLAGS_IOPL3 | RFLAGS_NT)) == 0,
         "and they are gone again after the fault returned here");

  /* TF in the frame: the target's first instruction runs, then #DB. */
  handle_exception(DB_VECTOR, db_handler);
  db_count = 0;
  f = kernel_frame();
  f.rip = ADDR(tf_target);
  f.rflags = 0x2 | RFLAGS_TF;
  flt = iret_caught(&f, false);
  handle_exception(DB_VECTOR, NULL);
  report(db_count == 1 && db_rip == ADDR(tf_after) && (db_dr6 & 0x4000) && landed(&flt, tf_after),
         "CPL0 -> CPL0 with TF: #DB after the first instruction (%d traps, DR6.BS %d)", db_count,
         !!(db_dr6 & 0x4000));

  /* iretq with NT = 1 in IA-32e mode: #GP(0), nothing popped. */
  f = kernel_frame();
  flt = iret_caught(&f, true);
  check_fault(&flt, GP_VECTOR, 0, ADDR(do_iret_insn), "iretq with RFLAGS.NT = 1");
}

static void test_user_targets(void) {
  struct iret_frame f = user_frame(ADDR(iret_land), 0x2, 0);
  struct fault flt = iret_caught(&f, false);
  report(landed(&flt, iret_land_ud2) && flt.cs == USER_CS && landing.cs == USER_CS &&
             landing.ss == USER_DS && landing.rsp == f.rsp,
         "CPL0 -> CPL3: cs %#llx, ss %#llx, rsp as in the frame", (unsigned long long)landing.cs,
         (unsigned long long)landing.ss);
  report(landing.ds == 0, "CPL0 -> CPL3: DS (DPL 0 data) became null (ds %#llx)",
         (unsigned long long)landing.ds);

  /* At CPL3 with IOPL 0, iretq cannot change IF or IOPL (silently). */
  f = user_frame(ADDR(user_iret_self), 0x2 | X86_EFLAGS_IF, 0x2);
  flt = iret_caught(&f, false);
  report(flt.vector == UD_VECTOR && (landing.rflags & X86_EFLAGS_IF) &&
             (landing.rflags2 & X86_EFLAGS_IF) && !(landing.rflags2 & RFLAGS_IOPL3),
         "CPL3 -> CPL3 with IOPL 0: IF stays set (before %#llx, after %#llx)",
         (unsigned long long)landing.rflags, (unsigned long long)landing.rflags2);
  f = user_frame(ADDR(user_iret_self), 0x2, 0x2 | X86_EFLAGS_IF | RFLAGS_IOPL3);
  flt = iret_caught(&f, false);
  report(flt.vector == UD_VECTOR && !(landing.rflags2 & (X86_EFLAGS_IF | RFLAGS_IOPL3)),
         "CPL3 -> CPL3 with IOPL 0: IF and IOPL stay clear (after %#llx)",
         (unsigned long long)landing.rflags2);
  /* With IOPL 3 (set by the CPL0 iretq), IF may change, IOPL still not. */
  f = user_frame(ADDR(user_iret_self), 0x2 | X86_EFLAGS_IF | RFLAGS_IOPL3, 0x2);
  flt = iret_caught(&f, false);
  report(flt.vector == UD_VECTOR && (landing.rflags & RFLAGS_IOPL3) == RFLAGS_IOPL3 &&
             !(landing.rflags2 & X86_EFLAGS_IF) && (landing.rflags2 & RFLAGS_IOPL3) == RFLAGS_IOPL3,
         "CPL3 -> CPL3 with IOPL 3: IF cleared, IOPL kept (before %#llx, after %#llx)",
         (unsigned long long)landing.rflags, (unsigned long long)landing.rflags2);
  /* AC, NT, DF and the arithmetic flags may change at any CPL. */
  f = user_frame(ADDR(user_iret_self), 0x2,
                 0x2 | X86_EFLAGS_AC | RFLAGS_NT | RFLAGS_DF | RFLAGS_CF | RFLAGS_ZF);
  flt = iret_caught(&f, false);
  report(flt.vector == UD_VECTOR && landing.rflags2 == (0x2 | X86_EFLAGS_AC | RFLAGS_NT |
                                                        RFLAGS_DF | RFLAGS_CF | RFLAGS_ZF),
         "CPL3 -> CPL3: AC, NT, DF, CF, ZF from the frame (after %#llx)",
         (unsigned long long)landing.rflags2);

  /* An interrupt, a trap and a single step at CPL3, each returning there. */
  handle_exception(0x81, int81_handler);
  set_idt_dpl(0x81, 3);
  handle_exception(BP_VECTOR, int3_handler);
  set_idt_dpl(BP_VECTOR, 3);
  handle_exception(DB_VECTOR, db_handler);
  db_count = 0;
  f = user_frame(ADDR(user_interrupts), 0x2, 0);
  flt = iret_caught(&f, false);
  handle_exception(DB_VECTOR, NULL);
  handle_exception(BP_VECTOR, NULL);
  set_idt_dpl(BP_VECTOR, 0);
  handle_exception(0x81, NULL);
  set_idt_dpl(0x81, 0);
  report(int81_cs == USER_CS && int81_ss == USER_DS && int81_rsp == f.rsp &&
             int81_rip == ADDR(user_int81_after) && landing.rcx == 15,
         "int $0x81 at CPL3: frame cs %#llx ss %#llx, rip after it; back at CPL3 with rax %llu",
         (unsigned long long)int81_cs, (unsigned long long)int81_ss,
         (unsigned long long)landing.rcx);
  report(int3_cs == USER_CS && int3_rip == ADDR(user_int3_after),
         "int3 at CPL3: a trap, rip after it, returned to CPL3");
  report(db_count == 1 && db_rip == ADDR(user_step_after) && db_cs == USER_CS && (db_dr6 & 0x4000),
         "single step at CPL3 (TF by popf): #DB with cs %#llx, %d trap(s)",
         (unsigned long long)db_cs, db_count);
  report(flt.vector == UD_VECTOR && landing.cs == USER_CS && landing.r11 == f.rsp &&
             landing.rsp == f.rsp,
         "still at CPL3 with the same RSP after all three (cs %#llx)",
         (unsigned long long)landing.cs);

  /* A CPL3 iretq to CPL0: #GP(selector). */
  f = user_frame(ADDR(user_iret_to_kernel), 0x2, 0);
  flt = iret_caught(&f, false);
  check_fault(&flt, GP_VECTOR, KERNEL_CS, ADDR(user_iret_to_kernel_insn),
              "CPL3 iretq to CPL0 (RPL < CPL)");

  /* A conforming DPL 0 code segment entered at RPL 3 runs at CPL3. */
  f = user_frame(ADDR(iret_land), 0x2, 0);
  f.cs = CONFORMING_CODE64 | 3;
  flt = iret_caught(&f, false);
  report(
      landed(&flt, iret_land_ud2) && landing.cs == (CONFORMING_CODE64 | 3) && landing.ss == USER_DS,
      "CPL0 -> CPL3 through a conforming code segment (cs %#llx)", (unsigned long long)landing.cs);

  /* sysret: back to 64-bit user mode with RFLAGS = R11. */
  memset(&landing, 0, sizeof landing);
  u64 r = enter_user(user_sysret, 0);
  report(r == 42 && landing.rcx == ADDR(user_sysret_after) &&
             (landing.r11 & (RFLAGS_CF | RFLAGS_DF)) == (RFLAGS_CF | RFLAGS_DF) &&
             (landing.rflags & (RFLAGS_CF | RFLAGS_DF)) == (RFLAGS_CF | RFLAGS_DF),
         "syscall/sysretq: result %llu, RCX = next rip, CF and DF back from R11",
         (unsigned long long)r);
  report(landing.cs == USER_CS && landing.ss == USER_DS, "sysretq: cs %#llx, ss %#llx (from STAR)",
         (unsigned long long)landing.cs, (unsigned long long)landing.ss);
  struct fault nc = call_caught(do_sysret_noncanonical);
  report(nc.vector == GP_VECTOR && nc.error_code == 0,
         "sysretq with a non-canonical RCX: %s error code %#llx",
         nc.vector == FAULT_NONE ? "no fault" : exception_mnemonic((unsigned)nc.vector),
         (unsigned long long)nc.error_code);
}

static void test_bad_targets(void) {
  struct {
    const char* what;
    u64 cs, ss, rip;
    int vector;
    u64 error_code;
  } cases[] = {
      {"null CS", 0, KERNEL_DS, ADDR(iret_land), GP_VECTOR, 0},
      {"CS past the GDT limit", 0x1238, KERNEL_DS, ADDR(iret_land), GP_VECTOR, 0x1238},
      {"CS a data segment", KERNEL_DS, KERNEL_DS, ADDR(iret_land), GP_VECTOR, KERNEL_DS},
      {"CS the TSS", KERNEL_TSS, KERNEL_DS, ADDR(iret_land), GP_VECTOR, KERNEL_TSS},
      {"CS not present", NP_CODE64_DPL0, KERNEL_DS, ADDR(iret_land), NP_VECTOR, NP_CODE64_DPL0},
      {"CS DPL 0 with RPL 3", KERNEL_CS | 3, USER_DS, ADDR(iret_land), GP_VECTOR, KERNEL_CS},
      {"CS DPL 3 with RPL 0", USER_CS & ~3, KERNEL_DS, ADDR(iret_land), GP_VECTOR, USER_CS & ~3},
      {"to CPL3 with a null SS", USER_CS, 0, ADDR(iret_land), GP_VECTOR, 0},
      {"to CPL3 with a DPL 0 SS", USER_CS, KERNEL_DS | 3, ADDR(iret_land), GP_VECTOR, KERNEL_DS},
      {"to CPL3 with SS RPL 0", USER_CS, USER_DS & ~3, ADDR(iret_land), GP_VECTOR, USER_DS & ~3},
      {"non-canonical RIP", KERNEL_CS, KERNEL_DS, 0x0000800000000000ull, GP_VECTOR, 0},
  };
  for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
    struct iret_frame f = kernel_frame();
    f.cs = cases[i].cs;
    f.ss = cases[i].ss;
    f.rip = cases[i].rip;
    if ((f.cs & 3) == 3) f.rsp = USER_STACK_TOP - 0x100;
    struct fault flt = iret_caught(&f, false);
    char what[64];
    snprintf(what, sizeof what, "iretq, %s", cases[i].what);
    /* A non-canonical RIP faults at the iretq on hardware; QEMU TCG
       (7.2) takes the #GP(0) at the fetch from the new RIP instead, so only
       the vector and error code are checked there. */
    u64 rip = cases[i].rip == ADDR(iret_land) ? ADDR(do_iret_insn) : flt.rip;
    check_fault(&flt, cases[i].vector, cases[i].error_code, rip, what);
  }
}

/* 32-bit compatibility mode (CS = USER_CS32): by iretq, then by sysretl. */
static void test_compat_targets(void) {
  struct iret_frame f = {ADDR(compat_land), USER_CS32 | 3, 0x2, USER_STACK_TOP - 0x104, USER_DS, 0};
  struct fault flt = iret_caught(&f, false);
  report(landed(&flt, compat_land_ud2) && flt.cs == (USER_CS32 | 3) &&
             landing.rsp == USER_STACK_TOP - 0x104 && landing.cs == (USER_CS32 | 3),
         "CPL0 -> CPL3 compatibility mode by iretq: cs %#llx, esp as in the frame",
         (unsigned long long)landing.cs);
  flt = call_caught(do_sysretl);
  report(landed(&flt, compat_land_ud2) && landing.cs == (USER_CS32 | 3) &&
             landing.rsp == USER_STACK_TOP,
         "sysretl to compatibility mode: cs %#llx", (unsigned long long)landing.cs);
}

int main(void) {
  pic_init(); /* iretq sets IF below: no firmware timer interrupts */
  user_init();
  install_gdt();
  test_kernel_targets();
  test_user_targets();
  test_bad_targets();
  test_compat_targets();
  return report_summary();
}
