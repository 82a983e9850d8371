#pragma once
// The wire format between the native runner (native_runner.cpp, in the
// caller) and its server (native_server.cpp, a separate small process): one
// request, one response, over a Unix stream socket. Both sides are built
// from this header in the same build for the same host, so the structs
// travel as raw bytes; each side still treats what it receives as values
// (sizes are bounded before use).
//
//   request:  Request, RegionHeader x region_count, the code image
//             (code_image_size bytes), each region's bytes in order.
//   response: Response, then for Status::kDone each region's bytes in order.

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace btvm::native::protocol {

// The server's end of the socket, set up by the runner when it spawns the
// server.
inline constexpr int kServerFd = 3;

// Bounds the server checks before it allocates anything.
inline constexpr uint32_t kMaxRegions = 64;
inline constexpr uint64_t kMaxBytes = uint64_t{1} << 30;  // code image, all regions together

struct RegionHeader {
  uint64_t address;
  uint64_t size;
  uint32_t access;  // an Access (native_runner.h)
  uint32_t reserved;
};

struct Request {
  uint64_t code_address;
  uint64_t code_page_base;
  uint64_t code_image_size;  // page multiple: the snippet, its int3 terminator, int3 filler
  uint64_t code_size;        // the snippet alone
  int64_t timeout_ms;
  uint32_t region_count;
  uint32_t mxcsr;
  uint64_t gpr[16];
  uint64_t rflags;  // already reduced to the honoured bits by the runner
  alignas(16) uint8_t xmm[16][16];
};

// Where the child's set-up failed (Status::kSetupFailed), for the runner's
// error text.
enum class SetupStep : uint32_t {
  kNone = 0,
  kParentDeath,
  kMapCode,
  kProtectCode,
  kMapRegion,
  kProtectRegion,
  kAltStack,
  kSigaction,
  kSeccomp,
};

// What the child writes into the area it shares with the server. A snippet
// could scribble over it, so nothing in it is used as a size or a pointer.
enum class ReportState : uint32_t { kNone = 0, kDone, kSetupFailed };
struct Report {
  ReportState state;
  int32_t signal;
  SetupStep setup_step;
  int32_t setup_index;
  int32_t setup_errno;
  uint64_t fault_address;
  uint64_t rip, trapno, err;
  uint64_t gpr[16];
  uint64_t rflags;
  alignas(16) uint8_t xmm[16][16];
  uint32_t mxcsr;
};

enum class Status : uint32_t {
  kDone,         // report.state == kDone; region contents follow
  kSetupFailed,  // report.setup_* say where
  kTimedOut,     // the child ran past timeout_ms and was killed
  kNoReport,     // the child ended without a report: wait_status says how
  kServerError,  // the server itself could not run the request: message
};

struct Response {
  Status status;
  int32_t wait_status;  // kNoReport: the child's wait status
  Report report;
  char message[160];  // kServerError, NUL-terminated
};

static_assert(std::is_trivially_copyable_v<Request>);
static_assert(std::is_trivially_copyable_v<RegionHeader>);
static_assert(std::is_trivially_copyable_v<Response>);

}  // namespace btvm::native::protocol
