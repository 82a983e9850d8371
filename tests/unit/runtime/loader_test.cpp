// Tests of the ELF64 kernel loader against docs/entry-contract.md. Test
// kernels are built in memory by a small ELF writer below.

#include "runtime/loader.h"

#include <elf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace btvm {
namespace {

// ---------------------------------------------------------------------------
// A minimal ELF64 writer.

struct SegmentSpec {
  uint64_t paddr = 0;
  std::vector<uint8_t> bytes;
  uint64_t memsz = 0;  // >= bytes.size()
  uint32_t flags = PF_R | PF_X;
};

struct NoteSpec {
  std::string name = std::string("btvm", 5);  // with its NUL
  uint32_t type = kBtvmNoteEntry64;
  std::vector<uint8_t> desc;
};

struct ElfSpec {
  std::vector<SegmentSpec> segments;
  std::vector<NoteSpec> notes;
  bool note_segment = true;
  uint64_t note_align = 4;  // 4 or 8: the padding of names and descriptors
};

std::vector<uint8_t> Le64(uint64_t v) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &v, 8);
  return out;
}

NoteSpec EntryNote(uint64_t entry) {
  return NoteSpec{.desc = Le64(entry)};
}

uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) & ~(a - 1);
}

template <typename T>
void PutAt(std::vector<uint8_t>& out, uint64_t offset, const T& v) {
  if (out.size() < offset + sizeof(T)) out.resize(offset + sizeof(T));
  std::memcpy(out.data() + offset, &v, sizeof(T));
}

std::vector<uint8_t> BuildElf(const ElfSpec& spec) {
  std::vector<uint8_t> notes;
  for (const NoteSpec& n : spec.notes) {
    Elf64_Nhdr h{static_cast<Elf64_Word>(n.name.size()), static_cast<Elf64_Word>(n.desc.size()),
                 n.type};
    PutAt(notes, notes.size(), h);
    notes.insert(notes.end(), n.name.begin(), n.name.end());
    notes.resize(AlignUp(notes.size(), spec.note_align));
    notes.insert(notes.end(), n.desc.begin(), n.desc.end());
    notes.resize(AlignUp(notes.size(), spec.note_align));
  }

  const size_t phnum = spec.segments.size() + (spec.note_segment ? 1 : 0);
  uint64_t offset = sizeof(Elf64_Ehdr) + phnum * sizeof(Elf64_Phdr);
  std::vector<uint8_t> out(offset);

  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = spec.segments.empty() ? 0 : spec.segments[0].paddr;  // unused by btvm
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<Elf64_Half>(phnum);
  PutAt(out, 0, eh);

  size_t ph = 0;
  auto put_phdr = [&](const Elf64_Phdr& p) {
    PutAt(out, sizeof(Elf64_Ehdr) + ph++ * sizeof(Elf64_Phdr), p);
  };
  if (spec.note_segment) {
    offset = AlignUp(offset, 8);
    out.resize(offset);
    out.insert(out.end(), notes.begin(), notes.end());
    put_phdr(Elf64_Phdr{.p_type = PT_NOTE,
                        .p_flags = PF_R,
                        .p_offset = offset,
                        .p_vaddr = 0,
                        .p_paddr = 0,
                        .p_filesz = notes.size(),
                        .p_memsz = notes.size(),
                        .p_align = spec.note_align});
    offset += notes.size();
  }
  for (const SegmentSpec& s : spec.segments) {
    offset = AlignUp(offset, 16);
    out.resize(offset);
    out.insert(out.end(), s.bytes.begin(), s.bytes.end());
    put_phdr(Elf64_Phdr{.p_type = PT_LOAD,
                        .p_flags = s.flags,
                        .p_offset = offset,
                        .p_vaddr = s.paddr,
                        .p_paddr = s.paddr,
                        .p_filesz = s.bytes.size(),
                        .p_memsz = s.memsz,
                        .p_align = 16});
    offset += s.bytes.size();
  }
  return out;
}

// The good kernel: code at 1 MiB, data with bss at 2 MiB, entry at 1 MiB+4.
constexpr uint64_t kCodeAt = MiB(1);
constexpr uint64_t kDataAt = MiB(2);
constexpr uint64_t kEntry = kCodeAt + 4;
constexpr uint64_t kDataMemsz = 0x3000;

