/*
 * Reproducer: instructions of features the virtual CPU does not expose
 * raise #UD (btvm's CPUID model: no AVX, no SMX, no SMAP; Knights Corner
 * opcodes are not x86-64 at all). RTM's xbegin/xabort belong here too, but
 * QEMU 7.2 TCG runs them on a CPU model without RTM, so they are not tested. Ident translation must not hand
 * them to the host, which may run them (AVX: guest state the engines do not
 * switch; xbegin: a relative target from the wrong place) or refuse them
 * (SIGILL in the monitor).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

static int run_ud(const char* what, void (*fn)(void)) {
  struct fault f;
  if (catch_begin(&f) == 0) {
    fn();
    catch_end();
  }
  report(f.vector == UD_VECTOR, "%s: #UD (vector %d)", what, f.vector);
  return f.vector;
}

static void avx(void) {
  asm volatile("vaddps %%ymm1, %%ymm2, %%ymm3" ::: "memory"); /* CR4.OSXSAVE is clear */
}
static void knc(void) {
  asm volatile(".byte 0xc5, 0xe8, 0x85, 0xb4, 0x1d, 0x90, 0x8f" ::: "memory"); /* jknzd */
}
static void getsec(void) {
  asm volatile("getsec" ::: "memory");
}
static void stac(void) {
  asm volatile("stac" ::: "memory");
}

int main(void) {
  run_ud("vaddps ymm with AVX hidden", avx);
  run_ud("a Knights Corner opcode (c5 e8 85)", knc);
  run_ud("getsec with SMX hidden", getsec);
  run_ud("stac with SMAP hidden", stac);
  return report_summary();
}
