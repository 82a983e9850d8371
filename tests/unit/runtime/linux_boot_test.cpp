// Tests of the Linux boot-protocol loader (runtime/linux_boot.h) and the
// host-side payload decompression (runtime/kernel_decompress.h). The
// bzImages are synthetic: a setup header with the fields boot.rst names and
// a protected-mode part whose payload is a small ELF compressed at test time
// with each library. The last test reads Debian's real kernels when
// scripts/build-guest-image.sh has made them, and skips otherwise.

#include "runtime/linux_boot.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <lz4.h>
#include <lzma.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "mmu/page_walker.h"
#include "runtime/kernel_decompress.h"
#include "runtime/loader.h"

namespace btvm {
namespace {

template <typename T>
void PutAt(std::vector<uint8_t>& out, uint64_t offset, const T& v) {
  if (out.size() < offset + sizeof(T)) out.resize(offset + sizeof(T));
  std::memcpy(out.data() + offset, &v, sizeof(T));
}

template <typename T>
T GetAt(std::span<const uint8_t> bytes, uint64_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

template <typename T>
T ReadGuest(const GuestMemory& memory, uint64_t addr) {
  T v{};
  EXPECT_TRUE(memory.ReadValue(GuestPhys(addr), &v)) << std::hex << addr;
  return v;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    // Compressible but not trivial: runs of a few values.
    out[i] = static_cast<uint8_t>((x >> 24) & 0x7);
  }
  return out;
}

void AppendLe32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// ---------------------------------------------------------------------------
// Compressors, each writing what the kernel's build writes: the stream, then
// (except for gzip, whose trailer already ends with it) the uncompressed size
// as 32 bits little-endian (scripts/Makefile.lib, size_append).

std::vector<uint8_t> Gzip(std::span<const uint8_t> in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()));
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// As scripts/xz_wrap.sh: the x86 BCJ filter, then LZMA2, CRC-32 check.
std::vector<uint8_t> Xz(std::span<const uint8_t> in) {
  lzma_options_lzma opt;
  EXPECT_FALSE(lzma_lzma_preset(&opt, 6));
  lzma_filter filters[] = {
      {LZMA_FILTER_X86, nullptr}, {LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  std::vector<uint8_t> out(lzma_stream_buffer_bound(in.size()));
  size_t pos = 0;
  EXPECT_EQ(lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(),
                                      out.data(), &pos, out.size()),
            LZMA_OK);
  out.resize(pos);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

std::vector<uint8_t> Lzma(std::span<const uint8_t> in) {
  lzma_options_lzma opt;
  EXPECT_FALSE(lzma_lzma_preset(&opt, 6));
  lzma_stream strm = LZMA_STREAM_INIT;
  EXPECT_EQ(lzma_alone_encoder(&strm, &opt), LZMA_OK);
  std::vector<uint8_t> out(in.size() + in.size() / 2 + 4096);
  strm.next_in = in.data();
  strm.avail_in = in.size();
  strm.next_out = out.data();
  strm.avail_out = out.size();
  EXPECT_EQ(lzma_code(&strm, LZMA_FINISH), LZMA_STREAM_END);
  out.resize(strm.total_out);
  lzma_end(&strm);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// `lz4 -l`: the legacy frame, 8 MiB blocks; kFramePerBlock repeats the
// magic before every block after the first (a new frame each time).
enum class Lz4Frames { kOne, kFramePerBlock };
std::vector<uint8_t> Lz4Legacy(std::span<const uint8_t> in, Lz4Frames frames = Lz4Frames::kOne) {
  constexpr size_t kBlock = size_t{8} << 20;
  std::vector<uint8_t> out;
  AppendLe32(out, 0x184c2102);
  for (size_t pos = 0; pos < in.size(); pos += kBlock) {
    if (frames == Lz4Frames::kFramePerBlock && pos > 0) AppendLe32(out, 0x184c2102);
    const int n = static_cast<int>(std::min(kBlock, in.size() - pos));
    std::vector<char> block(LZ4_compressBound(n));
    const int c = LZ4_compress_default(reinterpret_cast<const char*>(in.data() + pos), block.data(),
                                       n, static_cast<int>(block.size()));
    EXPECT_GT(c, 0);
    AppendLe32(out, static_cast<uint32_t>(c));
    out.insert(out.end(), block.begin(), block.begin() + c);
  }
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

std::vector<uint8_t> Zstd(std::span<const uint8_t> in) {
  std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
  const size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 19);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  AppendLe32(out, static_cast<uint32_t>(in.size()));
  return out;
}

// ---------------------------------------------------------------------------
// A vmlinux-like ELF: text at 16 MiB (virtual 0xffffffff81000000), data with
// a bss at 18 MiB, a per-CPU segment with virtual address 0 at 19 MiB, and
// trailing bytes after the segments (where the build appends relocations).

constexpr uint64_t kKernelVirtBase = 0xffffffff81000000ull - MiB(16);

struct ElfSegment {
  uint64_t paddr;
  uint64_t vaddr;
  std::vector<uint8_t> bytes;
  uint64_t memsz;
  uint32_t flags;
};

std::vector<ElfSegment> VmlinuxSegments() {
  return {
      {MiB(16), kKernelVirtBase + MiB(16), Pattern(0x3000, 1), 0x3000, PF_R | PF_X},
      {MiB(18), kKernelVirtBase + MiB(18), Pattern(0x900, 2), 0x4000, PF_R | PF_W},
      {MiB(19), 0, Pattern(0x200, 3), 0x200, PF_R | PF_W},
  };
}

std::vector<uint8_t> BuildVmlinux(const std::vector<ElfSegment>& segments, uint64_t entry) {
  std::vector<uint8_t> out(sizeof(Elf64_Ehdr) + segments.size() * sizeof(Elf64_Phdr));
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = entry;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<Elf64_Half>(segments.size());
  PutAt(out, 0, eh);
  for (size_t i = 0; i < segments.size(); ++i) {
    const ElfSegment& s = segments[i];
    out.resize((out.size() + 0xfff) & ~size_t{0xfff});
    const Elf64_Phdr ph{.p_type = PT_LOAD,
                        .p_flags = s.flags,
                        .p_offset = out.size(),
                        .p_vaddr = s.vaddr,
                        .p_paddr = s.paddr,
                        .p_filesz = s.bytes.size(),
                        .p_memsz = s.memsz,
                        .p_align = 0x1000};
    PutAt(out, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), ph);
    out.insert(out.end(), s.bytes.begin(), s.bytes.end());
  }
  const std::vector<uint8_t> relocs = Pattern(64, 9);
  out.insert(out.end(), relocs.begin(), relocs.end());
  return out;
}

// ---------------------------------------------------------------------------
// A synthetic bzImage.

struct BzSpec {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint8_t jump = 0xeb;
  uint8_t jump_offset = 0x6a;  // header ends at 0x26c, as in Linux 6.1
  uint16_t boot_flag = 0xaa55;
  uint32_t magic = kHdrSMagic;
  uint8_t loadflags = kLoadedHigh;
  uint16_t xloadflags = 0x7f;
  uint32_t kernel_alignment = MiB(2);
  uint8_t relocatable = 1;
  uint64_t pref_address = MiB(16);
  uint32_t init_size = MiB(8);
  uint32_t cmdline_size = 2047;
  uint32_t initrd_addr_max = 0x7fffffff;
  std::vector<uint8_t> payload = std::vector<uint8_t>(64, 0x5a);
  uint32_t payload_offset = 0x400;         // into the protected-mode part
  std::optional<uint32_t> payload_length;  // default: payload.size()
  std::optional<uint32_t> syssize;         // default: from the part's size
};

constexpr uint16_t kRootDev = 0x0801;  // a header field the loader leaves alone

std::vector<uint8_t> BuildBzImage(const BzSpec& spec) {
  const uint64_t setup_size = (uint64_t{spec.setup_sects ? spec.setup_sects : 4u} + 1) * 512;
  std::vector<uint8_t> out(setup_size, 0);
  out[zp::kSentinel] = 0xff;  // as header.S has it
  out[zp::kSetupSects] = spec.setup_sects;
  PutAt<uint16_t>(out, zp::kVidMode, 0xfffd);
  PutAt<uint16_t>(out, 0x1fc, kRootDev);
  PutAt<uint16_t>(out, zp::kBootFlag, spec.boot_flag);
  out[zp::kJump] = spec.jump;
  out[zp::kJump + 1] = spec.jump_offset;
  PutAt<uint32_t>(out, zp::kHeader, spec.magic);
  PutAt<uint16_t>(out, zp::kVersion, spec.version);
  out[zp::kLoadflags] = spec.loadflags;
  PutAt<uint32_t>(out, zp::kCode32Start, 0x100000);
  PutAt<uint32_t>(out, zp::kInitrdAddrMax, spec.initrd_addr_max);
  PutAt<uint32_t>(out, zp::kKernelAlignment, spec.kernel_alignment);
  out[zp::kRelocatableKernel] = spec.relocatable;
  out[0x235] = 21;  // min_alignment
  PutAt<uint16_t>(out, zp::kXloadflags, spec.xloadflags);
  PutAt<uint32_t>(out, zp::kCmdlineSize, spec.cmdline_size);
  PutAt<uint32_t>(out, zp::kPayloadOffset, spec.payload_offset);
  PutAt<uint32_t>(out, zp::kPayloadLength,
                  spec.payload_length.value_or(static_cast<uint32_t>(spec.payload.size())));
  PutAt<uint64_t>(out, zp::kPrefAddress, spec.pref_address);
  PutAt<uint32_t>(out, zp::kInitSize, spec.init_size);
  out.resize(setup_size);

  // The protected-mode part: "startup code", the payload, a trailer.
  std::vector<uint8_t> pm = Pattern(spec.payload_offset, 7);
  pm.insert(pm.end(), spec.payload.begin(), spec.payload.end());
  const std::vector<uint8_t> trailer = Pattern(100, 8);
  pm.insert(pm.end(), trailer.begin(), trailer.end());
  PutAt<uint32_t>(out, zp::kSyssize, spec.syssize.value_or(static_cast<uint32_t>(pm.size() / 16)));
  out.insert(out.end(), pm.begin(), pm.end());
  return out;
}

GuestMemory MakeMemory(uint64_t size) {
  Result<GuestMemory> m = GuestMemory::Create(size);
  EXPECT_TRUE(m.ok());
  return std::move(m.value());
}

constexpr GuestPhys kRsdp{0xf0000};

LinuxBootConfig Config(KernelEntry entry = KernelEntry::kBzImage) {
  LinuxBootConfig config;
  config.entry = entry;
  config.acpi_rsdp = kRsdp;
  return config;
}

// ---------------------------------------------------------------------------
// Setup-header validation.

std::string ParseError(const BzSpec& spec) {
  Result<BzImage> r = ParseBzImage(BuildBzImage(spec));
  return r.ok() ? "(parsed)" : r.error().message;
}

TEST(LinuxBootHeader, AcceptsAGoodImage) {
  BzSpec spec;
  const std::vector<uint8_t> image = BuildBzImage(spec);
  Result<BzImage> r = ParseBzImage(image);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->protocol, 0x020f);
  EXPECT_EQ(r->setup_size, 5u * 512);
  EXPECT_EQ(r->header_end, 0x26cu);
  EXPECT_EQ(r->kernel_size, image.size() - 5 * 512);
  EXPECT_EQ(r->pref_address, MiB(16));
  EXPECT_EQ(r->init_size, MiB(8));
  EXPECT_EQ(r->kernel_alignment, MiB(2));
  EXPECT_TRUE(r->relocatable);
  EXPECT_EQ(r->payload_offset, 0x400u);
  EXPECT_EQ(r->payload_length, 64u);
}

TEST(LinuxBootHeader, SetupSectsZeroMeansFour) {
  BzSpec spec;
  spec.setup_sects = 0;
  Result<BzImage> r = ParseBzImage(BuildBzImage(spec));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->setup_size, 5u * 512);
  spec.setup_sects = 30;
  r = ParseBzImage(BuildBzImage(spec));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->setup_size, 31u * 512);
}