std::vector<uint8_t> CodeBytes() {
  std::vector<uint8_t> code(48);
  for (size_t i = 0; i < code.size(); ++i) code[i] = static_cast<uint8_t>(0x90 + i);
  return code;
}
std::vector<uint8_t> DataBytes() {
  return std::vector<uint8_t>(20, 0x5a);
}

ElfSpec GoodSpec() {
  ElfSpec spec;
  spec.segments.push_back({kCodeAt, CodeBytes(), CodeBytes().size(), PF_R | PF_X});
  spec.segments.push_back({kDataAt, DataBytes(), kDataMemsz, PF_R | PF_W});
  spec.notes.push_back(EntryNote(kEntry));
  return spec;
}

// Program header i of `file` (the note segment is header 0 in BuildElf).
template <typename F>
void PatchPhdr(std::vector<uint8_t>& file, size_t i, F fn) {
  Elf64_Phdr p;
  const size_t at = sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr);
  std::memcpy(&p, file.data() + at, sizeof p);
  fn(p);
  std::memcpy(file.data() + at, &p, sizeof p);
}
template <typename F>
void PatchEhdr(std::vector<uint8_t>& file, F fn) {
  Elf64_Ehdr e;
  std::memcpy(&e, file.data(), sizeof e);
  fn(e);
  std::memcpy(file.data(), &e, sizeof e);
}
constexpr size_t kNotePhdr = 0, kCodePhdr = 1, kDataPhdr = 2;

GuestMemory MakeMemory(uint64_t size) {
  Result<GuestMemory> m = GuestMemory::Create(size);
  BTVM_CHECK(m.ok());
  return std::move(*m);
}

uint64_t Read64(const GuestMemory& memory, uint64_t addr) {
  uint64_t v = 0;
  EXPECT_TRUE(memory.ReadValue(GuestPhys(addr), &v)) << std::hex << addr;
  return v;
}

// Walks the 4-level tables from CR3; nullopt if not mapped present+writable.
std::optional<uint64_t> Walk(const GuestMemory& memory, uint64_t cr3, uint64_t va) {
  constexpr uint64_t kAddr = 0x000ffffffffff000ull;
  const uint64_t pml4e = Read64(memory, (cr3 & kAddr) + ((va >> 39) & 511) * 8);
  if ((pml4e & 3) != 3) return std::nullopt;
  const uint64_t pdpte = Read64(memory, (pml4e & kAddr) + ((va >> 30) & 511) * 8);
  if ((pdpte & 3) != 3 || (pdpte & 0x80)) return std::nullopt;
  const uint64_t pde = Read64(memory, (pdpte & kAddr) + ((va >> 21) & 511) * 8);
  if ((pde & 3) != 3 || !(pde & 0x80) || (pde & 4)) return std::nullopt;
  return (pde & kAddr & ~uint64_t{0x1fffff}) | (va & 0x1fffff);
}

void ExpectIdentity(const GuestMemory& memory, uint64_t cr3, uint64_t va) {
  std::optional<uint64_t> pa = Walk(memory, cr3, va);
  ASSERT_TRUE(pa.has_value()) << "unmapped: 0x" << std::hex << va;
  EXPECT_EQ(*pa, va);
}

// ---------------------------------------------------------------------------
// A good kernel.

TEST(LoaderTest, GoodKernelLoadsSegmentsAndZeroesBss) {
  GuestMemory memory = MakeMemory(MiB(16));
  // Dirty the bss so the test sees it zeroed.
  std::memset(memory.HostPointer(GuestPhys(kDataAt), kDataMemsz), 0xee, kDataMemsz);
  CpuState cpu;
  const std::vector<uint8_t> file = BuildElf(GoodSpec());
  Result<LoadedKernel> k = LoadElfKernel(file, memory, &cpu);
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->entry, GuestPhys(kEntry));
  EXPECT_EQ(k->lowest, GuestPhys(kCodeAt));
  EXPECT_EQ(k->highest, GuestPhys(kDataAt + kDataMemsz));

  const std::vector<uint8_t> code = CodeBytes(), data = DataBytes();
  EXPECT_EQ(0, std::memcmp(memory.HostPointer(GuestPhys(kCodeAt), code.size()), code.data(),
                           code.size()));
  const uint8_t* d = memory.HostPointer(GuestPhys(kDataAt), kDataMemsz);
  EXPECT_EQ(0, std::memcmp(d, data.data(), data.size()));
  for (uint64_t i = data.size(); i < kDataMemsz; ++i) ASSERT_EQ(d[i], 0) << i;
}

