#include "devices/acpi_tables.h"

#include <algorithm>
#include <cstddef>
#include <span>
#include <string_view>
#include <utility>

#include "base/check.h"

namespace btvm {
namespace {

using Bytes = std::vector<uint8_t>;

// --- Identification (§5.2.6, "System Description Table Header") ----------

constexpr std::string_view kOemId = "BTVM  ";         // 6 bytes
constexpr std::string_view kOemTableId = "BTVMACPI";  // 8 bytes
constexpr uint32_t kOemRevision = 1;
constexpr std::string_view kCreatorId = "BTVM";  // 4 bytes
constexpr uint32_t kCreatorRevision = 1;

constexpr size_t kHeaderSize = 36;
constexpr size_t kRsdpSize = 36;  // revision 2
constexpr size_t kFacsSize = 64;
constexpr size_t kFadtSize = 276;  // FADT 6.x, up to the hypervisor vendor identity

// Revisions: ACPI 6.3.
constexpr uint8_t kRsdpRevision = 2;
constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kRsdtRevision = 1;
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorVersion = 3;
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kDsdtRevision = 2;  // 2 or more: AML integers are 64-bit
constexpr uint8_t kFacsVersion = 2;

constexpr size_t kTableAlignment = 16;
constexpr size_t kFacsAlignment = 64;  // §5.2.10

// --- Little-endian writers -------------------------------------------------

void Put8(Bytes& b, uint64_t v) {
  b.push_back(static_cast<uint8_t>(v));
}
void PutLe(Bytes& b, uint64_t v, unsigned size) {
  for (unsigned i = 0; i < size; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void Put16(Bytes& b, uint64_t v) {
  PutLe(b, v, 2);
}
void Put32(Bytes& b, uint64_t v) {
  PutLe(b, v, 4);
}
void Put64(Bytes& b, uint64_t v) {
  PutLe(b, v, 8);
}
void PutChars(Bytes& b, std::string_view s) {
  b.insert(b.end(), s.begin(), s.end());
}
void PatchLe(Bytes& b, size_t at, uint64_t v, unsigned size) {
  BTVM_CHECK(at + size <= b.size());
  for (unsigned i = 0; i < size; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// The byte that makes `bytes` sum to zero.
uint8_t Checksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t byte : bytes) sum = static_cast<uint8_t>(sum + byte);
  return static_cast<uint8_t>(-sum);
}

// A table header with length and checksum left 0 for FinishTable().
Bytes TableHeader(std::string_view signature, uint8_t revision) {
  BTVM_CHECK(signature.size() == 4);
  Bytes b;
  PutChars(b, signature);
  Put32(b, 0);  // length
  Put8(b, revision);
  Put8(b, 0);  // checksum
  PutChars(b, kOemId);
  PutChars(b, kOemTableId);
  Put32(b, kOemRevision);
  PutChars(b, kCreatorId);
  Put32(b, kCreatorRevision);
  BTVM_CHECK(b.size() == kHeaderSize);
  return b;
}

constexpr size_t kLengthOffset = 4;
constexpr size_t kChecksumOffset = 9;

void FinishTable(Bytes& table) {
  PatchLe(table, kLengthOffset, table.size(), 4);
  table[kChecksumOffset] = 0;
  table[kChecksumOffset] = Checksum(table);
}

// --- Generic Address Structure (§5.2.3.2) --------------------------------

enum : uint8_t { kSpaceSystemIo = 1 };
enum : uint8_t { kAccessByte = 1, kAccessWord = 2, kAccessDword = 3 };

void PutGas(Bytes& b, uint8_t space, uint8_t bit_width, uint8_t access_size, uint64_t address) {
  Put8(b, space);
  Put8(b, bit_width);
  Put8(b, 0);  // bit offset
  Put8(b, access_size);
  Put64(b, address);
}
void PutNullGas(Bytes& b) {
  PutGas(b, 0, 0, 0, 0);
}

// --- AML (§20, "ACPI Machine Language Specification") --------------------
// Just the terms the DSDT uses.

enum : uint8_t {
  kAmlZeroOp = 0x00,
  kAmlOneOp = 0x01,
  kAmlNameOp = 0x08,
  kAmlBytePrefix = 0x0a,
  kAmlWordPrefix = 0x0b,
  kAmlDWordPrefix = 0x0c,
  kAmlStringPrefix = 0x0d,
  kAmlQWordPrefix = 0x0e,
  kAmlScopeOp = 0x10,
  kAmlPackageOp = 0x12,
  kAmlDualNamePrefix = 0x2e,
  kAmlMultiNamePrefix = 0x2f,
  kAmlRootChar = 0x5c,
};

// PkgLength (§20.2.4) for a package whose contents after the PkgLength are
// `body` bytes long; the encoded length counts the PkgLength bytes too.
Bytes AmlPkgLength(size_t body) {
  Bytes b;
  if (body + 1 < 0x40) {
    Put8(b, body + 1);
    return b;
  }
  for (unsigned extra = 1; extra <= 3; ++extra) {
    const size_t total = body + 1 + extra;
    if (total < (size_t{1} << (4 + 8 * extra))) {
      Put8(b, (extra << 6) | (total & 0x0f));
      for (unsigned i = 0; i < extra; ++i) Put8(b, total >> (4 + 8 * i));
      return b;
    }
  }
  BTVM_CHECK(false && "AML package longer than 2^28 bytes");
  return b;
}

// A NameString (§20.2.2) from a path such as "\\_SB_", "_S5_" or
// "\\_SB_.PCI0": an optional root prefix and 4-character NameSegs.
Bytes AmlNameString(std::string_view path) {
  Bytes b;
  if (!path.empty() && path[0] == '\\') {
    Put8(b, kAmlRootChar);
    path.remove_prefix(1);
  }
  BTVM_CHECK(path.size() % 5 == 4);  // "ABCD" or "ABCD.EFGH"...
  const size_t segments = (path.size() + 1) / 5;
  if (segments == 2) {
    Put8(b, kAmlDualNamePrefix);
  } else if (segments > 2) {
    Put8(b, kAmlMultiNamePrefix);
    Put8(b, segments);
  }
  for (size_t i = 0; i < segments; ++i) {
    const std::string_view seg = path.substr(5 * i, 4);
    BTVM_CHECK(i + 1 == segments || path[5 * i + 4] == '.');
    for (char c : seg) BTVM_CHECK((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
    BTVM_CHECK(seg[0] < '0' || seg[0] > '9');  // a LeadNameChar
    PutChars(b, seg);
  }
  return b;
}

void Append(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

// ComputationalData for an integer (§20.2.3): the shortest encoding.
Bytes AmlInteger(uint64_t v) {
  Bytes b;
  if (v == 0) {
    Put8(b, kAmlZeroOp);
  } else if (v == 1) {
    Put8(b, kAmlOneOp);
  } else if (v <= 0xff) {
    Put8(b, kAmlBytePrefix);
    Put8(b, v);
  } else if (v <= 0xffff) {
    Put8(b, kAmlWordPrefix);
    Put16(b, v);
  } else if (v <= 0xffffffff) {
    Put8(b, kAmlDWordPrefix);
    Put32(b, v);
  } else {
    Put8(b, kAmlQWordPrefix);
    Put64(b, v);
  }
  return b;
}

// DefPackage (§20.2.5.4) of already encoded elements (at most 255).
Bytes AmlPackage(const std::vector<Bytes>& elements) {
  BTVM_CHECK(elements.size() <= 0xff);
  Bytes body;
  Put8(body, elements.size());  // NumElements
  for (const Bytes& e : elements) Append(body, e);
  Bytes b;
  Put8(b, kAmlPackageOp);
  Append(b, AmlPkgLength(body.size()));
  Append(b, body);
  return b;
}

// DefName (§20.2.5.1): Name (path, object).
Bytes AmlName(std::string_view path, const Bytes& object) {
  Bytes b;
  Put8(b, kAmlNameOp);
  Append(b, AmlNameString(path));
  Append(b, object);
  return b;
}

// DefScope (§20.2.5.1): Scope (path) { terms }.
Bytes AmlScope(std::string_view path, const Bytes& terms) {
  Bytes body = AmlNameString(path);
  Append(body, terms);
  Bytes b;
  Put8(b, kAmlScopeOp);
  Append(b, AmlPkgLength(body.size()));
  Append(b, body);
  return b;
}

// --- The tables ------------------------------------------------------------

Bytes BuildFacs() {
  Bytes b;
  PutChars(b, "FACS");
  Put32(b, kFacsSize);
  Put32(b, 0);  // hardware signature
  Put32(b, 0);  // firmware waking vector: no S3 resume
  Put32(b, 0);  // global lock
  Put32(b, 0);  // flags: no S4BIOS, no 64-bit wake
  Put64(b, 0);  // X firmware waking vector
  Put8(b, kFacsVersion);
  PutLe(b, 0, 3);  // reserved
  Put32(b, 0);     // OSPM flags
  b.resize(kFacsSize, 0);
  return b;
}

Bytes BuildDsdt() {
  Bytes aml;
  // The namespace root of devices. Empty: the machine has no device that
  // needs describing (legacy ISA devices are found at their fixed ports).
  Append(aml, AmlScope("\\_SB_", {}));
  // Sleep state S5 (soft off): SLP_TYP for PM1a_CNT and PM1b_CNT, then
  // two reserved elements (§7.4.2, "\_Sx (System States)").
  Append(aml, AmlName("\\_S5_", AmlPackage({AmlInteger(AcpiPm::kS5SleepType),
                                            AmlInteger(AcpiPm::kS5SleepType), AmlInteger(0),
                                            AmlInteger(0)})));
  Bytes t = TableHeader("DSDT", kDsdtRevision);
  Append(t, aml);
  FinishTable(t);
  return t;
}

// FADT flags (§5.2.9, "Fixed ACPI Description Table Fixed Feature Flags").
enum : uint32_t {
  kFadtWbinvd = 1u << 0,
  kFadtProcC1 = 1u << 2,
  kFadtPwrButton = 1u << 4,  // 1: no fixed-feature power button
  kFadtSlpButton = 1u << 5,  // 1: no fixed-feature sleep button
  kFadtFixRtc = 1u << 6,     // 1: no RTC wake status in PM1
  kFadtResetRegSup = 1u << 10,
};
// IA-PC boot architecture flags (§5.2.9.3).
enum : uint16_t {
  kBootLegacyDevices = 1u << 0,
  kBoot8042 = 1u << 1,
  kBootVgaNotPresent = 1u << 2,
};
constexpr uint16_t kC2NotSupported = 101;   // P_LVL2_LAT > 100
constexpr uint16_t kC3NotSupported = 1001;  // P_LVL3_LAT > 1000

Bytes BuildFadt(const AcpiPlatform& p, GuestPhys facs, GuestPhys dsdt) {
  const uint32_t pm1_evt = p.pm_base;
  const uint32_t pm1_cnt = p.pm_base + (AcpiPm::kPm1ControlBlock - AcpiPm::kBase);
  const uint32_t pm_tmr = p.pm_base + (AcpiPm::kPmTimerBlock - AcpiPm::kBase);

  Bytes b = TableHeader("FACP", kFadtRevision);
  Put32(b, facs.value);  // FIRMWARE_CTRL
  Put32(b, dsdt.value);  // DSDT
  Put8(b, 0);            // reserved (ACPI 1.0 INT_MODEL)
  Put8(b, 0);            // Preferred_PM_Profile: unspecified
  Put16(b, p.sci_irq);   // SCI_INT
  Put32(b, 0);           // SMI_CMD: none, always in ACPI mode
  Put8(b, 0);            // ACPI_ENABLE
  Put8(b, 0);            // ACPI_DISABLE
  Put8(b, 0);            // S4BIOS_REQ
  Put8(b, 0);            // PSTATE_CNT
  Put32(b, pm1_evt);     // PM1a_EVT_BLK
  Put32(b, 0);           // PM1b_EVT_BLK
  Put32(b, pm1_cnt);     // PM1a_CNT_BLK
  Put32(b, 0);           // PM1b_CNT_BLK
  Put32(b, 0);           // PM2_CNT_BLK
  Put32(b, pm_tmr);      // PM_TMR_BLK
  Put32(b, 0);           // GPE0_BLK
  Put32(b, 0);           // GPE1_BLK
  Put8(b, AcpiPm::kPm1EventLength);
  Put8(b, AcpiPm::kPm1ControlLength);
  Put8(b, 0);  // PM2_CNT_LEN
  Put8(b, AcpiPm::kPmTimerLength);
  Put8(b, 0);  // GPE0_BLK_LEN
  Put8(b, 0);  // GPE1_BLK_LEN
  Put8(b, 0);  // GPE1_BASE
  Put8(b, 0);  // CST_CNT
  Put16(b, kC2NotSupported);
  Put16(b, kC3NotSupported);
  Put16(b, 0);  // FLUSH_SIZE (WBINVD works)
  Put16(b, 0);  // FLUSH_STRIDE
  Put8(b, 0);   // DUTY_OFFSET
  Put8(b, 0);   // DUTY_WIDTH
  Put8(b, 0);   // DAY_ALRM: no day-of-month alarm
  Put8(b, 0);   // MON_ALRM
  Put8(b, p.rtc_century_index);
  Put16(b, kBootLegacyDevices | kBoot8042 | kBootVgaNotPresent);  // IAPC_BOOT_ARCH
  Put8(b, 0);                                                     // reserved
  Put32(b, kFadtWbinvd | kFadtProcC1 | kFadtPwrButton | kFadtSlpButton | kFadtFixRtc |
               kFadtResetRegSup);
  PutGas(b, kSpaceSystemIo, 8, kAccessByte, p.reset_port);  // RESET_REG
  Put8(b, p.reset_value);
  Put16(b, 0);  // ARM_BOOT_ARCH
  Put8(b, kFadtMinorVersion);
  Put64(b, 0);           // X_FIRMWARE_CTRL: FIRMWARE_CTRL is set
  Put64(b, dsdt.value);  // X_DSDT
  PutGas(b, kSpaceSystemIo, 8 * AcpiPm::kPm1EventLength, kAccessWord, pm1_evt);
  PutNullGas(b);  // X_PM1b_EVT_BLK
  PutGas(b, kSpaceSystemIo, 8 * AcpiPm::kPm1ControlLength, kAccessWord, pm1_cnt);
  PutNullGas(b);  // X_PM1b_CNT_BLK
  PutNullGas(b);  // X_PM2_CNT_BLK
  PutGas(b, kSpaceSystemIo, 8 * AcpiPm::kPmTimerLength, kAccessDword, pm_tmr);
  PutNullGas(b);  // X_GPE0_BLK
  PutNullGas(b);  // X_GPE1_BLK
  PutNullGas(b);  // SLEEP_CONTROL_REG (hardware-reduced machines only)
  PutNullGas(b);  // SLEEP_STATUS_REG
  PutChars(b, "BTVM");
  Put32(b, 0);  // hypervisor vendor identity, 8 bytes
  BTVM_CHECK(b.size() == kFadtSize);
  FinishTable(b);
  return b;
}

// MADT structure types and flags (§5.2.12).
enum : uint8_t {
  kMadtLocalApic = 0,
  kMadtIoApic = 1,
  kMadtInterruptSourceOverride = 2,
  kMadtLocalApicNmi = 4,
};
constexpr uint32_t kMadtPcatCompat = 1u << 0;
constexpr uint32_t kLocalApicEnabled = 1u << 0;
// MPS INTI flags (§5.2.12.5): polarity bits 1-0, trigger mode bits 3-2.
constexpr uint16_t kIntiConforming = 0;
constexpr uint16_t kIntiActiveHigh = 1u << 0;
constexpr uint16_t kIntiLevel = 3u << 2;
constexpr uint8_t kAllProcessors = 0xff;

void PutOverride(Bytes& b, uint8_t source_irq, uint32_t gsi, uint16_t flags) {
  Put8(b, kMadtInterruptSourceOverride);
  Put8(b, 10);
  Put8(b, 0);  // bus: ISA
  Put8(b, source_irq);
  Put32(b, gsi);
  Put16(b, flags);
}

Bytes BuildMadt(const AcpiPlatform& p) {
  Bytes b = TableHeader("APIC", kMadtRevision);
  Put32(b, p.local_apic_address);
  Put32(b, kMadtPcatCompat);
  // Processor Local APIC (§5.2.12.2).
  Put8(b, kMadtLocalApic);
  Put8(b, 8);
  Put8(b, 0);  // ACPI processor UID
  Put8(b, p.local_apic_id);
  Put32(b, kLocalApicEnabled);
  // I/O APIC (§5.2.12.3).
  Put8(b, kMadtIoApic);
  Put8(b, 12);
  Put8(b, p.ioapic_id);
  Put8(b, 0);  // reserved
  Put32(b, p.ioapic_address);
  Put32(b, p.ioapic_gsi_base);
  // Interrupt Source Overrides (§5.2.12.5): the PIT, then the SCI.
  PutOverride(b, 0, p.pit_gsi, kIntiConforming);
  PutOverride(b, p.sci_irq, p.sci_irq, kIntiLevel | kIntiActiveHigh);
  // Local APIC NMI (§5.2.12.7): NMI arrives on LINT1 of every processor.
  Put8(b, kMadtLocalApicNmi);
  Put8(b, 6);
  Put8(b, kAllProcessors);
  Put16(b, kIntiConforming);
  Put8(b, 1);  // LINT1
  FinishTable(b);
  return b;
}

Bytes BuildXsdt(const std::vector<GuestPhys>& entries) {
  Bytes b = TableHeader("XSDT", kXsdtRevision);
  for (GuestPhys e : entries) Put64(b, e.value);
  FinishTable(b);
  return b;
}

Bytes BuildRsdt(const std::vector<GuestPhys>& entries) {
  Bytes b = TableHeader("RSDT", kRsdtRevision);
  for (GuestPhys e : entries) Put32(b, e.value);
  FinishTable(b);
  return b;
}

Bytes BuildRsdp(GuestPhys rsdt, GuestPhys xsdt) {
  Bytes b;
  PutChars(b, "RSD PTR ");
  Put8(b, 0);  // checksum of bytes 0-19
  PutChars(b, kOemId);
  Put8(b, kRsdpRevision);
  Put32(b, rsdt.value);
  Put32(b, kRsdpSize);
  Put64(b, xsdt.value);
  Put8(b, 0);  // extended checksum
  PutLe(b, 0, 3);
  BTVM_CHECK(b.size() == kRsdpSize);
  constexpr size_t kAcpi1Size = 20;
  b[8] = Checksum(std::span(b).first(kAcpi1Size));
  b[32] = Checksum(b);
  return b;
}

// Appends tables to the region image, each aligned, and says where it went.
class Region {
 public:
  explicit Region(GuestPhys base) : base_(base) {}

  GuestPhys Place(const Bytes& table, size_t alignment) {
    bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, 0);
    const GuestPhys at = base_ + bytes_.size();
    Append(bytes_, table);
    return at;
  }
  void Patch(GuestPhys at, const Bytes& table) {
    const size_t offset = at - base_;
    BTVM_CHECK(offset + table.size() <= bytes_.size());
    std::copy(table.begin(), table.end(), bytes_.begin() + static_cast<ptrdiff_t>(offset));
  }
  Bytes Take() { return std::move(bytes_); }

 private:
  GuestPhys base_;
  Bytes bytes_;
};

}  // namespace

AcpiTables BuildAcpiTables(GuestPhys base, const AcpiPlatform& platform) {
  BTVM_CHECK(base.value % kFacsAlignment == 0);
  Region region(base);
  AcpiTables t;
  t.base = base;
  // The RSDP comes first, at the base, but points at tables placed after
  // it: reserve its bytes and fill them in last. Every table is placed
  // after the tables it points to.
  t.rsdp = region.Place(Bytes(kRsdpSize, 0), kTableAlignment);
  t.facs = region.Place(BuildFacs(), kFacsAlignment);
  t.dsdt = region.Place(BuildDsdt(), kTableAlignment);
  t.fadt = region.Place(BuildFadt(platform, t.facs, t.dsdt), kTableAlignment);
  t.madt = region.Place(BuildMadt(platform), kTableAlignment);
  t.xsdt = region.Place(BuildXsdt({t.fadt, t.madt}), kTableAlignment);
  t.rsdt = region.Place(BuildRsdt({t.fadt, t.madt}), kTableAlignment);
  region.Patch(t.rsdp, BuildRsdp(t.rsdt, t.xsdt));
  t.bytes = region.Take();
  BTVM_CHECK(t.end().value <= uint64_t{1} << 32);
  return t;
}

}  // namespace btvm
