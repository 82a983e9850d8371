#pragma once
// Strong address types: guest-virtual, guest-physical and host addresses are
// different types so that mixing them (the classic MMU bug) does not compile.

#include <compare>
#include <cstddef>
#include <cstdint>

namespace btvm {

template <typename Tag>
struct Address {
  uint64_t value = 0;

  constexpr Address() = default;
  constexpr explicit Address(uint64_t v) : value(v) {}
  constexpr auto operator<=>(const Address&) const = default;
  constexpr Address operator+(uint64_t off) const { return Address(value + off); }
  constexpr Address operator-(uint64_t off) const { return Address(value - off); }
  constexpr uint64_t operator-(Address other) const { return value - other.value; }
  constexpr Address PageBase() const { return Address(value & ~uint64_t{0xfff}); }
  constexpr uint64_t PageOffset() const { return value & 0xfff; }
};

struct GuestVirtTag {};
struct GuestPhysTag {};
using GuestVirt = Address<GuestVirtTag>;  // what guest instructions use
using GuestPhys = Address<GuestPhysTag>;  // what guest page tables produce

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kPageMask = ~(kPageSize - 1);

inline constexpr uint64_t KiB(uint64_t n) { return n << 10; }
inline constexpr uint64_t MiB(uint64_t n) { return n << 20; }
inline constexpr uint64_t GiB(uint64_t n) { return n << 30; }

}  // namespace btvm
