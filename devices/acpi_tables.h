#pragma once
// The ACPI firmware tables of btvm's PC-like machine: what Linux reads to
// find the local APIC and the IOAPIC (Debian's cloud kernel has no MP-table
// parser), the PM timer, the SCI, how to power off and how to reset. Tables
// as ACPI 6.3 defines them (§5.2 "ACPI System Description Tables"), built
// the way QEMU's pc machine and crosvm describe a legacy PC: not
// hardware-reduced, an i8259 pair beside the IOAPIC, an i8042, a CMOS RTC.
//
// BuildAcpiTables() is a pure function: it returns the bytes of the region
// and the addresses of the tables in it, and the machine copies the bytes
// into guest RAM at the base it chose. At the machine's base (kAcpiTablesBase
// = 0xe0000) the region is:
//
//   0xe0000  RSDP  36 bytes, revision 2: RSDT and XSDT addresses, both
//                  checksums. 16-byte aligned in 0xe0000-0xfffff, where
//                  Linux's legacy scan also finds it (§5.2.5.1).
//   0xe0040  FACS  64 bytes, 64-byte aligned (§5.2.10); no waking vector,
//                  no S4BIOS. FADT.FIRMWARE_CTRL points here (X_FIRMWARE_CTRL
//                  is 0: the spec allows only one of them to be set).
//   0xe0080  DSDT  56 bytes, revision 2 (64-bit AML integers); its AML:
//                    Scope (\_SB) {}
//                    Name (\_S5, Package (4) { 0, 0, 0, 0 })
//                  \_S5's first element is the PM1a_CNT.SLP_TYP of soft off
//                  (AcpiPm::kS5SleepType), as in QEMU's pc DSDT.
//   0xe00c0  FACP  the FADT, 276 bytes, revision 6.3 (§5.2.9)
//   0xe01e0  APIC  the MADT, 90 bytes, revision 5 (§5.2.12)
//   0xe0240  XSDT  FADT, MADT
//   0xe0280  RSDT  FADT, MADT (32-bit entries, for ACPI 1.0 readers)
//   0xe02ac  end (684 bytes)
// Every table starts 16-byte aligned. Layout tests pin these addresses.
//
// FADT: PM1a_EVT_BLK 0x600 (4 bytes), PM1a_CNT_BLK 0x604 (2), PM_TMR_BLK
// 0x608 (4, 24-bit: TMR_VAL_EXT = 0), in the 32-bit fields and again as
// X_ Generic Address Structures (system I/O, bit width = length * 8, access
// size word/word/dword), which ACPICA wants to agree. No PM1b, PM2 or GPE
// blocks (GPE0_BLK_LEN = 0: no general-purpose events), no SMI_CMD (so the
// machine is always in ACPI mode, and PM1_CNT.SCI_EN reads 1). SCI_INT 9.
// C2 and C3 not supported (P_LVL2_LAT 101, P_LVL3_LAT 1001). CENTURY 0x32
// (the CMOS RTC's century register). IAPC_BOOT_ARCH: LEGACY_DEVICES, 8042,
// VGA Not Present (the machine has no VGA); CMOS RTC Not Present stays 0.
// Flags: WBINVD, PROC_C1, PWR_BUTTON and SLP_BUTTON (no fixed power or
// sleep button: with both set Linux creates neither button device), FIX_RTC
// (no RTC_STS wake status in PM1), RESET_REG_SUP. RESET_REG: system I/O port
// 0xcf9, 8 bits, RESET_VALUE 0x06 (ResetControl, devices/acpi_pm.h).
//
// MADT: local APIC address 0xfee00000, PCAT_COMPAT (an i8259 pair is
// present), then
//   Processor Local APIC   processor UID 0, APIC ID 0, enabled
//   I/O APIC               ID 0, 0xfec00000, GSI base 0
//   Interrupt Source Override  ISA IRQ 0 -> GSI 2, flags 0 (conforms to the
//                          bus: edge, active high) — the PIT's output is on
//                          IOAPIC pin 2, as on every PC
//   Interrupt Source Override  ISA IRQ 9 -> GSI 9, level, active high (the
//                          SCI; without it Linux would take the SCI as
//                          level, active low)
//   Local APIC NMI         all processors (UID 0xff), flags 0, LINT1
// as QEMU's pc machine has them.
//
// OEM ID "BTVM  ", OEM table ID "BTVMACPI" (the same in every table, as the
// FADT and the RSDT/XSDT must agree), OEM revision 1, creator "BTVM"
// revision 1. No HPET table (there is no HPET), no SSDT, no MCFG.

#include <cstdint>
#include <vector>

#include "base/types.h"
#include "devices/acpi_pm.h"

namespace btvm {

// Where the machine places the tables: the BIOS area 0xe0000-0xfffff, which
// the loader marks reserved in the e820 map (with the EBDA and VGA window:
// 0x9fc00-0x100000) and whose RSDP address it also passes in
// boot_params.acpi_rsdp_addr.
inline constexpr GuestPhys kAcpiTablesBase{0xe0000};
inline constexpr GuestPhys kAcpiTablesLimit{0x100000};  // exclusive
inline constexpr GuestPhys kAcpiRsdpAddress = kAcpiTablesBase;

// The machine as the tables describe it. The defaults are btvm's PC-like
// machine: one CPU, one IOAPIC, the devices of devices/acpi_pm.h.
struct AcpiPlatform {
  uint32_t local_apic_address = 0xfee00000;
  uint8_t local_apic_id = 0;
  uint8_t ioapic_id = 0;  // QEMU's ACPI_BUILD_IOAPIC_ID
  uint32_t ioapic_address = 0xfec00000;
  uint32_t ioapic_gsi_base = 0;
  uint8_t pit_gsi = 2;  // where ISA IRQ 0 arrives on the IOAPIC
  uint8_t sci_irq = AcpiPm::kSciIrq;
  uint16_t pm_base = AcpiPm::kBase;  // PM1a_EVT_BLK; PM1a_CNT +4, PM_TMR +8
  uint16_t reset_port = ResetControl::kPort;
  uint8_t reset_value = ResetControl::kResetValue;
  uint8_t rtc_century_index = 0x32;  // CmosRtc's century register
};

// The region image and where each table landed in guest-physical memory.
struct AcpiTables {
  GuestPhys base;              // where bytes[0] belongs
  std::vector<uint8_t> bytes;  // the whole region, from base
  GuestPhys rsdp;              // == base
  GuestPhys facs;
  GuestPhys dsdt;
  GuestPhys fadt;
  GuestPhys madt;
  GuestPhys xsdt;
  GuestPhys rsdt;

  GuestPhys end() const { return base + bytes.size(); }
};

// Builds the tables for a region that starts at `base`. `base` must be
// 64-byte aligned (the FACS needs it) and the region must end below 4 GiB
// (the RSDT and the FADT's 32-bit fields hold addresses); both are host
// bugs if broken.
AcpiTables BuildAcpiTables(GuestPhys base, const AcpiPlatform& platform = {});

}  // namespace btvm
