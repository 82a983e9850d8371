/*
 * strings: the string instructions (SDM Vol. 2 MOVS, STOS, LODS, CMPS, SCAS,
 * REP/REPE/REPNE). rep movs and rep stos of every element size, upwards
 * (DF = 0) and downwards (DF = 1), across a page boundary; into a page that
 * is not mapped, where the #PF arrives part-way with RCX, RSI and RDI
 * counting exactly the elements done and CR2 the first byte that cannot be
 * accessed, and the instruction, restarted after the handler maps the page,
 * completes. rep cmps and rep scas stop where they must (also after a #PF
 * in the middle), lods loads the accumulator, and RCX = 0 does nothing.
 *
 * The string instructions are written out in assembly: the kit's C code is
 * compiled without them.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

#define BUF_VA 0xffffff8050000000ull
#define SRC_VA (BUF_VA)           /* two pages: S0, S1 */
#define DST_VA (BUF_VA + 0x10000) /* two pages: D0, D1 */
#define FILL 0xee
#define RFLAGS_DF (1ull << 10)
#define RFLAGS_CF (1ull << 0)
#define RFLAGS_ZF (1ull << 6)
#define RFLAGS_ARITH 0x8d5ull /* CF PF AF ZF SF OF */

/* The registers a string instruction uses, in and out. */
struct sregs {
  u64 rax, rcx, rsi, rdi, rflags;
};

/* STRFN name, insn: void name(struct sregs*) loads RAX, RCX, RSI, RDI and
   RFLAGS (DF and the arithmetic flags) from the struct, executes insn at
   the label name_insn and stores them back. */
asm(".macro STRFN name, insn:vararg\n"
    "  .pushsection .text\n"
    "  .globl \\name\n"
    "\\name:\n"
    "  pushq %rbx\n"
    "  movq %rdi, %rbx\n"
    "  movq 0(%rbx), %rax\n"
    "  movq 8(%rbx), %rcx\n"
    "  movq 16(%rbx), %rsi\n"
    "  movq 24(%rbx), %rdi\n"
    "  pushq 32(%rbx)\n"
    "  popfq\n"
    "  .globl \\name\\()_insn\n"
    "\\name\\()_insn:\n"
    "  \\insn\n"
    "  pushfq\n"
    "  popq 32(%rbx)\n"
    "  cld\n"
    "  movq %rax, 0(%rbx)\n"
    "  movq %rcx, 8(%rbx)\n"
    "  movq %rsi, 16(%rbx)\n"
    "  movq %rdi, 24(%rbx)\n"
    "  popq %rbx\n"
    "  ret\n"
    "  .popsection\n"
    ".endm\n"
    "STRFN s_rep_movsb, rep movsb\n"
    "STRFN s_rep_movsw, rep movsw\n"
    "STRFN s_rep_movsl, rep movsl\n"
    "STRFN s_rep_movsq, rep movsq\n"
    "STRFN s_rep_stosb, rep stosb\n"
    "STRFN s_rep_stosw, rep stosw\n"
    "STRFN s_rep_stosl, rep stosl\n"
    "STRFN s_rep_stosq, rep stosq\n"
    "STRFN s_movsb, movsb\n"
    "STRFN s_lodsb, lodsb\n"
    "STRFN s_lodsw, lodsw\n"
    "STRFN s_lodsl, lodsl\n"
    "STRFN s_lodsq, lodsq\n"
    "STRFN s_rep_lodsb, rep lodsb\n"
    "STRFN s_repe_cmpsb, repe cmpsb\n"
    "STRFN s_repe_cmpsq, repe cmpsq\n"
    "STRFN s_repne_cmpsb, repne cmpsb\n"
    "STRFN s_repne_scasb, repne scasb\n"
    "STRFN s_repne_scasw, repne scasw\n"
    "STRFN s_repne_scasl, repne scasl\n"
    "STRFN s_repne_scasq, repne scasq\n"
    "STRFN s_repe_scasb, repe scasb\n");

typedef void (*strfn)(struct sregs*);
#define DECL(n)          \
  void n(struct sregs*); \
  extern char n##_insn[]