TEST(LoaderTest, CpuStateMatchesContract) {
  GuestMemory memory = MakeMemory(MiB(16));
  CpuState cpu;
  for (uint64_t& r : cpu.gpr) r = 0xdeadbeef;  // the loader must clear them
  cpu.xsave.bytes[100] = 0x55;
  ASSERT_TRUE(LoadElfKernel(BuildElf(GoodSpec()), memory, &cpu).ok());

  EXPECT_EQ(cpu.rip, kEntry);
  EXPECT_EQ(cpu.rflags, 0x2u);
  EXPECT_EQ(cpu.cr0, 0x80010033u);
  EXPECT_EQ(cpu.cr4, 0x620u);
  EXPECT_EQ(cpu.efer, 0xd00u);
  EXPECT_EQ(cpu.cr3, kBootPml4.value);
  EXPECT_TRUE(cpu.LongMode());
  EXPECT_EQ(cpu.Cpl(), 0u);

  for (int r = 0; r < kGprCount; ++r) {
    if (r == kRsp || r == kRdi) continue;
    EXPECT_EQ(cpu.gpr[r], 0u) << "gpr " << r;
  }
  EXPECT_EQ(cpu.gpr[kRdi], kBootInfo.value);
  const uint64_t rsp = cpu.gpr[kRsp];
  EXPECT_EQ(rsp % 16, 0u);
  EXPECT_LE(rsp, MiB(1));
  EXPECT_EQ(rsp, kBootStackTop.value);
  EXPECT_EQ(kBootStackTop - kBootStackBottom, KiB(64));

  EXPECT_EQ(cpu.seg[kCs].selector, 0x08);
  EXPECT_EQ(cpu.seg[kCs].base, 0u);
  EXPECT_EQ(cpu.seg[kCs].limit, 0xffffffffu);
  EXPECT_TRUE(cpu.seg[kCs].Long());
  EXPECT_TRUE(cpu.seg[kCs].Present());
  EXPECT_EQ(cpu.seg[kCs].attrib & 0xff, 0x9b);  // P, S, type 0xb, DPL 0
  EXPECT_EQ(cpu.seg[kCs].attrib & 0x4000, 0);   // D must be 0 when L is 1
  for (SegIndex s : {kEs, kSs, kDs, kFs, kGs}) {
    EXPECT_EQ(cpu.seg[s].selector, 0x10) << s;
    EXPECT_EQ(cpu.seg[s].base, 0u) << s;
    EXPECT_EQ(cpu.seg[s].limit, 0xffffffffu) << s;
    EXPECT_EQ(cpu.seg[s].attrib, 0xc093) << s;
  }
  EXPECT_EQ(cpu.tr.selector, 0x18);
  EXPECT_EQ(cpu.tr.base, kBootTss.value);
  EXPECT_EQ(cpu.tr.limit, 0x67u);
  EXPECT_EQ(cpu.tr.attrib, 0x008b);
  EXPECT_EQ(cpu.gdtr.base, kBootGdt.value);
  EXPECT_EQ(cpu.gdtr.limit, 0x27);
  EXPECT_EQ(cpu.idtr.base, 0u);
  EXPECT_EQ(cpu.idtr.limit, 0);

  uint16_t fcw;
  uint32_t mxcsr;
  std::memcpy(&fcw, cpu.xsave.bytes + 0, 2);
  std::memcpy(&mxcsr, cpu.xsave.bytes + 24, 4);
  EXPECT_EQ(fcw, 0x37f);
  EXPECT_EQ(mxcsr, 0x1f80u);
  EXPECT_EQ(cpu.xsave.bytes[100], 0);  // XMM state reset
}

