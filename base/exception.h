#pragma once
// A guest exception as a value (guest events are values, not host errors).

#include <cstdint>

namespace btvm {

// Exception vectors (SDM Vol. 3 §6.3.1).
enum Vector : uint8_t {
  kDE = 0, kDB = 1, kNMI = 2, kBP = 3, kOF = 4, kBR = 5, kUD = 6, kNM = 7, kDF = 8,
  kTS = 10, kNP = 11, kSS = 12, kGP = 13, kPF = 14, kMF = 16, kAC = 17, kMC = 18,
  kXM = 19, kVE = 20, kCP = 21
};

struct GuestException {
  uint8_t vector = 0;
  bool has_error_code = false;
  uint32_t error_code = 0;
  uint64_t cr2 = 0;  // the faulting address, for #PF

  static GuestException PageFault(uint64_t address, uint32_t error_code) {
    return {kPF, true, error_code, address};
  }
  static GuestException Gp(uint32_t error_code = 0) { return {kGP, true, error_code, 0}; }
  static GuestException Ud() { return {kUD, false, 0, 0}; }
};

}  // namespace btvm
