// The ACPI tables, read back the way an OS reads them: from the RSDP through
// the XSDT (and the RSDT) to the FADT, the FACS, the DSDT and the MADT, every
// offset as ACPI 6.3 §5.2 lays it out, every checksum summed, and the DSDT's
// AML decoded by a small decoder that knows the terms the builder emits.

#include "devices/acpi_tables.h"

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "devices/acpi_pm.h"

namespace btvm {
namespace {

constexpr size_t kHeaderSize = 36;

// Reads the region image at guest-physical addresses.
class Image {
 public:
  explicit Image(const AcpiTables& t) : t_(t) {}

  bool Contains(uint64_t addr, uint64_t size) const {
    return addr >= t_.base.value && addr + size <= t_.end().value;
  }
  uint64_t Le(uint64_t addr, unsigned size) const {
    EXPECT_TRUE(Contains(addr, size)) << std::hex << addr;
    if (!Contains(addr, size)) return 0;
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= uint64_t{At(addr + i)} << (8 * i);
    return v;
  }
  uint64_t Le(GuestPhys addr, unsigned size) const { return Le(addr.value, size); }
  std::string Chars(GuestPhys addr, size_t n) const {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(Le(addr + i, 1)));
    return s;
  }
  uint8_t Sum(GuestPhys addr, size_t n) const {
    uint8_t sum = 0;
    for (size_t i = 0; i < n; ++i) sum = static_cast<uint8_t>(sum + Le(addr + i, 1));
    return sum;
  }
  std::span<const uint8_t> Span(GuestPhys addr, size_t n) const {
    EXPECT_TRUE(Contains(addr.value, n));
    if (!Contains(addr.value, n)) return {};
    return std::span(t_.bytes).subspan(addr - t_.base, n);
  }
  // A table's length field.
  uint32_t Length(GuestPhys table) const { return static_cast<uint32_t>(Le(table + 4, 4)); }

 private:
  uint8_t At(uint64_t addr) const { return t_.bytes[addr - t_.base.value]; }
  const AcpiTables& t_;
};

class AcpiTablesTest : public ::testing::Test {
 protected:
  AcpiTablesTest() : t_(BuildAcpiTables(kAcpiTablesBase)), image_(t_) {}

  uint64_t Fadt(size_t offset, unsigned size) const { return image_.Le(t_.fadt + offset, size); }

  // Checks the common header of the table at `at` and its checksum.
  void ExpectHeader(GuestPhys at, const std::string& signature, uint8_t revision) {
    SCOPED_TRACE(signature);
    EXPECT_EQ(image_.Chars(at, 4), signature);
    const uint32_t length = image_.Length(at);
    EXPECT_GE(length, kHeaderSize);
    ASSERT_TRUE(image_.Contains(at.value, length));
    EXPECT_EQ(image_.Le(at + 8, 1), revision);
    EXPECT_EQ(image_.Sum(at, length), 0) << "checksum";
    EXPECT_EQ(image_.Chars(at + 10, 6), "BTVM  ");
    EXPECT_EQ(image_.Chars(at + 16, 8), "BTVMACPI");
    EXPECT_EQ(image_.Le(at + 24, 4), 1u);  // OEM revision
    EXPECT_EQ(image_.Chars(at + 28, 4), "BTVM");
    EXPECT_EQ(image_.Le(at + 32, 4), 1u);  // creator revision
  }

