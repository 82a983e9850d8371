/*
 * x87: the x87 FPU's state is the guest's across everything a kernel does
 * between its FPU instructions (SDM Vol. 1 ch. 8, FXSAVE/FXRSTOR in
 * Vol. 2): port I/O and other instructions an emulator may take apart,
 * fxsave right after x87 instructions (it must see their results), fxrstor
 * (the next x87 instruction must see what it loaded), MMX (which aliases
 * the x87 registers) and the control word's rounding mode. (btvm keeps the
 * x87 state in the host FPU across its exits and saves it in full only
 * after translated code that may have changed it.)
 */
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

static u8 area[512] __attribute__((aligned(16)));
static u8 area2[512] __attribute__((aligned(16)));

static void fxsave(void* p) { asm volatile("fxsave64 %0" : "=m"(*(u8(*)[512])p)); }
static void fxrstor(const void* p) { asm volatile("fxrstor64 %0" : : "m"(*(const u8(*)[512])p)); }

/* ST(i) of an FXSAVE image: the 80-bit value's significand and exponent. */
static u64 st_mantissa(const u8* a, int i) {
  u64 v;
  memcpy(&v, a + 32 + 16 * i, 8);
  return v;
}
static u16 st_exponent(const u8* a, int i) {
  u16 v;
  memcpy(&v, a + 32 + 16 * i + 8, 2);
  return v;
}
static u16 fsw_of(const u8* a) {
  u16 v;
  memcpy(&v, a + 2, 2);
  return v;
}

int main(void) {
  /* 1 + pi with an exit (port I/O) between the loads and the add. */
  double sum;
  asm volatile("fninit\n fld1\n fldpi\n" ::: "memory");
  inb(0x61); /* an instruction the emulator runs */
  asm volatile("faddp\n fstpl %0" : "=m"(sum));
  u64 bits;
  memcpy(&bits, &sum, 8);
  report(bits == 0x401090fdaa22168cull, "fld1, fldpi, an exit, faddp: 1 + pi (%#llx)",
         (unsigned long long)bits);

  /* fxsave right after x87 instructions sees them. */
  asm volatile("fninit\n fld1\n fldpi\n" ::: "memory");
  fxsave(area);
  report(((fsw_of(area) >> 11) & 7) == 6, "fxsave: TOP is 6 after two loads (FSW %#x)",
         fsw_of(area));
  report(st_mantissa(area, 0) == 0xc90fdaa22168c235ull && st_exponent(area, 0) == 0x4000,
         "fxsave: ST0 is pi (%#llx, exponent %#x)", (unsigned long long)st_mantissa(area, 0),
         st_exponent(area, 0));
  report(st_mantissa(area, 1) == 0x8000000000000000ull && st_exponent(area, 1) == 0x3fff,
         "fxsave: ST1 is 1");
  asm volatile("fninit" ::: "memory");

  /* fxrstor, then x87 code uses what it loaded (after exits from code that
     leaves the x87 state alone). */
  u64 scratch = 0;
  asm volatile("mov $0x61, %%edx\n in %%dx, %%al\n add $1, %0\n in %%dx, %%al\n"
               : "+r"(scratch)
               :
               : "rax", "rdx", "cc");
  fxrstor(area);
  double pi;
  asm volatile("fstpl %0\n fstp %%st(0)" : "=m"(pi));
  memcpy(&bits, &pi, 8);
  report(bits == 0x400921fb54442d18ull, "fxrstor, then fstp: pi (%#llx)", (unsigned long long)bits);

  /* MMX writes alias ST0's significand; fxsave sees it. */
  asm volatile("fninit\n" ::: "memory");
  u64 mm = 0x0123456789abcdefull;
  asm volatile("movq %0, %%mm0" : : "m"(mm));
  inb(0x61);
  fxsave(area2);
  asm volatile("emms" ::: "memory");
  /* (Only the significand: CPUs set the exponent to all ones, QEMU TCG
     leaves it.) */
  report(st_mantissa(area2, 0) == mm, "movq to mm0, an exit, fxsave: ST0 holds it (%#llx)",
         (unsigned long long)st_mantissa(area2, 0));

  /* The rounding mode survives exits: 2.75 to an integer. */
  static const double x = 2.75, y = -2.75;
  long long rn = 0, rz = 0, rd = 0;
  u16 cw_chop = 0x0f7f, cw_down = 0x077f;
  asm volatile("fninit\n fldl %0\n" : : "m"(x));
  inb(0x61);
  asm volatile("fistpll %0" : "=m"(rn));
  asm volatile("fninit\n fldcw %0\n" : : "m"(cw_chop));
  inb(0x61);
  asm volatile("fldl %1\n fistpll %0" : "=m"(rz) : "m"(x));
  asm volatile("fldcw %0\n" : : "m"(cw_down));
  inb(0x61);
  asm volatile("fldl %1\n fistpll %0" : "=m"(rd) : "m"(y));
  report(rn == 3 && rz == 2 && rd == -3,
         "rounding to nearest, toward zero and down across exits: %lld, %lld, %lld", rn, rz, rd);
  asm volatile("fninit" ::: "memory");

  /* State from fxrstor survives further exits and a second fxsave. */
  fxrstor(area);
  inb(0x61);
  printf("INFO: an exit with the x87 state loaded\n");
  fxsave(area2);
  report(memcmp(area2 + 32, area + 32, 32) == 0 && ((fsw_of(area2) >> 11) & 7) == 6,
         "fxrstor, exits, fxsave: the same registers");
  asm volatile("fninit" ::: "memory");
  return report_summary();
}
