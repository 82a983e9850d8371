#include "mmu/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace btvm {

Result<GuestMemory> GuestMemory::Create(uint64_t size) {
  if (size % kPageSize != 0) {
    return MakeError("guest memory size must be a multiple of 4 KiB");
  }
  if (size < kMinGuestMemory || size > kMaxGuestMemory) {
    return MakeError("guest memory size must be between 2 MiB and 64 GiB");
  }
  GuestMemory mem;
  mem.fd_ = memfd_create("btvm-guest-ram", MFD_CLOEXEC);
  if (mem.fd_ < 0) {
    return MakeError(std::string("cannot create guest memory: ") + std::strerror(errno));
  }
  if (ftruncate(mem.fd_, static_cast<off_t>(size)) != 0) {
    return MakeError(std::string("cannot size guest memory: ") + std::strerror(errno));
  }
  // MAP_NORESERVE: RAM is populated on first touch, as on a real machine's
  // untouched DIMMs; a 4 GiB guest that uses 100 MiB costs 100 MiB.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, mem.fd_, 0);
  if (p == MAP_FAILED) {
    return MakeError(std::string("cannot map guest memory: ") + std::strerror(errno));
  }
  mem.host_ = static_cast<uint8_t*>(p);
  mem.size_ = size;
  uint64_t low = size < kMmioHoleStart.value ? size : kMmioHoleStart.value;
  mem.regions_.push_back({GuestPhys(0), low, 0});
  if (size > low) mem.regions_.push_back({kMmioHoleEnd, size - low, low});
  return mem;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept { *this = std::move(other); }

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = std::exchange(other.fd_, -1);
    host_ = std::exchange(other.host_, nullptr);
    size_ = std::exchange(other.size_, 0);
    regions_ = std::move(other.regions_);
  }
  return *this;
}

GuestMemory::~GuestMemory() { Release(); }

void GuestMemory::Release() {
  if (host_) munmap(host_, size_);
  if (fd_ >= 0) close(fd_);
  host_ = nullptr;
  fd_ = -1;
}

GuestPhys GuestMemory::Top() const {
  const RamRegion& r = regions_.back();
  return r.base + r.size;
}

bool GuestMemory::IsRam(GuestPhys addr, uint64_t len) const {
  return HostPointer(addr, len) != nullptr;
}

const uint8_t* GuestMemory::HostPointer(GuestPhys addr, uint64_t len) const {
  for (const RamRegion& r : regions_) {
    // Written to be overflow-free for any guest-supplied addr and len.
    if (addr.value >= r.base.value && addr.value - r.base.value <= r.size &&
        len <= r.size - (addr.value - r.base.value)) {
      return host_ + r.fd_offset + (addr.value - r.base.value);
    }
  }
  return nullptr;
}

bool GuestMemory::PhysOf(const uint8_t* host, GuestPhys* out) const {
  for (const RamRegion& r : regions_) {
    const uint8_t* base = host_ + r.fd_offset;
    if (host >= base && host < base + r.size) {
      *out = GuestPhys(r.base.value + static_cast<uint64_t>(host - base));
      return true;
    }
  }
  return false;
}

uint8_t* GuestMemory::HostPointer(GuestPhys addr, uint64_t len) {
  return const_cast<uint8_t*>(std::as_const(*this).HostPointer(addr, len));
}

Status GuestMemory::Write(GuestPhys addr, std::span<const uint8_t> bytes) {
  uint8_t* p = HostPointer(addr, bytes.size());
  if (!p) return MakeError("write outside guest RAM");
  std::memcpy(p, bytes.data(), bytes.size());
  return Ok{};
}

Status GuestMemory::Read(GuestPhys addr, std::span<uint8_t> bytes) const {
  const uint8_t* p = HostPointer(addr, bytes.size());
  if (!p) return MakeError("read outside guest RAM");
  std::memcpy(bytes.data(), p, bytes.size());
  return Ok{};
}

}  // namespace btvm
