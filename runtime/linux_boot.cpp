#include "runtime/linux_boot.h"

#include <elf.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/bytes.h"
#include "base/check.h"
#include "base/format.h"
#include "runtime/loader.h"

namespace btvm {
namespace {

// Setup-header and ELF fields are little-endian, read with memcpy.
static_assert(std::endian::native == std::endian::little);

static_assert(kLinuxPageDirs.value + kMaxIdentityMapPageDirs * kPageSize <= kLinuxLoaderEnd.value,
              "the page directories for the largest guest stay below the EBDA");
static_assert(kLinuxGdt.value + kLinuxGdtLimit + 1 <= kLinuxTss.value);
static_assert(kLinuxTss.value + kBootTssSize <= kLinuxPml4.value);
static_assert(kLinuxPdpt.value + kPageSize <= kLinuxBootParams.value);
static_assert(kLinuxBootParams.value + zp::kSize <= kLinuxStackTop.value - KiB(32));
static_assert(kLinuxStackTop.value <= kLinuxCmdline.value);
static_assert(kLinuxCmdline.value + kLinuxCmdlineMax <= kLinuxPageDirs.value);
static_assert(kLinuxLoaderEnd == kEbdaStart);
static_assert(kMinGuestMemory >= kHighMemory.value, "the first MiB is always RAM");
static_assert(zp::kE820Table + zp::kE820MaxEntries * zp::kE820EntrySize <= 0xcd0);

// The 64-bit entry state (boot.rst, "64-bit Boot Protocol"): long mode with
// paging. CR0 as runtime/loader.cpp's entry has it (SetLongModeEntry); CR4
// and EFER hold only what long mode needs, as Firecracker enters Linux
// (startup_64 writes both registers itself soon after).
constexpr uint64_t kEntryCr4 = cr4::kPAE;
constexpr uint64_t kEntryEfer = efer::kLME | efer::kLMA;

// The bzImage's 64-bit entry: startup_64, 0x200 into the protected-mode part.
constexpr uint64_t kStartup64Offset = 0x200;

// The real-mode setup code never runs under the 64-bit protocol, but a 2.02+
// loader must still fill heap_end_ptr: the end of a full 64 KiB real-mode
// segment, less 0x200, as QEMU sets it.
constexpr uint16_t kHeapEndPtr = 0xfe00;
constexpr uint16_t kVidModeNormal = 0xffff;  // "vga=normal"
constexpr uint8_t kLoaderUndefined = 0xff;   // type_of_loader: no assigned ID

uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) & ~(a - 1);
}

template <typename T>
void PutAt(std::span<uint8_t> bytes, uint64_t offset, const T& v) {
  BTVM_CHECK(InBounds(offset, sizeof(T), bytes.size()));
  std::memcpy(bytes.data() + offset, &v, sizeof(T));
}

template <typename T>
void Put(GuestMemory& memory, GuestPhys addr, const T& value) {
  // Only for the loader's own area below 0x9fc00, which is always RAM.
  BTVM_CHECK(memory.WriteValue(addr, value));
}

// End of the RAM region that starts at 0 (RAM below the MMIO hole).
uint64_t LowRamEnd(const GuestMemory& memory) {
  for (const RamRegion& r : memory.regions()) {
    if (r.base.value == 0) return r.size;
  }
  BTVM_CHECK(false && "guest RAM always starts at 0");
  return 0;
}

// ---------------------------------------------------------------------------
// The vmlinux ELF of KernelEntry::kDecompressed.

struct VmlinuxSegment {
  unsigned index;  // program header number, for messages
  uint64_t offset, filesz;
  uint64_t paddr, vaddr, memsz;
  bool executable;
};

struct Vmlinux {
  std::vector<VmlinuxSegment> segments;
  uint64_t entry = 0;  // physical
  uint64_t lowest = ~uint64_t{0}, highest = 0;
};

Error VmlinuxError(const std::string& why) {
  return MakeError("decompressed kernel (vmlinux): " + why);
}