DECL(s_rep_movsb);
DECL(s_rep_movsw);
DECL(s_rep_movsl);
DECL(s_rep_movsq);
DECL(s_rep_stosb);
DECL(s_rep_stosw);
DECL(s_rep_stosl);
DECL(s_rep_stosq);
DECL(s_movsb);
DECL(s_lodsb);
DECL(s_lodsw);
DECL(s_lodsl);
DECL(s_lodsq);
DECL(s_rep_lodsb);
DECL(s_repe_cmpsb);
DECL(s_repe_cmpsq);
DECL(s_repne_cmpsb);
DECL(s_repne_scasb);
DECL(s_repne_scasw);
DECL(s_repne_scasl);
DECL(s_repne_scasq);
DECL(s_repe_scasb);

/* The four buffer pages: virtual address and backing page. */
static u64 page_va[4] = {SRC_VA, SRC_VA + PAGE_SIZE, DST_VA, DST_VA + PAGE_SIZE};
static u8* page_mem[4];

/* The first #PF of a run, as the handler saw it. */
static struct {
  int count;
  u64 cr2, error_code, rip, rcx, rsi, rdi;
} pf;

/* Maps the faulting page (one of the buffer pages) and returns: the
   instruction restarts. */
static void pf_handler(struct ex_regs* r) {
  u64 cr2 = read_cr2();
  if (pf.count++ == 0) {
    pf.cr2 = cr2;
    pf.error_code = r->error_code;
    pf.rip = r->rip;
    pf.rcx = r->rcx;
    pf.rsi = r->rsi;
    pf.rdi = r->rdi;
  }
  for (int i = 0; i < 4; i++) {
    if (ALIGN_DOWN(cr2, PAGE_SIZE) == page_va[i]) {
      vm_map(page_va[i], (u64)(uintptr_t)page_mem[i], PTE_P | PTE_W);
      return;
    }
  }
  panic("#PF at %#llx (rip %#llx) outside the buffers", (unsigned long long)cr2,
        (unsigned long long)r->rip);
}

static u8 src_byte(u64 i) {
  return (u8)(i * 7 + 3);
}

/* Maps all four pages, fills S with the pattern and D with FILL, then
   unmaps page `hole` (-1: none). */
static void setup(int hole) {
  for (int i = 0; i < 4; i++) {
    vm_map(page_va[i], (u64)(uintptr_t)page_mem[i], PTE_P | PTE_W);
    for (u64 j = 0; j < PAGE_SIZE; j++) {
      page_mem[i][j] = i < 2 ? src_byte(i * PAGE_SIZE + j) : FILL;
    }
  }
  if (hole >= 0) vm_unmap(page_va[hole]);
  pf.count = 0;
}

/* The byte at a buffer address, read through the backing pages. */
static u8 byte_at(u64 va) {
  for (int i = 0; i < 4; i++) {
    if (ALIGN_DOWN(va, PAGE_SIZE) == page_va[i]) return page_mem[i][va & (PAGE_SIZE - 1)];
  }
  return 0;
}

#define COPY_BYTES 0x200ull
#define SRC_CROSS 0x100ull /* bytes before the source crosses its page boundary */
#define DST_CROSS 0x80ull  /* ... the destination */
#define STOS_VALUE 0x8877665544332211ull

enum hole { NO_HOLE, DST_HOLE, SRC_HOLE };

/* rep movs or rep stos of COPY_BYTES, source and destination crossing their
   page boundaries at SRC_CROSS and DST_CROSS bytes; with a hole, the page
   beyond the boundary (in the direction of the copy) is unmapped. */
