#include "runtime/loader.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "base/bytes.h"
#include "base/check.h"
#include "base/format.h"

namespace btvm {
namespace {

// ELF fields are little-endian and read with memcpy in host order.
static_assert(std::endian::native == std::endian::little);

// No guest RAM holds more than kMaxGuestMemory, and no sensible kernel comes
// near it: refuse files past 1 GiB rather than reading /dev/zero forever.
constexpr uint64_t kMaxKernelFileSize = GiB(1);

// Page-table entry bits (SDM Vol. 3 §4.5).
constexpr uint64_t kPtePresent = 1ull << 0;
constexpr uint64_t kPteWritable = 1ull << 1;
constexpr uint64_t kPteLargePage = 1ull << 7;  // PS in a PDE: a 2 MiB page
constexpr uint64_t kLargePageSize = MiB(2);

static_assert(kBootPageDirs.value + kMaxIdentityMapPageDirs * kPageSize <= kBootStackBottom.value,
              "the page directories for the largest guest must fit below the stack");
static_assert(kBootStackBottom + kBootStackSize == kBootStackTop);
static_assert(kBootStackTop.value % 16 == 0);
static_assert(kBootTss.value + kBootTssSize <= kBootInfo.value);
static_assert(kBootGdt.value + kBootGdtLimit + 1 <= kBootTss.value);
static_assert(kBootInfo.value + sizeof(BootInfo) <= kBootPml4.value);
static_assert(kBootStackTop.value <= 0x9fc00, "the map stays below the PC's EBDA");
static_assert(kMinGuestMemory >= kKernelMinAddress.value, "the first MiB is always RAM");

// The entry state (docs/entry-contract.md).
constexpr uint64_t kEntryCr0 = cr0::kPE | cr0::kMP | cr0::kET | cr0::kNE | cr0::kWP | cr0::kPG;
constexpr uint64_t kEntryCr4 = cr4::kPAE | cr4::kOSFXSR | cr4::kOSXMMEXCPT;
constexpr uint64_t kEntryEfer = efer::kLME | efer::kLMA | efer::kNXE;
static_assert(kEntryCr0 == 0x80010033);
static_assert(kEntryCr4 == 0x620);
static_assert(kEntryEfer == 0xd00);

// x87/SSE reset values in the FXSAVE layout (SDM Vol. 1 §10.5.1).
constexpr size_t kFxsaveFcw = 0;
constexpr size_t kFxsaveMxcsr = 24;
constexpr size_t kFxsaveMxcsrMask = 28;
constexpr uint16_t kResetFcw = 0x37f;
constexpr uint32_t kResetMxcsr = 0x1f80;
constexpr uint32_t kMxcsrMask = 0xffff;

// A PT_LOAD segment that passed validation.
struct LoadSegment {
  unsigned index;  // program header number, for messages
  uint64_t offset, filesz;
  uint64_t paddr, memsz;
  bool executable;
};

struct ValidatedKernel {
  std::vector<LoadSegment> segments;
  uint64_t entry = 0;
};

std::string SegmentName(unsigned index) {
  return "ELF segment " + std::to_string(index);
}

// Checks one PT_LOAD header against the file and guest RAM.
Status CheckLoadSegment(unsigned index, const Elf64_Phdr& ph, uint64_t file_size,
                        const GuestMemory& memory) {
  const std::string name = SegmentName(index);
  if (ph.p_filesz > ph.p_memsz) {
    return MakeError(name + ": file size " + Hex(ph.p_filesz) + " exceeds memory size " +
                     Hex(ph.p_memsz));
  }
  if (!InBounds(ph.p_offset, ph.p_filesz, file_size)) {
    return MakeError("truncated ELF: " + name + " needs file bytes at offset " + Hex(ph.p_offset) +
                     " size " + Hex(ph.p_filesz) + ", the file has " + Hex(file_size));
  }
  if (ph.p_paddr + ph.p_memsz < ph.p_paddr) {
    return MakeError(name + ": address " + Hex(ph.p_paddr) + " + size " + Hex(ph.p_memsz) +
                     " overflows");
  }
  const uint64_t begin = ph.p_paddr, end = ph.p_paddr + ph.p_memsz;
  if (begin < kKernelMinAddress.value) {
    return MakeError(name + " at " + HexRange(begin, end) +
                     " lies below 1 MiB, which belongs to the loader");
  }
  if (begin < kMmioHoleEnd.value && end > kMmioHoleStart.value) {
    return MakeError(name + " at " + HexRange(begin, end) + " overlaps the MMIO hole " +
                     HexRange(kMmioHoleStart.value, kMmioHoleEnd.value));
  }
  if (!memory.IsRam(GuestPhys(begin), ph.p_memsz)) {
    return MakeError(name + " at " + HexRange(begin, end) +
                     " does not fit in guest RAM, which ends at " + Hex(memory.Top().value));
  }
  return Ok{};
}

// Scans the notes of one PT_NOTE segment for the btvm entry note. A note is
// an Elf64_Nhdr, the name, then the descriptor, each of the latter starting at
// a multiple of 4 bytes from the note's start, or of 8 in a segment aligned to
// 8 (.note.gnu.property): the rule of binutils' ELF_NOTE_DESC_OFFSET.
Status ScanNotes(unsigned index, std::span<const uint8_t> notes, uint64_t align,
                 std::optional<uint64_t>* entry) {
  static constexpr char kName[] = "btvm";  // namesz 5, with its NUL
  const std::string where = "ELF note segment " + std::to_string(index);
  auto align_up = [align](uint64_t v) { return (v + align - 1) & ~(align - 1); };
  uint64_t pos = 0;
  while (pos < notes.size()) {
    if (!InBounds(pos, sizeof(Elf64_Nhdr), notes.size())) {
      return MakeError("truncated ELF: " + where + " ends inside a note header at offset " +
                       Hex(pos));
    }
    const auto nhdr = ReadAt<Elf64_Nhdr>(notes, pos);
    // 32-bit sizes summed and padded in 64 bits cannot overflow.
    const uint64_t name_pos = pos + sizeof(Elf64_Nhdr);
    const uint64_t desc_pos = pos + align_up(sizeof(Elf64_Nhdr) + nhdr.n_namesz);
    if (!InBounds(name_pos, desc_pos - name_pos, notes.size())) {
      return MakeError("truncated ELF: " + where + " ends inside the name of the note at offset " +
                       Hex(pos));
    }
    if (!InBounds(desc_pos, nhdr.n_descsz, notes.size())) {
      return MakeError("truncated ELF: " + where +
                       " ends inside the descriptor of the note at offset " + Hex(pos));
    }
    if (nhdr.n_namesz == sizeof kName && nhdr.n_type == kBtvmNoteEntry64 &&
        std::memcmp(notes.data() + name_pos, kName, sizeof kName) == 0) {
      if (nhdr.n_descsz != sizeof(uint64_t)) {
        return MakeError("btvm entry note has a " + std::to_string(nhdr.n_descsz) +
                         "-byte descriptor; it must be 8 bytes (the entry address)");
      }
      if (entry->has_value()) return MakeError("more than one btvm entry note");
      *entry = ReadAt<uint64_t>(notes, desc_pos);
    }
    // The last note's padding may be cut off at the segment's end.
    pos = std::min<uint64_t>(desc_pos + align_up(nhdr.n_descsz), notes.size());
  }
  return Ok{};
}

// Validates the whole file: after this, loading cannot fail.
Result<ValidatedKernel> Validate(std::span<const uint8_t> file, const GuestMemory& memory) {
  const uint64_t size = file.size();
  if (size < SELFMAG || std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) {
    return MakeError("kernel is not an ELF file");
  }
  if (size < EI_NIDENT) {
    return MakeError("truncated ELF: the file has only " + std::to_string(size) + " bytes");
  }
  if (file[EI_CLASS] != ELFCLASS64) {
    return MakeError(file[EI_CLASS] == ELFCLASS32
                         ? std::string("kernel is a 32-bit ELF file; btvm needs ELF64")
                         : "kernel has an unknown ELF class " + std::to_string(file[EI_CLASS]));
  }
  if (file[EI_DATA] != ELFDATA2LSB) {
    return MakeError("kernel is not a little-endian ELF file");
  }
  if (file[EI_VERSION] != EV_CURRENT) {
    return MakeError("kernel has an unknown ELF version " + std::to_string(file[EI_VERSION]));
  }
  if (size < sizeof(Elf64_Ehdr)) {
    return MakeError("truncated ELF: the header needs " + std::to_string(sizeof(Elf64_Ehdr)) +
                     " bytes, the file has " + std::to_string(size));
  }
  const auto eh = ReadAt<Elf64_Ehdr>(file, 0);
  if (eh.e_machine != EM_X86_64) {
    return MakeError("kernel is for ELF machine " + std::to_string(eh.e_machine) +
                     ", not x86-64 (EM_X86_64)");
  }
  if (eh.e_type != ET_EXEC) {
    return MakeError("kernel has ELF type " + std::to_string(eh.e_type) +
                     (eh.e_type == ET_DYN ? " (ET_DYN)" : "") +
                     "; btvm needs an executable (ET_EXEC)");
  }
  if (eh.e_phnum == 0) return MakeError("kernel has no ELF program headers");
  if (eh.e_phnum == PN_XNUM) {
    return MakeError("kernel uses extended ELF program header numbering (PN_XNUM), unsupported");
  }
  if (eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return MakeError("kernel has ELF program headers of " + std::to_string(eh.e_phentsize) +
                     " bytes; ELF64 needs " + std::to_string(sizeof(Elf64_Phdr)));
  }
  const uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
  if (!InBounds(eh.e_phoff, ph_bytes, size)) {
    return MakeError("truncated ELF: " + std::to_string(eh.e_phnum) +
                     " program headers at offset " + Hex(eh.e_phoff) +
                     " end past the end of the file (" + Hex(size) + " bytes)");
  }

  ValidatedKernel kernel;
  std::optional<uint64_t> entry;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    const auto ph = ReadAt<Elf64_Phdr>(file, eh.e_phoff + uint64_t{i} * sizeof(Elf64_Phdr));
    if (ph.p_type == PT_LOAD) {
      if (Status s = CheckLoadSegment(i, ph, size, memory); !s) return s.error();
      if (ph.p_memsz == 0) continue;  // nothing to load
      kernel.segments.push_back(
          {i, ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz, (ph.p_flags & PF_X) != 0});
    } else if (ph.p_type == PT_NOTE) {
      if (!InBounds(ph.p_offset, ph.p_filesz, size)) {
        return MakeError("truncated ELF: note " + SegmentName(i) + " at offset " +
                         Hex(ph.p_offset) + " size " + Hex(ph.p_filesz) +
                         " ends past the end of the file (" + Hex(size) + " bytes)");
      }
      const uint64_t align = ph.p_align == 8 ? 8 : 4;
      if (Status s = ScanNotes(i, file.subspan(ph.p_offset, ph.p_filesz), align, &entry); !s) {
        return s.error();
      }
    }
  }
  if (kernel.segments.empty()) return MakeError("kernel has no loadable ELF segments (PT_LOAD)");
  if (!entry) {
    return MakeError("no btvm 64-bit entry note (ELF note \"btvm\", type 0x4254)");
  }

