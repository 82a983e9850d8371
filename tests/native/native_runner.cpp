// Native runner, the caller's side: see native_runner.h for the contract.
//
// Snippets run in children of btvm_native_server (native_server.cpp), a
// small static process that the runner spawns once per concurrent caller
// and keeps: forking the server is much cheaper than forking the caller,
// whose address space (the engine, its code cache, the test's heap) the
// child never needed. Shape of one run:
//   runner: validate the input, check that the code and regions are free
//           in the caller too, build the request (native_protocol.h), take
//           an idle server from the pool (or spawn one), send the request.
//   server: fork a child that runs the snippet, wait with the timeout,
//           answer with the child's report.
//   runner: turn the report into a RunResult, give the server back.
// A server whose conversation breaks (it died, or answered out of step) is
// killed and dropped; the next run spawns a fresh one.

#include "tests/native/native_runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "base/cpu_state.h"
#include "base/types.h"
#include "tests/native/native_protocol.h"

extern char** environ;

namespace btvm::native {
namespace {

using protocol::RegionHeader;
using protocol::Report;
using protocol::Request;
using protocol::Response;
using protocol::SetupStep;

// FXSAVE image layout (SDM Vol. 1 §10.5.1, Table 10-2).
constexpr size_t kFxMxcsrMask = 28;
constexpr uint32_t kDefaultMxcsrMask = 0xffbf;  // SDM Vol. 1 §11.6.6 when FXSAVE reports 0

// The last page below the top of the 47-bit user address space is never
// mappable on Linux.
constexpr uint64_t kUserTop = 0x7ffffffff000;

constexpr uint8_t kInt3 = 0xcc;
constexpr uint64_t kInputFlags = rflags::kArith | rflags::kDF;

// How long past the snippet's timeout the runner waits for the server's
// answer before it declares the server wedged (its own work per run is a
// fork and a few system calls).
constexpr std::chrono::seconds kServerGrace{10};

uint32_t HostMxcsrMask() {
  alignas(16) uint8_t image[512] = {};
  asm volatile("fxsave64 %0" : "=m"(image));
  uint32_t mask;
  std::memcpy(&mask, image + kFxMxcsrMask, sizeof(mask));
  return mask != 0 ? mask : kDefaultMxcsrMask;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
  return buf;
}

bool Overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

std::string CodeName(uint64_t code_page_base, uint64_t code_image_size) {
  return "code pages at " + Hex(code_page_base) + " (size " + Hex(code_image_size) + ")";
}

std::string RegionName(const MachineState& in, int index) {
  const size_t i = static_cast<size_t>(index);
  if (index < 0 || i >= in.memory.size()) return "memory region " + std::to_string(index);
  return "memory region " + std::to_string(i) + " at " + Hex(in.memory[i].address) + " (size " +
         Hex(in.memory[i].bytes.size()) + ")";
}

std::string SetupErrorText(const Report& r, const MachineState& in, uint64_t code_page_base,
                           uint64_t code_image_size) {
  const int err = r.setup_errno;
  const std::string code = CodeName(code_page_base, code_image_size);
  const std::string region = RegionName(in, r.setup_index);
  switch (r.setup_step) {
    case SetupStep::kMapCode:
      if (err == EEXIST) return code + " collide with a host mapping";
      return "cannot map " + code + ": " + std::strerror(err);
    case SetupStep::kMapRegion:
      if (err == EEXIST) return region + " collides with a host mapping";
      return "cannot map " + region + ": " + std::strerror(err);
    case SetupStep::kProtectCode:
      return "cannot protect " + code + ": " + std::strerror(err);
    case SetupStep::kProtectRegion:
      return "cannot protect " + region + ": " + std::strerror(err);
    case SetupStep::kParentDeath:
      return std::string("native child cannot follow its server: ") + std::strerror(err);
    case SetupStep::kAltStack:
      return std::string("native child cannot set its signal stack: ") + std::strerror(err);
    case SetupStep::kSigaction:
      return std::string("native child cannot catch signal ") + std::to_string(r.setup_index) +
             ": " + std::strerror(err);
    case SetupStep::kSeccomp:
      return std::string("native child cannot install its seccomp sandbox: ") + std::strerror(err);
    case SetupStep::kNone:
      break;
  }
  return "native child failed to set up";
}

// 0 if [address, address + size) is free in the calling process, else the
// errno of mapping it there (EEXIST: it overlaps a mapping). The snippet
// runs in the server's address space, but the contract promises that its
// addresses are free in the caller's too. The probe reserves the range
// with MAP_FIXED_NOREPLACE, which never replaces a mapping, and releases it
// at once; meanwhile another thread's mmap merely lands elsewhere. Probes
// are serialized: two callers probing the same range at once would each
// see the other's reservation as a collision.
int ProbeCallerRange(uint64_t address, uint64_t size) {
  static std::mutex probe_mu;
  std::lock_guard<std::mutex> lock(probe_mu);
  void* want = reinterpret_cast<void*>(address);
  void* got =
      mmap(want, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (got == MAP_FAILED) return errno;
  munmap(got, size);
  return got == want ? 0 : EEXIST;  // before Linux 4.17 the flag is only a hint
}

enum class Io { kOk, kEof, kTimedOut, kError };

// Reads exactly `size` bytes from `fd` before `deadline`.
Io ReadFull(int fd, void* buffer, size_t size, std::chrono::steady_clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buffer);
  for (size_t done = 0; done < size;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Io::kTimedOut;
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
    if (ready < 0 && errno != EINTR) return Io::kError;
    if (ready <= 0) continue;
    const ssize_t n = read(fd, p + done, size - done);
    if (n == 0) return Io::kEof;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Io::kError;
    }
    done += static_cast<size_t>(n);
  }
  return Io::kOk;
}

// MSG_NOSIGNAL: a dead server is an error, not a SIGPIPE for the caller.
bool WriteFull(int fd, const void* buffer, size_t size) {
  const auto* p = static_cast<const uint8_t*>(buffer);
  for (size_t done = 0; done < size;) {
    const ssize_t n = send(fd, p + done, size - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// One spawned btvm_native_server and the runner's end of its socket.
class Server {
 public:
  static Result<std::unique_ptr<Server>> Spawn();
  // Closes the socket. A healthy server sees EOF and exits at once, and is
  // reaped; a broken one is killed first. One inherited through fork() is
  // not ours to reap: only our copy of the socket is closed.
  ~Server() {
    close(fd_);
    if (getpid() != owner_) return;
    if (broken_) kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  pid_t owner() const { return owner_; }

  // Sends `request` and reads the Response and, for kDone, `region_bytes`
  // bytes of region contents into `regions_out`. Any failure breaks the
  // conversation: the server is then marked broken and must be dropped.
  Result<Response> Exchange(const std::vector<uint8_t>& request, size_t region_bytes,
                            std::vector<uint8_t>* regions_out,
                            std::chrono::steady_clock::time_point deadline) {
    if (!WriteFull(fd_, request.data(), request.size())) return Broken("cannot send to", errno);
    Response response;
    Io io = ReadFull(fd_, &response, sizeof(response), deadline);
    if (io == Io::kOk && response.status == protocol::Status::kDone) {
      regions_out->resize(region_bytes);
      io = ReadFull(fd_, regions_out->data(), region_bytes, deadline);
    }
    switch (io) {
      case Io::kOk:
        return response;
      case Io::kEof:
        return Broken("connection closed by", 0);
      case Io::kTimedOut:
        return Broken("no answer from", 0);
      case Io::kError:
        break;
    }
    return Broken("cannot read from", errno);
  }

 private:
  Server(pid_t pid, int fd) : pid_(pid), fd_(fd) {}

  Error Broken(const char* what, int err) {
    broken_ = true;
    std::string text = std::string(what) + " the native server";
    if (err != 0) text += std::string(": ") + std::strerror(err);
    return MakeError(text);
  }

  const pid_t owner_ = getpid();
  pid_t pid_;
  int fd_;
  bool broken_ = false;
};

Result<std::unique_ptr<Server>> Server::Spawn() {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return MakeError("cannot create the native server's socket: " +
                     std::string(std::strerror(errno)));
  }
  // dup2 onto the same number would keep FD_CLOEXEC: move it out of the way.
  if (fds[1] == protocol::kServerFd) {
    const int moved = fcntl(fds[1], F_DUPFD_CLOEXEC, protocol::kServerFd + 1);
    close(fds[1]);
    fds[1] = moved;
  }
  // The server starts with default signal handling and nothing blocked,
  // whatever the calling thread has set up (an ignored SIGCHLD would make
  // its children unwaitable).
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], protocol::kServerFd);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  const char* path = BTVM_NATIVE_SERVER_PATH;
  char* const argv[] = {const_cast<char*>(path), nullptr};
  pid_t pid = -1;
  const int err = fds[1] < 0 ? errno : posix_spawn(&pid, path, &actions, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (fds[1] >= 0) close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    return MakeError("cannot start the native server " + std::string(path) + ": " +
                     std::strerror(err));
  }
  return std::unique_ptr<Server>(new Server(pid, fds[0]));
}

// Idle servers, one per caller that ran concurrently so far.
class ServerPool {
 public:
  // An idle server, or a fresh one.
  Result<std::unique_ptr<Server>> Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // After fork() the child has its own copy of this pool, but the
      // servers' sockets are shared with the parent: never talk on them.
      if (!idle_.empty() && idle_.back()->owner() != getpid()) idle_.clear();
      if (!idle_.empty()) {
        std::unique_ptr<Server> server = std::move(idle_.back());
        idle_.pop_back();
        return server;
      }
    }
    return Server::Spawn();
  }
  void Give(std::unique_ptr<Server> server) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(server));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Server>> idle_;
};