static void run_bulk(const char* what, strfn fn, const char* insn_label, unsigned size, bool df,
                     bool stos, enum hole hole) {
  const u64 n = COPY_BYTES / size;
  struct sregs s = {0};
  u64 src_lo, dst_lo; /* lowest byte of each range */
  if (!df) {
    s.rsi = SRC_VA + PAGE_SIZE - SRC_CROSS;
    s.rdi = DST_VA + PAGE_SIZE - DST_CROSS;
    src_lo = s.rsi;
    dst_lo = s.rdi;
  } else {
    s.rsi = SRC_VA + PAGE_SIZE + SRC_CROSS - size;
    s.rdi = DST_VA + PAGE_SIZE + DST_CROSS - size;
    src_lo = s.rsi + size - COPY_BYTES;
    dst_lo = s.rdi + size - COPY_BYTES;
  }
  const u64 rsi0 = s.rsi, rdi0 = s.rdi;
  s.rcx = n;
  s.rax = STOS_VALUE;
  s.rflags = 0x2 | (df ? RFLAGS_DF : 0) | RFLAGS_CF; /* CF: must survive */
  int hole_page = -1;
  u64 cross = 0;
  if (hole == DST_HOLE) hole_page = df ? 2 : 3, cross = DST_CROSS;
  if (hole == SRC_HOLE) hole_page = df ? 0 : 1, cross = SRC_CROSS;
  setup(hole_page);

  fn(&s);

  const s64 step = df ? -(s64)size : (s64)size;
  bool regs_ok = s.rcx == 0 && s.rdi == rdi0 + step * (s64)n &&
                 (stos || s.rsi == rsi0 + step * (s64)n) && (s.rflags & RFLAGS_CF) &&
                 s.rax == STOS_VALUE;
  bool mem_ok = byte_at(dst_lo - 1) == FILL && byte_at(dst_lo + COPY_BYTES) == FILL;
  for (u64 i = 0; i < COPY_BYTES && mem_ok; i++) {
    u8 want = stos ? (u8)(STOS_VALUE >> (8 * (i % size))) : byte_at(src_lo + i);
    mem_ok = byte_at(dst_lo + i) == want;
  }
  if (hole == NO_HOLE) {
    report(regs_ok && mem_ok && pf.count == 0, "%s DF=%d across a page boundary: %s%s", what, df,
           regs_ok ? "registers ok" : "REGISTERS WRONG", mem_ok ? "" : ", MEMORY WRONG");
    return;
  }
  /* The fault: after `cross` bytes, at the first byte of the missing page
     in the direction of the copy. */
  const u64 done = cross / size;
  const bool dst = hole == DST_HOLE;
  const u64 cr2 = df ? page_va[hole_page] + PAGE_SIZE - size : page_va[hole_page];
  bool fault_ok = pf.count == 1 && pf.cr2 == cr2 && pf.rip == (u64)(uintptr_t)insn_label &&
                  pf.error_code == (dst ? PFERR_WRITE : 0) && pf.rcx == n - done &&
                  pf.rdi == rdi0 + step * (s64)done && (stos || pf.rsi == rsi0 + step * (s64)done);
  report(fault_ok,
         "%s DF=%d into an unmapped %s page: #PF error code %#llx, cr2 %#llx, "
         "rcx %#llx rsi %#llx rdi %#llx",
         what, df, dst ? "destination" : "source", (unsigned long long)pf.error_code,
         (unsigned long long)pf.cr2, (unsigned long long)pf.rcx,
         (unsigned long long)(stos ? 0 : pf.rsi), (unsigned long long)pf.rdi);
  report(regs_ok && mem_ok, "%s DF=%d resumed after the #PF and completed%s%s", what, df,
         regs_ok ? "" : ": REGISTERS WRONG", mem_ok ? "" : ": MEMORY WRONG");
}

