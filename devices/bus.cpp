#include "devices/bus.h"

#include <x86intrin.h>

#include <cstdio>
#include <iterator>
#include <utility>

#include "base/check.h"

namespace btvm {
namespace {
// Times an access into *busy when the bus is timed (--stats).
class BusyTime {
 public:
  explicit BusyTime(uint64_t* busy) : busy_(busy), start_(busy ? __rdtsc() : 0) {}
  ~BusyTime() {
    if (busy_) *busy_ += __rdtsc() - start_;
  }

 private:
  uint64_t* busy_;
  uint64_t start_;
};
}  // namespace

namespace {

constexpr uint32_t kPioSpace = 0x10000;  // ports 0..0xffff

bool ValidPioSize(unsigned size) {
  return size == 1 || size == 2 || size == 4;
}
bool ValidMmioSize(unsigned size) {
  return size == 1 || size == 2 || size == 4 || size == 8;
}

// All ones in the low `size` bytes: what a floating bus returns.
uint64_t OnesMask(unsigned size) {
  return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

// "name [base, base+length)" for error messages; `end` is exclusive.
std::string Describe(const std::string& name, uint64_t base, uint64_t length) {
  return "'" + name + "' [" + Hex(base) + ", " + Hex(base + length) + ")";
}

}  // namespace

// --- PioBus -----------------------------------------------------------------

Status PioBus::Register(uint16_t base, uint16_t length, PioDevice* device, std::string name) {
  BTVM_CHECK(device != nullptr);
  if (length == 0) {
    return MakeError("pio: cannot register " + name + " at port " + Hex(base) + " with length 0");
  }
  if (uint32_t{base} + length > kPioSpace) {
    return MakeError("pio: range " + Describe(name, base, length) + " wraps past port 0xffff");
  }
  const uint32_t end = uint32_t{base} + length;
  // The first range starting at or after `base` must start at or after `end`.
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < end) {
    return MakeError("pio: range " + Describe(name, base, length) + " overlaps " +
                     Describe(next->second.name, next->first, next->second.length));
  }
  // The range starting before `base` must end at or before it.
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > base) {
      return MakeError("pio: range " + Describe(name, base, length) + " overlaps " +
                       Describe(prev->second.name, prev->first, prev->second.length));
    }
  }
  ranges_.emplace(base, Range{length, device, std::move(name)});
  return Ok{};
}

const PioBus::Range* PioBus::Find(uint16_t port, uint16_t* offset) const {
  auto it = ranges_.upper_bound(port);  // first range starting after `port`
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint32_t off = uint32_t{port} - it->first;
  if (off >= it->second.length) return nullptr;
  *offset = static_cast<uint16_t>(off);
  return &it->second;
}

// An access that runs past the end of a range goes whole to the device that
// holds its first port (with the offset of that port); the device decides what
// the bytes beyond its end mean.
uint32_t PioBus::Read(uint16_t port, unsigned size) {
  BTVM_CHECK(ValidPioSize(size));
  BusyTime busy(busy_);
  const auto mask = static_cast<uint32_t>(OnesMask(size));
  uint16_t offset = 0;
  const Range* r = Find(port, &offset);
  if (!r) return mask;
  return r->device->PioRead(offset, size) & mask;
}

void PioBus::Write(uint16_t port, unsigned size, uint32_t value) {
  BTVM_CHECK(ValidPioSize(size));
  BusyTime busy(busy_);
  uint16_t offset = 0;
  const Range* r = Find(port, &offset);
  if (!r) return;
  r->device->PioWrite(offset, size, value & static_cast<uint32_t>(OnesMask(size)));
}

// --- MmioBus ----------------------------------------------------------------

Status MmioBus::Register(GuestPhys base, uint64_t length, MmioDevice* device, std::string name) {
  BTVM_CHECK(device != nullptr);
  const uint64_t b = base.value;
  if (length == 0) {
    return MakeError("mmio: cannot register " + name + " at " + Hex(b) + " with length 0");
  }
  // [b, b+length) may end exactly at 2^64 but not beyond.
  if (length - 1 > ~uint64_t{0} - b) {
    return MakeError("mmio: range '" + name + "' at " + Hex(b) + " of length " + Hex(length) +
                     " wraps past the end of the physical address space");
  }
  // Comparisons are written as differences so that a range ending at 2^64
  // does not overflow.
  auto next = ranges_.lower_bound(b);
  if (next != ranges_.end() && next->first - b < length) {
    return MakeError("mmio: range " + Describe(name, b, length) + " overlaps " +
                     Describe(next->second.name, next->first, next->second.length));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (b - prev->first < prev->second.length) {
      return MakeError("mmio: range " + Describe(name, b, length) + " overlaps " +
                       Describe(prev->second.name, prev->first, prev->second.length));
    }
  }
  ranges_.emplace(b, Range{length, device, std::move(name)});
  return Ok{};
}

const MmioBus::Range* MmioBus::Find(GuestPhys addr, uint64_t* offset) const {
  auto it = ranges_.upper_bound(addr.value);
  if (it == ranges_.begin()) return nullptr;
  --it;
  const uint64_t off = addr.value - it->first;
  if (off >= it->second.length) return nullptr;
  *offset = off;
  return &it->second;
}

uint64_t MmioBus::Read(GuestPhys addr, unsigned size) {
  BTVM_CHECK(ValidMmioSize(size));
  BusyTime busy(busy_);
  const uint64_t mask = OnesMask(size);
  uint64_t offset = 0;
  const Range* r = Find(addr, &offset);
  if (!r) return mask;
  return r->device->MmioRead(offset, size) & mask;
}

void MmioBus::Write(GuestPhys addr, unsigned size, uint64_t value) {
  BTVM_CHECK(ValidMmioSize(size));
  BusyTime busy(busy_);
  uint64_t offset = 0;
  const Range* r = Find(addr, &offset);
  if (!r) return;
  r->device->MmioWrite(offset, size, value & OnesMask(size));
}

bool MmioBus::Claimed(GuestPhys addr) const {
  uint64_t offset = 0;
  return Find(addr, &offset) != nullptr;
}

}  // namespace btvm
