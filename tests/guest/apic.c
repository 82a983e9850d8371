/*
 * apic: the local APIC (xAPIC, SDM Vol. 3A chapter 11) and the IOAPIC
 * (82093AA data sheet) as a kernel drives them: the base MSR, ID and
 * version, the software enable, the timer in one-shot, periodic and masked
 * modes, a self-IPI held back by the task priority (TPR, and CR8 as its
 * view, §11.8.6.5) and delivered once it drops, and the PIT's IRQ 0
 * through IOAPIC pin 2 with the 8259s masked.
 *
 * Nothing printed depends on timing or on the APIC timer's frequency
 * (QEMU's bus clock is not btvm's).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/pic.h"
#include "tests/guest/kit/x86.h"

#define LAPIC 0xfee00000ull
#define IOAPIC 0xfec00000ull
#define SPIN_LIMIT 50000000ull

/* Local APIC registers (§11.4.1, Table 11-1). */
enum {
  APIC_ID = 0x20, APIC_VERSION = 0x30, APIC_TPR = 0x80, APIC_EOI = 0xb0, APIC_SVR = 0xf0,
  APIC_IRR = 0x200, APIC_ICR_LOW = 0x300, APIC_LVT_TIMER = 0x320, APIC_INIT_COUNT = 0x380,
  APIC_CUR_COUNT = 0x390, APIC_DIVIDE = 0x3e0,
};
#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)

#define TIMER_VECTOR 0x40
#define IOAPIC_VECTOR 0x41
#define IPI_VECTOR 0x45
#define SPURIOUS_VECTOR 0xff

static u32 apic_read(u32 reg) {
  return *(volatile u32*)(uintptr_t)(LAPIC + reg);
}
static void apic_write(u32 reg, u32 v) {
  *(volatile u32*)(uintptr_t)(LAPIC + reg) = v;
}
static u32 ioapic_read(u32 index) {
  *(volatile u32*)(uintptr_t)IOAPIC = index;
  return *(volatile u32*)(uintptr_t)(IOAPIC + 0x10);
}
static void ioapic_write(u32 index, u32 v) {
  *(volatile u32*)(uintptr_t)IOAPIC = index;
  *(volatile u32*)(uintptr_t)(IOAPIC + 0x10) = v;
}

static volatile int timer_ticks, ioapic_ticks, ipis;

static void timer_handler(struct ex_regs* r) {
  (void)r;
  timer_ticks++;
  apic_write(APIC_EOI, 0);
}
static void ioapic_handler(struct ex_regs* r) {
  (void)r;
  ioapic_ticks++;
  apic_write(APIC_EOI, 0);
}
static void ipi_handler(struct ex_regs* r) {
  (void)r;
  ipis++;
  apic_write(APIC_EOI, 0);
}

/* Spins with IF = 1 until *counter reaches n (or the limit). */
static int wait_for(volatile int* counter, int n) {
  sti();
  for (u64 i = 0; i < SPIN_LIMIT && *counter < n; i++) pause();
  cli();
  return *counter;
}

static bool irr_has(u8 vector) {
  return apic_read(APIC_IRR + (vector / 32) * 0x10) & (1u << (vector % 32));
}