TEST(LinuxBootHeader, RejectsBadHeaders) {
  const std::vector<uint8_t> tiny(0x100, 0);
  Result<BzImage> r = ParseBzImage(tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "not a bzImage: 256 bytes, too short for a setup header");

  struct Case {
    const char* name;
    void (*mutate)(BzSpec&);
    const char* message;
  };
  const Case cases[] = {
      {"magic", [](BzSpec& s) { s.magic = 0x464c457f; },
       "not a bzImage: no HdrS signature at 0x202"},
      {"boot flag", [](BzSpec& s) { s.boot_flag = 0x1234; },
       "not a bzImage: boot_flag at 0x1fe is 0x1234, not 0xaa55"},
      {"old protocol", [](BzSpec& s) { s.version = 0x020b; },
       "Linux boot protocol 2.11 is too old: btvm needs 2.12 or later (64-bit entry, "
       "xloadflags)"},
      {"no jump", [](BzSpec& s) { s.jump = 0x90; },
       "bzImage has no short jump at 0x200, so its setup header's length is unknown"},
      {"short header", [](BzSpec& s) { s.jump_offset = 0x50; },
       "bzImage setup header ends at 0x252: it must reach init_size (0x264) and end before "
       "0x290"},
      {"syssize", [](BzSpec& s) { s.syssize = 0x100000; },
       "truncated bzImage: syssize says 0x1000000 bytes of protected-mode kernel, the file has "
       "0x4a4"},
      {"zImage", [](BzSpec& s) { s.loadflags = 0; },
       "not a bzImage: loadflags bit LOADED_HIGH is clear (a zImage kernel)"},
      {"32-bit", [](BzSpec& s) { s.xloadflags = 0x7e; },
       "kernel has no 64-bit entry point (xloadflags bit XLF_KERNEL_64 is clear)"},
      {"alignment", [](BzSpec& s) { s.kernel_alignment = 0x300000; },
       "bzImage kernel_alignment 0x300000 is not a power of two of at least 4 KiB"},
      {"low pref", [](BzSpec& s) { s.pref_address = 0x80000; },
       "bzImage pref_address 0x80000 lies below 1 MiB"},
      {"unaligned pref", [](BzSpec& s) { s.pref_address = MiB(17); },
       "bzImage pref_address 0x1100000 is not aligned to its kernel_alignment 0x200000"},
      {"init_size", [](BzSpec& s) { s.init_size = 0x100; },
       "bzImage init_size 0x100 is smaller than its protected-mode kernel (0x4a4 bytes)"},
      {"past the hole", [](BzSpec& s) { s.pref_address = GiB(3) - MiB(4); },
       "bzImage needs [0xbfc00000, 0xc0400000) (pref_address + init_size), past the MMIO hole "
       "at 3 GiB"},
      {"payload", [](BzSpec& s) { s.payload_length = 0x1000; },
       "bzImage payload at offset 0x400 length 0x1000 lies outside its protected-mode kernel "
       "(0x4a4 bytes)"},
  };
  for (const Case& c : cases) {
    BzSpec spec;
    c.mutate(spec);
    EXPECT_EQ(ParseError(spec), c.message) << c.name;
  }
}