  // Overlapping segments would silently overwrite each other (a bss zeroing
  // the next segment's code): refuse them.
  std::vector<LoadSegment> sorted = kernel.segments;
  std::sort(sorted.begin(), sorted.end(),
            [](const LoadSegment& a, const LoadSegment& b) { return a.paddr < b.paddr; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const LoadSegment& prev = sorted[i - 1];
    if (sorted[i].paddr < prev.paddr + prev.memsz) {
      return MakeError(SegmentName(prev.index) + " and " + SegmentName(sorted[i].index) +
                       " overlap at " + Hex(sorted[i].paddr));
    }
  }

  const bool entry_ok =
      std::any_of(kernel.segments.begin(), kernel.segments.end(), [&](const LoadSegment& s) {
        return s.executable && *entry >= s.paddr && *entry - s.paddr < s.memsz;
      });
  if (!entry_ok) {
    return MakeError("btvm entry " + Hex(*entry) + " is not inside a loaded executable segment");
  }
  kernel.entry = *entry;
  return kernel;
}

template <typename T>
void Put(GuestMemory& memory, GuestPhys addr, const T& value) {
  // Every address written here lies in the first MiB, which is always RAM.
  BTVM_CHECK(memory.WriteValue(addr, value));
}

SegmentReg FlatSegment(uint16_t selector, uint16_t attrib) {
  return SegmentReg{.selector = selector, .attrib = attrib, .limit = 0xffffffff, .base = 0};
}

}  // namespace

// A 16-byte 64-bit system-segment descriptor, busy TSS type 0xb (SDM Vol. 3,
// "TSS Descriptor in 64-bit Mode").
void PutTssDescriptor(GuestMemory& memory, GuestPhys at, uint64_t base, uint32_t limit) {
  const uint64_t low = (limit & 0xffffull) | ((base & 0xffffffull) << 16) |
                       (uint64_t{kBootTssAttrib & 0xff} << 40) |
                       (uint64_t{(limit >> 16) & 0xf} << 48) | (((base >> 24) & 0xff) << 56);
  Put<uint64_t>(memory, at, low);
  Put<uint64_t>(memory, at + 8, base >> 32);
}

void BuildIdentityMap(GuestMemory& memory, GuestPhys pml4, GuestPhys pdpt, GuestPhys page_dirs) {
  uint64_t top = std::max(kMmioHoleEnd.value, memory.Top().value);
  top = (top + kLargePageSize - 1) & ~(kLargePageSize - 1);
  const uint64_t dirs = (top + GiB(1) - 1) / GiB(1);
  BTVM_CHECK(dirs <= kMaxIdentityMapPageDirs);

  Put<uint64_t>(memory, pml4, pdpt.value | kPtePresent | kPteWritable);
  for (uint64_t i = 0; i < dirs; ++i) {
    Put<uint64_t>(memory, pdpt + i * 8,
                  (page_dirs.value + i * kPageSize) | kPtePresent | kPteWritable);
  }
  // The page directories are contiguous, so PDE n maps [n * 2 MiB, +2 MiB).
  for (uint64_t n = 0; n < top / kLargePageSize; ++n) {
    Put<uint64_t>(memory, page_dirs + n * 8,
                  n * kLargePageSize | kPtePresent | kPteWritable | kPteLargePage);
  }
}

Result<std::vector<uint8_t>> ReadKernelFile(const std::string& path, std::string_view what) {
  const std::string quoted = std::string(what) + " '" + path + "'";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MakeError("cannot open " + quoted + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};

  struct stat st;
  if (fstat(fd, &st) != 0) return MakeError("cannot stat " + quoted + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return MakeError(quoted + " is a directory");
  const std::string too_large = quoted + " is larger than 1 GiB: not a file btvm can load";
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > kMaxKernelFileSize) {
    return MakeError(too_large);
  }

  // Read to EOF rather than trusting st_size: this also serves pipes, and a
  // file that grows while we read is capped all the same.
  std::vector<uint8_t> bytes;
  constexpr size_t kChunk = MiB(1);
  if (S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size) + kChunk);
  for (;;) {
    const size_t used = bytes.size();
    bytes.resize(used + kChunk);
    const ssize_t n = read(fd, bytes.data() + used, kChunk);
    if (n < 0 && errno == EINTR) {
      bytes.resize(used);
      continue;
    }
    if (n < 0) return MakeError("cannot read " + quoted + ": " + std::strerror(errno));
    bytes.resize(used + static_cast<size_t>(n));
    if (n == 0) break;
    if (bytes.size() > kMaxKernelFileSize) return MakeError(too_large);
  }
  if (bytes.empty()) return MakeError(quoted + " is empty");
  return bytes;
}

