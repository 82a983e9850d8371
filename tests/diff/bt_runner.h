#pragma once
// Runs a snippet on btvm's bt engine in the address space the native runner
// gives it (tests/native/native_runner.h): code at kCodeAddress, every memory
// region at its own virtual address, so that both sides see the same
// addresses. The harness around the snippet is a minimal long-mode machine:
//
//   - page tables mapping the code (read+execute), the regions (read-write,
//     read-only or absent, never executable), and the harness pages below
//     64 KiB for the supervisor only;
//   - a GDT with kernel and user code and data segments and a TSS, an IDT
//     whose 32 exception gates all switch to IST1 (so no frame lands on the
//     snippet's stack) and point at a `hlt` per vector;
//   - CPL0: the snippet ends in `hlt`, which stops the engine (kHalt);
//     CPL3: the same `hlt` raises #GP(0), whose handler halts. A fault in
//     the snippet halts in its vector's handler; the interrupt frame on the
//     IST stack then holds the guest RIP, RFLAGS and RSP.
//
// Only the public engine API is used (BtEngine, CpuState, GuestMemory): the
// translator behind it is free to change.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/result.h"
#include "tests/native/native_runner.h"

namespace btvm::diff {

// How one run ended, on either side, in the same terms.
struct Outcome {
  enum Kind : uint8_t {
    kEnd,    // ran to the end of the snippet
    kFault,  // stopped at a guest exception
    kError,  // the runner or the engine could not go on: `message`
  } kind = kEnd;
  uint8_t vector = 0;          // kFault
  uint64_t rip_offset = 0;     // kFault: the faulting RIP (after a trap) - kCodeAddress
  uint32_t error_code = 0;     // kFault
  uint64_t fault_address = 0;  // kFault, #PF: CR2 (bt) or si_addr (native)
  std::string message;
  native::MachineState state;  // GPRs, RFLAGS, XMM, MXCSR, region contents
};

class BtRunner {
 public:
  static Result<std::unique_ptr<BtRunner>> Create();
  ~BtRunner();
  BtRunner(const BtRunner&) = delete;
  BtRunner& operator=(const BtRunner&) = delete;

  // Runs `code` from `initial` at CPL `cpl` (0 or 3). A host signal raised
  // by translated code (a translator bug) is caught and reported as kError,
  // as is a run that takes longer than a second.
  Outcome Run(std::span<const uint8_t> code, const native::MachineState& initial, unsigned cpl);

 private:
  struct Impl;
  explicit BtRunner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The same run on the host CPU, as an Outcome.
Outcome RunNativeOutcome(std::span<const uint8_t> code, const native::MachineState& initial);

}  // namespace btvm::diff