// Validates the ELF the payload decompressed to and places its PT_LOAD
// segments at their physical addresses, which must lie in RAM between 1 MiB
// and `low_end` (Linux's vmlinux: virtual 0xffffffff81000000 and up,
// physical 0x1000000 and up; its per-CPU segment has virtual address 0).
// Bytes after the ELF's last segment (the relocations the build appends for
// the decompressor) are ignored.
Result<Vmlinux> ParseVmlinux(std::span<const uint8_t> elf, uint64_t low_end) {
  const uint64_t size = elf.size();
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0) {
    return VmlinuxError("not an ELF file");
  }
  const auto eh = ReadAt<Elf64_Ehdr>(elf, 0);
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
      eh.e_machine != EM_X86_64) {
    return VmlinuxError("not a little-endian ELF64 file for x86-64");
  }
  if (eh.e_type != ET_EXEC) {
    return VmlinuxError("ELF type " + std::to_string(eh.e_type) + ", not an executable");
  }
  if (eh.e_phnum == 0 || eh.e_phnum == PN_XNUM || eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return VmlinuxError("bad program header table (" + std::to_string(eh.e_phnum) + " entries of " +
                        std::to_string(eh.e_phentsize) + " bytes)");
  }
  if (!InBounds(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr), size)) {
    return VmlinuxError("program headers end past the end of the file");
  }

  Vmlinux v;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    const auto ph = ReadAt<Elf64_Phdr>(elf, eh.e_phoff + uint64_t{i} * sizeof(Elf64_Phdr));
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    const std::string name = "segment " + std::to_string(i);
    if (ph.p_filesz > ph.p_memsz) {
      return VmlinuxError(name + ": file size " + Hex(ph.p_filesz) + " exceeds memory size " +
                          Hex(ph.p_memsz));
    }
    if (!InBounds(ph.p_offset, ph.p_filesz, size)) {
      return VmlinuxError(name + " ends past the end of the file");
    }
    if (!InBounds(ph.p_paddr, ph.p_memsz, low_end) || ph.p_paddr < kHighMemory.value) {
      return VmlinuxError(
          name + " at " + HexRange(ph.p_paddr, ph.p_paddr + ph.p_memsz) +
          " does not fit in guest RAM between 1 MiB and the end of RAM below 4 GiB (" +
          Hex(low_end) + ")");
    }
    v.segments.push_back({i, ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_vaddr, ph.p_memsz,
                          (ph.p_flags & PF_X) != 0});
    v.lowest = std::min(v.lowest, ph.p_paddr);
    v.highest = std::max(v.highest, ph.p_paddr + ph.p_memsz);
  }
  if (v.segments.empty()) return VmlinuxError("no loadable segments (PT_LOAD)");

  std::vector<VmlinuxSegment> sorted = v.segments;
  std::sort(sorted.begin(), sorted.end(),
            [](const VmlinuxSegment& a, const VmlinuxSegment& b) { return a.paddr < b.paddr; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].paddr < sorted[i - 1].paddr + sorted[i - 1].memsz) {
      return VmlinuxError("segments " + std::to_string(sorted[i - 1].index) + " and " +
                          std::to_string(sorted[i].index) + " overlap at " + Hex(sorted[i].paddr));
    }
  }

  // Linux links e_entry as a physical address (vmlinux.lds.S:
  // ENTRY(phys_startup_64)); a virtual one is translated through its
  // segment all the same.
  const uint64_t e = eh.e_entry;
  for (const VmlinuxSegment& s : v.segments) {
    if (s.executable && e >= s.paddr && e - s.paddr < s.memsz) {
      v.entry = e;
      return v;
    }
  }
  for (const VmlinuxSegment& s : v.segments) {
    if (s.executable && e >= s.vaddr && e - s.vaddr < s.memsz) {
      v.entry = s.paddr + (e - s.vaddr);
      return v;
    }
  }
  return VmlinuxError("entry point " + Hex(e) + " is not inside an executable segment");
}