TEST(LinuxBootHeader, RejectsTruncatedImages) {
  std::vector<uint8_t> image = BuildBzImage(BzSpec{});
  image.resize(5 * 512);
  Result<BzImage> r = ParseBzImage(image);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "truncated bzImage: 2560 bytes, no protected-mode kernel after the 2560-byte setup "
            "code");
  image.resize(0x240);
  r = ParseBzImage(image);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "truncated bzImage: 576 bytes, the setup header ends at 0x26c");
}

TEST(LinuxBootHeader, NonRelocatableKernelNeedsNoAlignment) {
  BzSpec spec;
  spec.relocatable = 0;
  spec.kernel_alignment = 0;
  spec.pref_address = MiB(17);
  EXPECT_EQ(ParseError(spec), "(parsed)");
}

// ---------------------------------------------------------------------------
// e820.

TEST(LinuxBootE820, LowRamOnly) {
  GuestMemory memory = MakeMemory(MiB(64));
  Result<std::vector<E820Entry>> map = BuildE820Map(memory, LinuxBootConfig{});
  ASSERT_TRUE(map.ok()) << map.error().message;
  const std::vector<E820Entry> want = {
      {0, 0x9fc00, E820Type::kRam},
      {0x9fc00, 0x400, E820Type::kReserved},
      {0xe0000, 0x20000, E820Type::kReserved},
      {MiB(1), MiB(63), E820Type::kRam},
  };
  EXPECT_EQ(*map, want);
}

TEST(LinuxBootE820, RamAboveTheHoleAndExtraRanges) {
  GuestMemory memory = MakeMemory(GiB(3) + MiB(512));
  LinuxBootConfig config;
  config.reserved = {{0xfee00000, 0x1000, E820Type::kReserved},
                     {0xfec00000, 0x1000, E820Type::kReserved}};
  Result<std::vector<E820Entry>> map = BuildE820Map(memory, config);
  ASSERT_TRUE(map.ok()) << map.error().message;
  const std::vector<E820Entry> want = {
      {0, 0x9fc00, E820Type::kRam},
      {0x9fc00, 0x400, E820Type::kReserved},
      {0xe0000, 0x20000, E820Type::kReserved},
      {MiB(1), GiB(3) - MiB(1), E820Type::kRam},
      {0xfec00000, 0x1000, E820Type::kReserved},
      {0xfee00000, 0x1000, E820Type::kReserved},
      {GiB(4), MiB(512), E820Type::kRam},
  };
  EXPECT_EQ(*map, want);
}

TEST(LinuxBootE820, RejectsBadExtraRanges) {
  GuestMemory memory = MakeMemory(MiB(64));
  LinuxBootConfig config;
  config.reserved = {{MiB(32), 0x1000, E820Type::kReserved}};
  Result<std::vector<E820Entry>> map = BuildE820Map(memory, config);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().message, "e820: [0x2000000, 0x2001000) overlaps [0x100000, 0x4000000)");

  config.reserved = {{0xfec00000, 0x2000, E820Type::kReserved},
                     {0xfec01000, 0x1000, E820Type::kReserved}};
  map = BuildE820Map(memory, config);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().message,
            "e820: [0xfec01000, 0xfec02000) overlaps [0xfec00000, 0xfec02000)");

  config.reserved = {{0xfec00000, 0, E820Type::kReserved}};
  map = BuildE820Map(memory, config);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().message, "e820: extra range at 0xfec00000 size 0x0 is empty or wraps");

  config.reserved = {{0xfec00000, 0x1000, E820Type::kRam}};
  map = BuildE820Map(memory, config);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.error().message,
            "e820: extra range [0xfec00000, 0xfec01000) has type RAM; guest RAM's ranges come "
            "from its size");
}

// ---------------------------------------------------------------------------
// Loading a bzImage (the kernel's own decompressor runs in the guest).

class LinuxBootLoad : public ::testing::Test {
 protected:
  static constexpr uint64_t kRam = MiB(64);
  GuestMemory memory_ = MakeMemory(kRam);
  CpuState cpu_;
};