  const AcpiTables t_;
  const Image image_;
};

// --- Layout ------------------------------------------------------------------

TEST_F(AcpiTablesTest, LayoutAtTheMachineBase) {
  // devices/acpi_tables.h documents these addresses.
  EXPECT_EQ(t_.base, GuestPhys{0xe0000});
  EXPECT_EQ(t_.rsdp, GuestPhys{0xe0000});
  EXPECT_EQ(t_.facs, GuestPhys{0xe0040});
  EXPECT_EQ(t_.dsdt, GuestPhys{0xe0080});
  EXPECT_EQ(t_.fadt, GuestPhys{0xe00c0});
  EXPECT_EQ(t_.madt, GuestPhys{0xe01e0});
  EXPECT_EQ(t_.xsdt, GuestPhys{0xe0240});
  EXPECT_EQ(t_.rsdt, GuestPhys{0xe0280});
  EXPECT_EQ(t_.end(), GuestPhys{0xe02ac});
  EXPECT_EQ(kAcpiRsdpAddress, t_.rsdp);
}

TEST_F(AcpiTablesTest, RegionFitsTheBiosArea) {
  EXPECT_GE(t_.base, GuestPhys{0xe0000});
  EXPECT_LE(t_.end(), kAcpiTablesLimit);
  EXPECT_EQ(kAcpiTablesLimit, GuestPhys{0x100000});
}

TEST_F(AcpiTablesTest, TablesDoNotOverlap) {
  struct Span {
    GuestPhys at;
    uint64_t size;
  };
  std::vector<Span> spans = {{t_.rsdp, 36},
                             {t_.facs, image_.Le(t_.facs + 4, 4)},
                             {t_.dsdt, image_.Length(t_.dsdt)},
                             {t_.fadt, image_.Length(t_.fadt)},
                             {t_.madt, image_.Length(t_.madt)},
                             {t_.xsdt, image_.Length(t_.xsdt)},
                             {t_.rsdt, image_.Length(t_.rsdt)}};
  for (size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(spans[i].at.value % 16, 0u) << i;
    if (i + 1 < spans.size()) {
      EXPECT_LE(spans[i].at + spans[i].size, spans[i + 1].at) << i;
    }
  }
  EXPECT_EQ(spans.back().at + spans.back().size, t_.end());
}

// --- RSDP, XSDT, RSDT --------------------------------------------------------

TEST_F(AcpiTablesTest, RsdpHasBothChecksumsAndPointsAtXsdtAndRsdt) {
  const GuestPhys r = t_.rsdp;
  EXPECT_EQ(r.value % 16, 0u);  // where the legacy scan looks
  EXPECT_EQ(image_.Chars(r, 8), "RSD PTR ");
  EXPECT_EQ(image_.Sum(r, 20), 0) << "ACPI 1.0 checksum";
  EXPECT_EQ(image_.Le(r + 15, 1), 2u);  // revision
  EXPECT_EQ(image_.Le(r + 20, 4), 36u);
  EXPECT_EQ(image_.Sum(r, 36), 0) << "extended checksum";
  EXPECT_EQ(image_.Chars(r + 9, 6), "BTVM  ");
  EXPECT_EQ(image_.Le(r + 16, 4), t_.rsdt.value);
  EXPECT_EQ(image_.Le(r + 24, 8), t_.xsdt.value);
  EXPECT_EQ(image_.Le(r + 33, 3), 0u);
}

TEST_F(AcpiTablesTest, EveryTableHasItsSignatureLengthAndChecksum) {
  ExpectHeader(t_.xsdt, "XSDT", 1);
  ExpectHeader(t_.rsdt, "RSDT", 1);
  ExpectHeader(t_.fadt, "FACP", 6);
  ExpectHeader(t_.madt, "APIC", 5);
  ExpectHeader(t_.dsdt, "DSDT", 2);
  EXPECT_EQ(image_.Length(t_.fadt), 276u);
  EXPECT_EQ(image_.Length(t_.xsdt), 36u + 2 * 8);
  EXPECT_EQ(image_.Length(t_.rsdt), 36u + 2 * 4);
}

TEST_F(AcpiTablesTest, XsdtAndRsdtListTheFadtAndTheMadt) {
  std::vector<std::string> xsdt_sigs, rsdt_sigs;
  const uint32_t xsdt_len = image_.Length(t_.xsdt);
  for (uint32_t off = kHeaderSize; off < xsdt_len; off += 8) {
    const uint64_t entry = image_.Le(t_.xsdt + off, 8);
    ASSERT_TRUE(image_.Contains(entry, kHeaderSize)) << std::hex << entry;
    xsdt_sigs.push_back(image_.Chars(GuestPhys{entry}, 4));
  }
  const uint32_t rsdt_len = image_.Length(t_.rsdt);
  for (uint32_t off = kHeaderSize; off < rsdt_len; off += 4) {
    const uint64_t entry = image_.Le(t_.rsdt + off, 4);
    ASSERT_TRUE(image_.Contains(entry, kHeaderSize)) << std::hex << entry;
    rsdt_sigs.push_back(image_.Chars(GuestPhys{entry}, 4));
  }
  EXPECT_EQ(xsdt_sigs, (std::vector<std::string>{"FACP", "APIC"}));
  EXPECT_EQ(rsdt_sigs, xsdt_sigs);
  EXPECT_EQ(image_.Le(t_.xsdt + 36, 8), t_.fadt.value);
  EXPECT_EQ(image_.Le(t_.xsdt + 44, 8), t_.madt.value);
}

// --- FACS ----------------------------------------------------------------------

TEST_F(AcpiTablesTest, Facs) {
  EXPECT_EQ(t_.facs.value % 64, 0u);
  EXPECT_EQ(image_.Chars(t_.facs, 4), "FACS");
  EXPECT_EQ(image_.Le(t_.facs + 4, 4), 64u);
  EXPECT_EQ(image_.Le(t_.facs + 8, 4), 0u);   // hardware signature
  EXPECT_EQ(image_.Le(t_.facs + 12, 4), 0u);  // no waking vector
  EXPECT_EQ(image_.Le(t_.facs + 16, 4), 0u);  // global lock free
  EXPECT_EQ(image_.Le(t_.facs + 20, 4), 0u);  // flags
  EXPECT_EQ(image_.Le(t_.facs + 32, 1), 2u);  // version
}

// --- FADT ------------------------------------------------------------------------

TEST_F(AcpiTablesTest, FadtPointsAtFacsAndDsdt) {
  EXPECT_EQ(Fadt(36, 4), t_.facs.value);   // FIRMWARE_CTRL
  EXPECT_EQ(Fadt(132, 8), 0u);             // X_FIRMWARE_CTRL: only one may be set
  EXPECT_EQ(Fadt(40, 4), t_.dsdt.value);   // DSDT
  EXPECT_EQ(Fadt(140, 8), t_.dsdt.value);  // X_DSDT
  EXPECT_EQ(Fadt(131, 1), 3u);             // minor version: 6.3
}

TEST_F(AcpiTablesTest, FadtSciAndNoSmiCommand) {
  EXPECT_EQ(Fadt(46, 2), 9u);  // SCI_INT
  EXPECT_EQ(Fadt(46, 2), AcpiPm::kSciIrq);
  EXPECT_EQ(Fadt(48, 4), 0u);  // SMI_CMD: always in ACPI mode
  EXPECT_EQ(Fadt(52, 1), 0u);  // ACPI_ENABLE
  EXPECT_EQ(Fadt(53, 1), 0u);  // ACPI_DISABLE
  EXPECT_EQ(Fadt(45, 1), 0u);  // Preferred_PM_Profile
}

// A Generic Address Structure at `offset` in the FADT.
struct Gas {
  uint64_t space, bit_width, bit_offset, access_size, address;
  bool operator==(const Gas&) const = default;
};

TEST_F(AcpiTablesTest, FadtPmBlocksInBothFormats) {
  auto gas = [this](size_t offset) {
    return Gas{Fadt(offset, 1), Fadt(offset + 1, 1), Fadt(offset + 2, 1), Fadt(offset + 3, 1),
               Fadt(offset + 4, 8)};
  };
  // 32-bit fields.
  EXPECT_EQ(Fadt(56, 4), 0x600u);  // PM1a_EVT_BLK
  EXPECT_EQ(Fadt(60, 4), 0u);      // PM1b_EVT_BLK
  EXPECT_EQ(Fadt(64, 4), 0x604u);  // PM1a_CNT_BLK
  EXPECT_EQ(Fadt(68, 4), 0u);      // PM1b_CNT_BLK
  EXPECT_EQ(Fadt(72, 4), 0u);      // PM2_CNT_BLK
  EXPECT_EQ(Fadt(76, 4), 0x608u);  // PM_TMR_BLK
  EXPECT_EQ(Fadt(80, 4), 0u);      // GPE0_BLK
  EXPECT_EQ(Fadt(84, 4), 0u);      // GPE1_BLK
  EXPECT_EQ(Fadt(88, 1), 4u);      // PM1_EVT_LEN
  EXPECT_EQ(Fadt(89, 1), 2u);      // PM1_CNT_LEN
  EXPECT_EQ(Fadt(90, 1), 0u);      // PM2_CNT_LEN
  EXPECT_EQ(Fadt(91, 1), 4u);      // PM_TMR_LEN
  EXPECT_EQ(Fadt(92, 1), 0u);      // GPE0_BLK_LEN
  EXPECT_EQ(Fadt(93, 1), 0u);      // GPE1_BLK_LEN
  // The same blocks as X_ fields: system I/O, bit width = length * 8.
  EXPECT_EQ(gas(148), (Gas{1, 32, 0, 2, 0x600}));  // X_PM1a_EVT_BLK
  EXPECT_EQ(gas(160), (Gas{0, 0, 0, 0, 0}));       // X_PM1b_EVT_BLK
  EXPECT_EQ(gas(172), (Gas{1, 16, 0, 2, 0x604}));  // X_PM1a_CNT_BLK
  EXPECT_EQ(gas(184), (Gas{0, 0, 0, 0, 0}));       // X_PM1b_CNT_BLK
  EXPECT_EQ(gas(196), (Gas{0, 0, 0, 0, 0}));       // X_PM2_CNT_BLK
  EXPECT_EQ(gas(208), (Gas{1, 32, 0, 3, 0x608}));  // X_PM_TMR_BLK
  EXPECT_EQ(gas(220), (Gas{0, 0, 0, 0, 0}));       // X_GPE0_BLK
  EXPECT_EQ(gas(232), (Gas{0, 0, 0, 0, 0}));       // X_GPE1_BLK
  EXPECT_EQ(gas(244), (Gas{0, 0, 0, 0, 0}));       // SLEEP_CONTROL_REG
  EXPECT_EQ(gas(256), (Gas{0, 0, 0, 0, 0}));       // SLEEP_STATUS_REG
  // ... and they are the device's.
  EXPECT_EQ(Fadt(56, 4), AcpiPm::kPm1EventBlock);
  EXPECT_EQ(Fadt(64, 4), AcpiPm::kPm1ControlBlock);
  EXPECT_EQ(Fadt(76, 4), AcpiPm::kPmTimerBlock);
  EXPECT_EQ(Fadt(88, 1), AcpiPm::kPm1EventLength);
  EXPECT_EQ(Fadt(89, 1), AcpiPm::kPm1ControlLength);
  EXPECT_EQ(Fadt(91, 1), AcpiPm::kPmTimerLength);

  // The reset register: port 0xcf9, one byte, value 6.
  EXPECT_EQ(gas(116), (Gas{1, 8, 0, 1, 0xcf9}));
  EXPECT_EQ(Fadt(128, 1), 0x06u);
  EXPECT_EQ(Fadt(120, 8), ResetControl::kPort);
  EXPECT_EQ(Fadt(128, 1), ResetControl::kResetValue);
}

TEST_F(AcpiTablesTest, FadtFlags) {
  const uint64_t flags = Fadt(112, 4);
  EXPECT_EQ(flags & (1u << 0), 1u << 0);    // WBINVD
  EXPECT_EQ(flags & (1u << 2), 1u << 2);    // PROC_C1
  EXPECT_EQ(flags & (1u << 4), 1u << 4);    // PWR_BUTTON: no fixed power button
  EXPECT_EQ(flags & (1u << 5), 1u << 5);    // SLP_BUTTON: no fixed sleep button
  EXPECT_EQ(flags & (1u << 6), 1u << 6);    // FIX_RTC: no RTC_STS
  EXPECT_EQ(flags & (1u << 8), 0u);         // TMR_VAL_EXT: a 24-bit timer
  EXPECT_EQ(flags & (1u << 10), 1u << 10);  // RESET_REG_SUP
  EXPECT_EQ(flags & (1u << 20), 0u);        // not HW_REDUCED_ACPI
  EXPECT_EQ(flags, 0x475u);
}

TEST_F(AcpiTablesTest, FadtBootArchitectureAndLegacyFields) {
  const uint64_t boot = Fadt(109, 2);
  EXPECT_EQ(boot & (1u << 0), 1u << 0);  // LEGACY_DEVICES
  EXPECT_EQ(boot & (1u << 1), 1u << 1);  // 8042
  EXPECT_EQ(boot & (1u << 2), 1u << 2);  // VGA Not Present
  EXPECT_EQ(boot & (1u << 3), 0u);       // MSI supported (when there is PCI)
  EXPECT_EQ(boot & (1u << 5), 0u);       // the CMOS RTC is present
  EXPECT_EQ(boot, 0x7u);
  EXPECT_EQ(Fadt(108, 1), 0x32u);                     // CENTURY
  EXPECT_EQ(Fadt(106, 1), 0u);                        // DAY_ALRM
  EXPECT_EQ(Fadt(107, 1), 0u);                        // MON_ALRM
  EXPECT_GT(Fadt(96, 2), 100u);                       // P_LVL2_LAT: no C2
  EXPECT_GT(Fadt(98, 2), 1000u);                      // P_LVL3_LAT: no C3
  EXPECT_EQ(Fadt(129, 2), 0u);                        // ARM_BOOT_ARCH
  EXPECT_EQ(image_.Chars(t_.fadt + 268, 4), "BTVM");  // hypervisor vendor
}

// --- MADT --------------------------------------------------------------------------

TEST_F(AcpiTablesTest, MadtHeader) {
  EXPECT_EQ(image_.Le(t_.madt + 36, 4), 0xfee00000u);  // local APIC address
  EXPECT_EQ(image_.Le(t_.madt + 40, 4), 1u);           // PCAT_COMPAT
}

TEST_F(AcpiTablesTest, MadtEntriesParseBack) {
  struct Entry {
    uint8_t type;
    GuestPhys at;
  };
  std::vector<Entry> entries;
  const GuestPhys end = t_.madt + image_.Length(t_.madt);
  for (GuestPhys at = t_.madt + 44; at < end;) {
    const auto length = image_.Le(at + 1, 1);
    ASSERT_GE(length, 2u);
    ASSERT_LE(at + length, end);
    entries.push_back({static_cast<uint8_t>(image_.Le(at, 1)), at});
    at = at + length;
  }
  ASSERT_EQ(entries.size(), 5u);
  auto le = [this](const Entry& e, size_t offset, unsigned size) {
    return image_.Le(e.at + offset, size);
  };

  // Processor Local APIC: UID 0, APIC ID 0, enabled.
  EXPECT_EQ(entries[0].type, 0);
  EXPECT_EQ(le(entries[0], 1, 1), 8u);
  EXPECT_EQ(le(entries[0], 2, 1), 0u);
  EXPECT_EQ(le(entries[0], 3, 1), 0u);
  EXPECT_EQ(le(entries[0], 4, 4), 1u);

  // I/O APIC: ID 0 at 0xfec00000, GSI base 0.
  EXPECT_EQ(entries[1].type, 1);
  EXPECT_EQ(le(entries[1], 1, 1), 12u);
  EXPECT_EQ(le(entries[1], 2, 1), 0u);
  EXPECT_EQ(le(entries[1], 4, 4), 0xfec00000u);
  EXPECT_EQ(le(entries[1], 8, 4), 0u);

  // Interrupt Source Override: ISA IRQ 0 -> GSI 2, conforming.
  EXPECT_EQ(entries[2].type, 2);
  EXPECT_EQ(le(entries[2], 1, 1), 10u);
  EXPECT_EQ(le(entries[2], 2, 1), 0u);  // bus ISA
  EXPECT_EQ(le(entries[2], 3, 1), 0u);
  EXPECT_EQ(le(entries[2], 4, 4), 2u);
  EXPECT_EQ(le(entries[2], 8, 2), 0u);

  // Interrupt Source Override: the SCI, ISA IRQ 9 -> GSI 9, level, active high.
  EXPECT_EQ(entries[3].type, 2);
  EXPECT_EQ(le(entries[3], 1, 1), 10u);
  EXPECT_EQ(le(entries[3], 3, 1), 9u);
  EXPECT_EQ(le(entries[3], 4, 4), 9u);
  EXPECT_EQ(le(entries[3], 8, 2) & 0x3, 1u);         // polarity: active high
  EXPECT_EQ((le(entries[3], 8, 2) >> 2) & 0x3, 3u);  // trigger: level
  EXPECT_EQ(le(entries[3], 8, 2), 0xdu);

  // Local APIC NMI: all processors, LINT1.
  EXPECT_EQ(entries[4].type, 4);
  EXPECT_EQ(le(entries[4], 1, 1), 6u);
  EXPECT_EQ(le(entries[4], 2, 1), 0xffu);
  EXPECT_EQ(le(entries[4], 3, 2), 0u);
  EXPECT_EQ(le(entries[4], 5, 1), 1u);
}

// --- DSDT: a decoder for the AML the builder emits --------------------------------
// ACPI 6.3 §20.2: TermList of DefScope, DefName and DefDevice; data objects
// are integers (ZeroOp, OneOp, OnesOp, Byte/Word/DWord/QWord prefixes),
// strings and packages. Names resolve to absolute paths ("\\_SB_.C000").

struct AmlObject {
  enum class Kind { kInteger, kString, kPackage } kind = Kind::kInteger;
  uint64_t integer = 0;
  std::string string;
  std::vector<AmlObject> elements;
};

class AmlDecoder {
 public:
  explicit AmlDecoder(std::span<const uint8_t> aml) : aml_(aml) {}