int main(void) {
  pic_init(); /* every 8259 line masked */
  handle_exception(TIMER_VECTOR, timer_handler);
  handle_exception(IOAPIC_VECTOR, ioapic_handler);
  handle_exception(IPI_VECTOR, ipi_handler);

  u64 base = rdmsr(0x1b);
  report((base & ~0xfffull) == LAPIC && (base & (1u << 8)) && (base & (1u << 11)),
         "IA32_APIC_BASE: 0xfee00000, BSP, enabled");
  report(apic_read(APIC_ID) >> 24 == 0, "APIC ID 0");
  u32 version = apic_read(APIC_VERSION);
  report((version & 0xff) >= 0x10 && (version & 0xff) <= 0x15 && ((version >> 16) & 0xff) >= 4,
         "version register: an integrated APIC with the LVT timer, LINT0/1 and error entries");

  apic_write(APIC_SVR, 0x100 | SPURIOUS_VECTOR);
  report((apic_read(APIC_SVR) & 0x1ff) == (0x100u | SPURIOUS_VECTOR), "SVR: software enabled");

  /* One-shot: one interrupt, then the current count stays 0. */
  apic_write(APIC_DIVIDE, 0xb); /* divide by 1 */
  apic_write(APIC_LVT_TIMER, TIMER_VECTOR);
  apic_write(APIC_INIT_COUNT, 2000);
  int got = wait_for(&timer_ticks, 1);
  for (u64 i = 0; i < 1000000; i++) pause();
  report(got == 1 && timer_ticks == 1 && apic_read(APIC_CUR_COUNT) == 0,
         "one-shot timer: one interrupt, then the count stays 0");

  /* Periodic: it reloads. */
  timer_ticks = 0;
  apic_write(APIC_LVT_TIMER, TIMER_VECTOR | LVT_PERIODIC);
  apic_write(APIC_INIT_COUNT, 1000);
  got = wait_for(&timer_ticks, 3);
  apic_write(APIC_INIT_COUNT, 0); /* stops it */
  report(got >= 3, "periodic timer: interrupts keep coming");
  /* One may still wait in IRR: let it in. */
  sti();
  for (u64 i = 0; i < 100000; i++) pause();
  cli();

  /* Masked: it counts, but nothing arrives. */
  timer_ticks = 0;
  apic_write(APIC_LVT_TIMER, TIMER_VECTOR | LVT_MASKED);
  apic_write(APIC_INIT_COUNT, 1000);
  sti();
  for (u64 i = 0; i < 2000000; i++) pause();
  cli();
  report(timer_ticks == 0, "masked timer: no interrupt");
  apic_write(APIC_INIT_COUNT, 0);

  /* A self-IPI below the task priority waits in IRR until TPR drops. */
  apic_write(APIC_TPR, 0x50);
  apic_write(APIC_ICR_LOW, IPI_VECTOR | (1u << 18)); /* fixed, shorthand self */
  sti();
  for (u64 i = 0; i < 100000; i++) pause();
  cli();
  bool held = ipis == 0 && irr_has(IPI_VECTOR);
  u64 cr8;
  asm volatile("mov %%cr8, %0" : "=r"(cr8));
  report(held && cr8 == 5, "self-IPI at vector 0x45 held back by TPR 0x50 (CR8 reads 5)");
  asm volatile("mov %0, %%cr8" : : "r"(0ull) : "memory");
  got = wait_for(&ipis, 1);
  report(got == 1 && apic_read(APIC_TPR) == 0 && !irr_has(IPI_VECTOR),
         "  delivered once CR8 is written 0 (TPR reads 0)");

  /* The IOAPIC: version, and the PIT through pin 2 with the 8259s masked. */
  u32 ioversion = ioapic_read(1);
  report(((ioversion >> 16) & 0xff) == 23, "IOAPIC: 24 redirection entries");
  report((ioapic_read(0x10 + 2 * 2) & (1u << 16)) != 0, "  entries are masked at power-on");
  ioapic_write(0x10 + 2 * 2 + 1, 0);             /* destination: APIC ID 0 */
  ioapic_write(0x10 + 2 * 2, IOAPIC_VECTOR);     /* fixed, physical, edge, high, unmasked */
  report((ioapic_read(0x10 + 2 * 2) & 0x1ffff) == IOAPIC_VECTOR, "  pin 2 routed to 0x41");
  pit_start(1000);
  got = wait_for(&ioapic_ticks, 3);
  ioapic_write(0x10 + 2 * 2, IOAPIC_VECTOR | (1u << 16));
  report(got >= 3, "  the PIT's IRQ 0 arrives through pin 2");

  return report_summary();
}