/* An element that straddles into the unmapped page. */
static void run_straddle(void) {
  /* stosq upwards, the first element at 0xffc of D0, D1 missing. */
  struct sregs s = {STOS_VALUE, 2, 0, DST_VA + PAGE_SIZE - 4, 0x2};
  setup(3);
  s_rep_stosq(&s);
  bool ok = pf.count == 1 && pf.cr2 == DST_VA + PAGE_SIZE && pf.error_code == PFERR_WRITE &&
            pf.rcx == 2 && pf.rdi == DST_VA + PAGE_SIZE - 4 && s.rcx == 0 &&
            s.rdi == DST_VA + PAGE_SIZE + 12;
  for (u64 i = 0; i < 16; i++)
    ok = ok && byte_at(DST_VA + PAGE_SIZE - 4 + i) == (u8)(STOS_VALUE >> (8 * (i % 8)));
  report(ok, "rep stosq element straddling into an unmapped page: cr2 %#llx, rcx %llu, rdi %#llx",
         (unsigned long long)pf.cr2, (unsigned long long)pf.rcx, (unsigned long long)pf.rdi);

  /* movsq upwards, the fourth source element straddles into S1. */
  struct sregs m = {0, 4, SRC_VA + PAGE_SIZE - 0x1c, DST_VA + 0x100, 0x2};
  setup(1);
  s_rep_movsq(&m);
  ok = pf.count == 1 && pf.cr2 == SRC_VA + PAGE_SIZE && pf.error_code == 0 && pf.rcx == 1 &&
       pf.rsi == SRC_VA + PAGE_SIZE - 4 && pf.rdi == DST_VA + 0x118 && m.rcx == 0;
  for (u64 i = 0; i < 32; i++)
    ok = ok && byte_at(DST_VA + 0x100 + i) == byte_at(SRC_VA + PAGE_SIZE - 0x1c + i);
  report(ok,
         "rep movsq DF=0, source element straddling into an unmapped page: cr2 %#llx, rcx %llu, "
         "rsi %#llx",
         (unsigned long long)pf.cr2, (unsigned long long)pf.rcx, (unsigned long long)pf.rsi);

  /* movsq downwards, the fourth source element straddles into S0: the
     first byte that faults is the element's own first byte. */
  m = (struct sregs){0, 4, SRC_VA + PAGE_SIZE + 0x14, DST_VA + 0x200, 0x2 | RFLAGS_DF};
  setup(0);
  s_rep_movsq(&m);
  ok = pf.count == 1 && pf.cr2 == SRC_VA + PAGE_SIZE - 4 && pf.error_code == 0 && pf.rcx == 1 &&
       pf.rsi == SRC_VA + PAGE_SIZE - 4 && pf.rdi == DST_VA + 0x1e8 && m.rcx == 0;
  for (u64 i = 0; i < 32; i++)
    ok = ok && byte_at(DST_VA + 0x1e8 + i) == byte_at(SRC_VA + PAGE_SIZE - 4 + i);
  report(ok,
         "rep movsq DF=1, source element straddling into an unmapped page: cr2 %#llx, rcx %llu, "
         "rsi %#llx",
         (unsigned long long)pf.cr2, (unsigned long long)pf.rcx, (unsigned long long)pf.rsi);

  /* A single movsb into an unmapped page: nothing advances. */
  struct sregs b = {0, 5, SRC_VA + 1, DST_VA + PAGE_SIZE, 0x2};
  setup(3);
  s_movsb(&b);
  ok = pf.count == 1 && pf.cr2 == DST_VA + PAGE_SIZE && pf.rcx == 5 && pf.rsi == SRC_VA + 1 &&
       pf.rdi == DST_VA + PAGE_SIZE && b.rcx == 5 && b.rsi == SRC_VA + 2 &&
       b.rdi == DST_VA + PAGE_SIZE + 1 && byte_at(DST_VA + PAGE_SIZE) == src_byte(1);
  report(ok, "movsb (no rep) into an unmapped page: #PF with nothing advanced, then done once");
}

static void run_misc(void) {
  setup(-1);
  /* RCX = 0: nothing happens, flags stay. */
  struct sregs s = {0x5a, 0, SRC_VA + 8, DST_VA + 8, 0x2 | RFLAGS_CF | RFLAGS_ZF};
  s_rep_stosb(&s);
  bool ok = s.rcx == 0 && s.rdi == DST_VA + 8 && byte_at(DST_VA + 8) == FILL;
  s_rep_movsq(&s);
  ok = ok && s.rsi == SRC_VA + 8 && s.rdi == DST_VA + 8 && byte_at(DST_VA + 8) == FILL;
  s.rflags = 0x2 | RFLAGS_CF; /* ZF = 0 */
  s_repe_cmpsb(&s);
  ok = ok && s.rsi == SRC_VA + 8 && (s.rflags & RFLAGS_ARITH) == RFLAGS_CF;
  report(ok, "rep stos/movs/cmps with RCX = 0: no access, registers and flags unchanged");

  /* Overlapping forward copy: element by element, so the first byte
     spreads (SDM: fast strings keep this for close overlaps). */
  u64 base = DST_VA + 0x40;
  for (int i = 0; i < 64; i++) page_mem[2][0x40 + i] = (u8)(i + 1);
  s = (struct sregs){0, 63, base, base + 1, 0x2};
  s_rep_movsb(&s);
  ok = true;
  for (int i = 0; i < 64; i++) ok = ok && page_mem[2][0x40 + i] == 1;
  report(ok, "rep movsb with destination = source + 1 replicates the first byte");

  /* lods: the accumulator's width; lodsd zero-extends into RAX. */
  const u64 junk = 0xfedcba9876543210ull;
  u64 at = SRC_VA + 0x20;
  u64 v8 = 0;
  for (int i = 7; i >= 0; i--) v8 = (v8 << 8) | src_byte(0x20 + i);
  s = (struct sregs){junk, 0, at, 0, 0x2};
  s_lodsb(&s);
  ok = s.rax == ((junk & ~0xffull) | (v8 & 0xff)) && s.rsi == at + 1;
  s = (struct sregs){junk, 0, at, 0, 0x2};
  s_lodsw(&s);
  ok = ok && s.rax == ((junk & ~0xffffull) | (v8 & 0xffff)) && s.rsi == at + 2;
  s = (struct sregs){junk, 0, at, 0, 0x2};
  s_lodsl(&s);
  ok = ok && s.rax == (v8 & 0xffffffffull) && s.rsi == at + 4;
  s = (struct sregs){junk, 0, at, 0, 0x2};
  s_lodsq(&s);
  ok = ok && s.rax == v8 && s.rsi == at + 8;
  report(ok, "lodsb/w/d/q load AL/AX/EAX (zero-extended)/RAX and advance RSI");
  s = (struct sregs){junk, 0, at, 0, 0x2 | RFLAGS_DF};
  s_lodsq(&s);
  ok = s.rax == v8 && s.rsi == at - 8;
  s = (struct sregs){junk, 0x10, SRC_VA + PAGE_SIZE - 8, 0, 0x2};
  s_rep_lodsb(&s);
  ok = ok && s.rcx == 0 && s.rsi == SRC_VA + PAGE_SIZE + 8 &&
       s.rax == ((junk & ~0xffull) | src_byte(PAGE_SIZE + 7));
  report(ok, "lodsq with DF=1 goes down; rep lodsb across a page keeps the last byte");
}