// Each segment register's attrib matches the descriptor its selector names
// (descriptor bits 40..55), as a VM entry or a far jump would find them.
TEST(LoaderTest, GdtMatchesSegmentRegisters) {
  GuestMemory memory = MakeMemory(MiB(16));
  CpuState cpu;
  ASSERT_TRUE(LoadElfKernel(BuildElf(GoodSpec()), memory, &cpu).ok());
  const uint64_t gdt = cpu.gdtr.base;
  EXPECT_EQ(Read64(memory, gdt + 0), 0u);
  EXPECT_EQ(Read64(memory, gdt + 0x08), 0x00af9b000000ffffull);
  EXPECT_EQ(Read64(memory, gdt + 0x10), 0x00cf93000000ffffull);
  for (const SegmentReg& s : {cpu.seg[kCs], cpu.seg[kDs]}) {
    const uint64_t desc = Read64(memory, gdt + s.selector);
    EXPECT_EQ((desc >> 40) & 0xf0ff, s.attrib) << s.selector;
  }

  // 64-bit TSS descriptor, busy, base = TR base, limit 0x67.
  const uint64_t lo = Read64(memory, gdt + 0x18), hi = Read64(memory, gdt + 0x20);
  const uint64_t base = ((lo >> 16) & 0xffffff) | (((lo >> 56) & 0xff) << 24) | (hi << 32);
  const uint64_t limit = (lo & 0xffff) | (((lo >> 48) & 0xf) << 16);
  EXPECT_EQ((lo >> 40) & 0xff, 0x8bu);
  EXPECT_EQ(base, cpu.tr.base);
  EXPECT_EQ(limit, cpu.tr.limit);
  EXPECT_EQ(hi >> 32, 0u);  // reserved, type field of the upper half zero

  // TSS: zero but the I/O map base = 104.
  const uint8_t* tss = memory.HostPointer(GuestPhys(cpu.tr.base), 104);
  for (int i = 0; i < 102; ++i) EXPECT_EQ(tss[i], 0) << i;
  uint16_t iomap;
  std::memcpy(&iomap, tss + 102, 2);
  EXPECT_EQ(iomap, 104);
}

TEST(LoaderTest, BootInfoBelow4G) {
  GuestMemory memory = MakeMemory(MiB(16));
  CpuState cpu;
  ASSERT_TRUE(LoadElfKernel(BuildElf(GoodSpec()), memory, &cpu).ok());
  BootInfo info;
  ASSERT_TRUE(memory.ReadValue(GuestPhys(cpu.gpr[kRdi]), &info));
  EXPECT_EQ(info.magic, 0x49565442u);
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.ram_below_4g, MiB(16));
  EXPECT_EQ(info.ram_above_4g, 0u);
}

TEST(LoaderTest, PageTablesIdentityMapFirst4G) {
  GuestMemory memory = MakeMemory(MiB(16));
  CpuState cpu;
  ASSERT_TRUE(LoadElfKernel(BuildElf(GoodSpec()), memory, &cpu).ok());
  for (uint64_t va : {uint64_t{0}, uint64_t{0x1234}, kEntry, uint64_t{0x12345678},
                      GiB(3) + 0xfee00000 - GiB(3), GiB(4) - 1}) {
    ExpectIdentity(memory, cpu.cr3, va);
  }
  EXPECT_FALSE(Walk(memory, cpu.cr3, GiB(4)).has_value());
  EXPECT_FALSE(Walk(memory, cpu.cr3, uint64_t{1} << 39).has_value());
  // The tables themselves lie in the first MiB.
  EXPECT_LT(cpu.cr3, MiB(1));
}

TEST(LoaderTest, PageTablesAndBootInfoAbove4G) {
  GuestMemory memory = MakeMemory(GiB(5));  // 3 GiB low, 2 GiB at [4 GiB, 6 GiB)
  CpuState cpu;
  ElfSpec spec = GoodSpec();
  // One more segment above the hole, to load there too.
  spec.segments.push_back({GiB(4) + MiB(1), {1, 2, 3, 4}, 0x1000, PF_R | PF_W});
  ASSERT_TRUE(LoadElfKernel(BuildElf(spec), memory, &cpu).ok());
  for (uint64_t va : {uint64_t{0x200000}, GiB(3) - 1, GiB(3) + 0x1000, GiB(4) + 0x1234,
                      GiB(5) + MiB(3) + 7, GiB(6) - 1}) {
    ExpectIdentity(memory, cpu.cr3, va);
  }
  EXPECT_FALSE(Walk(memory, cpu.cr3, GiB(6)).has_value());
  BootInfo info;
  ASSERT_TRUE(memory.ReadValue(GuestPhys(cpu.gpr[kRdi]), &info));
  EXPECT_EQ(info.ram_below_4g, GiB(3));
  EXPECT_EQ(info.ram_above_4g, GiB(2));
  const uint8_t* high = memory.HostPointer(GuestPhys(GiB(4) + MiB(1)), 0x1000);
  EXPECT_EQ(high[3], 4);
  EXPECT_EQ(high[4], 0);
}