// ---------------------------------------------------------------------------
// Boot structures.

void SetEntryState(GuestPhys entry, CpuState* cpu) {
  for (uint64_t& r : cpu->gpr) r = 0;
  cpu->gpr[kRsi] = kLinuxBootParams.value;
  cpu->gpr[kRsp] = kLinuxStackTop.value;
  cpu->rip = entry.value;
  cpu->rflags = rflags::kFixed1;  // IF clear: "interrupt must be disabled"

  // boot.rst: CS = __BOOT_CS, DS = ES = SS = __BOOT_DS, both 4 GiB flat; FS
  // and GS as DS, as its 16-bit section recommends. The descriptor bits are
  // runtime/loader.cpp's: a 64-bit code segment and a read/write data one.
  SetLongModeEntry({.code_selector = kLinuxBootCs,
                    .data_selector = kLinuxBootDs,
                    .tss_selector = kLinuxBootTss,
                    .gdt = kLinuxGdt,
                    .gdt_limit = kLinuxGdtLimit,
                    .tss = kLinuxTss,
                    .cr3 = kLinuxPml4,
                    .cr4 = kEntryCr4,
                    .efer = kEntryEfer},
                   cpu);
}

bool Reserved(const E820Entry& e) {
  return e.type != E820Type::kRam;
}

}  // namespace

bool IsBzImage(std::span<const uint8_t> image) {
  if (image.size() < zp::kHeader + 4) return false;
  uint32_t magic;
  std::memcpy(&magic, image.data() + zp::kHeader, 4);
  return magic == kHdrSMagic;
}

