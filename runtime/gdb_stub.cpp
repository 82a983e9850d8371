#include "runtime/gdb_stub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "base/format.h"

namespace btvm {
namespace {

// The registers btvm shows gdb, in the order of its target description
// (TargetXml) and of the 'g' packet: gdb's amd64 core, SSE and segment-base
// features, then the system registers. Each is `bytes` wide on the wire,
// little-endian, at `offset` in CpuState (x87 and SSE ones in the FXSAVE
// image of CpuState::xsave); `writable` ones gdb may set.
struct GdbReg {
  const char* name;
  const char* feature;  // org.gnu.gdb.i386.<feature>, or org.btvm.<feature>
  const char* type;
  unsigned bytes;       // on the wire
  unsigned size;        // in CpuState (<= bytes; the rest reads as 0)
  size_t offset;
  bool writable;
};

constexpr size_t Gpr(int i) { return offsetof(CpuState, gpr) + 8 * static_cast<size_t>(i); }
constexpr size_t Sel(int i) {
  return offsetof(CpuState, seg) + sizeof(SegmentReg) * static_cast<size_t>(i) +
         offsetof(SegmentReg, selector);
}
constexpr size_t Fx(size_t at) { return offsetof(CpuState, xsave) + at; }  // FXSAVE layout
constexpr size_t Base(int i) {
  return offsetof(CpuState, seg) + sizeof(SegmentReg) * static_cast<size_t>(i) +
         offsetof(SegmentReg, base);
}

// (The x87 instruction and data pointers in 64-bit FXSAVE format: fioff and
// fooff are their low halves; fiseg, foseg read as 0.)
constexpr GdbReg kRegs[] = {
    {"rax", "core", "int64", 8, 8, Gpr(kRax), true},
    {"rbx", "core", "int64", 8, 8, Gpr(kRbx), true},
    {"rcx", "core", "int64", 8, 8, Gpr(kRcx), true},
    {"rdx", "core", "int64", 8, 8, Gpr(kRdx), true},
    {"rsi", "core", "int64", 8, 8, Gpr(kRsi), true},
    {"rdi", "core", "int64", 8, 8, Gpr(kRdi), true},
    {"rbp", "core", "data_ptr", 8, 8, Gpr(kRbp), true},
    {"rsp", "core", "data_ptr", 8, 8, Gpr(kRsp), true},
    {"r8", "core", "int64", 8, 8, Gpr(kR8), true},
    {"r9", "core", "int64", 8, 8, Gpr(kR9), true},
    {"r10", "core", "int64", 8, 8, Gpr(kR10), true},
    {"r11", "core", "int64", 8, 8, Gpr(kR11), true},
    {"r12", "core", "int64", 8, 8, Gpr(kR12), true},
    {"r13", "core", "int64", 8, 8, Gpr(kR13), true},
    {"r14", "core", "int64", 8, 8, Gpr(kR14), true},
    {"r15", "core", "int64", 8, 8, Gpr(kR15), true},
    {"rip", "core", "code_ptr", 8, 8, offsetof(CpuState, rip), true},
    {"eflags", "core", "int32", 4, 4, offsetof(CpuState, rflags), true},
    {"cs", "core", "int32", 4, 2, Sel(kCs), false},
    {"ss", "core", "int32", 4, 2, Sel(kSs), false},
    {"ds", "core", "int32", 4, 2, Sel(kDs), false},
    {"es", "core", "int32", 4, 2, Sel(kEs), false},
    {"fs", "core", "int32", 4, 2, Sel(kFs), false},
    {"gs", "core", "int32", 4, 2, Sel(kGs), false},
    {"st0", "core", "i387_ext", 10, 10, Fx(32), true},
    {"st1", "core", "i387_ext", 10, 10, Fx(48), true},
    {"st2", "core", "i387_ext", 10, 10, Fx(64), true},
    {"st3", "core", "i387_ext", 10, 10, Fx(80), true},
    {"st4", "core", "i387_ext", 10, 10, Fx(96), true},
    {"st5", "core", "i387_ext", 10, 10, Fx(112), true},
    {"st6", "core", "i387_ext", 10, 10, Fx(128), true},
    {"st7", "core", "i387_ext", 10, 10, Fx(144), true},
    {"fctrl", "core", "int", 4, 2, Fx(0), true},
    {"fstat", "core", "int", 4, 2, Fx(2), true},
    {"ftag", "core", "int", 4, 0, Fx(4), false},  // abridged in FXSAVE: FtagWord()
    {"fiseg", "core", "int", 4, 0, Fx(12), false},
    {"fioff", "core", "int", 4, 4, Fx(8), false},
    {"foseg", "core", "int", 4, 0, Fx(20), false},
    {"fooff", "core", "int", 4, 4, Fx(16), false},
    {"fop", "core", "int", 4, 2, Fx(6), false},
    {"xmm0", "sse", "uint128", 16, 16, Fx(160), true},
    {"xmm1", "sse", "uint128", 16, 16, Fx(176), true},
    {"xmm2", "sse", "uint128", 16, 16, Fx(192), true},
    {"xmm3", "sse", "uint128", 16, 16, Fx(208), true},
    {"xmm4", "sse", "uint128", 16, 16, Fx(224), true},
    {"xmm5", "sse", "uint128", 16, 16, Fx(240), true},
    {"xmm6", "sse", "uint128", 16, 16, Fx(256), true},
    {"xmm7", "sse", "uint128", 16, 16, Fx(272), true},
    {"xmm8", "sse", "uint128", 16, 16, Fx(288), true},
    {"xmm9", "sse", "uint128", 16, 16, Fx(304), true},
    {"xmm10", "sse", "uint128", 16, 16, Fx(320), true},
    {"xmm11", "sse", "uint128", 16, 16, Fx(336), true},
    {"xmm12", "sse", "uint128", 16, 16, Fx(352), true},
    {"xmm13", "sse", "uint128", 16, 16, Fx(368), true},
    {"xmm14", "sse", "uint128", 16, 16, Fx(384), true},
    {"xmm15", "sse", "uint128", 16, 16, Fx(400), true},
    {"mxcsr", "sse", "int", 4, 4, Fx(24), true},
    {"fs_base", "segments", "int64", 8, 8, Base(kFs), true},
    {"gs_base", "segments", "int64", 8, 8, Base(kGs), true},
    {"cr0", "system", "int64", 8, 8, offsetof(CpuState, cr0), false},
    {"cr2", "system", "int64", 8, 8, offsetof(CpuState, cr2), false},
    {"cr3", "system", "int64", 8, 8, offsetof(CpuState, cr3), false},
    {"cr4", "system", "int64", 8, 8, offsetof(CpuState, cr4), false},
    {"cr8", "system", "int64", 8, 8, offsetof(CpuState, cr8), false},
    {"efer", "system", "int64", 8, 8, offsetof(CpuState, efer), false},
};
constexpr int kGdbRegs = static_cast<int>(std::size(kRegs));
constexpr int kFtag = 34;  // kRegs' index of ftag
static_assert(std::string_view(kRegs[kFtag].name) == "ftag");

// What Handle returns instead of a reply when gdb lets the guest go on.
constexpr char kResume[] = "\x01" "resume";
constexpr char kDetach[] = "\x01" "detach";

// The target description gdb reads (qXfer:features:read): the registers
// above, by feature.
std::string TargetXml() {
  std::string x =
      "<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM \"gdb-target.dtd\"><target version=\"1.0\">"
      "<architecture>i386:x86-64</architecture>";
  const char* open = nullptr;
  for (const GdbReg& r : kRegs) {
    if (!open || std::strcmp(open, r.feature) != 0) {
      if (open) x += "</feature>";
      open = r.feature;
      x += std::string("<feature name=\"") +
           (std::strcmp(r.feature, "system") == 0 ? "org.btvm." : "org.gnu.gdb.i386.") +
           r.feature + "\">";
    }
    x += std::string("<reg name=\"") + r.name + "\" bitsize=\"" + std::to_string(r.bytes * 8) +
         "\" type=\"" + r.type + "\"" +
         (std::strcmp(r.feature, "core") == 0 && r.name[0] == 'f' && r.name[1] != 's'
              ? " group=\"float\""
              : "") +
         "/>";
  }
  return x + "</feature></target>";
}

// The full x87 tag word from FXSAVE's abridged one (1: valid): empty is
// 11b; a valid register shows as 00b (valid), the class not told apart.
uint16_t FtagWord(const CpuState& cpu) {
  const uint8_t abridged = cpu.xsave.bytes[4];
  uint16_t tag = 0;
  for (int i = 0; i < 8; ++i) {
    if (!(abridged >> i & 1)) tag |= static_cast<uint16_t>(3u << (2 * i));
  }
  return tag;
}

std::string Hex2(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

int Nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool FromHex(std::string_view s, std::vector<uint8_t>* out) {
  if (s.size() % 2) return false;
  out->clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = Nibble(s[i]), lo = Nibble(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return true;
}

bool ParseHex(std::string_view s, uint64_t* v) {
  if (s.empty() || s.size() > 16) return false;
  *v = 0;
  for (char c : s) {
    const int n = Nibble(c);
    if (n < 0) return false;
    *v = *v << 4 | static_cast<uint64_t>(n);
  }
  return true;
}

std::string ReadRegister(const CpuState& cpu, int n) {
  const GdbReg& r = kRegs[n];
  uint8_t bytes[16] = {};
  const auto* base = reinterpret_cast<const uint8_t*>(&cpu);
  std::memcpy(bytes, base + r.offset, r.size);
  if (n == kFtag) {
    const uint16_t tag = FtagWord(cpu);
    std::memcpy(bytes, &tag, 2);
  }
  return Hex2(bytes, r.bytes);
}

bool WriteRegister(CpuState& cpu, int n, const std::vector<uint8_t>& bytes) {
  const GdbReg& r = kRegs[n];
  if (bytes.size() < r.bytes) return false;
  if (!r.writable) return true;  // as on hardware for gdb: read-only here, not an error
  std::memcpy(reinterpret_cast<uint8_t*>(&cpu) + r.offset, bytes.data(), r.size);
  if (r.offset == offsetof(CpuState, rflags)) cpu.rflags |= rflags::kFixed1;
  return true;
}

}  // namespace

Result<std::unique_ptr<GdbStub>> GdbStub::Listen(const std::string& spec) {
  // tcp::PORT or tcp:HOST:PORT, as QEMU's -gdb.
  if (spec.rfind("tcp:", 0) != 0) {
    return MakeError("--gdb takes tcp::PORT or tcp:HOST:PORT, not '" + spec + "'");
  }
  const std::string rest = spec.substr(4);
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) {
    return MakeError("--gdb takes tcp::PORT or tcp:HOST:PORT, not '" + spec + "'");
  }
  const std::string host = rest.substr(0, colon), port_text = rest.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end || port > 65535) {
    return MakeError("--gdb: '" + port_text + "' is not a TCP port");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (!host.empty() && inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(),
                                 &addr.sin_addr) != 1) {
    return MakeError("--gdb: '" + host + "' is not an IPv4 address");
  }
  std::unique_ptr<GdbStub> stub(new GdbStub);
  stub->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (stub->listen_fd_ < 0) return MakeError(std::string("--gdb: socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(stub->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(stub->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(stub->listen_fd_, 1) != 0) {
    return MakeError("--gdb: cannot listen on " + spec + ": " + std::strerror(errno));
  }
  socklen_t len = sizeof addr;
  getsockname(stub->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  stub->port_ = ntohs(addr.sin_port);
  return stub;
}

GdbStub::~GdbStub() {
  StopWatching();
  if (fd_ >= 0) close(fd_);
  if (listen_fd_ >= 0) close(listen_fd_);
}

Status GdbStub::Accept() {
  for (;;) {
    fd_ = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd_ >= 0) break;
    if (errno != EINTR) return MakeError(std::string("--gdb: accept: ") + std::strerror(errno));
  }
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  interrupt_ = true;  // the guest starts stopped
  return Ok{};
}

bool GdbStub::BreakpointIn(uint64_t lo, uint64_t hi) const {
  auto it = breakpoints_.lower_bound(lo);
  return it != breakpoints_.end() && *it < hi;
}

bool GdbStub::ShouldStop(uint64_t rip) {
  if (fd_ < 0) {
    // Not attached (no --gdb-wait, or gdb went away): look for gdb now and
    // then; it finds the guest stopped where it is.
    if (listen_fd_ < 0 || ++polls_ % 1024 != 0) return false;
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0 || !Accept()) return false;
  }
  if (interrupt_.exchange(false)) return true;
  if (step_ > 0) {
    // The first look after a step is before its instruction runs; the
    // second, after.
    if (--step_ == 0) return true;
    resume_rip_ = ~0ull;
    return false;
  }
  if (breakpoints_.count(rip)) {
    if (rip == resume_rip_) {
      resume_rip_ = ~0ull;  // resumed from it: it stops the next time
      return false;
    }
    return true;
  }
  resume_rip_ = ~0ull;
  return false;
}

bool GdbStub::ReadPacket(std::string* payload) {
  for (;;) {
    // Acks and a Ctrl-C may come between packets.
    while (!in_.empty() && in_[0] != '$') {
      if (in_[0] == '\x03') {
        in_.erase(0, 1);
        payload->assign(1, '\x03');
        return true;
      }
      in_.erase(0, 1);
    }
    const size_t hash = in_.find('#');
    if (!in_.empty() && hash != std::string::npos && in_.size() >= hash + 3) {
      *payload = in_.substr(1, hash - 1);
      in_.erase(0, hash + 3);
      (void)!write(fd_, "+", 1);
      return true;
    }
    char buf[4096];
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
  }
}

void GdbStub::Send(const std::string& payload) {
  unsigned sum = 0;
  for (char c : payload) sum += static_cast<unsigned char>(c);
  char tail[4];
  std::snprintf(tail, sizeof tail, "#%02x", sum & 0xff);
  const std::string packet = "$" + payload + tail;
  size_t done = 0;
  while (done < packet.size()) {
    const ssize_t n = write(fd_, packet.data() + done, packet.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void GdbStub::Watch() {
  while (watching_.load()) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;  // (10 ms: how long a stop waits for this thread)
    char buf[256];
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) {
      // gdb went away: let the guest run on without it.
      watching_ = false;
      return;
    }
    in_.append(buf, static_cast<size_t>(n));
    if (in_.find('\x03') != std::string::npos) {
      interrupt_ = true;
      if (kick_) kick_();
    }
  }
}

void GdbStub::StopWatching() {
  watching_ = false;
  if (watcher_.joinable()) watcher_.join();
}

GdbStub::Resume GdbStub::Stopped(CpuState& cpu, Mmu& mmu) {
  StopWatching();
  in_.erase(std::remove(in_.begin(), in_.end(), '\x03'), in_.end());
  if (stopped_before_) Send("S05");  // (the first stop is the attach: gdb asks with '?')
  stopped_before_ = true;
  std::string packet;
  while (ReadPacket(&packet)) {
    Resume resume;
    const std::string reply = Handle(packet, cpu, mmu, &resume);
    if (reply == kResume) {
      if (resume == Resume::kKill && packet[0] == 'v') Send("OK");
      step_ = resume == Resume::kStep ? 2 : 0;
      resume_rip_ = cpu.rip;
      if (resume != Resume::kKill) {
        watching_ = true;
        watcher_ = std::thread([this] { Watch(); });
      }
      return resume;
    }
    if (reply == kDetach) {
      Send("OK");
      close(fd_);
      fd_ = -1;
      breakpoints_.clear();
      breakpoints_changed_ = true;
      return Resume::kContinue;
    }
    Send(reply);
  }
  // gdb went away: run on without it.
  close(fd_);
  fd_ = -1;
  breakpoints_.clear();
  breakpoints_changed_ = true;
  return Resume::kContinue;
}

void GdbStub::Exited(int status) {
  StopWatching();
  if (fd_ < 0) return;
  char reply[8];
  std::snprintf(reply, sizeof reply, "W%02x", status & 0xff);
  Send(reply);
  close(fd_);
  fd_ = -1;
}

std::string GdbStub::Handle(const std::string& p, CpuState& cpu, Mmu& mmu, Resume* resume) {
  if (p.empty()) return "";
  switch (p[0]) {
    case '\x03':
    case '?': return "S05";
    case 'g': {
      std::string s;
      for (int n = 0; n < kGdbRegs; ++n) s += ReadRegister(cpu, n);
      return s;
    }
    case 'G': {
      std::vector<uint8_t> bytes;
      if (!FromHex(std::string_view(p).substr(1), &bytes)) return "E01";
      size_t at = 0;
      for (int n = 0; n < kGdbRegs && at < bytes.size(); ++n) {
        const size_t wire = kRegs[n].bytes;
        if (at + wire > bytes.size()) break;
        WriteRegister(cpu, n, std::vector<uint8_t>(bytes.begin() + at, bytes.begin() + at + wire));
        at += wire;
      }
      return "OK";
    }
    case 'p': {
      uint64_t n;
      if (!ParseHex(std::string_view(p).substr(1), &n)) return "E01";
      return n < kGdbRegs ? ReadRegister(cpu, static_cast<int>(n)) : "E45";
    }
    case 'P': {
      const size_t eq = p.find('=');
      uint64_t n;
      std::vector<uint8_t> bytes;
      if (eq == std::string::npos || !ParseHex(std::string_view(p).substr(1, eq - 1), &n) ||
          !FromHex(std::string_view(p).substr(eq + 1), &bytes)) {
        return "E01";
      }
      return n < kGdbRegs && WriteRegister(cpu, static_cast<int>(n), bytes) ? "OK" : "E45";
    }
    case 'm':
    case 'M': {
      const size_t comma = p.find(','), colon = p.find(':');
      uint64_t addr, len;
      if (comma == std::string::npos ||
          !ParseHex(std::string_view(p).substr(1, comma - 1), &addr) ||
          !ParseHex(std::string_view(p).substr(comma + 1, (p[0] == 'M' ? colon : p.size()) -
                                                            comma - 1),
                    &len) ||
          len > 0x10000) {
        return "E01";
      }
      std::vector<uint8_t> data;
      if (p[0] == 'M' && (colon == std::string::npos ||
                          !FromHex(std::string_view(p).substr(colon + 1), &data) ||
                          data.size() != len)) {
        return "E01";
      }
      // By guest-virtual address through the guest's page tables, as the
      // kernel sees them; a page at a time.
      std::string out;
      for (uint64_t done = 0; done < len;) {
        const uint64_t va = addr + done;
        const uint64_t chunk = std::min<uint64_t>(len - done, kPageSize - (va & (kPageSize - 1)));
        // As the CPU would see it now, else as its kernel would.
        Mmu::Lookup l = mmu.Translate(cpu, GuestVirt(va), Access::kRead, MmuIndexFor(cpu));
        if (l.kind == Mmu::Lookup::kFault && cpu.Cpl() == 3) {
          l = mmu.Translate(cpu, GuestVirt(va), Access::kRead, kMmuKernel);
        }
        uint8_t* host = l.kind == Mmu::Lookup::kRam ? mmu.memory().HostPointer(l.phys, chunk)
                                                    : nullptr;
        if (!host) return done && p[0] == 'm' ? out : "E14";
        if (p[0] == 'm') {
          out += Hex2(host, chunk);
        } else {
          std::memcpy(host, data.data() + done, chunk);
          mmu.NoteWrite(l.phys, chunk);
        }
        done += chunk;
      }
      return p[0] == 'm' ? out : "OK";
    }
    case 'Z':
    case 'z': {
      // Z0 (software) and Z1 (hardware) breakpoints, both kept here.
      const size_t c1 = p.find(','), c2 = p.find(',', c1 + 1);
      uint64_t addr;
      if (p.size() < 2 || (p[1] != '0' && p[1] != '1')) return "";
      if (c1 == std::string::npos || c2 == std::string::npos ||
          !ParseHex(std::string_view(p).substr(c1 + 1, c2 - c1 - 1), &addr)) {
        return "E01";
      }
      const bool changed = p[0] == 'Z' ? breakpoints_.insert(addr).second
                                       : breakpoints_.erase(addr) != 0;
      breakpoints_changed_ |= changed;
      return "OK";
    }
    case 'c':
    case 's': {
      uint64_t addr;
      if (p.size() > 1 && ParseHex(std::string_view(p).substr(1), &addr)) cpu.rip = addr;
      *resume = p[0] == 's' ? Resume::kStep : Resume::kContinue;
      return kResume;
    }
    case 'k':
      *resume = Resume::kKill;
      return kResume;
    case 'D': return kDetach;
    case 'H':
    case 'T': return "OK";
    case 'q':
      if (p.rfind("qSupported", 0) == 0) {
        return "PacketSize=4000;swbreak+;hwbreak+;qXfer:features:read+";
      }
      if (p.rfind("qXfer:features:read:target.xml:", 0) == 0) {
        // offset,length of the document: m (more follows) or l (the last).
        const std::string args = p.substr(std::strlen("qXfer:features:read:target.xml:"));
        const size_t comma = args.find(',');
        uint64_t offset, length;
        if (comma == std::string::npos || !ParseHex(args.substr(0, comma), &offset) ||
            !ParseHex(args.substr(comma + 1), &length)) {
          return "E01";
        }
        const std::string xml = TargetXml();
        if (offset >= xml.size()) return "l";
        const std::string part = xml.substr(offset, length);
        return (offset + part.size() < xml.size() ? "m" : "l") + part;
      }
      if (p == "qAttached") return "1";
      if (p == "qC") return "QC1";
      if (p == "qfThreadInfo") return "m1";
      if (p == "qsThreadInfo") return "l";
      if (p.rfind("qSymbol", 0) == 0) return "OK";
      return "";
    case 'v':
      if (p == "vKill;1" || p.rfind("vKill", 0) == 0) {
        *resume = Resume::kKill;
        return kResume;
      }
      return "";
    default: return "";
  }
}

}  // namespace btvm