Result<LoadedKernel> LoadElfKernel(std::span<const uint8_t> file, GuestMemory& memory,
                                   CpuState* cpu) {
  BTVM_CHECK(cpu != nullptr);
  Result<ValidatedKernel> validated = Validate(file, memory);
  if (!validated) return validated.error();
  const ValidatedKernel& kernel = *validated;

  LoadedKernel loaded{GuestPhys(kernel.entry), GuestPhys(~uint64_t{0}), GuestPhys(0)};
  for (const LoadSegment& s : kernel.segments) {
    // Validate() checked that [paddr, paddr + memsz) is RAM and that the
    // file range [offset, offset + filesz) lies inside `file`.
    uint8_t* dst = memory.HostPointer(GuestPhys(s.paddr), s.memsz);
    BTVM_CHECK(dst != nullptr);
    std::memcpy(dst, file.data() + s.offset, s.filesz);
    std::memset(dst + s.filesz, 0, s.memsz - s.filesz);
    loaded.lowest = std::min(loaded.lowest, GuestPhys(s.paddr));
    loaded.highest = std::max(loaded.highest, GuestPhys(s.paddr + s.memsz));
  }
  SetUpBootState(memory, loaded.entry, cpu);
  return loaded;
}

void SetUpBootState(GuestMemory& memory, GuestPhys entry, CpuState* cpu) {
  BTVM_CHECK(cpu != nullptr);
  // The first MiB is the loader's: start it from zero (also after a reset).
  uint8_t* low = memory.HostPointer(GuestPhys(0), kKernelMinAddress.value);
  BTVM_CHECK(low != nullptr);
  std::memset(low, 0, kKernelMinAddress.value);

  // GDT: null, code64, data, then the 16-byte TSS descriptor.
  Put<uint64_t>(memory, kBootGdt + kBootCodeSelector, kBootCodeDescriptor);
  Put<uint64_t>(memory, kBootGdt + kBootDataSelector, kBootDataDescriptor);
  PutTssDescriptor(memory, kBootGdt + kBootTssSelector, kBootTss.value, kBootTssSize - 1);
  // TSS: RSP0-2 and IST1-7 zero; an I/O map base at the limit means no I/O
  // permission bitmap (offset 102; SDM Vol. 3, "Task Management in 64-bit Mode").
  Put<uint16_t>(memory, kBootTss + 102, static_cast<uint16_t>(kBootTssSize));

  BootInfo info{kBootInfoMagic, kBootInfoVersion, 0, 0};
  for (const RamRegion& r : memory.regions()) {
    (r.base < kMmioHoleEnd ? info.ram_below_4g : info.ram_above_4g) += r.size;
  }
  Put(memory, kBootInfo, info);

  BuildIdentityMap(memory, kBootPml4, kBootPdpt, kBootPageDirs);

  for (uint64_t& r : cpu->gpr) r = 0;
  cpu->gpr[kRsp] = kBootStackTop.value;
  cpu->gpr[kRdi] = kBootInfo.value;
  cpu->rip = entry.value;
  cpu->rflags = rflags::kFixed1;

  SetLongModeEntry({.code_selector = kBootCodeSelector,
                    .data_selector = kBootDataSelector,
                    .tss_selector = kBootTssSelector,
                    .gdt = kBootGdt,
                    .gdt_limit = kBootGdtLimit,
                    .tss = kBootTss,
                    .cr3 = kBootPml4,
                    .cr4 = kEntryCr4,
                    .efer = kEntryEfer},
                   cpu);
}

