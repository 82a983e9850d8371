#pragma once
// Host-bug checks. A failing check is a bug in btvm, never a guest event
// (guest events are values: see runtime/exit.h). Checks stay on in release
// builds: they never turn into __builtin_unreachable.

#include <cstdio>
#include <cstdlib>

namespace btvm::detail {
[[noreturn]] inline void CheckFailed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "btvm: internal check failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}
}  // namespace btvm::detail

#define BTVM_CHECK(cond)                                          \
  do {                                                            \
    if (!(cond)) ::btvm::detail::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)
