// isa-debug-exit at 0xf4, driven through the bus as a guest test kernel
// (kvm-unit-tests' exit(code)) drives it.

#include "devices/debug_exit.h"

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "tests/unit/devices/fakes.h"

namespace btvm {
namespace {

class DebugExitTest : public ::testing::Test {
 protected:
  DebugExitTest() : dev_(&system_) {
    Status s = bus_.Register(DebugExit::kIoBase, DebugExit::kIoSize, &dev_, "isa-debug-exit");
    BTVM_CHECK(s.ok());
  }

  testing::RecordingSystem system_;
  DebugExit dev_;
  PioBus bus_;
};

TEST_F(DebugExitTest, ByteWritesExitWithShiftedStatus) {
  struct Case {
    uint32_t value;
    int status;
  };
  for (const Case c : {Case{0x00, 1}, Case{0x01, 3}, Case{0x10, 0x21}, Case{0x11, 0x23},
                       Case{0x7f, 0xff}, Case{0xff, 0x1ff}}) {
    system_.exits.clear();
    bus_.Write(0xf4, 1, c.value);
    EXPECT_EQ(system_.exits, std::vector<int>{c.status}) << c.value;
  }
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(system_.power_offs, 0);
}

TEST_F(DebugExitTest, WideWritesUseTheWholeValue) {
  bus_.Write(0xf4, 2, 0x1234);
  bus_.Write(0xf4, 4, 0x00abcdef);
  EXPECT_EQ(system_.exits, (std::vector<int>{0x2469, 0x0157'9bdf}));
}

TEST_F(DebugExitTest, ValuesAreTruncatedToTheAccessSize) {
  bus_.Write(0xf4, 1, 0x1234);  // only the low byte reaches the port
  EXPECT_EQ(system_.exits, std::vector<int>{0x69});
}

TEST_F(DebugExitTest, StatusForLargeValuesWrapsLikeQemu) {
  EXPECT_EQ(DebugExit::StatusFor(0x7fffffff), -1);  // 0xffffffff as int
  EXPECT_EQ(DebugExit::StatusFor(0xffffffff), -1);  // bit 32 is lost
  EXPECT_EQ(DebugExit::StatusFor(0x40000000), static_cast<int>(0x80000001u));
}

TEST_F(DebugExitTest, EveryPortOfTheRangeExits) {
  for (uint16_t port = 0xf4; port < 0xf8; ++port) bus_.Write(port, 1, 2);
  EXPECT_EQ(system_.exits, (std::vector<int>{5, 5, 5, 5}));
  bus_.Write(0xf8, 1, 2);  // past the range: unclaimed
  bus_.Write(0xf3, 1, 2);
  EXPECT_EQ(system_.exits.size(), 4u);
}

TEST_F(DebugExitTest, ReadsReturnZeroAsInQemu) {
  EXPECT_EQ(bus_.Read(0xf4, 1), 0u);
  EXPECT_EQ(bus_.Read(0xf4, 2), 0u);
  EXPECT_EQ(bus_.Read(0xf4, 4), 0u);
  EXPECT_EQ(bus_.Read(0xf7, 1), 0u);
  EXPECT_EQ(bus_.Read(0xf8, 1), 0xffu);  // unclaimed neighbour
  EXPECT_TRUE(system_.exits.empty());
}

}  // namespace
}  // namespace btvm
