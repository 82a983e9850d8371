#pragma once
// Helpers for devices whose registers are bytes at consecutive ports (PIC,
// PIT): an access wider than a byte is split into byte accesses at
// consecutive offsets, as QEMU's memory core splits them for such devices.
// Bytes beyond the device's ports read as a floating bus (0xff) and are
// dropped on write.

#include <cstdint>

namespace btvm {

template <typename ReadByte>
uint32_t ReadByteWise(uint16_t offset, unsigned size, unsigned port_count, ReadByte read_byte) {
  uint32_t value = 0;
  for (unsigned i = 0; i < size; ++i) {
    const unsigned port = offset + i;
    const uint32_t byte = port < port_count ? uint32_t{read_byte(port)} : 0xffu;
    value |= byte << (8 * i);
  }
  return value;
}

template <typename WriteByte>
void WriteByteWise(uint16_t offset, unsigned size, uint32_t value, unsigned port_count,
                   WriteByte write_byte) {
  for (unsigned i = 0; i < size; ++i) {
    const unsigned port = offset + i;
    if (port < port_count) write_byte(port, static_cast<uint8_t>(value >> (8 * i)));
  }
}

}  // namespace btvm