Result<BzImage> ParseBzImage(std::span<const uint8_t> image) {
  const uint64_t size = image.size();
  if (size < zp::kHeader + 4) {
    return MakeError("not a bzImage: " + std::to_string(size) +
                     " bytes, too short for a setup header");
  }
  if (ReadAt<uint32_t>(image, zp::kHeader) != kHdrSMagic) {
    return MakeError("not a bzImage: no HdrS signature at 0x202");
  }
  if (const auto flag = ReadAt<uint16_t>(image, zp::kBootFlag); flag != 0xaa55) {
    return MakeError("not a bzImage: boot_flag at 0x1fe is " + Hex(flag) + ", not 0xaa55");
  }
  if (size < zp::kVersion + 2) return MakeError("truncated bzImage: the header ends at 0x206");
  BzImage bz;
  bz.protocol = ReadAt<uint16_t>(image, zp::kVersion);
  if (bz.protocol < kMinLinuxProtocol) {
    char version[16];
    std::snprintf(version, sizeof version, "%u.%02u", bz.protocol >> 8, bz.protocol & 0xff);
    return MakeError("Linux boot protocol " + std::string(version) +
                     " is too old: btvm needs 2.12 or later (64-bit entry, xloadflags)");
  }
  // The jump at 0x200 (0xeb, rel8) doubles as the header's length.
  if (image[zp::kJump] != 0xeb) {
    return MakeError("bzImage has no short jump at 0x200, so its setup header's length is unknown");
  }
  bz.header_end = zp::kHeader + image[zp::kJump + 1];
  if (bz.header_end < zp::kInitSize + 4 || bz.header_end > 0x290) {
    return MakeError("bzImage setup header ends at " + Hex(bz.header_end) +
                     ": it must reach init_size (0x264) and end before 0x290");
  }
  if (size < bz.header_end) {
    return MakeError("truncated bzImage: " + std::to_string(size) +
                     " bytes, the setup header ends at " + Hex(bz.header_end));
  }

  const uint8_t setup_sects = image[zp::kSetupSects];
  bz.setup_size = (uint64_t{setup_sects == 0 ? 4u : setup_sects} + 1) * 512;
  if (bz.setup_size <= size) bz.kernel_size = size - bz.setup_size;
  if (bz.kernel_size == 0) {
    return MakeError("truncated bzImage: " + std::to_string(size) +
                     " bytes, no protected-mode kernel after the " + std::to_string(bz.setup_size) +
                     "-byte setup code");
  }
  const uint64_t syssize = uint64_t{ReadAt<uint32_t>(image, zp::kSyssize)} * 16;
  if (syssize > bz.kernel_size) {
    return MakeError("truncated bzImage: syssize says " + Hex(syssize) +
                     " bytes of protected-mode kernel, the file has " + Hex(bz.kernel_size));
  }

  bz.loadflags = image[zp::kLoadflags];
  bz.xloadflags = ReadAt<uint16_t>(image, zp::kXloadflags);
  bz.relocatable = image[zp::kRelocatableKernel] != 0;
  bz.kernel_alignment = ReadAt<uint32_t>(image, zp::kKernelAlignment);
  bz.pref_address = ReadAt<uint64_t>(image, zp::kPrefAddress);
  bz.init_size = ReadAt<uint32_t>(image, zp::kInitSize);
  bz.cmdline_size = ReadAt<uint32_t>(image, zp::kCmdlineSize);
  bz.initrd_addr_max = ReadAt<uint32_t>(image, zp::kInitrdAddrMax);
  bz.payload_offset = ReadAt<uint32_t>(image, zp::kPayloadOffset);
  bz.payload_length = ReadAt<uint32_t>(image, zp::kPayloadLength);

  if (!(bz.loadflags & kLoadedHigh)) {
    return MakeError("not a bzImage: loadflags bit LOADED_HIGH is clear (a zImage kernel)");
  }
  if (!(bz.xloadflags & kXlfKernel64)) {
    return MakeError("kernel has no 64-bit entry point (xloadflags bit XLF_KERNEL_64 is clear)");
  }
  if (bz.relocatable &&
      (!std::has_single_bit(bz.kernel_alignment) || bz.kernel_alignment < kPageSize)) {
    return MakeError("bzImage kernel_alignment " + Hex(bz.kernel_alignment) +
                     " is not a power of two of at least 4 KiB");
  }
  if (bz.pref_address < kHighMemory.value) {
    return MakeError("bzImage pref_address " + Hex(bz.pref_address) + " lies below 1 MiB");
  }
  if (bz.relocatable && bz.pref_address % bz.kernel_alignment != 0) {
    return MakeError("bzImage pref_address " + Hex(bz.pref_address) +
                     " is not aligned to its kernel_alignment " + Hex(bz.kernel_alignment));
  }
  if (bz.init_size < bz.kernel_size) {
    return MakeError("bzImage init_size " + Hex(bz.init_size) +
                     " is smaller than its protected-mode kernel (" + Hex(bz.kernel_size) +
                     " bytes)");
  }
  if (bz.pref_address > kMmioHoleStart.value ||
      bz.init_size > kMmioHoleStart.value - bz.pref_address) {
    return MakeError("bzImage needs " + HexRange(bz.pref_address, bz.pref_address + bz.init_size) +
                     " (pref_address + init_size), past the MMIO hole at 3 GiB");
  }
  if (!InBounds(bz.payload_offset, bz.payload_length, bz.kernel_size)) {
    return MakeError("bzImage payload at offset " + Hex(bz.payload_offset) + " length " +
                     Hex(bz.payload_length) + " lies outside its protected-mode kernel (" +
                     Hex(bz.kernel_size) + " bytes)");
  }
  return bz;
}

