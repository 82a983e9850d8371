#pragma once
// The entry block the child fills before jumping into a snippet, and the
// assembly stub that loads it (native_entry.S). Shared between C++ and the
// assembler, so the offsets are macros; native_runner.cpp pins them with
// static_asserts against the C++ struct.

#define BTVM_NATIVE_FXSAVE 0     // 512-byte FXSAVE image: XMM0-15, MXCSR, x87 reset state
#define BTVM_NATIVE_GPR 512      // 16 GPRs in encoding order
#define BTVM_NATIVE_RFLAGS 640   // RFLAGS, popped by popfq through a temporary RSP
#define BTVM_NATIVE_TARGET 648   // the snippet's first byte
#define BTVM_NATIVE_HAS_AVX 656  // non-zero: clear the YMM upper halves first
#define BTVM_NATIVE_BLOCK_SIZE 704

#ifndef __ASSEMBLER__
#include <cstdint>

namespace btvm::native::detail {

struct alignas(64) EntryBlock {
  uint8_t fxsave[512];
  uint64_t gpr[16];
  uint64_t rflags;
  uint64_t target;
  uint64_t has_avx;
};

}  // namespace btvm::native::detail

extern "C" {
// Child-only state, in btvm_native_server: written by a forked child after
// fork() and read by the stub in that child. The server never writes it, so
// each child has its own copy.
__attribute__((visibility("hidden"))) extern btvm::native::detail::EntryBlock btvm_native_block;
// Loads every register from btvm_native_block and jumps to its target.
// Never returns: the snippet ends in a signal (its int3 terminator or a fault).
__attribute__((visibility("hidden"))) [[noreturn]] void btvm_native_enter();
}
#endif