TEST_F(LinuxBootLoad, LoadsTheProtectedModeKernelAtPrefAddress) {
  const std::vector<uint8_t> image = BuildBzImage(BzSpec{});
  Result<LinuxBootInfo> info = LoadLinux(image, {}, "console=ttyS0", Config(), memory_, &cpu_);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->kind, KernelEntry::kBzImage);
  EXPECT_EQ(info->kernel_start, GuestPhys(MiB(16)));
  EXPECT_EQ(info->kernel_end, GuestPhys(MiB(24)));
  EXPECT_EQ(info->entry, GuestPhys(MiB(16) + 0x200));
  EXPECT_EQ(info->protocol, 0x020f);
  EXPECT_EQ(info->initrd, GuestPhys(0));
  EXPECT_EQ(info->initrd_size, 0u);

  const std::span<const uint8_t> pm = std::span(image).subspan(5 * 512);
  std::vector<uint8_t> loaded(pm.size());
  ASSERT_TRUE(memory_.Read(GuestPhys(MiB(16)), loaded).ok());
  EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), pm.begin()));
}

TEST_F(LinuxBootLoad, FillsBootParams) {
  const std::vector<uint8_t> image = BuildBzImage(BzSpec{});
  const std::vector<uint8_t> initrd = Pattern(5000, 4);
  const std::string cmdline = "console=ttyS0 panic=-1 rdinit=/init";
  LinuxBootConfig config = Config();
  config.reserved = {{0xfec00000, 0x1000, E820Type::kReserved}};
  Result<LinuxBootInfo> info = LoadLinux(image, initrd, cmdline, config, memory_, &cpu_);
  ASSERT_TRUE(info.ok()) << info.error().message;

  std::vector<uint8_t> bp(zp::kSize);
  ASSERT_TRUE(memory_.Read(kLinuxBootParams, bp).ok());

  // The header, copied from the image; the fields the loader writes differ.
  for (uint64_t i = zp::kSetupSects; i < 0x26c; ++i) {
    const bool written = (i >= zp::kVidMode && i < zp::kVidMode + 2) ||
                         (i >= zp::kTypeOfLoader && i < zp::kTypeOfLoader + 2) ||
                         (i >= zp::kCode32Start && i < zp::kRamdiskSize + 4) ||
                         (i >= zp::kHeapEndPtr && i < zp::kCmdLinePtr + 4);
    if (!written) {
      EXPECT_EQ(bp[i], image[i]) << "boot_params byte " << std::hex << i;
    }
  }
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kHeader), kHdrSMagic);
  EXPECT_EQ(GetAt<uint16_t>(bp, 0x1fc), kRootDev);
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kInitSize), MiB(8));
  EXPECT_EQ(bp[zp::kSentinel], 0) << "only the header is copied";
  for (uint64_t i = 0x26c; i < zp::kE820Table; ++i) EXPECT_EQ(bp[i], 0) << std::hex << i;

  EXPECT_EQ(GetAt<uint16_t>(bp, zp::kVidMode), 0xffff);
  EXPECT_EQ(bp[zp::kTypeOfLoader], 0xff);
  EXPECT_EQ(bp[zp::kExtLoaderType], 0);
  EXPECT_EQ(bp[zp::kExtLoaderVer], 0);
  EXPECT_EQ(bp[zp::kLoadflags], kLoadedHigh | kCanUseHeap);
  EXPECT_EQ(GetAt<uint16_t>(bp, zp::kHeapEndPtr), 0xfe00);
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kCode32Start), MiB(16));
  EXPECT_EQ(GetAt<uint64_t>(bp, zp::kAcpiRsdpAddr), kRsdp.value);

  // Command line.
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kCmdLinePtr), kLinuxCmdline.value);
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kExtCmdLinePtr), 0u);
  std::vector<uint8_t> line(cmdline.size() + 1, 0xcc);
  ASSERT_TRUE(memory_.Read(kLinuxCmdline, line).ok());
  EXPECT_EQ(std::string(line.begin(), line.end() - 1), cmdline);
  EXPECT_EQ(line.back(), 0);
  EXPECT_EQ(info->cmdline_bytes, cmdline.size() + 1);

  // Initrd: page aligned, at the top of RAM.
  const uint64_t initrd_at = (kRam - initrd.size()) & kPageMask;
  EXPECT_EQ(info->initrd, GuestPhys(initrd_at));
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kRamdiskImage), initrd_at);
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kRamdiskSize), initrd.size());
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kExtRamdiskImage), 0u);
  EXPECT_EQ(GetAt<uint32_t>(bp, zp::kExtRamdiskSize), 0u);
  std::vector<uint8_t> rd(initrd.size());
  ASSERT_TRUE(memory_.Read(GuestPhys(initrd_at), rd).ok());
  EXPECT_EQ(rd, initrd);

  // e820.
  ASSERT_EQ(bp[zp::kE820Entries], 5);
  const E820Entry want[] = {
      {0, 0x9fc00, E820Type::kRam},
      {0x9fc00, 0x400, E820Type::kReserved},
      {0xe0000, 0x20000, E820Type::kReserved},
      {MiB(1), kRam - MiB(1), E820Type::kRam},
      {0xfec00000, 0x1000, E820Type::kReserved},
  };
  for (size_t i = 0; i < 5; ++i) {
    const uint64_t at = zp::kE820Table + i * zp::kE820EntrySize;
    EXPECT_EQ(GetAt<uint64_t>(bp, at), want[i].addr) << i;
    EXPECT_EQ(GetAt<uint64_t>(bp, at + 8), want[i].size) << i;
    EXPECT_EQ(GetAt<uint32_t>(bp, at + 16), static_cast<uint32_t>(want[i].type)) << i;
  }
  EXPECT_EQ(GetAt<uint64_t>(bp, zp::kE820Table + 5 * zp::kE820EntrySize), 0u);
}

TEST_F(LinuxBootLoad, InitrdRespectsInitrdAddrMax) {
  BzSpec spec;
  spec.initrd_addr_max = MiB(48) - 1;
  const std::vector<uint8_t> initrd = Pattern(MiB(1) + 123, 5);
  Result<LinuxBootInfo> info = LoadLinux(BuildBzImage(spec), initrd, "", Config(), memory_, &cpu_);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->initrd, GuestPhys((MiB(48) - initrd.size()) & kPageMask));
  EXPECT_EQ(info->initrd.value % kPageSize, 0u);
  EXPECT_LE(info->initrd.value + initrd.size(), MiB(48));
}