Result<std::vector<E820Entry>> BuildE820Map(const GuestMemory& memory,
                                            const LinuxBootConfig& config) {
  const uint64_t low_end = LowRamEnd(memory);
  std::vector<E820Entry> map = {
      {0, kEbdaStart.value, E820Type::kRam},
      {kEbdaStart.value, kLegacyHole - kEbdaStart, E820Type::kReserved},
      {kFirmwareArea.value, kHighMemory - kFirmwareArea, E820Type::kReserved},
  };
  if (low_end > kHighMemory.value) {
    map.push_back({kHighMemory.value, low_end - kHighMemory.value, E820Type::kRam});
  }
  for (const RamRegion& r : memory.regions()) {
    if (r.base.value != 0) map.push_back({r.base.value, r.size, E820Type::kRam});
  }
  for (const E820Entry& e : config.reserved) {
    if (e.type == E820Type::kRam) {
      return MakeError("e820: extra range " + HexRange(e.addr, e.addr + e.size) +
                       " has type RAM; guest RAM's ranges come from its size");
    }
    if (e.size == 0 || e.addr + e.size < e.addr) {
      return MakeError("e820: extra range at " + Hex(e.addr) + " size " + Hex(e.size) +
                       " is empty or wraps");
    }
    map.push_back(e);
  }
  std::sort(map.begin(), map.end(),
            [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
  for (size_t i = 1; i < map.size(); ++i) {
    const E820Entry& prev = map[i - 1];
    if (map[i].addr < prev.addr + prev.size) {
      return MakeError("e820: " + HexRange(map[i].addr, map[i].addr + map[i].size) + " overlaps " +
                       HexRange(prev.addr, prev.addr + prev.size));
    }
  }
  if (map.size() > zp::kE820MaxEntries) {
    return MakeError("e820: " + std::to_string(map.size()) + " entries, boot_params holds " +
                     std::to_string(zp::kE820MaxEntries));
  }
  return map;
}

Result<LinuxBootInfo> LoadLinux(std::span<const uint8_t> bzimage, std::span<const uint8_t> initrd,
                                std::string_view cmdline, const LinuxBootConfig& config,
                                GuestMemory& memory, CpuState* cpu) {
  BTVM_CHECK(cpu != nullptr);
  Result<BzImage> parsed = ParseBzImage(bzimage);
  if (!parsed) return parsed.error();
  const BzImage& bz = *parsed;
  const std::span<const uint8_t> kernel = bzimage.subspan(bz.setup_size);
  const uint64_t low_end = LowRamEnd(memory);

  LinuxBootInfo info;
  info.kind = config.entry;
  info.protocol = bz.protocol;
  info.boot_params = kLinuxBootParams;
  info.cmdline = kLinuxCmdline;
  info.cmdline_bytes = cmdline.size() + 1;
  info.payload_format = DetectPayloadFormat(kernel.subspan(bz.payload_offset, bz.payload_length));

  Result<std::vector<E820Entry>> e820 = BuildE820Map(memory, config);
  if (!e820) return e820.error();
  info.e820 = std::move(*e820);

  if (config.acpi_rsdp.value != 0) {
    constexpr uint64_t kRsdpV1Size = 20;
    const uint64_t rsdp = config.acpi_rsdp.value;
    const bool reserved = std::any_of(info.e820.begin(), info.e820.end(), [&](const E820Entry& e) {
      return Reserved(e) && rsdp >= e.addr && InBounds(rsdp - e.addr, kRsdpV1Size, e.size);
    });
    if (!reserved) {
      return MakeError("ACPI RSDP at " + Hex(rsdp) +
                       " is not inside a reserved e820 range (the firmware area is " +
                       HexRange(kFirmwareArea.value, kHighMemory.value) + ")");
    }
  }

  if (cmdline.find('\0') != std::string_view::npos) {
    return MakeError("kernel command line contains a NUL byte");
  }
  if (cmdline.size() > bz.cmdline_size || info.cmdline_bytes > kLinuxCmdlineMax) {
    return MakeError("kernel command line is " + std::to_string(cmdline.size()) +
                     " bytes; this kernel takes at most " +
                     std::to_string(std::min<uint64_t>(bz.cmdline_size, kLinuxCmdlineMax - 1)));
  }

  // The kernel's place.
  std::vector<uint8_t> decompressed;
  Vmlinux vmlinux;
  if (config.entry == KernelEntry::kBzImage) {
    // The decompressor runs at max(align_up(load, kernel_alignment),
    // LOAD_PHYSICAL_ADDR) whatever address it was loaded at (compressed
    // head_64.S), so loading anywhere but pref_address saves no memory.
    info.kernel_start = GuestPhys(bz.pref_address);
    info.kernel_end = GuestPhys(bz.pref_address + bz.init_size);
    info.entry = info.kernel_start + kStartup64Offset;
    if (info.kernel_end.value > low_end) {
      return MakeError("guest RAM is too small for this kernel: it needs " +
                       HexRange(info.kernel_start.value, info.kernel_end.value) +
                       " (pref_address + init_size), RAM below 4 GiB ends at " + Hex(low_end));
    }
  } else {
    if (bz.payload_length == 0) {
      return MakeError("bzImage has no payload (payload_length 0) to decompress on the host");
    }
    const auto t0 = std::chrono::steady_clock::now();
    Result<std::vector<uint8_t>> out =
        DecompressKernelPayload(kernel.subspan(bz.payload_offset, bz.payload_length));
    if (!out) return out.error();
    info.decompress_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    decompressed = std::move(*out);
    info.vmlinux_size = decompressed.size();
    Result<Vmlinux> v = ParseVmlinux(decompressed, low_end);
    if (!v) return v.error();
    vmlinux = std::move(*v);
    info.kernel_start = GuestPhys(vmlinux.lowest);
    info.kernel_end = GuestPhys(vmlinux.highest);
    info.entry = GuestPhys(vmlinux.entry);
  }

  // The initrd's place: as high as it goes, as QEMU and GRUB place it.
  // XLF_CAN_BE_LOADED_ABOVE_4G would allow RAM past the hole; below 4 GiB
  // suits every kernel and ramdisk_image needs no high bits.
  if (!initrd.empty()) {
    const uint64_t top = std::min<uint64_t>(low_end, uint64_t{bz.initrd_addr_max} + 1);
    const uint64_t floor = AlignUp(info.kernel_end.value, kPageSize);
    if (initrd.size() > top || ((top - initrd.size()) & kPageMask) < floor) {
      return MakeError("initrd of " + Hex(initrd.size()) +
                       " bytes does not fit in guest RAM between the kernel's end " + Hex(floor) +
                       " and " + Hex(top) + " (the end of RAM below 4 GiB or initrd_addr_max)");
    }
    info.initrd = GuestPhys((top - initrd.size()) & kPageMask);
    info.initrd_size = initrd.size();
  }

  // boot_params: zero, then the setup header copied from the image (boot.rst,
  // "64-bit Boot Protocol"), then the loader's fields. Only the header is
  // copied, so the sentinel at 0x1ef stays zero and Linux trusts the rest.
  std::array<uint8_t, zp::kSize> bp{};
  std::memcpy(bp.data() + zp::kSetupSects, bzimage.data() + zp::kSetupSects,
              bz.header_end - zp::kSetupSects);
  PutAt<uint16_t>(bp, zp::kVidMode, kVidModeNormal);
  PutAt<uint8_t>(bp, zp::kTypeOfLoader, kLoaderUndefined);
  PutAt<uint8_t>(bp, zp::kExtLoaderVer, 0);
  PutAt<uint8_t>(bp, zp::kExtLoaderType, 0);
  // KASLR_FLAG is the decompressor's to set, for the kernel proper.
  PutAt<uint8_t>(bp, zp::kLoadflags,
                 static_cast<uint8_t>((bz.loadflags | kLoadedHigh | kCanUseHeap) & ~kKaslrFlag));
  PutAt<uint16_t>(bp, zp::kHeapEndPtr, kHeapEndPtr);
  // A relocatable kernel loaded away from its default must be told where
  // (boot.rst, code32_start); the kernel start is below 3 GiB.
  PutAt<uint32_t>(bp, zp::kCode32Start, static_cast<uint32_t>(info.kernel_start.value));
  PutAt<uint32_t>(bp, zp::kCmdLinePtr, static_cast<uint32_t>(kLinuxCmdline.value));
  PutAt<uint32_t>(bp, zp::kExtCmdLinePtr, static_cast<uint32_t>(kLinuxCmdline.value >> 32));
  PutAt<uint32_t>(bp, zp::kRamdiskImage, static_cast<uint32_t>(info.initrd.value));
  PutAt<uint32_t>(bp, zp::kExtRamdiskImage, static_cast<uint32_t>(info.initrd.value >> 32));
  PutAt<uint32_t>(bp, zp::kRamdiskSize, static_cast<uint32_t>(info.initrd_size));
  PutAt<uint32_t>(bp, zp::kExtRamdiskSize, static_cast<uint32_t>(info.initrd_size >> 32));
  PutAt<uint32_t>(bp, zp::kHardwareSubarch, 0);  // X86_SUBARCH_PC
  PutAt<uint64_t>(bp, zp::kSetupData, 0);        // no setup_data list
  PutAt<uint64_t>(bp, zp::kAcpiRsdpAddr, config.acpi_rsdp.value);
  PutAt<uint8_t>(bp, zp::kE820Entries, static_cast<uint8_t>(info.e820.size()));
  for (size_t i = 0; i < info.e820.size(); ++i) {
    const E820Entry& e = info.e820[i];
    const uint64_t at = zp::kE820Table + i * zp::kE820EntrySize;
    PutAt<uint64_t>(bp, at, e.addr);
    PutAt<uint64_t>(bp, at + 8, e.size);
    PutAt<uint32_t>(bp, at + 16, static_cast<uint32_t>(e.type));
  }

  // Validation is over: from here on nothing fails.

  // The loader's area, from zero (also after a reset).
  uint8_t* low = memory.HostPointer(GuestPhys(0), kLinuxLoaderEnd.value);
  BTVM_CHECK(low != nullptr);
  std::memset(low, 0, kLinuxLoaderEnd.value);

  // GDT: null, null, __BOOT_CS, __BOOT_DS, TSS.
  Put<uint64_t>(memory, kLinuxGdt + kLinuxBootCs, kBootCodeDescriptor);
  Put<uint64_t>(memory, kLinuxGdt + kLinuxBootDs, kBootDataDescriptor);
  PutTssDescriptor(memory, kLinuxGdt + kLinuxBootTss, kLinuxTss.value, kBootTssSize - 1);
  // An I/O map base at the limit: no I/O permission bitmap.
  Put<uint16_t>(memory, kLinuxTss + 102, static_cast<uint16_t>(kBootTssSize));
  BuildIdentityMap(memory, kLinuxPml4, kLinuxPdpt, kLinuxPageDirs);

  BTVM_CHECK(memory.Write(kLinuxBootParams, bp));
  BTVM_CHECK(memory.Write(
      kLinuxCmdline,
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(cmdline.data()), cmdline.size())));
  // The NUL is already there: the area was zeroed.

  if (config.entry == KernelEntry::kBzImage) {
    // Checked: [pref_address, + init_size) is RAM and holds the whole part.
    BTVM_CHECK(memory.Write(info.kernel_start, kernel));
  } else {
    for (const VmlinuxSegment& s : vmlinux.segments) {
      // ParseVmlinux checked both the file range and the guest range.
      uint8_t* dst = memory.HostPointer(GuestPhys(s.paddr), s.memsz);
      BTVM_CHECK(dst != nullptr);
      std::memcpy(dst, decompressed.data() + s.offset, s.filesz);
      std::memset(dst + s.filesz, 0, s.memsz - s.filesz);
    }
  }
  if (!initrd.empty()) BTVM_CHECK(memory.Write(info.initrd, initrd));

  SetEntryState(info.entry, cpu);
  return info;
}

}  // namespace btvm
