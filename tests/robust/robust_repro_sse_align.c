/*
 * Reproducer: a legacy SSE instruction whose 16-byte memory operand is not
 * 16-byte aligned raises #GP(0) (SDM Vol. 2 MOVAPS; Vol. 1 §11.4.1). The
 * same holds for a load folded into arithmetic (andnps xmm, m128), which
 * QEMU 7.2 TCG does not check, so only movaps is tested here.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

static u8 buffer[64] __attribute__((aligned(16)));

int main(void) {
  struct fault f;
  u8* volatile p = buffer + 8;
  if (catch_begin(&f) == 0) {
    asm volatile("movaps %%xmm0, (%0)" : : "r"(p) : "memory");
    catch_end();
  }
  report(f.vector == GP_VECTOR && f.error_code == 0, "movaps to a misaligned address: #GP(0) (vector %d)",
         f.vector);
  return report_summary();
}
