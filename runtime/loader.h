#pragma once
// The loader for ELF64 guest kernels: docs/entry-contract.md is its
// specification. It validates the whole file before it writes a byte of guest
// memory, loads the PT_LOAD segments at their physical addresses, builds the
// boot structures in the first MiB (GDT, TSS, identity page tables, stack,
// boot info) and sets the vCPU to the contract's 64-bit entry state.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/cpu_state.h"
#include "base/result.h"
#include "base/types.h"
#include "mmu/guest_memory.h"

namespace btvm {

// ---------------------------------------------------------------------------
// The first MiB, which belongs to the loader (kernel segments start at 1 MiB):
//
//   0x00000 - 0x00fff   left zero (a stray null-pointer write in early guest
//                       code hits nothing the loader built)
//   0x01000 - 0x01027   GDT: null, 0x08 code64, 0x10 data, 0x18 TSS (16 bytes)
//   0x01080 - 0x010e7   TSS (104 bytes, all zero but the I/O map base)
//   0x01100 - 0x01117   boot info (struct btvm_boot_info, 24 bytes)
//   0x02000 - 0x02fff   PML4 (entry 0 only)
//   0x03000 - 0x03fff   PDPT (one entry per GiB mapped)
//   0x04000 - 0x0ffff   zero, unused
//   0x10000 - 0x50fff   page directories, 2 MiB pages: one per GiB mapped, up
//                       to 65 (64 GiB of RAM reaches 65 GiB past the hole)
//   0x51000 - 0x6ffff   zero, unused
//   0x70000 - 0x7ffff   the 64 KiB boot stack; RSP = 0x80000 at entry
//   0x80000 - 0xfffff   zero, unused
//
// Everything stays below 0x9fc00, where a PC keeps its EBDA and VGA window,
// so the same map would also work on a machine with legacy holes.
// ---------------------------------------------------------------------------
inline constexpr GuestPhys kBootGdt{0x1000};
inline constexpr GuestPhys kBootTss{0x1080};
inline constexpr GuestPhys kBootInfo{0x1100};
inline constexpr GuestPhys kBootPml4{0x2000};
inline constexpr GuestPhys kBootPdpt{0x3000};
inline constexpr GuestPhys kBootPageDirs{0x10000};
inline constexpr GuestPhys kBootStackBottom{0x70000};
inline constexpr GuestPhys kBootStackTop{0x80000};
inline constexpr uint64_t kBootStackSize = KiB(64);
// Where kernel segments may start: the first MiB is the loader's.
inline constexpr GuestPhys kKernelMinAddress{MiB(1)};

// GDT selectors at entry.
inline constexpr uint16_t kBootCodeSelector = 0x08;
inline constexpr uint16_t kBootDataSelector = 0x10;
inline constexpr uint16_t kBootTssSelector = 0x18;
inline constexpr uint16_t kBootGdtLimit = 5 * 8 - 1;  // null, code, data, TSS (2 slots)
inline constexpr uint32_t kBootTssSize =
    104;  // 64-bit TSS (SDM Vol. 3, "Task Management in 64-bit Mode")

// The GDT descriptors (SDM Vol. 3 §3.4.5) ...
inline constexpr uint64_t kBootCodeDescriptor = 0x00af9b000000ffffull;  // G L P S type=0xb
inline constexpr uint64_t kBootDataDescriptor = 0x00cf93000000ffffull;  // G DB P S type=0x3
// ... and the same bits in CpuState's packed attrib format (descriptor bits
// 40..55). The code attrib keeps G as the descriptor has it: VM entry
// requires G = 1 whenever limit bits 31:20 are set (SDM Vol. 3C, VM entries,
// "Checks on Guest Segment Registers").
inline constexpr uint16_t kBootCodeAttrib = 0xa09b;
inline constexpr uint16_t kBootDataAttrib = 0xc093;
inline constexpr uint16_t kBootTssAttrib = 0x008b;  // P, busy 64-bit TSS

// The boot info passed in RDI (docs/entry-contract.md).
inline constexpr uint32_t kBootInfoMagic = 0x49565442;  // "BTVI"
inline constexpr uint32_t kBootInfoVersion = 1;
struct BootInfo {
  uint32_t magic;
  uint32_t version;
  uint64_t ram_below_4g;
  uint64_t ram_above_4g;
};
static_assert(sizeof(BootInfo) == 24);

// The ELF note that names the 64-bit entry.
inline constexpr uint32_t kBtvmNoteEntry64 = 0x4254;  // BTVM_NOTE_ENTRY64

// Reads a whole kernel file. Errors are one line naming the path: cannot
// open, a directory, empty, or larger than any guest RAM could hold.
// The identity map both loaders build: [0, max(4 GiB, top of RAM)) in
// 2 MiB pages (present, writable, supervisor), one page directory per GiB
// at `page_dirs` (contiguous), one PDPT, one PML4 entry. The highest top of
// RAM is 4 GiB + (kMaxGuestMemory - 3 GiB).
inline constexpr uint64_t kMaxIdentityMapPageDirs =
    (kMmioHoleEnd.value + (kMaxGuestMemory - kMmioHoleStart.value) + GiB(1) - 1) / GiB(1);
static_assert(kMaxIdentityMapPageDirs <= 512, "one PDPT maps 512 GiB");
void BuildIdentityMap(GuestMemory& memory, GuestPhys pml4, GuestPhys pdpt, GuestPhys page_dirs);
// A 16-byte busy 64-bit TSS descriptor at `at` (the loaders' GDTs).
void PutTssDescriptor(GuestMemory& memory, GuestPhys at, uint64_t base, uint32_t limit);

// The flat 64-bit entry state both loaders give (this one and
// runtime/linux_boot.h): CS and the data segments 4 GiB flat with these
// selectors (kBootCodeAttrib, kBootDataAttrib), a busy 64-bit TSS in TR,
// GDTR as given, an empty IDT, CR0 PE|MP|ET|NE|WP|PG, paging at `cr3`,
// x87/SSE in their reset state, no pending events. GPRs, RIP and RFLAGS
// are the caller's.
struct LongModeEntry {
  uint16_t code_selector, data_selector, tss_selector;
  GuestPhys gdt;
  uint16_t gdt_limit;
  GuestPhys tss;
  GuestPhys cr3;
  uint64_t cr4, efer;
};
void SetLongModeEntry(const LongModeEntry& e, CpuState* cpu);

Result<std::vector<uint8_t>> ReadKernelFile(const std::string& path,
                                           std::string_view what = "kernel");

struct LoadedKernel {
  GuestPhys entry;    // the 64-bit entry from the btvm note
  GuestPhys lowest;   // lowest byte of any loaded segment
  GuestPhys highest;  // one past the last byte of any loaded segment (incl. bss)
};

// Validates `file` as a btvm kernel, then loads it into `memory`, builds the
// boot structures in the first MiB and puts *cpu in the entry state. On an
// error (one line, for `btvm: error: <message>`) neither memory nor *cpu has
// been touched. Never reads outside `file`, whatever it holds.
Result<LoadedKernel> LoadElfKernel(std::span<const uint8_t> file, GuestMemory& memory,
                                   CpuState* cpu);

// The second half of LoadElfKernel, for callers with their own image: zeroes
// the first MiB, builds the boot structures there and sets *cpu to the
// contract's entry state with RIP = entry.
void SetUpBootState(GuestMemory& memory, GuestPhys entry, CpuState* cpu);

}  // namespace btvm
