// The i8042 keyboard controller at ports 0x60/0x64, driven through the bus
// the way firmware and Linux's i8042 driver and reboot code drive it.

#include "devices/i8042.h"

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "devices/bus.h"
#include "tests/unit/devices/fakes.h"

namespace btvm {
namespace {

constexpr uint16_t kData = 0x60, kCmd = 0x64;
constexpr uint8_t kObf = 0x01, kSys = 0x04, kAuxData = 0x20;

class I8042Test : public ::testing::Test {
 protected:
  I8042Test() : kbc_(&system_) { BTVM_CHECK(kbc_.RegisterOn(bus_).ok()); }

  uint8_t In(uint16_t port) { return static_cast<uint8_t>(bus_.Read(port, 1)); }
  void Out(uint16_t port, uint8_t value) { bus_.Write(port, 1, value); }
  // Issue a controller command and read its one-byte answer.
  uint8_t Query(uint8_t command) {
    Out(kCmd, command);
    EXPECT_EQ(In(kCmd) & kObf, kObf) << "no answer to " << int{command};
    return In(kData);
  }

  testing::RecordingSystem system_;
  I8042 kbc_;
  PioBus bus_;
};

TEST_F(I8042Test, StatusSaysNoDataInputEmptySystemFlag) {
  const uint8_t status = In(kCmd);
  EXPECT_EQ(status & 0x03, 0);  // OBF and IBF clear
  EXPECT_EQ(status & kSys, kSys);
  EXPECT_EQ(status, 0x14);  // plus "not inhibited", as QEMU reports
  EXPECT_NE(status, 0xff);  // Linux's i8042_controller_check(): a controller is here
}

TEST_F(I8042Test, PortsBetweenDataAndStatusAreLeftFree) {
  EXPECT_EQ(In(0x61), 0xff);
  EXPECT_EQ(In(0x62), 0xff);
  EXPECT_EQ(In(0x63), 0xff);
  EXPECT_EQ(In(0x65), 0xff);
  // Another device (the PIT's port B) can take 0x61.
  I8042 other(&system_);
  EXPECT_TRUE(bus_.Register(0x61, 1, &other.data_port(), "port-b"));
}

TEST_F(I8042Test, RegisteringTwiceIsRefused) {
  I8042 second(&system_);
  EXPECT_FALSE(second.RegisterOn(bus_));
}

TEST_F(I8042Test, ResetCommandPulsesTheResetLine) {
  Out(kCmd, 0xfe);
  EXPECT_EQ(system_.resets, 1);
  EXPECT_TRUE(system_.exits.empty());
}

TEST_F(I8042Test, PulseCommandsResetOnlyWhenBit0IsPulsed) {
  Out(kCmd, 0xff);  // pulse nothing
  Out(kCmd, 0xfd);  // pulse bit 1 only
  Out(kCmd, 0xf1);
  EXPECT_EQ(system_.resets, 0);
  Out(kCmd, 0xf0);  // pulse bits 0-3
  Out(kCmd, 0xfa);
  EXPECT_EQ(system_.resets, 2);
}

TEST_F(I8042Test, ReadOutputPort) {
  EXPECT_EQ(Query(0xd0), 0xcf);  // reset line high, A20 on
  EXPECT_EQ(In(kCmd) & kObf, 0);
}

TEST_F(I8042Test, WriteOutputPortWithBit0ClearResets) {
  Out(kCmd, 0xd1);
  Out(kData, 0xcf);
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(kbc_.output_port(), 0xcf);
  Out(kCmd, 0xd1);
  Out(kData, 0xce);
  EXPECT_EQ(system_.resets, 1);
  EXPECT_EQ(Query(0xd0), 0xce);
}

TEST_F(I8042Test, A20Commands) {
  Out(kCmd, 0xdd);
  EXPECT_EQ(Query(0xd0), 0xcd);
  Out(kCmd, 0xdf);
  EXPECT_EQ(Query(0xd0), 0xcf);
  EXPECT_EQ(system_.resets, 0);
}

TEST_F(I8042Test, SelfAndPortTests) {
  EXPECT_EQ(Query(0xaa), 0x55);
  EXPECT_EQ(Query(0xab), 0x00);
  EXPECT_EQ(Query(0xa9), 0x00);
  EXPECT_EQ(Query(0xc0), 0x80);
  EXPECT_EQ(In(kCmd) & kSys, kSys);
}

TEST_F(I8042Test, CommandByteReadWrite) {
  EXPECT_EQ(Query(0x20), 0x03);
  Out(kCmd, 0x60);
  Out(kData, 0x65);
  EXPECT_EQ(kbc_.command_byte(), 0x65);
  EXPECT_EQ(Query(0x20), 0x65);
  // Linux's AUX bit-assignment test: 0xa7 sets and 0xa8 clears bit 5.
  Out(kCmd, 0xa8);
  EXPECT_EQ(Query(0x20) & 0x20, 0);
  Out(kCmd, 0xa7);
  EXPECT_EQ(Query(0x20) & 0x20, 0x20);
  Out(kCmd, 0xad);
  EXPECT_EQ(Query(0x20) & 0x10, 0x10);
  Out(kCmd, 0xae);
  EXPECT_EQ(Query(0x20) & 0x10, 0);
}

TEST_F(I8042Test, WriteOutputBufferCommandsEcho) {
  Out(kCmd, 0xd2);
  Out(kData, 0x5a);
  EXPECT_EQ(In(kCmd) & (kObf | kAuxData), kObf);
  EXPECT_EQ(In(kData), 0x5a);
  Out(kCmd, 0xd3);  // Linux's AUX loopback probe
  Out(kData, 0xa5);
  EXPECT_EQ(In(kCmd) & (kObf | kAuxData), kObf | kAuxData);
  EXPECT_EQ(In(kData), 0xa5);
  EXPECT_EQ(In(kCmd) & (kObf | kAuxData), 0);
}

TEST_F(I8042Test, AnswersQueueInOrderAndLastByteRepeats) {
  Out(kCmd, 0xaa);
  Out(kCmd, 0x20);
  EXPECT_EQ(In(kData), 0x55);
  EXPECT_EQ(In(kCmd) & kObf, kObf);
  EXPECT_EQ(In(kData), 0x03);
  EXPECT_EQ(In(kCmd) & kObf, 0);
  EXPECT_EQ(In(kData), 0x03);  // an empty buffer reads its last byte again
}

TEST_F(I8042Test, DataForAbsentKeyboardOrMouseIsDropped) {
  Out(kData, 0xff);  // keyboard reset: nobody answers
  Out(kCmd, 0xd4);
  Out(kData, 0xf4);  // mouse enable: nobody answers
  EXPECT_EQ(In(kCmd) & kObf, 0);
  EXPECT_EQ(system_.resets, 0);
  EXPECT_EQ(kbc_.command_byte(), 0x03);
}

TEST_F(I8042Test, WideAccessUsesTheLowByte) {
  Out(kCmd, 0xaa);
  EXPECT_EQ(bus_.Read(kCmd, 2), 0xff15u);  // status in the low byte, OBF set
  EXPECT_EQ(bus_.Read(kData, 4), 0xffffff55u);
  bus_.Write(kCmd, 2, 0x12fe);
  EXPECT_EQ(system_.resets, 1);
}

TEST_F(I8042Test, ResetRestoresPowerOnState) {
  Out(kCmd, 0x60);
  Out(kData, 0x00);
  Out(kCmd, 0xd1);
  Out(kData, 0xce);
  Out(kCmd, 0xaa);
  kbc_.Reset();
  EXPECT_EQ(In(kCmd), 0x14);
  EXPECT_EQ(kbc_.command_byte(), 0x03);
  EXPECT_EQ(kbc_.output_port(), 0xcf);
}

}  // namespace
}  // namespace btvm
