#pragma once
// Test doubles for the device tests: an interrupt controller that records
// every level change and a machine that records exit/reset requests.

#include <cstdint>
#include <vector>

#include "devices/bus.h"

namespace btvm::testing {

class RecordingIrqSink final : public IrqSink {
 public:
  struct Change {
    unsigned line;
    bool level;
    bool operator==(const Change&) const = default;
  };

  void SetIrqLevel(unsigned line, bool level) override {
    changes.push_back({line, level});
    if (line < 16) levels[line] = level;
  }
  bool Level(unsigned line) const { return levels[line]; }

  std::vector<Change> changes;
  bool levels[16] = {};
};

class RecordingSystem final : public SystemControl {
 public:
  void RequestExit(int status) override { exits.push_back(status); }
  void RequestReset() override { ++resets; }
  void RequestPowerOff() override { ++power_offs; }

  std::vector<int> exits;
  int resets = 0;
  int power_offs = 0;
};

}  // namespace btvm::testing