static void run_compare(void) {
  /* Two equal 64-byte strings with one difference at index 37. */
  setup(-1);
  u8* a = page_mem[2];
  u8* b = page_mem[2] + 0x100;
  for (int i = 0; i < 64; i++) a[i] = b[i] = (u8)(0x30 + i);
  b[37] = a[37] + 1; /* a < b there: CF after the compare */
  struct sregs s = {0, 64, DST_VA, DST_VA + 0x100, 0x2};
  s_repe_cmpsb(&s);
  bool ok = s.rcx == 64 - 38 && s.rsi == DST_VA + 38 && s.rdi == DST_VA + 0x100 + 38 &&
            !(s.rflags & RFLAGS_ZF) && (s.rflags & RFLAGS_CF);
  report(ok, "repe cmpsb stops after the first difference: rcx %llu, ZF %d, CF %d",
         (unsigned long long)s.rcx, !!(s.rflags & RFLAGS_ZF), !!(s.rflags & RFLAGS_CF));

  b[37] = a[37];
  s = (struct sregs){0, 8, DST_VA, DST_VA + 0x100, 0x2};
  s_repe_cmpsq(&s);
  ok = s.rcx == 0 && s.rsi == DST_VA + 64 && (s.rflags & RFLAGS_ZF);
  report(ok, "repe cmpsq over equal strings runs out RCX with ZF = 1");

  s = (struct sregs){0, 64, DST_VA, DST_VA + 0x100, 0x2};
  for (int i = 0; i < 64; i++) b[i] = (u8)~a[i];
  b[20] = a[20];
  s_repne_cmpsb(&s);
  ok = s.rcx == 64 - 21 && s.rdi == DST_VA + 0x100 + 21 && (s.rflags & RFLAGS_ZF);
  report(ok, "repne cmpsb stops at the first equal byte: rcx %llu", (unsigned long long)s.rcx);

  /* scas: find a byte, a word, a dword, a qword. */
  for (int i = 0; i < 256; i++) a[i] = (u8)i;
  s = (struct sregs){0x42, 200, 0, DST_VA, 0x2};
  s_repne_scasb(&s);
  ok = s.rcx == 200 - 0x43 && s.rdi == DST_VA + 0x43 && (s.rflags & RFLAGS_ZF);
  s = (struct sregs){0x4342, 100, 0, DST_VA, 0x2};
  s_repne_scasw(&s);
  ok = ok && s.rcx == 100 - 0x22 && s.rdi == DST_VA + 0x44 && (s.rflags & RFLAGS_ZF);
  s = (struct sregs){0x4b4a4948ull, 50, 0, DST_VA, 0x2};
  s_repne_scasl(&s);
  ok = ok && s.rcx == 50 - 0x13 && s.rdi == DST_VA + 0x4c && (s.rflags & RFLAGS_ZF);
  /* Downwards from 0xf8: the 30th qword (at 0x10) matches. */
  s = (struct sregs){0x1716151413121110ull, 40, 0, DST_VA + 0xf8, 0x2 | RFLAGS_DF};
  s_repne_scasq(&s);
  ok = ok && s.rcx == 40 - 30 && s.rdi == DST_VA + 0x8 && (s.rflags & RFLAGS_ZF);
  report(ok, "repne scasb/w/d and scasq with DF=1 find their element");

  s = (struct sregs){0x99, 0x40, 0, DST_VA, 0x2}; /* 0x99 is not in a[0..0x3f] */
  s_repne_scasb(&s);
  ok = s.rcx == 0 && s.rdi == DST_VA + 0x40 && !(s.rflags & RFLAGS_ZF);
  report(ok, "repne scasb without a match runs out RCX with ZF = 0");

  for (int i = 0; i < 16; i++) a[i] = ' ';
  a[11] = 'x';
  s = (struct sregs){' ', 16, 0, DST_VA, 0x2};
  s_repe_scasb(&s);
  ok = s.rcx == 16 - 12 && s.rdi == DST_VA + 12 && !(s.rflags & RFLAGS_ZF);
  report(ok, "repe scasb skips leading spaces: rcx %llu", (unsigned long long)s.rcx);

  /* repe cmpsb over equal strings that cross into an unmapped page. */
  setup(1);
  /* D1[0, 0x100) holds the bytes of S0[0xf80, 0x1000) and S1[0, 0x80). */
  for (u64 i = 0; i < 0x100; i++) page_mem[3][i] = src_byte(PAGE_SIZE - 0x80 + i);
  s = (struct sregs){0, 0x100, SRC_VA + PAGE_SIZE - 0x80, DST_VA + PAGE_SIZE, 0x2};
  s_repe_cmpsb(&s);
  ok = pf.count == 1 && pf.cr2 == SRC_VA + PAGE_SIZE && pf.error_code == 0 && pf.rcx == 0x80 &&
       pf.rip == (u64)(uintptr_t)s_repe_cmpsb_insn && s.rcx == 0 && (s.rflags & RFLAGS_ZF) &&
       s.rsi == SRC_VA + PAGE_SIZE + 0x80;
  report(ok, "repe cmpsb: #PF part-way (rcx %#llx), resumed, strings equal to the end",
         (unsigned long long)pf.rcx);
}

