/* The i8259 PIC pair and the i8254 PIT (kit/pic.h). */
#include "tests/guest/kit/pic.h"

#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/x86.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define PIC_EOI 0x20
#define PIC_READ_IRR 0x0a /* OCW3 */
#define PIT_CH0 0x40
#define PIT_CMD 0x43

static u16 masked = 0xffff;

/* The PIC reports IRQ 7 without an EOI when a request vanished before
   INTA (8259A data sheet). */
static void spurious_handler(struct ex_regs* r) {
  (void)r;
}

static void write_masks(void) {
  outb(PIC1_DATA, (u8)masked);
  outb(PIC2_DATA, (u8)(masked >> 8));
}

void pic_init(void) {
  handle_exception(PIC_SPURIOUS_VECTOR, spurious_handler);
  outb(PIC1_CMD, 0x11); /* ICW1: edge, cascade, ICW4 follows */
  outb(PIC2_CMD, 0x11);
  outb(PIC1_DATA, PIC_IRQ_BASE); /* ICW2: vector base */
  outb(PIC2_DATA, PIC_IRQ_BASE + 8);
  outb(PIC1_DATA, 1 << 2); /* ICW3: slave on IRQ 2 */
  outb(PIC2_DATA, 2);
  outb(PIC1_DATA, 0x01); /* ICW4: 8086 mode */
  outb(PIC2_DATA, 0x01);
  masked = 0xffff;
  write_masks();
}

void pic_unmask(unsigned irq) {
  masked &= (u16) ~(1u << irq);
  if (irq >= 8) masked &= (u16) ~(1u << 2); /* the cascade */
  write_masks();
}

void pic_mask(unsigned irq) {
  masked |= (u16)(1u << irq);
  write_masks();
}

void pic_eoi(unsigned irq) {
  if (irq >= 8) outb(PIC2_CMD, PIC_EOI);
  outb(PIC1_CMD, PIC_EOI);
}

u8 pic_read_irr(void) {
  outb(PIC1_CMD, PIC_READ_IRR);
  return inb(PIC1_CMD);
}

void pit_start(unsigned hz) {
  unsigned divisor = PIT_HZ / hz;
  outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
  outb(PIT_CH0, (u8)divisor);
  outb(PIT_CH0, (u8)(divisor >> 8));
}
