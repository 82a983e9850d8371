/*
 * insns: instruction forms whose memory operand is not simply [modrm]:
 * bt/bts/btr/btc with a register bit offset, which address the bit string
 * beyond their operand, up and down (SDM Vol. 2 BT); mov to and from a
 * 64-bit absolute address (moffs, opcodes A0-A3); cmpxchg16b; a locked
 * read-modify-write; an access through FS and GS bases; and division with
 * its #DE-free results; maskmovq, whose address is RDI.
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

static u64 bits[64] __attribute__((aligned(64)));
static u64 pair[2] __attribute__((aligned(16)));

static void clear_bits(void) {
  for (int i = 0; i < 64; i++) bits[i] = 0;
}

/* bt* [base], off: returns CF. */
#define BITOP(name, insn)                                                   \
  static int name(u64* base, long off) {                                    \
    u8 cf;                                                                  \
    asm volatile(insn " %2, %1\n\tsetc %0" : "=r"(cf), "+m"(*base) : "r"(off) \
                 : "cc", "memory");                                         \
    return cf;                                                              \
  }
BITOP(bt64, "btq")
BITOP(bts64, "btsq")
BITOP(btr64, "btrq")
BITOP(btc64, "btcq")

static int bts32(u32* base, int off) {
  u8 cf;
  asm volatile("btsl %2, %1\n\tsetc %0" : "=r"(cf), "+m"(*base) : "r"(off) : "cc", "memory");
  return cf;
}
static int bts16(u16* base, short off) {
  u8 cf;
  asm volatile("btsw %2, %1\n\tsetc %0" : "=r"(cf), "+m"(*base) : "r"(off) : "cc", "memory");
  return cf;
}

int main(void) {
  /* Bit strings beyond the operand. */
  clear_bits();
  u64* mid = &bits[32];
  report(bts64(mid, 64 * 5 + 3) == 0 && bits[37] == 8, "bts [m64], r: bit 323 is bit 3 of qword +5");
  report(bt64(mid, 64 * 5 + 3) == 1, "bt reads it back");
  report(bts64(mid, -1) == 0 && bits[31] == 0x8000000000000000ull,
         "bts with offset -1: the top bit of the qword below");
  report(btr64(mid, -1) == 1 && bits[31] == 0, "btr clears it");
  report(btc64(mid, -64 * 20 + 7) == 0 && bits[12] == 0x80, "btc 20 qwords down");
  report(btc64(mid, -64 * 20 + 7) == 1 && bits[12] == 0, "btc again toggles it back");
  clear_bits();
  report(bts32((u32*)mid, 32 * 9 + 31) == 0 && ((u32*)mid)[9] == 0x80000000u,
         "bts [m32], r32: dword +9, bit 31");
  report(bts32((u32*)mid, -33) == 0 && ((u32*)mid)[-2] == 0x80000000u,
         "bts [m32], r32 = -33: dword -2, bit 31");
  clear_bits();
  report(bts16((u16*)mid, 16 * 3 + 1) == 0 && ((u16*)mid)[3] == 2, "bts [m16], r16: word +3, bit 1");
  report(bts16((u16*)mid, -16) == 0 && ((u16*)mid)[-1] == 1, "bts [m16], r16 = -16: word -1, bit 0");

  /* moffs: a 64-bit absolute address. */
  static volatile u64 cell;
  u64 v = 0x1122334455667788ull, got;
  asm volatile("movabsq %%rax, %c1" : : "a"(v), "i"(&cell) : "memory");
  asm volatile("movabsq %c1, %%rax" : "=a"(got) : "i"(&cell) : "memory");
  report(cell == v && got == v, "mov to and from a 64-bit absolute address (moffs)");

  /* cmpxchg16b: equal, then different. */
  pair[0] = 1;
  pair[1] = 2;
  u64 lo = 1, hi = 2;
  u8 zf;
  asm volatile("lock cmpxchg16b %1\n\tsetz %0"
               : "=r"(zf), "+m"(*(volatile u64(*)[2])pair), "+a"(lo), "+d"(hi)
               : "b"(10ull), "c"(20ull) : "cc", "memory");
  report(zf && pair[0] == 10 && pair[1] == 20, "cmpxchg16b stores when equal");
  lo = 1;
  hi = 2;
  asm volatile("lock cmpxchg16b %1\n\tsetz %0"
               : "=r"(zf), "+m"(*(volatile u64(*)[2])pair), "+a"(lo), "+d"(hi)
               : "b"(30ull), "c"(40ull) : "cc", "memory");
  report(!zf && lo == 10 && hi == 20 && pair[0] == 10, "cmpxchg16b loads when different");

  /* A locked add and xadd on memory. */
  static volatile u64 counter = 5;
  u64 old = 3;
  asm volatile("lock addq $7, %0" : "+m"(counter) : : "cc", "memory");
  asm volatile("lock xaddq %1, %0" : "+m"(counter), "+r"(old) : : "cc", "memory");
  report(counter == 15 && old == 12, "lock add and lock xadd");

  /* FS and GS bases (wrmsr) add to the address. */
  static u64 fs_area[4] = {0, 0x1111, 0, 0};
  static u64 gs_area[4] = {0, 0, 0x2222, 0};
  wrmsr(0xc0000100, (u64)(uintptr_t)fs_area);
  wrmsr(0xc0000101, (u64)(uintptr_t)gs_area);
  u64 f, g;
  asm volatile("movq %%fs:8, %0" : "=r"(f));
  asm volatile("movq %%gs:16, %0" : "=r"(g));
  asm volatile("movq %0, %%gs:24" : : "r"(0x3333ull) : "memory");
  report(f == 0x1111 && g == 0x2222 && gs_area[3] == 0x3333, "fs: and gs: accesses use the bases");
  wrmsr(0xc0000100, 0);
  wrmsr(0xc0000101, 0);

  /* maskmovq: the bytes whose mask byte has its top bit set go to [rdi]. */
  static u8 masked[16];
  for (int i = 0; i < 16; i++) masked[i] = 0xaa;
  u64 data = 0x1122334455667788ull, mask = 0x8000800000808000ull;
  asm volatile("movq %1, %%mm0\n\tmovq %2, %%mm1\n\tmaskmovq %%mm1, %%mm0\n\temms"
               : : "D"(masked + 4), "r"(data), "r"(mask) : "memory");
  report(masked[4] == 0xaa && masked[5] == 0x77 && masked[6] == 0x66 && masked[7] == 0xaa &&
             masked[8] == 0xaa && masked[9] == 0x33 && masked[10] == 0xaa && masked[11] == 0x11 &&
             masked[3] == 0xaa && masked[12] == 0xaa,
         "maskmovq stores only the selected bytes at [rdi]");

  /* Division runs natively. */
  u64 q, r;
  asm volatile("divq %4" : "=a"(q), "=d"(r) : "a"(1000003ull), "d"(0ull), "r"(97ull));
  report(q == 10309 && r == 30, "divq: quotient and remainder");
  s64 sq, sr;
  asm volatile("idivq %4" : "=a"(sq), "=d"(sr) : "a"(-1000003ll), "d"(-1ll), "r"(97ll));
  report(sq == -10309 && sr == -30, "idivq: signed quotient and remainder");
  return report_summary();
}