ServerPool& Pool() {
  static ServerPool pool;  // destroyed at exit: the servers see EOF and are reaped
  return pool;
}

}  // namespace

Result<RunResult> RunNative(std::span<const uint8_t> code, const MachineState& initial,
                            uint64_t code_address, std::chrono::milliseconds timeout) {
  // --- Validate the input: everything the child could trip on.
  if (timeout.count() <= 0) return MakeError("timeout must be positive");
  const uint64_t code_page_base = code_address & kPageMask;
  if (code_address >= kUserTop || code.size() >= kUserTop - code_address) {
    return MakeError("code at " + Hex(code_address) + " does not fit in user space");
  }
  const uint64_t code_image_size =
      (code_address - code_page_base + code.size() + 1 + kPageSize - 1) & kPageMask;
  if (code_page_base + code_image_size > kUserTop) {
    return MakeError("code at " + Hex(code_address) + " does not fit in user space");
  }
  const uint32_t mxcsr_mask = HostMxcsrMask();
  if ((initial.mxcsr & ~mxcsr_mask) != 0) {
    return MakeError("mxcsr " + Hex(initial.mxcsr) + " sets bits reserved on this host (mask " +
                     Hex(mxcsr_mask) + ")");
  }
  const auto& regions = initial.memory;
  if (regions.size() > protocol::kMaxRegions) {
    return MakeError(std::to_string(regions.size()) + " memory regions, more than " +
                     std::to_string(protocol::kMaxRegions));
  }
  uint64_t total_bytes = code_image_size;
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& r = regions[i];
    const std::string name = "memory region " + std::to_string(i) + " at " + Hex(r.address);
    if ((r.address & ~kPageMask) != 0) return MakeError(name + " is not page-aligned");
    if (r.bytes.empty() || (r.bytes.size() & ~kPageMask) != 0) {
      return MakeError(name + " has size " + Hex(r.bytes.size()) +
                       ", not a non-zero multiple of 4096");
    }
    if (r.address >= kUserTop || r.bytes.size() > kUserTop - r.address) {
      return MakeError(name + " does not fit in user space");
    }
    if (Overlaps(r.address, r.bytes.size(), code_page_base, code_image_size)) {
      return MakeError(name + " overlaps the code pages at " + Hex(code_page_base));
    }
    for (size_t j = 0; j < i; ++j) {
      if (Overlaps(r.address, r.bytes.size(), regions[j].address, regions[j].bytes.size())) {
        return MakeError(name + " overlaps memory region " + std::to_string(j));
      }
    }
    total_bytes += r.bytes.size();
  }
  if (total_bytes > protocol::kMaxBytes) {
    return MakeError("code and memory regions take " + Hex(total_bytes) + " bytes, more than " +
                     Hex(protocol::kMaxBytes));
  }

  // --- The addresses must be free in the caller too (the contract).
  if (const int err = ProbeCallerRange(code_page_base, code_image_size); err != 0) {
    const std::string name = CodeName(code_page_base, code_image_size);
    if (err == EEXIST) return MakeError(name + " collide with a host mapping");
    return MakeError("cannot map " + name + ": " + std::strerror(err));
  }
  for (size_t i = 0; i < regions.size(); ++i) {
    if (const int err = ProbeCallerRange(regions[i].address, regions[i].bytes.size()); err != 0) {
      const std::string name = RegionName(initial, static_cast<int>(i));
      if (err == EEXIST) return MakeError(name + " collides with a host mapping");
      return MakeError("cannot map " + name + ": " + std::strerror(err));
    }
  }

  // --- The request: header, region headers, code image, region contents.
  Request request{};
  request.code_address = code_address;
  request.code_page_base = code_page_base;
  request.code_image_size = code_image_size;
  request.code_size = code.size();
  request.timeout_ms = timeout.count();
  request.region_count = static_cast<uint32_t>(regions.size());
  request.mxcsr = initial.mxcsr;
  std::memcpy(request.gpr, initial.gpr, sizeof(request.gpr));
  request.rflags = (initial.rflags & kInputFlags) | rflags::kFixed1;
  std::memcpy(request.xmm, initial.xmm, sizeof(request.xmm));

  std::vector<uint8_t> message;
  message.reserve(sizeof(request) + regions.size() * sizeof(RegionHeader) + total_bytes);
  auto append = [&message](const void* p, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    message.insert(message.end(), bytes, bytes + n);
  };
  append(&request, sizeof(request));
  for (const MemoryRegion& r : regions) {
    const RegionHeader h{.address = r.address,
                         .size = r.bytes.size(),
                         .access = static_cast<uint32_t>(r.access),
                         .reserved = 0};
    append(&h, sizeof(h));
  }
  const size_t image_at = message.size();
  message.resize(image_at + code_image_size, kInt3);
  std::copy(code.begin(), code.end(), message.begin() + image_at + (code_address - code_page_base));
  for (const MemoryRegion& r : regions) append(r.bytes.data(), r.bytes.size());

  // --- Run it on a server.
  Result<std::unique_ptr<Server>> server = Pool().Take();
  if (!server) return server.error();
  std::vector<uint8_t> region_data;
  const auto deadline = std::chrono::steady_clock::now() + timeout + kServerGrace;
  Result<Response> answer =
      (*server)->Exchange(message, total_bytes - code_image_size, &region_data, deadline);
  if (!answer) return answer.error();  // the broken server is killed and reaped on the way out
  Pool().Give(std::move(*server));
  const Response& response = *answer;

  switch (response.status) {
    case protocol::Status::kDone:
      break;
    case protocol::Status::kSetupFailed:
      return MakeError(SetupErrorText(response.report, initial, code_page_base, code_image_size));
    case protocol::Status::kTimedOut:
      return MakeError("snippet timed out");
    case protocol::Status::kNoReport: {
      const int status = response.wait_status;
      if (WIFSIGNALED(status)) {
        return MakeError("native child crashed with signal " + std::to_string(WTERMSIG(status)) +
                         " (" + strsignal(WTERMSIG(status)) + ")");
      }
      return MakeError("native child exited with status " +
                       std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
                       " without a report");
    }
    case protocol::Status::kServerError: {
      const size_t n = strnlen(response.message, sizeof(response.message));
      return MakeError(std::string(response.message, n));
    }
  }

  const Report& report = response.report;
  RunResult result;
  MachineState& out = result.final;
  std::memcpy(out.gpr, report.gpr, sizeof(out.gpr));
  out.rflags = report.rflags;
  std::memcpy(out.xmm, report.xmm, sizeof(out.xmm));
  out.mxcsr = report.mxcsr;
  out.memory.reserve(regions.size());
  size_t offset = 0;
  for (const MemoryRegion& r : regions) {
    const uint8_t* data = region_data.data() + offset;
    out.memory.push_back(MemoryRegion{
        .address = r.address,
        .bytes = std::vector<uint8_t>(data, data + r.bytes.size()),
        .access = r.access,
    });
    offset += r.bytes.size();
  }
  result.signal = report.signal;
  result.fault_address = report.fault_address;
  if (report.signal == 0) {
    result.rip = code_address + code.size();  // not the terminator's return address
  } else {
    result.rip = report.rip;
    result.trap_number = report.trapno;
    result.error_code = report.err;
  }
  result.fault_rip_offset = result.rip - code_address;
  return result;
}

}  // namespace btvm::native