TEST_F(LinuxBootLoad, SetsThe64BitEntryState) {
  // Garbage in the vCPU first: the loader must set every field it owns.
  for (uint64_t& r : cpu_.gpr) r = 0xa5a5a5a5a5a5a5a5ull;
  cpu_.rflags = 0x246;
  for (SegmentReg& s : cpu_.seg) s = SegmentReg{.selector = 0x33, .attrib = 0xf3, .limit = 1};
  cpu_.tr = cpu_.ldtr = SegmentReg{.selector = 0x40, .attrib = 0x89, .limit = 1, .base = 2};
  cpu_.cr0 = cpu_.cr4 = cpu_.efer = ~uint64_t{0};
  cpu_.idtr.limit = 0xfff;
  Result<LinuxBootInfo> info = LoadLinux(BuildBzImage(BzSpec{}), {}, "", Config(), memory_, &cpu_);
  ASSERT_TRUE(info.ok()) << info.error().message;

  EXPECT_EQ(cpu_.rip, MiB(16) + 0x200);
  EXPECT_EQ(cpu_.gpr[kRsi], kLinuxBootParams.value);
  EXPECT_EQ(cpu_.gpr[kRsp], kLinuxStackTop.value);
  for (int r : {kRax, kRcx, kRdx, kRbx, kRbp, kRdi, kR8, kR15}) EXPECT_EQ(cpu_.gpr[r], 0u) << r;
  EXPECT_EQ(cpu_.rflags, 0x2u);

  EXPECT_EQ(cpu_.seg[kCs].selector, 0x10);
  EXPECT_EQ(cpu_.seg[kCs].attrib, kBootCodeAttrib);
  EXPECT_TRUE(cpu_.seg[kCs].Long());
  EXPECT_EQ(cpu_.Cpl(), 0u);
  for (SegIndex s : {kDs, kEs, kSs, kFs, kGs}) {
    EXPECT_EQ(cpu_.seg[s].selector, 0x18) << s;
    EXPECT_EQ(cpu_.seg[s].attrib, kBootDataAttrib) << s;
    EXPECT_EQ(cpu_.seg[s].base, 0u) << s;
    EXPECT_EQ(cpu_.seg[s].limit, 0xffffffffu) << s;
  }
  EXPECT_EQ(cpu_.tr.selector, 0x20);
  EXPECT_EQ(cpu_.tr.base, kLinuxTss.value);
  EXPECT_EQ(cpu_.tr.attrib, kBootTssAttrib);
  EXPECT_EQ(cpu_.gdtr.base, kLinuxGdt.value);
  EXPECT_EQ(cpu_.gdtr.limit, 47);
  EXPECT_EQ(cpu_.idtr.limit, 0);

  // The GDT holds what the selectors name.
  EXPECT_EQ(ReadGuest<uint64_t>(memory_, kLinuxGdt.value + 0x10), kBootCodeDescriptor);
  EXPECT_EQ(ReadGuest<uint64_t>(memory_, kLinuxGdt.value + 0x18), kBootDataDescriptor);
  EXPECT_EQ(ReadGuest<uint64_t>(memory_, kLinuxGdt.value + 0x00), 0u);
  EXPECT_EQ(ReadGuest<uint64_t>(memory_, kLinuxGdt.value + 0x08), 0u);
  const uint64_t tss_low = ReadGuest<uint64_t>(memory_, kLinuxGdt.value + 0x20);
  EXPECT_EQ((tss_low >> 40) & 0xff, 0x8bu) << "present busy 64-bit TSS";
  EXPECT_EQ(((tss_low >> 16) & 0xffffff) | ((tss_low >> 56) << 24), kLinuxTss.value);

  EXPECT_EQ(cpu_.cr0, 0x80010033u);
  EXPECT_EQ(cpu_.cr4, cr4::kPAE);
  EXPECT_EQ(cpu_.efer, efer::kLME | efer::kLMA);
  EXPECT_EQ(cpu_.cr3, kLinuxPml4.value);
  EXPECT_TRUE(cpu_.LongMode());
}

// The identity map covers what boot.rst requires (kernel + init_size, zero
// page, command line, initrd) and the rest of RAM, the hole and RAM above it.
TEST(LinuxBootPaging, IdentityMapsEverything) {
  GuestMemory memory = MakeMemory(GiB(3) + MiB(256));
  CpuState cpu;
  const std::vector<uint8_t> initrd = Pattern(10000, 6);
  Result<LinuxBootInfo> info =
      LoadLinux(BuildBzImage(BzSpec{}), initrd, "quiet", Config(), memory, &cpu);
  ASSERT_TRUE(info.ok()) << info.error().message;
  // Below initrd_addr_max (2 GiB - 1), not at the end of RAM below the hole.
  EXPECT_EQ(info->initrd, GuestPhys((GiB(2) - initrd.size()) & kPageMask));

  const PagingMode mode{.cr0 = cpu.cr0, .cr3 = cpu.cr3, .cr4 = cpu.cr4, .efer = cpu.efer};
  const uint64_t addrs[] = {
      0,
      kLinuxBootParams.value,
      kLinuxCmdline.value + 5,
      info->kernel_start.value,
      info->entry.value,
      info->kernel_end.value - 1,
      info->initrd.value,
      info->initrd.value + initrd.size() - 1,
      GiB(3) - 1,
      0xfee00000,
      GiB(4),
      GiB(4) + MiB(256) - 1,
  };
  for (uint64_t a : addrs) {
    for (Access access : {Access::kFetch, Access::kWrite}) {
      const WalkOutcome w = WalkPageTables(memory, mode, GuestVirt(a), access);
      ASSERT_TRUE(w.ok) << std::hex << a;
      EXPECT_EQ(w.translation.phys, GuestPhys(a)) << std::hex << a;
    }
  }
}

