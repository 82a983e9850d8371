/*
 * triple: a triple fault (SDM Vol. 3A §6.15, Interrupt 8, "Exception
 * class": a fault while delivering #DF shuts the processor down). With an
 * IDT of limit 0, ud2 raises #UD, whose gate lies past the limit (#GP),
 * whose gate does too (#GP after #GP: #DF), whose gate does too: shutdown.
 *
 * QEMU with -no-reboot ends the run with status 0 and nothing more on the
 * serial port; btvm ends it with an error naming the vector and RIP and
 * status 125 (the test btvm.triple). Either way the line after the ud2
 * never prints.
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/x86.h"

asm(".pushsection .text\n"
    "do_ud2:\n"
    "  ud2\n"
    "  ret\n"
    ".popsection\n");
void do_ud2(void);

int main(void) {
  static const struct descriptor_table_ptr no_idt = {0, 0};
  printf("INFO: ud2 at rip %#llx, IDT limit 0: a triple fault follows\n",
         (unsigned long long)(uintptr_t)do_ud2);
  lidt(&no_idt);
  do_ud2();
  printf("FAIL: still running after the triple fault\n");
  exit(1);
}
