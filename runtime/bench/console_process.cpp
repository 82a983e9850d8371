#include "runtime/bench/console_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace btvm::bench {
namespace {

Error Errno(const std::string& what) { return MakeError(what + ": " + std::strerror(errno)); }

int MillisLeft(ConsoleProcess::Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - ConsoleProcess::Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

}  // namespace

Result<ConsoleProcess> ConsoleProcess::Start(const std::vector<std::string>& argv) {
  BTVM_CHECK(!argv.empty());
  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0) return Errno("pipe");
  if (pipe2(from_child, O_CLOEXEC) != 0) {
    close(to_child[0]);
    close(to_child[1]);
    return Errno("pipe");
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
    return Errno("fork");
  }
  if (pid == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    dup2(from_child[1], 2);
    execvp(args[0], args.data());
    const std::string message = std::string("btvm bench: cannot run ") + args[0] + ": " +
                                std::strerror(errno) + "\n";
    (void)!write(2, message.data(), message.size());
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  // Typing into a program that has ended must not kill us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  return ConsoleProcess(pid, to_child[1], from_child[0]);
}

ConsoleProcess::ConsoleProcess(ConsoleProcess&& other) noexcept
    : pid_(other.pid_),
      in_(other.in_),
      out_fd_(other.out_fd_),
      out_(std::move(other.out_)),
      consumed_(other.consumed_) {
  other.pid_ = -1;
  other.in_ = other.out_fd_ = -1;
}

ConsoleProcess::~ConsoleProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (in_ >= 0) close(in_);
  if (out_fd_ >= 0) close(out_fd_);
}

bool ConsoleProcess::Pump(Clock::time_point deadline) {
  if (out_fd_ < 0) return false;
  pollfd p{out_fd_, POLLIN, 0};
  const int n = poll(&p, 1, MillisLeft(deadline));
  if (n <= 0) return true;  // nothing yet (or EINTR): the caller looks at the clock
  char buf[65536];
  const ssize_t got = read(out_fd_, buf, sizeof buf);
  if (got > 0) {
    out_.append(buf, static_cast<size_t>(got));
    return true;
  }
  if (got < 0 && errno == EINTR) return true;
  close(out_fd_);
  out_fd_ = -1;
  return false;
}

ConsoleProcess::Read ConsoleProcess::ReadUntil(std::string_view marker,
                                               Clock::time_point deadline, std::string* text) {
  for (;;) {
    const size_t at = out_.find(marker, consumed_);
    if (at != std::string::npos) {
      if (text) *text = out_.substr(consumed_, at - consumed_);
      consumed_ = at + marker.size();
      return Read::kFound;
    }
    if (Clock::now() >= deadline) return Read::kTimeout;
    if (!Pump(deadline)) return Read::kEnded;
  }
}

bool ConsoleProcess::AnyOutput(Clock::time_point deadline) {
  while (out_.empty() && Clock::now() < deadline) {
    if (!Pump(deadline)) break;
  }
  return !out_.empty();
}

Status ConsoleProcess::Type(std::string_view line) {
  std::string data(line);
  data += '\n';
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(in_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("writing to the guest's console");
    done += static_cast<size_t>(n);
  }
  return Ok{};
}

int ConsoleProcess::Finish(Clock::time_point deadline) {
  while (Clock::now() < deadline && Pump(deadline)) {
  }
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
      return -1;
    }
    usleep(10'000);
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace btvm::bench