  // Decodes the whole block; false (and error()) if anything is not understood.
  bool Decode() {
    TermList(aml_.size(), "\\");
    return error_.empty();
  }
  const std::string& error() const { return error_; }
  const std::map<std::string, AmlObject>& names() const { return names_; }
  const std::set<std::string>& scopes() const { return scopes_; }
  const std::set<std::string>& devices() const { return devices_; }

 private:
  bool Fail(const std::string& what) {
    if (error_.empty()) error_ = what + " at AML offset " + std::to_string(pos_);
    pos_ = aml_.size();
    return false;
  }
  bool More(size_t end) const { return error_.empty() && pos_ < end; }
  uint8_t Next() {
    if (pos_ >= aml_.size()) {
      Fail("AML ends early");
      return 0;
    }
    return aml_[pos_++];
  }
  uint64_t Le(unsigned size) {
    uint64_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= uint64_t{Next()} << (8 * i);
    return v;
  }

  // PkgLength (§20.2.4): returns the offset where the package ends.
  size_t PkgEnd() {
    const size_t start = pos_;
    const uint8_t lead = Next();
    const unsigned extra = lead >> 6;
    size_t length = extra == 0 ? lead & 0x3f : lead & 0x0f;
    if (extra != 0 && (lead & 0x30)) Fail("PkgLength reserved bits set");
    for (unsigned i = 0; i < extra; ++i) length |= size_t{Next()} << (4 + 8 * i);
    if (start + length > aml_.size()) Fail("package runs past the AML");
    return start + length;
  }