void SetLongModeEntry(const LongModeEntry& e, CpuState* cpu) {
  cpu->seg[kCs] = FlatSegment(e.code_selector, kBootCodeAttrib);
  for (SegIndex s : {kEs, kSs, kDs, kFs, kGs}) {
    cpu->seg[s] = FlatSegment(e.data_selector, kBootDataAttrib);
  }
  cpu->ldtr = SegmentReg{};  // not present: the guest has no LDT
  cpu->tr = SegmentReg{.selector = e.tss_selector,
                       .attrib = kBootTssAttrib,
                       .limit = kBootTssSize - 1,
                       .base = e.tss.value};
  cpu->gdtr = DescriptorTable{.base = e.gdt.value, .limit = e.gdt_limit};
  cpu->idtr = DescriptorTable{.base = 0, .limit = 0};

  cpu->cr0 = kEntryCr0;
  cpu->cr2 = 0;
  cpu->cr3 = e.cr3.value;
  cpu->cr4 = e.cr4;
  cpu->cr8 = 0;
  cpu->efer = e.efer;
  cpu->pending = PendingEvents{};

  // x87/SSE reset state. The XSAVE header stays zero: XSTATE_BV = 0 says
  // every component is in its init state, which is this same reset state,
  // and is valid whatever XCR0 an engine restores with.
  std::memset(cpu->xsave.bytes, 0, sizeof cpu->xsave.bytes);
  std::memcpy(cpu->xsave.bytes + kFxsaveFcw, &kResetFcw, sizeof kResetFcw);
  std::memcpy(cpu->xsave.bytes + kFxsaveMxcsr, &kResetMxcsr, sizeof kResetMxcsr);
  std::memcpy(cpu->xsave.bytes + kFxsaveMxcsrMask, &kMxcsrMask, sizeof kMxcsrMask);
}

}  // namespace btvm