// The largest guest needs 65 page directories, all below 1 MiB.
TEST(LoaderTest, PageTablesForLargestGuest) {
  Result<GuestMemory> m = GuestMemory::Create(kMaxGuestMemory);
  if (!m.ok()) GTEST_SKIP() << "host cannot map 64 GiB: " << m.error().message;
  GuestMemory& memory = *m;
  CpuState cpu;
  ASSERT_TRUE(LoadElfKernel(BuildElf(GoodSpec()), memory, &cpu).ok());
  const uint64_t top = memory.Top().value;
  EXPECT_EQ(top, GiB(65));
  for (uint64_t va : {uint64_t{0}, GiB(4), GiB(33) + 5, top - 1}) {
    ExpectIdentity(memory, cpu.cr3, va);
  }
  EXPECT_FALSE(Walk(memory, cpu.cr3, top).has_value());
  // Nothing the loader built spills into the stack or past the first MiB.
  const uint8_t* stack = memory.HostPointer(kBootStackBottom, kBootStackSize);
  for (uint64_t i = 0; i < kBootStackSize; ++i) ASSERT_EQ(stack[i], 0) << i;
}

TEST(LoaderTest, NoteAfterOtherNotesAndEightByteAlignment) {
  for (uint64_t align : {4, 8}) {
    ElfSpec spec = GoodSpec();
    spec.note_align = align;
    // A GNU note and a btvm note of another type come first.
    spec.notes.insert(spec.notes.begin(),
                      NoteSpec{.name = std::string("btvm", 5), .type = 0x1234, .desc = {1, 2, 3}});
    spec.notes.insert(spec.notes.begin(),
                      NoteSpec{.name = std::string("GNU", 4), .type = 5, .desc = {9, 9, 9, 9, 9}});
    GuestMemory memory = MakeMemory(MiB(4));
    CpuState cpu;
    Result<LoadedKernel> k = LoadElfKernel(BuildElf(spec), memory, &cpu);
    ASSERT_TRUE(k.ok()) << "align " << align << ": " << k.error().message;
    EXPECT_EQ(cpu.rip, kEntry);
  }
}

// ---------------------------------------------------------------------------
// Bad kernels: each gives one clear line and touches nothing.

void ExpectError(std::span<const uint8_t> file, const std::string& expected,
                 uint64_t memory_size = MiB(16)) {
  GuestMemory memory = MakeMemory(memory_size);
  // Sentinels where a partial load would write: the segments, the boot
  // structures.
  for (uint64_t at : {kCodeAt, kDataAt, kBootPml4.value, kBootGdt.value + 8}) {
    std::memset(memory.HostPointer(GuestPhys(at), 64), 0xcc, 64);
  }
  CpuState cpu;
  cpu.rip = 0x1111;
  Result<LoadedKernel> k = LoadElfKernel(file, memory, &cpu);
  ASSERT_FALSE(k.ok()) << "expected error containing: " << expected;
  const std::string& msg = k.error().message;
  EXPECT_NE(msg.find(expected), std::string::npos) << "message: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_FALSE(msg.empty());
  for (uint64_t at : {kCodeAt, kDataAt, kBootPml4.value, kBootGdt.value + 8}) {
    const uint8_t* p = memory.HostPointer(GuestPhys(at), 64);
    for (int i = 0; i < 64; ++i) ASSERT_EQ(p[i], 0xcc) << "memory written at 0x" << std::hex << at;
  }
  EXPECT_EQ(cpu.rip, 0x1111u);
}

void ExpectError(const std::vector<uint8_t>& file, const std::string& expected,
                 uint64_t memory_size = MiB(16)) {
  ExpectError(std::span<const uint8_t>(file), expected, memory_size);
}