  std::string NameSeg() {
    std::string seg;
    for (int i = 0; i < 4; ++i) {
      const char c = static_cast<char>(Next());
      if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) Fail("bad NameSeg");
      seg.push_back(c);
    }
    if (seg[0] >= '0' && seg[0] <= '9') Fail("NameSeg starts with a digit");
    return seg;
  }

  // NameString (§20.2.2), made absolute against `scope`.
  std::string NameString(const std::string& scope) {
    std::string path = scope;
    if (pos_ < aml_.size() && aml_[pos_] == '\\') {
      ++pos_;
      path = "\\";
    }
    if (pos_ < aml_.size() && aml_[pos_] == '^') Fail("parent prefixes are not emitted");
    unsigned count = 1;
    const uint8_t prefix = pos_ < aml_.size() ? aml_[pos_] : 0;
    if (prefix == 0x2e) {
      ++pos_;
      count = 2;
    } else if (prefix == 0x2f) {
      ++pos_;
      count = Next();
    } else if (prefix == 0x00) {
      ++pos_;
      return path;  // NullName
    }
    for (unsigned i = 0; i < count; ++i) {
      if (path != "\\") path += ".";
      path += NameSeg();
    }
    return path;
  }

  AmlObject DataObject() {
    AmlObject o;
    const uint8_t op = Next();
    switch (op) {
      case 0x00:  // ZeroOp
        o.integer = 0;
        break;
      case 0x01:  // OneOp
        o.integer = 1;
        break;
      case 0xff:  // OnesOp
        o.integer = ~uint64_t{0};
        break;
      case 0x0a:
        o.integer = Le(1);
        break;
      case 0x0b:
        o.integer = Le(2);
        break;
      case 0x0c:
        o.integer = Le(4);
        break;
      case 0x0e:
        o.integer = Le(8);
        break;
      case 0x0d:  // String: ASCII up to a NUL
        o.kind = AmlObject::Kind::kString;
        for (uint8_t c = Next(); c != 0 && error_.empty(); c = Next()) {
          o.string.push_back(static_cast<char>(c));
        }
        break;
      case 0x12: {  // DefPackage
        o.kind = AmlObject::Kind::kPackage;
        const size_t end = PkgEnd();
        const unsigned count = Next();
        while (More(end)) o.elements.push_back(DataObject());
        if (pos_ != end) Fail("package element runs past the package");
        if (o.elements.size() != count) Fail("NumElements does not match the elements");
        break;
      }
      default:
        Fail("unexpected data object opcode " + std::to_string(op));
    }
    return o;
  }

