#pragma once
// The Linux x86-64 boot protocol (Documentation/arch/x86/boot.rst, "64-bit
// Boot Protocol", and zero-page.rst): loads a bzImage, an initrd and a
// command line, builds boot_params (the "zero page") with the e820 map, a
// GDT and identity page tables, and puts the vCPU in the protocol's 64-bit
// entry state. Like runtime/loader.h it validates everything first: on an
// error (one line, for `btvm: error: <message>`) neither guest memory nor
// the vCPU has been touched.
//
// Two ways in (KernelEntry):
//  - kBzImage: the protected-mode part of the bzImage is loaded at
//    pref_address and entered at +0x200 (startup_64 of the kernel's
//    decompressor), which decompresses the kernel in place: the protocol as
//    a boot loader implements it.
//  - kDecompressed: the payload (the compressed vmlinux) is decompressed on
//    the host (runtime/kernel_decompress.h), its PT_LOAD segments are loaded
//    at their physical addresses and the kernel proper's startup_64 (the ELF
//    entry) is entered with the same boot_params, as Firecracker boots a
//    vmlinux. The guest skips its decompressor (seconds of translated XZ).
//    The kernel then runs where it was linked (LOAD_PHYSICAL_ADDR, 16 MiB on
//    Debian): it needs no relocation and gets no KASLR, which only the
//    decompressor does.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/cpu_state.h"
#include "base/result.h"
#include "base/types.h"
#include "mmu/guest_memory.h"
#include "runtime/kernel_decompress.h"

