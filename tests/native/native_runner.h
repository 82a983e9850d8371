#pragma once
// Native runner: executes a snippet of x86-64 machine code on the host CPU,
// in a child process, from a given register and memory state, and returns
// the final state. It is the hardware reference for differential tests of
// instruction semantics (STYLE.md habit 9): the same snippet runs here and
// on btvm's engines, and the final states are compared.
//
// Contract:
//  - The snippet runs in a fresh fork of btvm_native_server, a small static
//    helper process that the runner spawns on first use (one per caller
//    running concurrently) and keeps until the caller exits; never in the
//    caller's address space. The code is mapped read+execute at
//    `code_address`, followed by an `int3` terminator; the bytes that fill
//    the rest of the code pages are `int3` too. Falling off the end of the
//    snippet is a normal end (signal == 0).
//  - Every GPR, including RSP, is loaded from `initial`; the snippet may use
//    any register. Signals are handled on an alternate stack.
//  - Each MemoryRegion is mapped at its address; a region (or the code pages)
//    that overlaps a mapping of the calling process (or of the server) is
//    refused with an error.
//  - Once the snippet runs, a seccomp filter turns every system call into
//    SIGSYS (reported like a fault) so that a snippet cannot touch the host.
//  - Guest events (faults, traps) are values in RunResult; only problems of
//    the runner itself (bad input, collision, timeout, child crash) are
//    errors. The server needs no help from the caller: it is found at the
//    path the build recorded (BTVM_NATIVE_SERVER_PATH).
//
// Limitations: FS/GS bases are the host's (the server's TLS), so fs:/gs:
// loads see host data; x87 state starts at its reset value (FCW 0x37f, empty
// stack) and is not returned; YMM upper halves start zeroed and are not
// returned; AVX-512 state (zmm16-31, k0-7) is the host's; the code pages are
// not writable, so self-modifying snippets fault. RSP should hold a canonical address while
// the snippet runs: the kernel's IRET back to user mode after an interrupt
// faults on a non-canonical RSP (seen on AMD EPYC), which surfaces as SIGSEGV
// with trap 13 at whatever instruction was interrupted.

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace btvm::native {

// Addresses from 0x10000000 up to 0x7fffffff are far from where Linux places a
// PIE executable (0x55..., 0x56...), its heap, shared libraries and stacks
// (0x7f...), so snippets and their data can live there.
inline constexpr uint64_t kDefaultCodeAddress = 0x10000000;
inline constexpr std::chrono::milliseconds kDefaultTimeout{2000};

enum class Access : uint8_t {
  kReadWrite,  // the default: data and stacks
  kReadOnly,   // a write faults with SIGSEGV, error code 7
  kNone,       // any access faults; contents are returned unchanged
};

struct MemoryRegion {
  uint64_t address = 0;        // page-aligned
  std::vector<uint8_t> bytes;  // size a non-zero multiple of 4096
  Access access = Access::kReadWrite;
};

struct MachineState {
  uint64_t gpr[16] = {};  // x86 encoding order: rax rcx rdx rbx rsp rbp rsi rdi r8..r15
  // On input CF PF AF ZF SF OF and DF are honoured, bit 1 is forced to 1 and
  // the other bits to 0 (TF or AC would make the host trap). On output the
  // host's full RFLAGS as the kernel reports it.
  uint64_t rflags = 0x2;
  alignas(16) uint8_t xmm[16][16] = {};
  uint32_t mxcsr = 0x1f80;  // reserved bits set are an input error
  std::vector<MemoryRegion> memory;
};

struct RunResult {
  MachineState final;  // registers and the contents of every input region after the run
  int signal = 0;      // 0: ran to its end; else the host signal that stopped it (SIGSEGV, SIGBUS,
                       // SIGFPE, SIGILL, SIGTRAP, or SIGSYS for a system call)
  uint64_t fault_address = 0;  // si_addr for SIGSEGV/SIGBUS (0 for a #GP)
  // RIP where execution stopped, minus code_address. For faults (#DE, #UD,
  // #PF, #GP...) the offset of the faulting instruction; for traps (int3,
  // single step, syscall) the offset of the next instruction; code.size()
  // on a normal end.
  uint64_t fault_rip_offset = 0;
  uint64_t rip = 0;                          // the absolute RIP behind fault_rip_offset
  uint64_t trap_number = 0, error_code = 0;  // ucontext REG_TRAPNO / REG_ERR when signalled
};

// Runs `code` at `code_address` (any address; its pages must be free in the
// host) starting from `initial`. Waits at most `timeout` for the snippet; on
// timeout the child is killed and the error is "snippet timed out".
Result<RunResult> RunNative(std::span<const uint8_t> code, const MachineState& initial,
                            uint64_t code_address = kDefaultCodeAddress,
                            std::chrono::milliseconds timeout = kDefaultTimeout);

}  // namespace btvm::native