  void TermList(size_t end, const std::string& scope) {
    while (More(end)) {
      const uint8_t op = Next();
      if (op == 0x08) {  // DefName
        const std::string name = NameString(scope);
        if (names_.count(name)) Fail("duplicate name " + name);
        names_[name] = DataObject();
      } else if (op == 0x10) {  // DefScope
        const size_t pkg_end = PkgEnd();
        const std::string name = NameString(scope);
        scopes_.insert(name);
        TermList(pkg_end, name);
      } else if (op == 0x5b && pos_ < aml_.size() && aml_[pos_] == 0x82) {  // DefDevice
        ++pos_;
        const size_t pkg_end = PkgEnd();
        const std::string name = NameString(scope);
        devices_.insert(name);
        TermList(pkg_end, name);
      } else {
        Fail("unexpected term opcode " + std::to_string(op));
      }
    }
    if (error_.empty() && pos_ != end) Fail("term runs past its package");
  }

  std::span<const uint8_t> aml_;
  size_t pos_ = 0;
  std::string error_;
  std::map<std::string, AmlObject> names_;
  std::set<std::string> scopes_;
  std::set<std::string> devices_;
};

TEST_F(AcpiTablesTest, DsdtAmlDecodes) {
  const uint32_t length = image_.Length(t_.dsdt);
  AmlDecoder aml(image_.Span(t_.dsdt + kHeaderSize, length - kHeaderSize));
  ASSERT_TRUE(aml.Decode()) << aml.error();

  EXPECT_EQ(aml.scopes(), (std::set<std::string>{"\\_SB_"}));
  ASSERT_EQ(aml.names().count("\\_S5_"), 1u);
  const AmlObject& s5 = aml.names().at("\\_S5_");
  ASSERT_EQ(s5.kind, AmlObject::Kind::kPackage);
  ASSERT_EQ(s5.elements.size(), 4u);
  for (const AmlObject& e : s5.elements) {
    EXPECT_EQ(e.kind, AmlObject::Kind::kInteger);
    EXPECT_EQ(e.integer, 0u);
  }
  // PM1a_CNT.SLP_TYP of S5 is what the PM device powers off on.
  EXPECT_EQ(s5.elements[0].integer, AcpiPm::kS5SleepType);
  // No other sleep state is declared.
  for (const char* other : {"\\_S1_", "\\_S2_", "\\_S3_", "\\_S4_"}) {
    EXPECT_EQ(aml.names().count(other), 0u) << other;
  }
}