TEST_F(LinuxBootLoad, RejectsWhatDoesNotFit) {
  struct Case {
    const char* name;
    uint64_t ram;
    size_t initrd;
    std::string cmdline;
    LinuxBootConfig config;
    const char* message;
  };
  LinuxBootConfig bad_rsdp = Config();
  bad_rsdp.acpi_rsdp = GuestPhys(0x9000);
  LinuxBootConfig rsdp_at_edge = Config();
  rsdp_at_edge.acpi_rsdp = GuestPhys(MiB(1) - 8);
  const Case cases[] = {
      {"small RAM", MiB(20), 0, "", Config(),
       "guest RAM is too small for this kernel: it needs [0x1000000, 0x1800000) (pref_address + "
       "init_size), RAM below 4 GiB ends at 0x1400000"},
      {"big initrd", MiB(32), MiB(8) + 1, "", Config(),
       "initrd of 0x800001 bytes does not fit in guest RAM between the kernel's end 0x1800000 "
       "and 0x2000000 (the end of RAM below 4 GiB or initrd_addr_max)"},
      {"long cmdline", MiB(32), 0, std::string(2048, 'x'), Config(),
       "kernel command line is 2048 bytes; this kernel takes at most 2047"},
      {"NUL in cmdline", MiB(32), 0, std::string("a\0b", 3), Config(),
       "kernel command line contains a NUL byte"},
      {"RSDP in RAM", MiB(32), 0, "", bad_rsdp,
       "ACPI RSDP at 0x9000 is not inside a reserved e820 range (the firmware area is [0xe0000, "
       "0x100000))"},
      {"RSDP past the area", MiB(32), 0, "", rsdp_at_edge,
       "ACPI RSDP at 0xffff8 is not inside a reserved e820 range (the firmware area is [0xe0000, "
       "0x100000))"},
  };
  for (const Case& c : cases) {
    GuestMemory memory = MakeMemory(c.ram);
    // A canary in the loader's area and at the kernel's place: an error
    // writes nothing.
    ASSERT_TRUE(memory.WriteValue(GuestPhys(0x1000), uint64_t{0x1234}));
    ASSERT_TRUE(memory.WriteValue(GuestPhys(MiB(16)), uint64_t{0x5678}));
    CpuState cpu;
    cpu.rip = 0xdead;
    const std::vector<uint8_t> initrd(c.initrd, 1);
    Result<LinuxBootInfo> info =
        LoadLinux(BuildBzImage(BzSpec{}), initrd, c.cmdline, c.config, memory, &cpu);
    ASSERT_FALSE(info.ok()) << c.name;
    EXPECT_EQ(info.error().message, c.message) << c.name;
    EXPECT_EQ(ReadGuest<uint64_t>(memory, 0x1000), 0x1234u) << c.name;
    EXPECT_EQ(ReadGuest<uint64_t>(memory, MiB(16)), 0x5678u) << c.name;
    EXPECT_EQ(cpu.rip, 0xdeadu) << c.name;
  }
}

TEST_F(LinuxBootLoad, LeavesTheFirmwareAreaAlone) {
  // The machine's ACPI tables, written before the loader runs.
  const std::vector<uint8_t> tables = Pattern(0x20000, 10);
  ASSERT_TRUE(memory_.Write(kFirmwareArea, tables).ok());
  ASSERT_TRUE(memory_.WriteValue(GuestPhys(0x9fc00), uint32_t{0xebda}));
  ASSERT_TRUE(LoadLinux(BuildBzImage(BzSpec{}), {}, "", Config(), memory_, &cpu_).ok());
  std::vector<uint8_t> after(tables.size());
  ASSERT_TRUE(memory_.Read(kFirmwareArea, after).ok());
  EXPECT_EQ(after, tables);
  EXPECT_EQ(ReadGuest<uint32_t>(memory_, 0x9fc00), 0xebdau);
}

// ---------------------------------------------------------------------------
// Host-side decompression and the vmlinux entry.

struct Format {
  const char* name;
  PayloadFormat format;
  std::vector<uint8_t> (*compress)(std::span<const uint8_t>);
  bool checksummed;  // the stream carries a check of its data (gzip's and xz's CRC-32)
};

std::vector<uint8_t> Lz4One(std::span<const uint8_t> in) {
  return Lz4Legacy(in);
}

const Format kFormats[] = {
    {"gzip", PayloadFormat::kGzip, Gzip, true},  {"xz", PayloadFormat::kXz, Xz, true},
    {"lzma", PayloadFormat::kLzma, Lzma, false}, {"lz4", PayloadFormat::kLz4, Lz4One, false},
    {"zstd", PayloadFormat::kZstd, Zstd, false},
};

TEST(KernelDecompress, RoundTripsEachFormat) {
  const std::vector<uint8_t> data = Pattern(300000, 11);
  for (const Format& f : kFormats) {
    const std::vector<uint8_t> packed = f.compress(data);
    EXPECT_EQ(DetectPayloadFormat(packed), f.format) << f.name;
    EXPECT_EQ(PayloadFormatName(f.format), f.name);
    EXPECT_TRUE(CanDecompress(f.format)) << f.name;
    Result<std::vector<uint8_t>> out = DecompressKernelPayload(packed);
    ASSERT_TRUE(out.ok()) << f.name << ": " << out.error().message;
    EXPECT_EQ(*out, data) << f.name;
  }
}

TEST(KernelDecompress, Lz4LegacyAcrossBlocksAndFrames) {
  const std::vector<uint8_t> data = Pattern(MiB(8) * 2 + 12345, 12);
  for (Lz4Frames frames : {Lz4Frames::kOne, Lz4Frames::kFramePerBlock}) {
    Result<std::vector<uint8_t>> out = DecompressKernelPayload(Lz4Legacy(data, frames));
    ASSERT_TRUE(out.ok()) << out.error().message;
    EXPECT_TRUE(*out == data) << "frames " << static_cast<int>(frames);
  }
}

TEST(KernelDecompress, RejectsUnsupportedAndUnknownFormats) {
  const std::vector<uint8_t> bzip2 = {'B', 'Z', 'h', '9', '1', 'A', 'Y', '&', 'S', 'Y', 0, 0};
  EXPECT_EQ(DetectPayloadFormat(bzip2), PayloadFormat::kBzip2);
  Result<std::vector<uint8_t>> r = DecompressKernelPayload(bzip2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "kernel payload is bzip2-compressed, which btvm cannot decompress on the host (it "
            "can gzip, xz, lzma, lz4 and zstd); boot the bzImage through its own decompressor");

  const std::vector<uint8_t> lzo = {0x89, 'L', 'Z', 'O', 0, '\r', '\n', 0x1a, '\n', 0, 0, 0};
  EXPECT_EQ(DetectPayloadFormat(lzo), PayloadFormat::kLzo);
  r = DecompressKernelPayload(lzo);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("lzo-compressed"), std::string::npos);

  const std::vector<uint8_t> unknown = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
  r = DecompressKernelPayload(unknown);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "kernel payload has an unknown compression format (magic 7f 45 "
            "4c 46)");
}

