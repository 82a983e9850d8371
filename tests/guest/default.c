/*
 * default: the built-in default guest of `btvm run`.
 *
 * First (integer code and port I/O only, on the entry state): fills a 64 KiB
 * buffer with an xorshift32 pattern and prints its CRC-32.
 *
 * Then a small operating system in miniature: it loads the kit's GDT, TSS
 * and IDT, turns on syscall/sysret and drops to a user-mode program, which
 *   - makes SYSCALL_ROUNDS syscalls (the kit's SYS_ECHO) and times them;
 *   - touches USER_PAGES pages of a region nothing maps yet; the kernel's #PF
 *     handler maps each on demand (a frame from its pool), and the user
 *     times the faults;
 *   - counts the primes below 2^18 with a sieve of Eratosthenes over those
 *     pages (odd numbers only, one byte each).
 * The kernel prints the results, and the two timings on lines that start
 * with "measured: " (they differ between runs and engines; compare.sh
 * ignores exactly those lines). It ends through the i8042 reset line
 * (status 0).
 */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"
#include "tests/guest/kit/user.h"
#include "tests/guest/kit/vm.h"
#include "tests/guest/kit/x86.h"

KIT_MINIMAL_RUNTIME;

#define BUFFER_SIZE (64 * 1024)

static u8 buffer[BUFFER_SIZE];

static u32 xorshift32(u32* state) {
  u32 x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  *state = x;
  return x;
}

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), bit by bit. */
static u32 crc32(const u8* p, size_t n) {
  u32 crc = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
  }
  return ~crc;
}

/* ---- The user-mode program ---------------------------------------------- */

#define SYSCALL_ROUNDS 1000
#define USER_PAGES 32
/* The demand-paged region: far above the kit's identity map of 4 GiB. */
#define USER_REGION 0x10000000000ull
/* The sieve holds odd numbers 1, 3, 5, ... one byte each. */
#define SIEVE_LIMIT (2 * USER_PAGES * PAGE_SIZE)

/* What the user program hands back (user-writable, the kernel reads it
   after enter_user() returns). */
struct user_results {
  u64 syscall_cycles; /* rdtsc around SYSCALL_ROUNDS round trips */
  u64 echo_sum;       /* the sum of what the syscalls returned */
  u64 fault_cycles;   /* rdtsc around touching USER_PAGES unmapped pages */
  u64 primes;         /* primes below SIEVE_LIMIT */
};
USER_DATA static struct user_results user_results;

static inline __attribute__((always_inline)) u64 rdtsc(void) {
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
  return ((u64)hi << 32) | lo;
}

static USER_TEXT u64 user_program(u64 region) {
  struct user_results* out = &user_results;

  u64 sum = 0;
  u64 t0 = rdtsc();
  for (u64 i = 0; i < SYSCALL_ROUNDS; i++) sum += user_syscall(SYS_ECHO, i, 1);
  u64 t1 = rdtsc();
  out->syscall_cycles = t1 - t0;
  out->echo_sum = sum;

  /* One write per page: each faults once (not present), then sticks. */
  volatile u8* sieve = (volatile u8*)region;
  t0 = rdtsc();
  for (u64 p = 0; p < USER_PAGES; p++) sieve[p * PAGE_SIZE] = 1;
  t1 = rdtsc();
  out->fault_cycles = t1 - t0;

  /* sieve[i] stands for 2i + 1; 1 marks "maybe prime". */
  const u64 n = SIEVE_LIMIT / 2;
  for (u64 i = 0; i < n; i++) sieve[i] = 1;
  sieve[0] = 0; /* 1 is not prime */
  for (u64 i = 1; (2 * i + 1) * (2 * i + 1) < SIEVE_LIMIT; i++) {
    if (!sieve[i]) continue;
    const u64 p = 2 * i + 1;
    for (u64 j = (p * p) / 2; j < n; j += p) sieve[j] = 0;
  }
  u64 primes = 1; /* 2 */
  for (u64 i = 0; i < n; i++) primes += sieve[i];
  out->primes = primes;
  return 0;
}

/* The kernel side: frames for the demand-paged region come from a pool in
   .bss (identity-mapped, so an address is a physical address). */
static u8 frames[USER_PAGES][PAGE_SIZE] __attribute__((aligned(4096)));
static unsigned frames_used;

static void demand_fault(struct ex_regs* r) {
  const u64 cr2 = read_cr2();
  const bool ours = cr2 >= USER_REGION && cr2 < USER_REGION + USER_PAGES * PAGE_SIZE;
  if (!ours || (r->error_code & (PFERR_PRESENT | PFERR_USER)) != PFERR_USER ||
      frames_used == USER_PAGES) {
    panic("unexpected #PF at rip %#llx, cr2 %#llx, error code %#llx",
          (unsigned long long)r->rip, (unsigned long long)cr2,
          (unsigned long long)r->error_code);
  }
  vm_map(ALIGN_DOWN(cr2, PAGE_SIZE), (u64)(uintptr_t)frames[frames_used++],
         PTE_P | PTE_W | PTE_U);
}

static void run_user_program(void) {
  setup_descriptors();
  user_init();
  handle_exception(PF_VECTOR, demand_fault);
  /* The page tables down to the region's page table exist already (empty
     entries), so a fault costs a fault, a mapping and an invlpg, not the
     allocation of tables. */
  (void)vm_pte(USER_REGION);
  printf("btvm default guest: user mode: %d syscalls, %d demand-paged pages, a sieve\n",
         SYSCALL_ROUNDS, USER_PAGES);
  enter_user(user_program, USER_REGION);
  handle_exception(PF_VECTOR, NULL);

  const struct user_results* r = &user_results;
  printf("user mode: syscalls returned %llu in all\n", (unsigned long long)r->echo_sum);
  printf("user mode: %llu primes below %llu, %u pages faulted in\n",
         (unsigned long long)r->primes, (unsigned long long)SIEVE_LIMIT, frames_used);
  printf("measured: %llu cycles per syscall round trip\n",
         (unsigned long long)(r->syscall_cycles / SYSCALL_ROUNDS));
  printf("measured: %llu cycles per page fault\n",
         (unsigned long long)(r->fault_cycles / USER_PAGES));
}

int main(void) {
  printf("btvm default guest: xorshift32 fill of %d KiB, CRC-32\n", BUFFER_SIZE / 1024);
  u32 state = 0x2545f491u;
  for (size_t i = 0; i < BUFFER_SIZE; i += 4) {
    u32 v = xorshift32(&state);
    buffer[i] = (u8)v;
    buffer[i + 1] = (u8)(v >> 8);
    buffer[i + 2] = (u8)(v >> 16);
    buffer[i + 3] = (u8)(v >> 24);
  }
  printf("checksum: 0x%08x\n", crc32(buffer, BUFFER_SIZE));
  run_user_program();
  printf("btvm default guest: done, resetting\n");
  reboot();
}