TEST(AmlDecoderTest, DecodesDevicesStringsAndLongPackages) {
  // The decoder itself, on hand-assembled AML. Device (\_SB.C000) with a
  // _HID string:
  std::vector<uint8_t> aml = {0x5b, 0x82, 0x00, '\\', 0x2e, '_', 'S', 'B', '_',  'C',
                              '0',  '0',  '0',  0x08, '_',  'H', 'I', 'D', 0x0d, 'A',
                              'C',  'P',  'I',  '0',  '0',  '0', '7', 0x00};
  aml[2] = static_cast<uint8_t>(aml.size() - 2);  // PkgLength counts itself, not the opcode
  // Name (BIG, Package (100) { 0, ..., 99 }), long enough for a two-byte PkgLength.
  std::vector<uint8_t> body = {100};  // NumElements
  for (uint8_t i = 0; i < 100; ++i) {
    body.push_back(0x0a);  // BytePrefix
    body.push_back(i);
  }
  const size_t pkg_length = body.size() + 2;
  aml.insert(aml.end(),
             {0x08, 'B', 'I', 'G', '_', 0x12, static_cast<uint8_t>(0x40 | (pkg_length & 0x0f)),
              static_cast<uint8_t>(pkg_length >> 4)});
  aml.insert(aml.end(), body.begin(), body.end());

  AmlDecoder decoder(aml);
  ASSERT_TRUE(decoder.Decode()) << decoder.error();
  EXPECT_EQ(decoder.devices(), (std::set<std::string>{"\\_SB_.C000"}));
  EXPECT_EQ(decoder.names().at("\\_SB_.C000._HID").string, "ACPI0007");
  const AmlObject& big = decoder.names().at("\\BIG_");
  ASSERT_EQ(big.elements.size(), 100u);
  EXPECT_EQ(big.elements[99].integer, 99u);

  // A package that claims more bytes than there are is an error, not a crash.
  aml.pop_back();
  AmlDecoder broken(aml);
  EXPECT_FALSE(broken.Decode());
}

