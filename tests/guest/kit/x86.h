/*
 * x86-64 instructions as inline functions: port I/O, control registers,
 * MSRs, TLB, descriptor tables. Nothing here touches memory the caller did
 * not name.
 */
#pragma once

#include "tests/guest/kit/types.h"

#define X86_CR0_PE (1ull << 0)
#define X86_CR0_MP (1ull << 1)
#define X86_CR0_WP (1ull << 16)
#define X86_CR0_PG (1ull << 31)
#define X86_CR4_PAE (1ull << 5)
#define X86_EFLAGS_CF (1ull << 0)
#define X86_EFLAGS_IF (1ull << 9)
#define X86_EFLAGS_DF (1ull << 10)
#define X86_EFLAGS_AC (1ull << 18)

#define MSR_EFER 0xc0000080u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_CSTAR 0xc0000083u
#define MSR_FMASK 0xc0000084u
#define EFER_SCE (1ull << 0)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)

/* Exception vectors (SDM Vol. 3A §6.3.1). */
#define DE_VECTOR 0
#define DB_VECTOR 1
#define NMI_VECTOR 2
#define BP_VECTOR 3
#define OF_VECTOR 4
#define BR_VECTOR 5
#define UD_VECTOR 6
#define NM_VECTOR 7
#define DF_VECTOR 8
#define TS_VECTOR 10
#define NP_VECTOR 11
#define SS_VECTOR 12
#define GP_VECTOR 13
#define PF_VECTOR 14
#define MF_VECTOR 16
#define AC_VECTOR 17
#define MC_VECTOR 18
#define XM_VECTOR 19

/* #PF error code bits (SDM Vol. 3A §4.7). */
#define PFERR_PRESENT (1u << 0)
#define PFERR_WRITE (1u << 1)
#define PFERR_USER (1u << 2)
#define PFERR_RSVD (1u << 3)
#define PFERR_FETCH (1u << 4)

static inline void outb(u16 port, u8 v) {
  asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(u16 port, u16 v) {
  asm volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(u16 port, u32 v) {
  asm volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port) {
  u8 v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

static inline u64 read_cr0(void) {
  u64 v;
  asm volatile("mov %%cr0, %0" : "=r"(v));
  return v;
}
static inline u64 read_cr2(void) {
  u64 v;
  asm volatile("mov %%cr2, %0" : "=r"(v));
  return v;
}
static inline u64 read_cr3(void) {
  u64 v;
  asm volatile("mov %%cr3, %0" : "=r"(v));
  return v;
}
static inline u64 read_cr4(void) {
  u64 v;
  asm volatile("mov %%cr4, %0" : "=r"(v));
  return v;
}
static inline void write_cr0(u64 v) {
  asm volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}
static inline void write_cr3(u64 v) {
  asm volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}
static inline void write_cr4(u64 v) {
  asm volatile("mov %0, %%cr4" : : "r"(v) : "memory");
}

static inline u64 rdmsr(u32 index) {
  u32 lo, hi;
  asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(index));
  return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 index, u64 v) {
  asm volatile("wrmsr" : : "c"(index), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline void invlpg(const volatile void* va) {
  asm volatile("invlpg (%0)" : : "r"(va) : "memory");
}

static inline u64 read_rflags(void) {
  u64 v;
  asm volatile("pushfq; popq %0" : "=r"(v));
  return v;
}
static inline u16 read_cs(void) {
  u16 v;
  asm volatile("mov %%cs, %0" : "=r"(v));
  return v;
}
static inline u16 read_tr(void) {
  u16 v;
  asm volatile("str %0" : "=r"(v));
  return v;
}

struct __attribute__((packed)) descriptor_table_ptr {
  u16 limit;
  u64 base;
};

static inline void lgdt(const struct descriptor_table_ptr* p) {
  asm volatile("lgdt %0" : : "m"(*p) : "memory");
}
static inline void lidt(const struct descriptor_table_ptr* p) {
  asm volatile("lidt %0" : : "m"(*p) : "memory");
}
static inline void sgdt(struct descriptor_table_ptr* p) {
  asm volatile("sgdt %0" : "=m"(*p));
}
static inline void sidt(struct descriptor_table_ptr* p) {
  asm volatile("sidt %0" : "=m"(*p));
}
static inline void ltr(u16 sel) {
  asm volatile("ltr %0" : : "r"(sel) : "memory");
}

static inline void cli(void) {
  asm volatile("cli" : : : "memory");
}
static inline void sti(void) {
  asm volatile("sti" : : : "memory");
}
/* STI's one-instruction interrupt shadow covers the HLT: no wake-up is lost. */
static inline void safe_halt(void) {
  asm volatile("sti; hlt" : : : "memory");
}
static inline void halt(void) {
  asm volatile("hlt" : : : "memory");
}
static inline void pause(void) {
  asm volatile("pause");
}
