#pragma once
// Guest RAM: one memfd, mapped once into the monitor. The guest-physical map
// is RAM below the MMIO hole, the hole [3 GiB, 4 GiB) for devices, and the
// rest of RAM from 4 GiB up (as on a PC). The same memfd is what the direct
// engine maps into its child and the kvm engine registers as a memory slot.

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "base/types.h"

namespace btvm {

inline constexpr GuestPhys kMmioHoleStart{GiB(3)};
inline constexpr GuestPhys kMmioHoleEnd{GiB(4)};
inline constexpr uint64_t kMinGuestMemory = MiB(2);
inline constexpr uint64_t kMaxGuestMemory = GiB(64);

struct RamRegion {
  GuestPhys base;
  uint64_t size;
  uint64_t fd_offset;  // offset of this region in the memfd (and host mapping)
};

class GuestMemory {
 public:
  // Fails (with a user-facing message) if size is not a multiple of 4 KiB or
  // lies outside [kMinGuestMemory, kMaxGuestMemory], or if the host refuses.
  static Result<GuestMemory> Create(uint64_t size);

  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  std::span<const RamRegion> regions() const { return regions_; }
  // One past the highest RAM address.
  GuestPhys Top() const;

  // True if [addr, addr+len) lies entirely inside one RAM region.
  bool IsRam(GuestPhys addr, uint64_t len) const;

  // Host pointer to [addr, addr+len), or nullptr unless the range lies
  // entirely inside one RAM region. The only way from a guest-physical
  // address to a host address: every caller goes through this check.
  uint8_t* HostPointer(GuestPhys addr, uint64_t len);
  const uint8_t* HostPointer(GuestPhys addr, uint64_t len) const;

  // The guest-physical address of a host pointer HostPointer returned.
  bool PhysOf(const uint8_t* host, GuestPhys* out) const;

  // Copy in and out; fail unless the whole range is RAM.
  Status Write(GuestPhys addr, std::span<const uint8_t> bytes);
  Status Read(GuestPhys addr, std::span<uint8_t> bytes) const;

  template <typename T>
  bool WriteValue(GuestPhys addr, const T& v) {
    uint8_t* p = HostPointer(addr, sizeof(T));
    if (!p) return false;
    __builtin_memcpy(p, &v, sizeof(T));
    return true;
  }
  template <typename T>
  bool ReadValue(GuestPhys addr, T* v) const {
    const uint8_t* p = HostPointer(addr, sizeof(T));
    if (!p) return false;
    __builtin_memcpy(v, p, sizeof(T));
    return true;
  }

 private:
  GuestMemory() = default;
  void Release();

  int fd_ = -1;
  uint8_t* host_ = nullptr;  // the whole memfd, regions back to back
  uint64_t size_ = 0;
  std::vector<RamRegion> regions_;
};

}  // namespace btvm
