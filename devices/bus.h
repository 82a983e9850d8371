#pragma once
// Port-I/O and MMIO buses. Devices see offsets relative to the base they were
// registered at, never absolute addresses (Firecracker's habit), so a device
// can be placed anywhere and tested alone.

#include <cstdint>
#include <string>

#include <boost/container/flat_map.hpp>

#include "base/result.h"
#include "base/types.h"

namespace btvm {

// Access sizes are 1, 2 or 4 bytes for port I/O and 1, 2, 4 or 8 for MMIO.
// Values are zero-extended; a device returns only `size` meaningful bytes.
class PioDevice {
 public:
  virtual ~PioDevice() = default;
  virtual uint32_t PioRead(uint16_t offset, unsigned size) = 0;
  virtual void PioWrite(uint16_t offset, unsigned size, uint32_t value) = 0;
};

class MmioDevice {
 public:
  virtual ~MmioDevice() = default;
  virtual uint64_t MmioRead(uint64_t offset, unsigned size) = 0;
  virtual void MmioWrite(uint64_t offset, unsigned size, uint64_t value) = 0;
};

// The port-I/O bus: 64 KiB of ports. A read of a port nobody claims returns
// all ones (an ISA bus floats high); a write to it is dropped.
class PioBus {
 public:
  // Fails if [base, base+length) overlaps a registered range or wraps.
  Status Register(uint16_t base, uint16_t length, PioDevice* device, std::string name);
  uint32_t Read(uint16_t port, unsigned size);
  void Write(uint16_t port, unsigned size, uint32_t value);
  // Adds the host TSC cycles the devices take to *busy (null: not timed).
  void set_busy_counter(uint64_t* busy) { busy_ = busy; }

 private:
  struct Range {
    uint32_t length;
    PioDevice* device;
    std::string name;
  };
  const Range* Find(uint16_t port, uint16_t* offset) const;
  boost::container::flat_map<uint32_t, Range> ranges_;  // keyed by base
  uint64_t* busy_ = nullptr;
};

// The MMIO bus, keyed by guest-physical address. Unclaimed reads return all
// ones; unclaimed writes are dropped.
class MmioBus {
 public:
  Status Register(GuestPhys base, uint64_t length, MmioDevice* device, std::string name);
  uint64_t Read(GuestPhys addr, unsigned size);
  void Write(GuestPhys addr, unsigned size, uint64_t value);
  bool Claimed(GuestPhys addr) const;
  // Adds the host TSC cycles the devices take to *busy (null: not timed).
  void set_busy_counter(uint64_t* busy) { busy_ = busy; }

 private:
  struct Range {
    uint64_t length;
    MmioDevice* device;
    std::string name;
  };
  const Range* Find(GuestPhys addr, uint64_t* offset) const;
  boost::container::flat_map<uint64_t, Range> ranges_;
  uint64_t* busy_ = nullptr;
};

// An interrupt line as a device sees it: raise or lower a level. The
// interrupt controller (or, before there is one, the machine) implements
// IrqSink; a device holds an IrqLine it was wired to.
class IrqSink {
 public:
  virtual ~IrqSink() = default;
  virtual void SetIrqLevel(unsigned line, bool level) = 0;
};

class IrqLine {
 public:
  IrqLine() = default;
  IrqLine(IrqSink* sink, unsigned line) : sink_(sink), line_(line) {}
  void Set(bool level) {
    if (sink_) sink_->SetIrqLevel(line_, level);
  }
  unsigned line() const { return line_; }

 private:
  IrqSink* sink_ = nullptr;
  unsigned line_ = 0;
};

// What devices ask of the machine as a whole: stop with a status (isa-debug-
// exit), reset (i8042 pulse on the reset line), power off (later: ACPI).
class SystemControl {
 public:
  virtual ~SystemControl() = default;
  virtual void RequestExit(int status) = 0;
  virtual void RequestReset() = 0;
  virtual void RequestPowerOff() = 0;
};

}  // namespace btvm
