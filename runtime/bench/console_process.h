#pragma once
// A program run behind pipes as a person at its console would drive it:
// read its output until a marker shows, type a line, wait for it to end.
// `btvm bench` boots each guest this way (btvm, QEMU) and types the
// workloads at the guest's shell prompt, as tests/linux/session.py does
// for the tests.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace btvm::bench {

class ConsoleProcess {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts argv[0] (searched in PATH) with stdin a pipe from us and stdout
  // and stderr one pipe to us.
  static Result<ConsoleProcess> Start(const std::vector<std::string>& argv);
  ConsoleProcess(ConsoleProcess&& other) noexcept;
  ConsoleProcess& operator=(ConsoleProcess&&) = delete;
  ConsoleProcess(const ConsoleProcess&) = delete;
  ~ConsoleProcess();  // kills the program if it still runs

  enum class Read { kFound, kTimeout, kEnded };
  // Reads until `marker` appears in what came after the previous call's
  // marker; *text is the output in between (marker excluded).
  Read ReadUntil(std::string_view marker, Clock::time_point deadline, std::string* text);
  // Whether the program printed anything yet (waits up to `deadline`).
  bool AnyOutput(Clock::time_point deadline);
  Status Type(std::string_view line);  // line + "\n"
  // Waits for the program to end (reading its output on); kills it at
  // the deadline. Its exit status, or -1 if it had to be killed.
  int Finish(Clock::time_point deadline);
  // Everything it printed so far.
  const std::string& output() const { return out_; }

 private:
  ConsoleProcess(pid_t pid, int in, int out) : pid_(pid), in_(in), out_fd_(out) {}
  // Reads what is there, waiting up to `deadline`; false at end of output.
  bool Pump(Clock::time_point deadline);

  pid_t pid_ = -1;
  int in_ = -1, out_fd_ = -1;
  std::string out_;
  size_t consumed_ = 0;  // where the next ReadUntil looks from
};

}  // namespace btvm::bench
