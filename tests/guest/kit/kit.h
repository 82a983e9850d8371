/*
 * The guest test kit: what a test kernel's main() uses.
 *
 * A test kernel defines `int main(void)`; the kit's 64-bit entry sets up a
 * stack, clears .bss, initialises COM1, loads the kit's GDT, TSS and IDT
 * (unless the kernel says KIT_MINIMAL_RUNTIME) and calls main(); main's
 * return value goes to exit(). Report-based tests end with
 * `return report_summary();`.
 */
#pragma once

#include "tests/guest/kit/layout.h"
#include "tests/guest/kit/types.h"

/* A kernel that writes `KIT_MINIMAL_RUNTIME;` at file scope gets no GDT, TSS
   or IDT of the kit: its main() runs on the entry state (plain integer code,
   port I/O only), as the first-light translator needs. */
#define KIT_MINIMAL_RUNTIME const int kit_minimal_runtime = 1

/* The btvm boot info (docs/entry-contract.md); NULL under QEMU. */
struct btvm_boot_info {
  u32 magic; /* BTVM_BOOT_INFO_MAGIC */
  u32 version;
  u64 ram_below_4g;
  u64 ram_above_4g;
};
#define BTVM_BOOT_INFO_MAGIC 0x49565442u
extern const struct btvm_boot_info* kit_boot_info;

int main(void);

/* COM1 (0x3f8), 115200 8N1, FIFO on, polled (kit/serial.c). */
void serial_init(void);
void serial_putc(char c);

/* Formatted output to COM1 (kit/printf.c): %d %i %u %x %X %o %c %s %p %%,
   length modifiers l, ll, z, flags '-' '0', a field width (also '*') and a
   precision for strings. */
int printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char* fmt, va_list ap);
int snprintf(char* buf, size_t size, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap);
int puts(const char* s); /* s and a newline */
int putchar(int c);

/* Test reports (kit/report.c). report() prints "PASS: <what>" or
   "FAIL: <what>" and counts; report_summary() prints
   "SUMMARY: <n> tests, <m> failures" and exits with 0 if m == 0, else 1
   (QEMU/btvm exit status 1 or 3). */
void report(bool pass, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void report_info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
NORETURN int report_summary(void);
int report_failures(void);

/* Ends the run through isa-debug-exit (port 0xf4): status (code << 1) | 1.
   Without that device, halts forever. */
NORETURN void exit(int code);
/* Ends the run through the i8042 reset line (port 0x64, 0xfe): status 0
   under btvm and under `qemu -no-reboot`. */
NORETURN void reboot(void);
/* Prints "FAIL: <message>" and exits with 1. */
NORETURN void panic(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

/* Freestanding string functions (kit/string.c); gcc may also call these. */
void* memset(void* s, int c, size_t n);
void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
int strcmp(const char* a, const char* b);

/* Image bounds from kit/kernel.ld. */
extern char __image_start[], __image_end[], __bss_start[], __bss_end[];
