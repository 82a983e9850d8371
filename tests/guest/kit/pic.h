/*
 * The i8259 PIC pair and the i8254 PIT's channel 0, for tests that take
 * external interrupts (kit/pic.c).
 *
 * Firmware may leave the PIT running with IRQ 0 unmasked at vector 8: a
 * kernel that sets IF (also through iretq or popf) calls pic_init() first.
 */
#pragma once

#include "tests/guest/kit/types.h"

#define PIC_IRQ_BASE 0x20 /* IRQ n arrives at vector PIC_IRQ_BASE + n */
#define PIT_VECTOR (PIC_IRQ_BASE + 0)
#define PIC_SPURIOUS_VECTOR (PIC_IRQ_BASE + 7)
#define PIT_HZ 1193182

/* Remaps the PICs to vectors PIC_IRQ_BASE..+15, all IRQs masked, and
   ignores the master's spurious IRQ 7. */
void pic_init(void);
/* Unmasks (or masks) one IRQ line, 0..15. */
void pic_unmask(unsigned irq);
void pic_mask(unsigned irq);
/* End of interrupt for an IRQ (both PICs for 8..15). */
void pic_eoi(unsigned irq);
/* The master's interrupt request register. */
u8 pic_read_irr(void);

/* Channel 0 in mode 2 (rate generator) at about hz interrupts a second. */
void pit_start(unsigned hz);