TEST(KernelDecompress, RejectsCorruptStreamsAndSizeMismatches) {
  const std::vector<uint8_t> data = Pattern(200000, 13);
  for (const Format& f : kFormats) {
    // A size field one byte short, and one byte long.
    for (int delta : {-1, +1}) {
      std::vector<uint8_t> packed = f.compress(data);
      const uint32_t size = static_cast<uint32_t>(data.size() + delta);
      std::memcpy(packed.data() + packed.size() - 4, &size, 4);
      Result<std::vector<uint8_t>> r = DecompressKernelPayload(packed);
      ASSERT_FALSE(r.ok()) << f.name << " delta " << delta;
      const std::string& m = r.error().message;
      EXPECT_EQ(m.rfind(std::string(f.name) + " kernel payload ", 0), 0u) << m;
      // gzip's size field is its own ISIZE, checked by zlib as corruption.
      if (f.format != PayloadFormat::kGzip) {
        EXPECT_NE(m.find("size field"), std::string::npos) << m;
      }
    }
    // Damage in the middle of the stream: caught where the format has a
    // check; elsewhere it must at least stay inside the buffers.
    std::vector<uint8_t> packed = f.compress(data);
    for (size_t i = packed.size() / 3; i < packed.size() / 3 + 16; ++i) packed[i] ^= 0x55;
    Result<std::vector<uint8_t>> r = DecompressKernelPayload(packed);
    if (r.ok()) {
      EXPECT_FALSE(f.checksummed) << f.name << ": damaged stream decompressed";
    } else {
      EXPECT_EQ(r.error().message.rfind(std::string(f.name) + " kernel payload ", 0), 0u)
          << r.error().message;
    }
    // Truncated.
    packed = f.compress(data);
    std::vector<uint8_t> cut(packed.begin(), packed.begin() + packed.size() / 2);
    const uint32_t size = static_cast<uint32_t>(data.size());
    AppendLe32(cut, size);
    r = DecompressKernelPayload(cut);
    EXPECT_FALSE(r.ok()) << f.name << ": truncated stream decompressed";
  }
}

TEST(KernelDecompress, RejectsAbsurdSizeFields) {
  std::vector<uint8_t> packed = Zstd(Pattern(1000, 14));
  const uint32_t zero = 0;
  std::memcpy(packed.data() + packed.size() - 4, &zero, 4);
  Result<std::vector<uint8_t>> r = DecompressKernelPayload(packed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "zstd kernel payload is corrupt: its size field says 0x0 bytes");
  const uint32_t huge = 0xffffffff;
  std::memcpy(packed.data() + packed.size() - 4, &huge, 4);
  r = DecompressKernelPayload(packed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "zstd kernel payload is corrupt: its size field says 0xffffffff bytes");
}

TEST(LinuxBootDecompressed, LoadsEachFormatsVmlinux) {
  const std::vector<ElfSegment> segments = VmlinuxSegments();
  const std::vector<uint8_t> elf = BuildVmlinux(segments, MiB(16));
  for (const Format& f : kFormats) {
    GuestMemory memory = MakeMemory(MiB(64));
    // Garbage where the bss goes: the loader must zero it.
    std::vector<uint8_t> junk(0x4000, 0xcc);
    ASSERT_TRUE(memory.Write(GuestPhys(MiB(18)), junk).ok());
    CpuState cpu;
    BzSpec spec;
    spec.payload = f.compress(elf);
    const std::vector<uint8_t> initrd = Pattern(4096 * 3, 15);
    Result<LinuxBootInfo> info = LoadLinux(BuildBzImage(spec), initrd, "root=/dev/vda",
                                           Config(KernelEntry::kDecompressed), memory, &cpu);
    ASSERT_TRUE(info.ok()) << f.name << ": " << info.error().message;
    EXPECT_EQ(info->kind, KernelEntry::kDecompressed);
    EXPECT_EQ(info->payload_format, f.format);
    EXPECT_EQ(info->vmlinux_size, elf.size());
    EXPECT_EQ(info->entry, GuestPhys(MiB(16)));
    EXPECT_EQ(cpu.rip, MiB(16));
    EXPECT_EQ(cpu.gpr[kRsi], kLinuxBootParams.value);
    EXPECT_EQ(info->kernel_start, GuestPhys(MiB(16)));
    EXPECT_EQ(info->kernel_end, GuestPhys(MiB(19) + 0x200));
    EXPECT_EQ(info->initrd, GuestPhys(MiB(64) - 4096 * 3));
    for (const ElfSegment& s : segments) {
      std::vector<uint8_t> got(s.memsz);
      ASSERT_TRUE(memory.Read(GuestPhys(s.paddr), got).ok());
      EXPECT_TRUE(std::equal(s.bytes.begin(), s.bytes.end(), got.begin()))
          << f.name << " segment at " << std::hex << s.paddr;
      EXPECT_TRUE(
          std::all_of(got.begin() + s.bytes.size(), got.end(), [](uint8_t b) { return b == 0; }))
          << f.name << " bss at " << std::hex << s.paddr;
    }
    // boot_params is filled as for the bzImage entry.
    EXPECT_EQ(ReadGuest<uint32_t>(memory, kLinuxBootParams.value + zp::kHeader), kHdrSMagic);
    EXPECT_EQ(ReadGuest<uint32_t>(memory, kLinuxBootParams.value + zp::kInitSize), MiB(8));
    EXPECT_EQ(ReadGuest<uint32_t>(memory, kLinuxBootParams.value + zp::kRamdiskImage),
              MiB(64) - 4096 * 3);
    EXPECT_EQ(ReadGuest<uint8_t>(memory, kLinuxBootParams.value + zp::kTypeOfLoader), 0xff);
  }
}

TEST(LinuxBootDecompressed, TranslatesAVirtualEntryPoint) {
  BzSpec spec;
  spec.payload = Gzip(BuildVmlinux(VmlinuxSegments(), kKernelVirtBase + MiB(16) + 0x40));
  GuestMemory memory = MakeMemory(MiB(64));
  CpuState cpu;
  Result<LinuxBootInfo> info =
      LoadLinux(BuildBzImage(spec), {}, "", Config(KernelEntry::kDecompressed), memory, &cpu);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(cpu.rip, MiB(16) + 0x40);
}