namespace btvm {

// ---------------------------------------------------------------------------
// Guest-physical layout.
//
// The loader owns [0, 0x9fc00) and rewrites it whole (zeroed first):
//
//   0x00000 - 0x00fff   zero: real-mode IVT and BIOS data area. Linux reads
//                       the BDA's EBDA pointer (0x40e) and base memory size
//                       (0x413); zero means "no EBDA" and its defaults.
//   0x01000 - 0x0102f   GDT: null, null, 0x10 __BOOT_CS (64-bit code),
//                       0x18 __BOOT_DS (data), 0x20 TSS (16 bytes)
//   0x01080 - 0x010e7   TSS (104 bytes, zero but the I/O map base)
//   0x02000 - 0x02fff   PML4 (entry 0 only)
//   0x03000 - 0x03fff   PDPT (one entry per GiB mapped)
//   0x07000 - 0x07fff   boot_params, the zero page (RSI at entry)
//   0x08000 - 0x0ffff   boot stack, RSP = 0x10000 at entry (the protocol
//                       sets no stack; both startup_64s load their own)
//   0x20000 - 0x2ffff   the command line, NUL-terminated (cmd_line_ptr)
//   0x30000 - 0x70fff   page directories, 2 MiB pages, one per GiB mapped
//                       (up to 65 for 64 GiB of RAM past the MMIO hole)
//   0x71000 - 0x9fbff   zero, unused (the decompressor's 5-level-paging
//                       trampoline goes just below 0x9f000)
//
// All of it is e820 RAM: the protocol lets Linux overwrite the GDT and page
// tables once it has its own (startup_64 switches to them first thing),
// and Linux copies boot_params and the command line before it reuses the
// memory; it also reserves the whole first MiB for itself (real-mode
// trampoline, BIOS quirks).
//
// The machine owns [0xe0000, 0x100000): its ACPI tables (RSDP included) go
// there, before or after loading; the loader never writes it.
//
// The kernel: at pref_address (kBzImage; 16 MiB for Debian's kernels) with
// init_size bytes from there for its in-place decompression, or at its ELF
// segments' physical addresses (kDecompressed). The initrd: page aligned,
// as high as it goes below min(initrd_addr_max + 1, end of RAM below the
// MMIO hole), above the kernel; Linux reserves it from ramdisk_image.
// ---------------------------------------------------------------------------
inline constexpr GuestPhys kLinuxGdt{0x1000};
inline constexpr GuestPhys kLinuxTss{0x1080};
inline constexpr GuestPhys kLinuxPml4{0x2000};
inline constexpr GuestPhys kLinuxPdpt{0x3000};
inline constexpr GuestPhys kLinuxBootParams{0x7000};
inline constexpr GuestPhys kLinuxStackTop{0x10000};
inline constexpr GuestPhys kLinuxCmdline{0x20000};
inline constexpr uint64_t kLinuxCmdlineMax = KiB(64);  // bytes, with the NUL
inline constexpr GuestPhys kLinuxPageDirs{0x30000};
inline constexpr GuestPhys kLinuxLoaderEnd{0x9fc00};  // the loader owns [0, here)

// The PC's first MiB, as e820 reports it.
inline constexpr GuestPhys kEbdaStart{0x9fc00};     // [0x9fc00, 0xa0000) reserved (EBDA)
inline constexpr GuestPhys kLegacyHole{0xa0000};    // [0xa0000, 0xe0000) VGA window, ROMs: absent
inline constexpr GuestPhys kFirmwareArea{0xe0000};  // [0xe0000, 1 MiB) reserved: ACPI tables
inline constexpr GuestPhys kHighMemory{MiB(1)};

// The selectors boot.rst requires at the 64-bit entry (the kernel's startup
// code relies on them), and the TSS btvm adds for a valid TR.
inline constexpr uint16_t kLinuxBootCs = 0x10;   // __BOOT_CS
inline constexpr uint16_t kLinuxBootDs = 0x18;   // __BOOT_DS
inline constexpr uint16_t kLinuxBootTss = 0x20;  // 16-byte 64-bit TSS descriptor
inline constexpr uint16_t kLinuxGdtLimit = 6 * 8 - 1;

// boot_params offsets (zero-page.rst) and setup-header offsets (boot.rst;
// the same in the bzImage file and in boot_params, where the header is
// copied to the same place).
namespace zp {
inline constexpr uint64_t kAcpiRsdpAddr = 0x070;
inline constexpr uint64_t kExtRamdiskImage = 0x0c0;
inline constexpr uint64_t kExtRamdiskSize = 0x0c4;
inline constexpr uint64_t kExtCmdLinePtr = 0x0c8;
inline constexpr uint64_t kE820Entries = 0x1e8;
inline constexpr uint64_t kSentinel = 0x1ef;
inline constexpr uint64_t kSetupSects = 0x1f1;
inline constexpr uint64_t kSyssize = 0x1f4;
inline constexpr uint64_t kVidMode = 0x1fa;
inline constexpr uint64_t kBootFlag = 0x1fe;
inline constexpr uint64_t kJump = 0x200;
inline constexpr uint64_t kHeader = 0x202;
inline constexpr uint64_t kVersion = 0x206;
inline constexpr uint64_t kTypeOfLoader = 0x210;
inline constexpr uint64_t kLoadflags = 0x211;
inline constexpr uint64_t kCode32Start = 0x214;
inline constexpr uint64_t kRamdiskImage = 0x218;
inline constexpr uint64_t kRamdiskSize = 0x21c;
inline constexpr uint64_t kHeapEndPtr = 0x224;
inline constexpr uint64_t kExtLoaderVer = 0x226;
inline constexpr uint64_t kExtLoaderType = 0x227;
inline constexpr uint64_t kCmdLinePtr = 0x228;
inline constexpr uint64_t kInitrdAddrMax = 0x22c;
inline constexpr uint64_t kKernelAlignment = 0x230;
inline constexpr uint64_t kRelocatableKernel = 0x234;
inline constexpr uint64_t kXloadflags = 0x236;
inline constexpr uint64_t kCmdlineSize = 0x238;
inline constexpr uint64_t kHardwareSubarch = 0x23c;
inline constexpr uint64_t kPayloadOffset = 0x248;
inline constexpr uint64_t kPayloadLength = 0x24c;
inline constexpr uint64_t kSetupData = 0x250;
inline constexpr uint64_t kPrefAddress = 0x258;
inline constexpr uint64_t kInitSize = 0x260;
inline constexpr uint64_t kE820Table = 0x2d0;
inline constexpr uint64_t kE820EntrySize = 20;  // struct boot_e820_entry, packed
inline constexpr uint64_t kE820MaxEntries = 128;
inline constexpr uint64_t kSize = 4096;
}  // namespace zp

inline constexpr uint32_t kHdrSMagic = 0x53726448;     // "HdrS"
inline constexpr uint16_t kMinLinuxProtocol = 0x020c;  // 2.12: xloadflags
inline constexpr uint8_t kLoadedHigh = 1 << 0;
inline constexpr uint8_t kKaslrFlag = 1 << 1;
inline constexpr uint8_t kCanUseHeap = 1 << 7;
inline constexpr uint16_t kXlfKernel64 = 1 << 0;
inline constexpr uint16_t kXlfCanBeLoadedAbove4G = 1 << 1;

// An e820 entry (asm/e820/types.h).
enum class E820Type : uint32_t {
  kRam = 1,
  kReserved = 2,
  kAcpi = 3,  // ACPI tables, reclaimable once parsed
  kNvs = 4,
  kUnusable = 5,
};
struct E820Entry {
  uint64_t addr = 0;
  uint64_t size = 0;
  E820Type type = E820Type::kRam;
  bool operator==(const E820Entry&) const = default;
};

enum class KernelEntry : uint8_t { kBzImage, kDecompressed };

// What the machine tells the loader.
struct LinuxBootConfig {
  KernelEntry entry = KernelEntry::kBzImage;
  // boot_params.acpi_rsdp_addr. 0: none given (Linux then scans the EBDA and
  // 0xe0000-0xfffff for "RSD PTR "). Otherwise it must lie in a reserved
  // e820 range (the firmware area, or one of `reserved`) so that Linux never
  // hands it out as free memory.
  GuestPhys acpi_rsdp{0};
  // Further ranges to report as reserved, e.g. device MMIO in the hole. They
  // must not overlap RAM or each other. Linux needs none for the local APIC
  // (0xfee00000) or the IOAPIC (0xfec00000): it learns them from the MADT
  // and claims them itself; QEMU and Firecracker leave them out of e820 too.
  std::vector<E820Entry> reserved;
};

// A bzImage's setup header, validated by ParseBzImage.
struct BzImage {
  uint16_t protocol = 0;     // 0x020f for 2.15
  uint64_t setup_size = 0;   // (setup_sects + 1) * 512: where the kernel starts
  uint64_t header_end = 0;   // 0x202 + the jump's offset byte
  uint64_t kernel_size = 0;  // bytes of the protected-mode part
  uint8_t loadflags = 0;
  uint16_t xloadflags = 0;
  bool relocatable = false;
  uint32_t kernel_alignment = 0;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;
  uint32_t cmdline_size = 0;     // at most this many bytes before the NUL
  uint32_t initrd_addr_max = 0;  // highest byte an initrd may occupy
  uint32_t payload_offset = 0;   // from the start of the protected-mode part
  uint32_t payload_length = 0;
};

// Whether `image` claims to be a bzImage (the "HdrS" signature at 0x202);
// ParseBzImage says whether it is a good one.
bool IsBzImage(std::span<const uint8_t> image);

// Validates a bzImage's setup header against the file (not against guest
// RAM): one line naming the first problem. Never reads outside `image`.
Result<BzImage> ParseBzImage(std::span<const uint8_t> image);

// The e820 map the loader gives the kernel, in address order:
//   [0, 0x9fc00) RAM, [0x9fc00, 0xa0000) reserved (EBDA), [0xe0000, 1 MiB)
//   reserved (ACPI tables and firmware: reserved rather than ACPI, since the
//   area also holds the RSDP, which Linux must never reclaim; Linux reserves
//   0xa0000-1 MiB anyway), [1 MiB, end of RAM below the hole) RAM, the
//   config's reserved ranges, [4 GiB, top of RAM) RAM if there is any.
// Errors: a reserved range that is empty, wraps, overlaps RAM or another
// entry, or too many entries for boot_params.
Result<std::vector<E820Entry>> BuildE820Map(const GuestMemory& memory,
                                            const LinuxBootConfig& config);

// Where everything went, for --stats and debugging.
struct LinuxBootInfo {
  KernelEntry kind = KernelEntry::kBzImage;
  GuestPhys entry;         // RIP at entry
  GuestPhys kernel_start;  // the load address
  GuestPhys kernel_end;    // one past the memory set aside for the kernel
  GuestPhys boot_params;   // RSI at entry
  GuestPhys cmdline;
  uint64_t cmdline_bytes = 0;  // with the NUL
  GuestPhys initrd;            // 0 when there is none
  uint64_t initrd_size = 0;
  uint16_t protocol = 0;
  PayloadFormat payload_format = PayloadFormat::kUnknown;
  uint64_t vmlinux_size = 0;   // kDecompressed: bytes decompressed on the host
  uint64_t decompress_ns = 0;  // kDecompressed: host time spent decompressing
  std::vector<E820Entry> e820;
};

// Loads a Linux kernel by the 64-bit boot protocol and sets *cpu to its
// entry state:
//   long mode, paging on (CR0 PE|MP|ET|NE|WP|PG, CR4 PAE, EFER LME|LMA) with
//   CR3 an identity map of [0, max(4 GiB, top of RAM)) in 2 MiB pages;
//   GDT at kLinuxGdt, CS = 0x10, DS = ES = SS = FS = GS = 0x18 (flat), TR a
//   busy 64-bit TSS, IDT limit 0; RFLAGS 0x2 (interrupts off); RSI =
//   boot_params, RSP = kLinuxStackTop, every other GPR 0; RIP = load address
//   + 0x200 (kBzImage) or the vmlinux entry (kDecompressed); x87/SSE in
//   their reset state.
// `initrd` may be empty (no initrd). `cmdline` must not contain a NUL.
Result<LinuxBootInfo> LoadLinux(std::span<const uint8_t> bzimage, std::span<const uint8_t> initrd,
                                std::string_view cmdline, const LinuxBootConfig& config,
                                GuestMemory& memory, CpuState* cpu);

}  // namespace btvm