TEST(LoaderErrorTest, TextFile) {
  const std::string text = "#!/bin/sh\necho this is not a kernel\n";
  ExpectError(std::vector<uint8_t>(text.begin(), text.end()), "not an ELF file");
}

TEST(LoaderErrorTest, Empty) {
  ExpectError(std::vector<uint8_t>{}, "not an ELF file");
  ExpectError(std::vector<uint8_t>{0x7f, 'E', 'L'}, "not an ELF file");
}

TEST(LoaderErrorTest, TruncatedHeader) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  file.resize(40);
  ExpectError(file, "truncated ELF");
  file.resize(10);
  ExpectError(file, "truncated ELF");
}

TEST(LoaderErrorTest, TruncatedProgramHeaders) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  file.resize(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + 10);
  ExpectError(file, "truncated ELF");
  file = BuildElf(GoodSpec());
  PatchEhdr(file, [](Elf64_Ehdr& e) { e.e_phoff = ~uint64_t{0} - 8; });
  ExpectError(file, "truncated ELF");
}

TEST(LoaderErrorTest, SegmentFileRangePastEof) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  const uint64_t size = file.size();
  PatchPhdr(file, kCodePhdr, [&](Elf64_Phdr& p) { p.p_offset = size - 4; });
  ExpectError(file, "truncated ELF");
  PatchPhdr(file, kCodePhdr, [&](Elf64_Phdr& p) { p.p_offset = ~uint64_t{0} - 1; });
  ExpectError(file, "truncated ELF");
  file = BuildElf(GoodSpec());
  file.resize(file.size() - 1);  // the last segment's last byte
  ExpectError(file, "truncated ELF");
}

TEST(LoaderErrorTest, FileSizeAboveMemorySize) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kCodePhdr, [](Elf64_Phdr& p) { p.p_memsz = p.p_filesz - 1; });
  ExpectError(file, "exceeds memory size");
}

TEST(LoaderErrorTest, SegmentBelowOneMiB) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = 0x80000; });
  ExpectError(file, "below 1 MiB");
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = MiB(1) - 1; });
  ExpectError(file, "below 1 MiB");
}

TEST(LoaderErrorTest, SegmentPastEndOfRam) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = MiB(16) - 0x1000; });
  ExpectError(file, "does not fit in guest RAM");
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = GiB(4) + MiB(1); });
  ExpectError(file, "does not fit in guest RAM");
  // Above the hole with memory reaching only to 6 GiB.
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = GiB(6) - 0x1000; });
  ExpectError(file, "does not fit in guest RAM", GiB(5));
}

TEST(LoaderErrorTest, SegmentInMmioHole) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = GiB(3) + MiB(1); });
  ExpectError(file, "MMIO hole", GiB(5));
  // Straddling the start of the hole.
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = GiB(3) - 0x1000; });
  ExpectError(file, "MMIO hole", GiB(5));
}

TEST(LoaderErrorTest, AddressOverflow) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = ~uint64_t{0} - 0x100; });
  ExpectError(file, "overflows");
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) {
    p.p_paddr = MiB(2);
    p.p_memsz = ~uint64_t{0};
  });
  ExpectError(file, "overflows");
}

TEST(LoaderErrorTest, WrongClassDataMachineType) {
  const std::vector<uint8_t> good = BuildElf(GoodSpec());
  std::vector<uint8_t> file = good;
  file[EI_CLASS] = ELFCLASS32;
  ExpectError(file, "32-bit");
  file = good;
  file[EI_DATA] = ELFDATA2MSB;
  ExpectError(file, "little-endian");
  file = good;
  PatchEhdr(file, [](Elf64_Ehdr& e) { e.e_machine = EM_386; });
  ExpectError(file, "not x86-64");
  file = good;
  PatchEhdr(file, [](Elf64_Ehdr& e) { e.e_type = ET_DYN; });
  ExpectError(file, "ET_EXEC");
  file = good;
  PatchEhdr(file, [](Elf64_Ehdr& e) { e.e_phentsize = 32; });
  ExpectError(file, "program headers of 32 bytes");
  file = good;
  PatchEhdr(file, [](Elf64_Ehdr& e) { e.e_phnum = 0; });
  ExpectError(file, "no ELF program headers");
}

