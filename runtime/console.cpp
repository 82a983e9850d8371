#include "runtime/console.h"

#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>

namespace btvm {

namespace {

// One terminal per process: the saved state lives where signal handlers
// and atexit can reach it.
int g_fd = -1;
termios g_saved;
volatile sig_atomic_t g_raw = 0;

constexpr int kFatalSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGABRT, SIGPIPE};

void OnFatalSignal(int sig) {
  RawTerminal::Restore();
  // Again with the default action: the process ends as the signal says.
  signal(sig, SIG_DFL);
  raise(sig);
}

void RestoreAtExit() { RawTerminal::Restore(); }

}  // namespace

RawTerminal::RawTerminal(int fd) {
  if (g_raw || !isatty(fd) || tcgetattr(fd, &g_saved) != 0) return;
  termios raw = g_saved;
  // As QEMU's stdio backend sets it: bytes as typed, no echo, no signals;
  // output still turns \n into \r\n where the guest sends a bare \n.
  raw.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
  raw.c_oflag |= OPOST;
  raw.c_lflag &= ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
  raw.c_cflag &= ~(CSIZE | PARENB);
  raw.c_cflag |= CS8;
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  g_fd = fd;
  for (int sig : kFatalSignals) {
    struct sigaction old {};
    sigaction(sig, nullptr, &old);
    if (old.sa_handler != SIG_DFL) continue;  // someone else's: leave it
    struct sigaction sa {};
    sa.sa_handler = OnFatalSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
  }
  static bool registered = false;
  if (!registered) {
    std::atexit(RestoreAtExit);
    registered = true;
  }
  if (tcsetattr(fd, TCSAFLUSH, &raw) != 0) return;
  g_raw = 1;
  active_ = true;
}

RawTerminal::~RawTerminal() {
  if (active_) Restore();
}

void RawTerminal::Restore() {
  if (!g_raw) return;
  g_raw = 0;
  tcsetattr(g_fd, TCSAFLUSH, &g_saved);
}

ConsoleEscapes::Action ConsoleEscapes::Feed(uint8_t byte, uint8_t* out) {
  if (!pending_) {
    if (byte == kEscape) {
      pending_ = true;
      return Action::kNone;
    }
    *out = byte;
    return Action::kDeliver;
  }
  pending_ = false;
  switch (byte) {
    case 'x': case 'X': return Action::kQuit;
    case 'h': case 'H': case '?': return Action::kHelp;
    case kEscape:
      *out = kEscape;
      return Action::kDeliver;
    default: return Action::kNone;
  }
}

std::string ConsoleEscapes::HelpText() {
  return "\r\n"
         "C-a h    print this help\r\n"
         "C-a x    exit btvm\r\n"
         "C-a C-a  send C-a to the guest\r\n";
}

}  // namespace btvm