int main(void) {
  vm_init();
  for (int i = 0; i < 4; i++) page_mem[i] = alloc_page();
  handle_exception(PF_VECTOR, pf_handler);

  static const struct {
    const char* what;
    strfn fn;
    const char* insn;
    unsigned size;
    bool stos;
  } ops[] = {
      {"rep movsb", s_rep_movsb, s_rep_movsb_insn, 1, false},
      {"rep movsw", s_rep_movsw, s_rep_movsw_insn, 2, false},
      {"rep movsd", s_rep_movsl, s_rep_movsl_insn, 4, false},
      {"rep movsq", s_rep_movsq, s_rep_movsq_insn, 8, false},
      {"rep stosb", s_rep_stosb, s_rep_stosb_insn, 1, true},
      {"rep stosw", s_rep_stosw, s_rep_stosw_insn, 2, true},
      {"rep stosd", s_rep_stosl, s_rep_stosl_insn, 4, true},
      {"rep stosq", s_rep_stosq, s_rep_stosq_insn, 8, true},
  };
  for (unsigned i = 0; i < ARRAY_SIZE(ops); i++) {
    for (int df = 0; df <= 1; df++) {
      run_bulk(ops[i].what, ops[i].fn, ops[i].insn, ops[i].size, df, ops[i].stos, NO_HOLE);
      run_bulk(ops[i].what, ops[i].fn, ops[i].insn, ops[i].size, df, ops[i].stos, DST_HOLE);
      if (!ops[i].stos) {
        run_bulk(ops[i].what, ops[i].fn, ops[i].insn, ops[i].size, df, false, SRC_HOLE);
      }
    }
  }
  run_straddle();
  run_misc();
  run_compare();

  handle_exception(PF_VECTOR, NULL);
  return report_summary();
}