TEST(LoaderErrorTest, NoEntryNote) {
  ElfSpec spec = GoodSpec();
  spec.notes.clear();
  const std::string expected = "no btvm 64-bit entry note (ELF note \"btvm\", type 0x4254)";
  ExpectError(BuildElf(spec), expected);
  spec.note_segment = false;
  ExpectError(BuildElf(spec), expected);
  // Right name, wrong type; right type, wrong name.
  spec = GoodSpec();
  spec.notes[0].type = 0x4255;
  ExpectError(BuildElf(spec), expected);
  spec = GoodSpec();
  spec.notes[0].name = std::string("btvx", 5);
  ExpectError(BuildElf(spec), expected);
  spec = GoodSpec();
  spec.notes[0].name = "btvm";  // namesz 4, no NUL
  ExpectError(BuildElf(spec), expected);
}

TEST(LoaderErrorTest, NoteWithWrongDescriptorSize) {
  ElfSpec spec = GoodSpec();
  spec.notes[0].desc = {0, 0, 0x10, 0};
  ExpectError(BuildElf(spec), "4-byte descriptor");
  spec.notes[0].desc.assign(16, 0);
  ExpectError(BuildElf(spec), "16-byte descriptor");
}

TEST(LoaderErrorTest, MalformedNotes) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  // The note segment cut inside the descriptor.
  PatchPhdr(file, kNotePhdr, [](Elf64_Phdr& p) { p.p_filesz -= 4; });
  ExpectError(file, "truncated ELF");
  // Cut inside the header.
  PatchPhdr(file, kNotePhdr, [](Elf64_Phdr& p) { p.p_filesz = 6; });
  ExpectError(file, "truncated ELF");
  // A name size that runs past the segment (and would overflow 32 bits).
  file = BuildElf(GoodSpec());
  Elf64_Phdr note;
  std::memcpy(&note, file.data() + sizeof(Elf64_Ehdr), sizeof note);
  const uint32_t huge = 0xffffffff;
  std::memcpy(file.data() + note.p_offset, &huge, 4);
  ExpectError(file, "truncated ELF");
  std::memcpy(file.data() + note.p_offset + 4, &huge, 4);
  ExpectError(file, "truncated ELF");
  // The note segment's file range past the end.
  file = BuildElf(GoodSpec());
  PatchPhdr(file, kNotePhdr, [](Elf64_Phdr& p) { p.p_offset = ~uint64_t{0}; });
  ExpectError(file, "truncated ELF");
  // Two entry notes.
  ElfSpec spec = GoodSpec();
  spec.notes.push_back(EntryNote(kEntry));
  ExpectError(BuildElf(spec), "more than one btvm entry note");
}

TEST(LoaderErrorTest, EntryOutsideExecutableSegments) {
  ElfSpec spec = GoodSpec();
  spec.notes[0] = EntryNote(MiB(5));
  ExpectError(BuildElf(spec), "not inside a loaded executable segment");
  spec.notes[0] = EntryNote(kDataAt + 4);  // in a segment, but not executable
  ExpectError(BuildElf(spec), "not inside a loaded executable segment");
  spec.notes[0] = EntryNote(kCodeAt + CodeBytes().size());  // one past the end
  ExpectError(BuildElf(spec), "not inside a loaded executable segment");
  spec.notes[0] = EntryNote(0);
  ExpectError(BuildElf(spec), "not inside a loaded executable segment");
}

TEST(LoaderErrorTest, OverlappingSegments) {
  std::vector<uint8_t> file = BuildElf(GoodSpec());
  PatchPhdr(file, kDataPhdr, [](Elf64_Phdr& p) { p.p_paddr = kCodeAt + 16; });
  ExpectError(file, "overlap");
}

TEST(LoaderErrorTest, NoLoadableSegments) {
  ElfSpec spec = GoodSpec();
  spec.segments.clear();
  ExpectError(BuildElf(spec), "no loadable ELF segments");
}

// ---------------------------------------------------------------------------
// Random mutations of a good kernel: never a crash or an out-of-bounds read
// (run under ASan to see the latter); every outcome is a load or one line.
// BTVM_LOADER_FUZZ_ITERATIONS and BTVM_LOADER_FUZZ_SEED fuzz longer locally.

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 0) : fallback;
}

