// PioBus and MmioBus: registration rules, routing by offset, unclaimed
// accesses.

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "devices/bus.h"

namespace btvm {
namespace {

struct Access {
  uint64_t offset;
  unsigned size;
  uint64_t value;
  bool operator==(const Access&) const = default;
};

// Records every access and answers reads with `read_value`.
class RecordingPioDevice final : public PioDevice {
 public:
  uint32_t PioRead(uint16_t offset, unsigned size) override {
    reads.push_back({offset, size, 0});
    return read_value;
  }
  void PioWrite(uint16_t offset, unsigned size, uint32_t value) override {
    writes.push_back({offset, size, value});
  }
  uint32_t read_value = 0x12345678;
  std::vector<Access> reads, writes;
};

class RecordingMmioDevice final : public MmioDevice {
 public:
  uint64_t MmioRead(uint64_t offset, unsigned size) override {
    reads.push_back({offset, size, 0});
    return read_value;
  }
  void MmioWrite(uint64_t offset, unsigned size, uint64_t value) override {
    writes.push_back({offset, size, value});
  }
  uint64_t read_value = 0x1122334455667788;
  std::vector<Access> reads, writes;
};

// --- PioBus -----------------------------------------------------------------

TEST(PioBusTest, UnclaimedReadsAreAllOnesOfTheAccessSize) {
  PioBus bus;
  EXPECT_EQ(bus.Read(0x80, 1), 0xffu);
  EXPECT_EQ(bus.Read(0x80, 2), 0xffffu);
  EXPECT_EQ(bus.Read(0x80, 4), 0xffffffffu);
  EXPECT_EQ(bus.Read(0xffff, 1), 0xffu);
  EXPECT_EQ(bus.Read(0x0000, 4), 0xffffffffu);
}

TEST(PioBusTest, UnclaimedWritesAreDropped) {
  PioBus bus;
  RecordingPioDevice dev;
  ASSERT_TRUE(bus.Register(0x100, 8, &dev, "dev"));
  bus.Write(0x0ff, 1, 0xaa);
  bus.Write(0x108, 4, 0xaabbccdd);
  EXPECT_TRUE(dev.writes.empty());
  EXPECT_EQ(bus.Read(0x108, 1), 0xffu);
  EXPECT_TRUE(dev.reads.empty());
}

TEST(PioBusTest, DeviceSeesOffsetsFromItsBase) {
  PioBus bus;
  RecordingPioDevice dev;
  ASSERT_TRUE(bus.Register(0x3f8, 8, &dev, "com1"));
  EXPECT_EQ(bus.Read(0x3f8, 1), 0x78u);
  EXPECT_EQ(bus.Read(0x3fd, 2), 0x5678u);
  EXPECT_EQ(bus.Read(0x3ff, 4), 0x12345678u);
  bus.Write(0x3fb, 1, 0x83);
  bus.Write(0x3f8, 2, 0x0c00);
  EXPECT_EQ(dev.reads, (std::vector<Access>{{0, 1, 0}, {5, 2, 0}, {7, 4, 0}}));
  EXPECT_EQ(dev.writes, (std::vector<Access>{{3, 1, 0x83}, {0, 2, 0x0c00}}));
}

TEST(PioBusTest, ReadValueIsMaskedToTheAccessSize) {
  PioBus bus;
  RecordingPioDevice dev;
  dev.read_value = 0xdeadbeef;  // a sloppy device returning more than asked
  ASSERT_TRUE(bus.Register(0x10, 4, &dev, "dev"));
  EXPECT_EQ(bus.Read(0x10, 1), 0xefu);
  EXPECT_EQ(bus.Read(0x10, 2), 0xbeefu);
  EXPECT_EQ(bus.Read(0x10, 4), 0xdeadbeefu);
}

TEST(PioBusTest, AccessStraddlingTheEndGoesToTheDeviceAtTheStartPort) {
  PioBus bus;
  RecordingPioDevice low, high;
  ASSERT_TRUE(bus.Register(0x60, 1, &low, "low"));
  ASSERT_TRUE(bus.Register(0x61, 1, &high, "high"));
  bus.Read(0x60, 4);
  bus.Write(0x60, 2, 0xbbaa);
  EXPECT_EQ(low.reads, (std::vector<Access>{{0, 4, 0}}));
  EXPECT_EQ(low.writes, (std::vector<Access>{{0, 2, 0xbbaa}}));
  EXPECT_TRUE(high.reads.empty());
  EXPECT_TRUE(high.writes.empty());
}

TEST(PioBusTest, ManyDevicesRouteToTheRightOne) {
  PioBus bus;
  RecordingPioDevice a, b, c;
  ASSERT_TRUE(bus.Register(0x20, 2, &a, "pic1"));
  ASSERT_TRUE(bus.Register(0xa0, 2, &b, "pic2"));
  ASSERT_TRUE(bus.Register(0x40, 4, &c, "pit"));
  bus.Write(0x21, 1, 1);
  bus.Write(0xa0, 1, 2);
  bus.Write(0x43, 1, 3);
  bus.Write(0x44, 1, 4);  // just past the PIT
  EXPECT_EQ(a.writes, (std::vector<Access>{{1, 1, 1}}));
  EXPECT_EQ(b.writes, (std::vector<Access>{{0, 1, 2}}));
  EXPECT_EQ(c.writes, (std::vector<Access>{{3, 1, 3}}));
}

TEST(PioBusTest, OverlappingRegistrationIsRefused) {
  PioBus bus;
  RecordingPioDevice a, b;
  ASSERT_TRUE(bus.Register(0x3f8, 8, &a, "com1"));

  struct Case {
    uint16_t base, length;
  };
  for (const Case c : {Case{0x3f8, 8}, Case{0x3f8, 1}, Case{0x3ff, 1}, Case{0x3f0, 9},
                       Case{0x3fc, 8}, Case{0x3f0, 0x20}, Case{0x3fa, 2}}) {
    Status s = bus.Register(c.base, c.length, &b, "intruder");
    ASSERT_FALSE(s) << std::hex << c.base << "+" << c.length;
    EXPECT_NE(s.error().message.find("overlaps"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("'intruder'"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("'com1'"), std::string::npos) << s.error().message;
  }
  // Neighbours that only touch are fine.
  EXPECT_TRUE(bus.Register(0x3f0, 8, &b, "below"));
  EXPECT_TRUE(bus.Register(0x400, 1, &b, "above"));
  // The refused registrations left no trace.
  EXPECT_EQ(bus.Read(0x3f8, 1), 0x78u);
  EXPECT_EQ(b.reads.size(), 0u);
}

TEST(PioBusTest, ZeroLengthAndWrappingRangesAreRefused) {
  PioBus bus;
  RecordingPioDevice dev;
  Status zero = bus.Register(0x80, 0, &dev, "empty");
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().message.find("length 0"), std::string::npos);

  Status wrap = bus.Register(0xfff0, 0x20, &dev, "wrapper");
  ASSERT_FALSE(wrap);
  EXPECT_NE(wrap.error().message.find("wraps"), std::string::npos) << wrap.error().message;

  // Ending exactly at the top of the port space is fine.
  EXPECT_TRUE(bus.Register(0xfff0, 0x10, &dev, "top"));
  bus.Read(0xffff, 1);
  EXPECT_EQ(dev.reads, (std::vector<Access>{{0xf, 1, 0}}));
}

// --- MmioBus ----------------------------------------------------------------

TEST(MmioBusTest, RegisterReadWriteWithOffsets) {
  MmioBus bus;
  RecordingMmioDevice apic;
  ASSERT_TRUE(bus.Register(GuestPhys(0xfee00000), 0x1000, &apic, "lapic"));
  EXPECT_EQ(bus.Read(GuestPhys(0xfee00020), 4), 0x55667788u);
  EXPECT_EQ(bus.Read(GuestPhys(0xfee00ff8), 8), 0x1122334455667788u);
  EXPECT_EQ(bus.Read(GuestPhys(0xfee00000), 1), 0x88u);
  EXPECT_EQ(bus.Read(GuestPhys(0xfee00000), 2), 0x7788u);
  bus.Write(GuestPhys(0xfee000b0), 4, 0);
  bus.Write(GuestPhys(0xfee00300), 8, 0x000000ff000c4500);
  EXPECT_EQ(apic.reads, (std::vector<Access>{{0x20, 4, 0}, {0xff8, 8, 0}, {0, 1, 0}, {0, 2, 0}}));
  EXPECT_EQ(apic.writes, (std::vector<Access>{{0xb0, 4, 0}, {0x300, 8, 0x000000ff000c4500}}));
}

TEST(MmioBusTest, UnclaimedAccesses) {
  MmioBus bus;
  RecordingMmioDevice dev;
  ASSERT_TRUE(bus.Register(GuestPhys(0xfec00000), 0x1000, &dev, "ioapic"));
  EXPECT_EQ(bus.Read(GuestPhys(0xfebfffff), 1), 0xffu);
  EXPECT_EQ(bus.Read(GuestPhys(0xfec01000), 2), 0xffffu);
  EXPECT_EQ(bus.Read(GuestPhys(0x1000), 4), 0xffffffffu);
  EXPECT_EQ(bus.Read(GuestPhys(0x1000), 8), ~uint64_t{0});
  bus.Write(GuestPhys(0xfec01000), 4, 1);
  EXPECT_TRUE(dev.reads.empty());
  EXPECT_TRUE(dev.writes.empty());
}

TEST(MmioBusTest, Claimed) {
  MmioBus bus;
  RecordingMmioDevice dev;
  ASSERT_TRUE(bus.Register(GuestPhys(0xfed00000), 0x400, &dev, "hpet"));
  EXPECT_FALSE(bus.Claimed(GuestPhys(0xfecfffff)));
  EXPECT_TRUE(bus.Claimed(GuestPhys(0xfed00000)));
  EXPECT_TRUE(bus.Claimed(GuestPhys(0xfed003ff)));
  EXPECT_FALSE(bus.Claimed(GuestPhys(0xfed00400)));
  EXPECT_FALSE(bus.Claimed(GuestPhys(0)));
}

TEST(MmioBusTest, OverlappingRegistrationIsRefused) {
  MmioBus bus;
  RecordingMmioDevice a, b;
  ASSERT_TRUE(bus.Register(GuestPhys(0xfee00000), 0x1000, &a, "lapic"));
  for (uint64_t base : {0xfedff800ull, 0xfee00000ull, 0xfee00800ull, 0xfee00fffull}) {
    Status s = bus.Register(GuestPhys(base), 0x1000, &b, "other");
    ASSERT_FALSE(s) << std::hex << base;
    EXPECT_NE(s.error().message.find("overlaps 'lapic'"), std::string::npos) << s.error().message;
  }
  EXPECT_FALSE(bus.Register(GuestPhys(0), ~uint64_t{0}, &b, "everything"));
  EXPECT_TRUE(bus.Register(GuestPhys(0xfedff000), 0x1000, &b, "below"));
  EXPECT_TRUE(bus.Register(GuestPhys(0xfee01000), 0x1000, &b, "above"));
}

TEST(MmioBusTest, ZeroLengthAndWrappingRangesAreRefused) {
  MmioBus bus;
  RecordingMmioDevice dev;
  EXPECT_FALSE(bus.Register(GuestPhys(0x1000), 0, &dev, "empty"));
  Status wrap = bus.Register(GuestPhys(0xfffffffffffff000), 0x2000, &dev, "wrapper");
  ASSERT_FALSE(wrap);
  EXPECT_NE(wrap.error().message.find("wraps"), std::string::npos) << wrap.error().message;
  // A range ending exactly at 2^64 is representable and allowed.
  ASSERT_TRUE(bus.Register(GuestPhys(0xfffffffffffff000), 0x1000, &dev, "top"));
  EXPECT_TRUE(bus.Claimed(GuestPhys(~uint64_t{0})));
  bus.Write(GuestPhys(0xfffffffffffffff8), 8, 42);
  EXPECT_EQ(dev.writes, (std::vector<Access>{{0xff8, 8, 42}}));
  // Nothing fits above it any more.
  EXPECT_FALSE(bus.Register(GuestPhys(0xffffffffffffffff), 1, &dev, "last byte"));
}

}  // namespace
}  // namespace btvm
