// btvm_host_costs: what the host charges for the two things a guest timer
// tick does to the direct engine, measured with plain host processes (no
// btvm involved), so the engine's per-tick cost can be read against the
// host's floor:
//
//   - an asynchronous signal to a process that computes: the child running
//     guest user code is stopped that way at every guest timer interrupt.
//     Measured twice: from the process's own POSIX timer (the interrupt
//     arrives on its own CPU) and from another process's kill() (an
//     inter-processor interrupt, the timer thread's way);
//   - how cold the caches are after a few milliseconds of register-only
//     work: the guest kernel's tick handler runs once per tick period
//     (4 ms at Linux's HZ=250), so its translated code and data are read
//     after that long a gap. A pointer chase through a random permutation
//     of a working set's lines (no prefetcher helps) right after the
//     previous chase and after the gap.
//
// A signal's cost is the lost time of a fixed register loop with the
// signals against the same loop without them, divided by their number:
// the minimum of several interleaved runs each, the least disturbed.
//
//   btvm_host_costs [--quick]
//
// --quick runs a tenth of the work (for the test that it runs at all).

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Registers only (btvm-bench spin's xorshift): nothing for a cache to lose.
uint64_t RegisterWork(uint64_t iterations) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

volatile sig_atomic_t g_signals = 0;
void CountSignal(int) { g_signals = g_signals + 1; }

struct Run {
  uint64_t ns;
  uint64_t signals;
};

enum class Source { kNone, kOwnTimer, kOtherProcess };

// One timed run of the loop in a fresh child process, with signals from
// `source` every `period_us`; the child reports its time over a pipe.
Run TimedRun(uint64_t iterations, Source source, long period_us) {
  int fds[2];
  if (pipe(fds) != 0) {
    std::perror("btvm_host_costs: pipe");
    std::exit(1);
  }
  const pid_t worker = fork();
  if (worker < 0) {
    std::perror("btvm_host_costs: fork");
    std::exit(1);
  }
  if (worker == 0) {
    struct sigaction sa {};
    sa.sa_handler = CountSignal;
    sigaction(SIGALRM, &sa, nullptr);
    if (source == Source::kOwnTimer) {
      sigevent ev{};
      ev.sigev_notify = SIGEV_SIGNAL;
      ev.sigev_signo = SIGALRM;
      timer_t timer;
      const timespec period{0, period_us * 1000};
      const itimerspec spec{period, period};
      if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0 ||
          timer_settime(timer, 0, &spec, nullptr) != 0) {
        _exit(2);
      }
    }
    const uint64_t start = NowNs();
    const uint64_t x = RegisterWork(iterations);
    const Run run{NowNs() - start + (x == 42 ? 1 : 0), static_cast<uint64_t>(g_signals)};
    _exit(write(fds[1], &run, sizeof run) == sizeof run ? 0 : 2);
  }
  close(fds[1]);
  if (source == Source::kOtherProcess) {
    int status;
    while (waitpid(worker, &status, WNOHANG) == 0) {
      usleep(static_cast<useconds_t>(period_us));
      kill(worker, SIGALRM);
    }
  } else {
    waitpid(worker, nullptr, 0);
  }
  Run run{};
  if (read(fds[0], &run, sizeof run) != sizeof run) {
    std::fprintf(stderr, "btvm_host_costs: the worker process failed\n");
    std::exit(1);
  }
  close(fds[0]);
  return run;
}

void SignalCost(const char* what, Source source, uint64_t iterations, int reps) {
  constexpr long kPeriodUs = 1000;
  uint64_t quiet = UINT64_MAX, signaled = UINT64_MAX, signals = 0;
  for (int r = 0; r < reps; ++r) {  // interleaved: drift hits both alike
    quiet = std::min(quiet, TimedRun(iterations, Source::kNone, kPeriodUs).ns);
    const Run run = TimedRun(iterations, source, kPeriodUs);
    if (run.ns < signaled) {
      signaled = run.ns;
      signals = run.signals;
    }
  }
  const double each_us =
      signals ? (static_cast<double>(signaled) - static_cast<double>(quiet)) / 1e3 / signals : 0;
  std::printf("%-52s %7.1f us each (%llu signals, %.1f ms against %.1f ms)\n", what, each_us,
              static_cast<unsigned long long>(signals), signaled / 1e6, quiet / 1e6);
}

// TSC cycles per line of a chase through `bytes`, just after a chase and
// after `gap_us` of register work, averaged over `reps` rounds.
void ColdCache(size_t bytes, long gap_us, int reps) {
  constexpr size_t kLine = 64;
  const size_t lines = bytes / kLine;
  std::vector<size_t> order(lines);
  std::iota(order.begin(), order.end(), size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(kLine, bytes));
  for (size_t i = 0; i < lines; ++i) {
    const size_t next = order[(i + 1) % lines] * kLine;
    std::memcpy(buf + order[i] * kLine, &next, sizeof next);
  }
  const auto chase = [&] {
    size_t p = order[0] * kLine;
    const uint64_t start = __rdtsc();
    for (size_t i = 0; i < lines; ++i) p = *reinterpret_cast<volatile size_t*>(buf + p);
    return static_cast<double>(__rdtsc() - start + (p == 1 ? 1 : 0)) / lines;
  };
  double warm = 0, cold = 0;
  uint64_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    chase();
    warm += chase();
    const uint64_t end = NowNs() + static_cast<uint64_t>(gap_us) * 1000;
    while (NowNs() < end) sink += RegisterWork(1000);
    cold += chase();
  }
  std::free(buf);
  std::printf("%zu KiB working set, TSC cycles per line: %.1f just after use, %.1f after %.1f ms%s\n",
              bytes >> 10, warm / reps, cold / reps, gap_us / 1e3, sink == 42 ? " " : "");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc == 2 && std::strcmp(argv[1], "--quick") == 0;
  if (argc > 2 || (argc == 2 && !quick)) {
    std::fprintf(stderr, "usage: btvm_host_costs [--quick]\n");
    return 2;
  }
  const uint64_t iterations = quick ? 50'000'000 : 500'000'000;  // ~0.1 s / 1 s
  const int reps = quick ? 2 : 5;
  SignalCost("signal from the process's own timer (1 kHz):", Source::kOwnTimer, iterations, reps);
  SignalCost("signal from another process's kill() (1 kHz):", Source::kOtherProcess, iterations,
             reps);
  ColdCache(size_t{128} << 10, 4000, quick ? 10 : 100);
  ColdCache(size_t{128} << 10, 1000, quick ? 10 : 100);
  return 0;
}