TEST(LoaderFuzzTest, RandomMutationsNeverCrash) {
  const std::vector<uint8_t> good = BuildElf(GoodSpec());
  GuestMemory memory = MakeMemory(MiB(4));
  CpuState cpu;
  std::mt19937_64 rng(EnvOr("BTVM_LOADER_FUZZ_SEED", 20240601));
  const uint64_t iterations = EnvOr("BTVM_LOADER_FUZZ_ITERATIONS", 20000);
  const uint64_t interesting[] = {0,
                                  1,
                                  4,
                                  8,
                                  0x38,
                                  0x40,
                                  0xfff,
                                  MiB(1),
                                  MiB(4),
                                  GiB(3),
                                  GiB(4),
                                  good.size(),
                                  good.size() - 1,
                                  0x7fffffffffffffffull,
                                  0x8000000000000000ull,
                                  ~uint64_t{0},
                                  ~uint64_t{0} - 7};
  // Mutations land mostly in the headers and notes, where the parser looks.
  const size_t hot = std::min<size_t>(good.size(), 0x140);
  int loaded = 0, refused = 0;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t iter = 0; iter < iterations; ++iter) {
    std::vector<uint8_t> file = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      // One rng() call per statement: a fixed seed gives the same inputs
      // whatever order a compiler evaluates operands in.
      const size_t span = rng() % 4 ? hot : file.size();
      const size_t at = rng() % span;
      switch (rng() % 5) {
        case 0:
          file[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          file[at] = static_cast<uint8_t>(rng());
          break;
        case 2: {  // an interesting value in a 2-, 4- or 8-byte field
          const uint64_t v = interesting[rng() % std::size(interesting)];
          const size_t width = size_t{2} << (rng() % 3);
          const size_t field = at & ~(width - 1);
          if (field + width <= file.size()) std::memcpy(file.data() + field, &v, width);
          break;
        }
        case 3:
          file.resize(rng() % (file.size() + 1));
          break;
        default:
          file.push_back(static_cast<uint8_t>(rng()));
          break;
      }
      if (file.empty()) break;
    }
    Result<LoadedKernel> k = LoadElfKernel(file, memory, &cpu);
    if (k.ok()) {
      ++loaded;
      ASSERT_EQ(cpu.rip, k->entry.value);
      ASSERT_LE(k->lowest, k->entry);
      ASSERT_LT(k->entry, k->highest);
      ASSERT_GE(k->lowest.value, MiB(1));
    } else {
      ++refused;
      const std::string& msg = k.error().message;
      ASSERT_FALSE(msg.empty());
      ASSERT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(loaded, 0);
  EXPECT_GT(refused, 0);
  RecordProperty("loaded", loaded);
  RecordProperty("refused", refused);
  std::printf("fuzz: %d loaded, %d refused in %.3f s\n", loaded, refused, seconds);
}

// ---------------------------------------------------------------------------
// ReadKernelFile.

class ReadKernelFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/btvm-loader-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const std::string& f : files_) unlink(f.c_str());
    rmdir(dir_.c_str());
  }
  std::string File(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir_ + "/" + name;
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    BTVM_CHECK(fd >= 0);
    BTVM_CHECK(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    close(fd);
    files_.push_back(path);
    return path;
  }
  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(ReadKernelFileTest, ReadsWholeFile) {
  const std::vector<uint8_t> good = BuildElf(GoodSpec());
  Result<std::vector<uint8_t>> r = ReadKernelFile(File("kernel.elf", good));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, good);
}

TEST_F(ReadKernelFileTest, MissingFile) {
  const std::string path = dir_ + "/nope.elf";
  Result<std::vector<uint8_t>> r = ReadKernelFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "cannot open kernel '" + path + "': " + std::strerror(ENOENT));
}

TEST_F(ReadKernelFileTest, Directory) {
  Result<std::vector<uint8_t>> r = ReadKernelFile(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "kernel '" + dir_ + "' is a directory");
}

TEST_F(ReadKernelFileTest, EmptyFile) {
  const std::string path = File("empty.elf", {});
  Result<std::vector<uint8_t>> r = ReadKernelFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "kernel '" + path + "' is empty");
}

TEST_F(ReadKernelFileTest, TooLarge) {
  const std::string path = File("huge.elf", {0x7f});
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(GiB(1) + 1)), 0);  // sparse
  Result<std::vector<uint8_t>> r = ReadKernelFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("larger than 1 GiB"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace btvm