TEST(LinuxBootDecompressed, RejectsBadPayloads) {
  auto load = [](const std::vector<uint8_t>& payload, uint64_t ram = MiB(64)) {
    BzSpec spec;
    spec.payload = payload;
    GuestMemory memory = MakeMemory(ram);
    CpuState cpu;
    Result<LinuxBootInfo> info =
        LoadLinux(BuildBzImage(spec), {}, "", Config(KernelEntry::kDecompressed), memory, &cpu);
    return info.ok() ? std::string("(loaded)") : info.error().message;
  };
  std::vector<ElfSegment> segments = VmlinuxSegments();
  EXPECT_EQ(load(Zstd(Pattern(5000, 16))), "decompressed kernel (vmlinux): not an ELF file");
  EXPECT_EQ(load(Zstd(BuildVmlinux(segments, MiB(18)))),
            "decompressed kernel (vmlinux): entry point 0x1200000 is not inside an executable "
            "segment");
  EXPECT_EQ(load(Zstd(BuildVmlinux(segments, MiB(16))), MiB(18)),
            "decompressed kernel (vmlinux): segment 1 at [0x1200000, 0x1204000) does not fit in "
            "guest RAM between 1 MiB and the end of RAM below 4 GiB (0x1200000)");
  segments[1].paddr = MiB(16) + 0x2000;
  EXPECT_EQ(load(Zstd(BuildVmlinux(segments, MiB(16)))),
            "decompressed kernel (vmlinux): segments 0 and 1 overlap at 0x1002000");
  segments = VmlinuxSegments();
  segments[2].paddr = 0x80000;
  EXPECT_EQ(load(Zstd(BuildVmlinux(segments, MiB(16)))),
            "decompressed kernel (vmlinux): segment 2 at [0x80000, 0x80200) does not fit in "
            "guest RAM between 1 MiB and the end of RAM below 4 GiB (0x4000000)");
  EXPECT_EQ(load({0x42, 0x5a, 0x68, 0x39, 1, 2, 3, 4}),
            "kernel payload is bzip2-compressed, which btvm cannot decompress on the host (it "
            "can gzip, xz, lzma, lz4 and zstd); boot the bzImage through its own decompressor");
  EXPECT_EQ(load({}), "bzImage has no payload (payload_length 0) to decompress on the host");
}

// ---------------------------------------------------------------------------
// Debian's kernels (scripts/build-guest-image.sh), when they are there.

std::string GuestImageDir() {
  if (const char* dir = std::getenv("BTVM_GUEST_IMAGE_DIR"); dir && *dir) return dir;
  return BTVM_GUEST_IMAGE_DIR;
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void CheckRealKernel(const std::string& flavour, PayloadFormat want_format) {
  const std::string dir = GuestImageDir();
  const std::string path = dir + "/vmlinuz-" + flavour;
  if (!Exists(path)) {
    GTEST_SKIP() << path << " is absent (build it: ninja guest-image, or set "
                 << "BTVM_GUEST_IMAGE_DIR)";
  }
  Result<std::vector<uint8_t>> file = ReadKernelFile(path);
  ASSERT_TRUE(file.ok()) << file.error().message;
  const std::vector<uint8_t>& image = *file;
  Result<BzImage> bz = ParseBzImage(image);
  ASSERT_TRUE(bz.ok()) << bz.error().message;
  EXPECT_GE(bz->protocol, kMinLinuxProtocol);
  EXPECT_TRUE(bz->relocatable);
  EXPECT_EQ(bz->pref_address, MiB(16));
  const std::span<const uint8_t> payload =
      std::span(image).subspan(bz->setup_size + bz->payload_offset, bz->payload_length);
  EXPECT_EQ(DetectPayloadFormat(payload), want_format);

  // Host decompression, timed.
  const auto t0 = std::chrono::steady_clock::now();
  Result<std::vector<uint8_t>> vmlinux = DecompressKernelPayload(payload);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(vmlinux.ok()) << vmlinux.error().message;
  std::printf("vmlinuz-%s: %s payload %u bytes -> vmlinux %zu bytes in %.1f ms\n", flavour.c_str(),
              std::string(PayloadFormatName(want_format)).c_str(), bz->payload_length,
              vmlinux->size(), ms);
  ::testing::Test::RecordProperty("decompress_ms", std::to_string(ms));

  // The vmlinux: its first PT_LOAD at 16 MiB, the entry point at its start.
  ASSERT_GE(vmlinux->size(), sizeof(Elf64_Ehdr));
  const auto eh = GetAt<Elf64_Ehdr>(*vmlinux, 0);
  ASSERT_EQ(std::memcmp(eh.e_ident, ELFMAG, SELFMAG), 0);
  std::optional<Elf64_Phdr> first;
  for (unsigned i = 0; i < eh.e_phnum && !first; ++i) {
    const auto ph = GetAt<Elf64_Phdr>(*vmlinux, eh.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type == PT_LOAD) first = ph;
  }
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->p_paddr, MiB(16));
  EXPECT_GE(eh.e_entry, first->p_paddr);
  EXPECT_LT(eh.e_entry, first->p_paddr + first->p_memsz);

  // Both entries load into a 256 MiB guest, with the initramfs.
  std::vector<uint8_t> initrd;
  if (Result<std::vector<uint8_t>> rd = ReadKernelFile(dir + "/initramfs.cpio.gz"); rd.ok()) {
    initrd = std::move(*rd);
  }
  for (KernelEntry entry : {KernelEntry::kBzImage, KernelEntry::kDecompressed}) {
    GuestMemory memory = MakeMemory(MiB(256));
    CpuState cpu;
    Result<LinuxBootInfo> info =
        LoadLinux(image, initrd, "console=ttyS0", Config(entry), memory, &cpu);
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_LE(info->kernel_end.value, info->initrd.value + (initrd.empty() ? MiB(256) : 0));
    if (entry == KernelEntry::kBzImage) {
      EXPECT_EQ(cpu.rip, MiB(16) + 0x200);
      std::vector<uint8_t> head(0x400);
      ASSERT_TRUE(memory.Read(GuestPhys(MiB(16)), head).ok());
      EXPECT_TRUE(std::equal(head.begin(), head.end(), image.begin() + bz->setup_size));
    } else {
      EXPECT_EQ(cpu.rip, eh.e_entry);
      EXPECT_EQ(info->kernel_start, GuestPhys(MiB(16)));
      std::vector<uint8_t> head(0x400);
      ASSERT_TRUE(memory.Read(GuestPhys(MiB(16)), head).ok());
      EXPECT_TRUE(std::equal(head.begin(), head.end(), vmlinux->begin() + first->p_offset));
      std::printf(
          "vmlinuz-%s: kernel [%#llx, %#llx), initrd at %#llx, LoadLinux decompressed "
          "in %.1f ms\n",
          flavour.c_str(), static_cast<unsigned long long>(info->kernel_start.value),
          static_cast<unsigned long long>(info->kernel_end.value),
          static_cast<unsigned long long>(info->initrd.value), info->decompress_ns / 1e6);
    }
  }
}

TEST(LinuxBootRealKernel, DebianCloudLz4) {
  CheckRealKernel("cloud", PayloadFormat::kLz4);
}
TEST(LinuxBootRealKernel, DebianGenericXz) {
  CheckRealKernel("generic", PayloadFormat::kXz);
}

}  // namespace
}  // namespace btvm