// --- Another base and another platform ------------------------------------------------

TEST(AcpiTablesElsewhereTest, PointersFollowTheBase) {
  const AcpiTables t = BuildAcpiTables(GuestPhys{0x7fe0000});
  const Image image(t);
  EXPECT_EQ(t.rsdp, GuestPhys{0x7fe0000});
  EXPECT_EQ(image.Sum(t.rsdp, 20), 0);
  EXPECT_EQ(image.Sum(t.rsdp, 36), 0);
  EXPECT_EQ(image.Le(t.rsdp + 24, 8), t.xsdt.value);
  EXPECT_EQ(image.Le(t.xsdt + 36, 8), t.fadt.value);
  EXPECT_EQ(image.Le(t.fadt + 40, 4), t.dsdt.value);
  EXPECT_EQ(image.Le(t.fadt + 36, 4), t.facs.value);
  EXPECT_EQ(image.Sum(t.fadt, 276), 0);
  // Same tables, moved: only the pointers differ from the ones at 0xe0000.
  const AcpiTables low = BuildAcpiTables(kAcpiTablesBase);
  EXPECT_EQ(t.bytes.size(), low.bytes.size());
  EXPECT_EQ(t.madt - t.base, low.madt - low.base);
}

TEST(AcpiTablesElsewhereTest, PlatformParametersReachTheTables) {
  AcpiPlatform p;
  p.ioapic_id = 2;
  p.ioapic_address = 0xfec01000;
  p.local_apic_id = 1;
  p.pm_base = 0xb000;
  p.sci_irq = 11;
  const AcpiTables t = BuildAcpiTables(kAcpiTablesBase, p);
  const Image image(t);
  EXPECT_EQ(image.Le(t.fadt + 46, 2), 11u);
  EXPECT_EQ(image.Le(t.fadt + 56, 4), 0xb000u);
  EXPECT_EQ(image.Le(t.fadt + 64, 4), 0xb004u);
  EXPECT_EQ(image.Le(t.fadt + 76, 4), 0xb008u);
  EXPECT_EQ(image.Le(t.fadt + 208 + 4, 8), 0xb008u);
  EXPECT_EQ(image.Le(t.madt + 44 + 3, 1), 1u);  // APIC ID
  EXPECT_EQ(image.Le(t.madt + 52 + 2, 1), 2u);  // IOAPIC ID
  EXPECT_EQ(image.Le(t.madt + 52 + 4, 4), 0xfec01000u);
  EXPECT_EQ(image.Le(t.madt + 74 + 3, 1), 11u);  // SCI override source
  EXPECT_EQ(image.Sum(t.madt, image.Length(t.madt)), 0);
}

}  // namespace
}  // namespace btvm
