#pragma once
// Operands on the BtContext. Translated code reaches the context through
// the GS segment: the thread that runs it has GS base = its BtContext (set
// by CodeCache::Enter), which leaves every host GPR but RSP to guest
// registers (host r15 holds guest RSP; see bt_context.h).

#include <asmjit/x86.h>

#include <cstdint>

namespace btvm {

// gs:[offset], `size` bytes (0: taken from the other operand).
inline asmjit::x86::Mem CtxPtr(int32_t offset, uint32_t size = 0) {
  asmjit::x86::Mem m = asmjit::x86::ptr_abs(static_cast<uint64_t>(static_cast<int64_t>(offset)), size);
  m.setSegment(asmjit::x86::gs);
  return m;
}

// gs:[index << shift + offset].
inline asmjit::x86::Mem CtxPtr(const asmjit::x86::Gp& index, uint32_t shift, int32_t offset,
                               uint32_t size = 0) {
  asmjit::x86::Mem m =
      shift == 0 ? asmjit::x86::ptr(index, offset, size)
                 : asmjit::x86::ptr_abs(static_cast<uint64_t>(static_cast<int64_t>(offset)), index,
                                        shift, size);
  m.setSegment(asmjit::x86::gs);
  return m;
}

}  // namespace btvm
