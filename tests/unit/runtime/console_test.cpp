// The console: Ctrl-A escapes, and raw mode on a terminal restored on
// every way out (tested on a pseudo-terminal).

#include "runtime/console.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace btvm {
namespace {

using Action = ConsoleEscapes::Action;

TEST(ConsoleEscapesTest, OrdinaryBytesPassThrough) {
  ConsoleEscapes e;
  uint8_t out = 0;
  for (int b : {0x6c, 0x73, 0x0d, 0x03, 0x7f}) {  // l s CR Ctrl-C DEL
    EXPECT_EQ(e.Feed(static_cast<uint8_t>(b), &out), Action::kDeliver);
    EXPECT_EQ(out, b);
  }
}

TEST(ConsoleEscapesTest, CtrlAThenALetter) {
  ConsoleEscapes e;
  uint8_t out = 0;
  EXPECT_EQ(e.Feed(0x01, &out), Action::kNone);
  EXPECT_EQ(e.Feed('x', &out), Action::kQuit);
  EXPECT_EQ(e.Feed(0x01, &out), Action::kNone);
  EXPECT_EQ(e.Feed('h', &out), Action::kHelp);
  // Ctrl-A Ctrl-A: one Ctrl-A for the guest, and no escape pending after.
  EXPECT_EQ(e.Feed(0x01, &out), Action::kNone);
  EXPECT_EQ(e.Feed(0x01, &out), Action::kDeliver);
  EXPECT_EQ(out, 0x01);
  EXPECT_EQ(e.Feed('x', &out), Action::kDeliver);
  EXPECT_EQ(out, 'x');
  // An unknown escape drops both bytes.
  EXPECT_EQ(e.Feed(0x01, &out), Action::kNone);
  EXPECT_EQ(e.Feed('q', &out), Action::kNone);
  EXPECT_EQ(e.Feed('q', &out), Action::kDeliver);
  EXPECT_NE(ConsoleEscapes::HelpText().find("C-a x"), std::string::npos);
}

class PtyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    master_ = posix_openpt(O_RDWR | O_NOCTTY);
    ASSERT_GE(master_, 0);
    ASSERT_EQ(grantpt(master_), 0);
    ASSERT_EQ(unlockpt(master_), 0);
    slave_ = open(ptsname(master_), O_RDWR | O_NOCTTY);
    ASSERT_GE(slave_, 0);
    ASSERT_EQ(tcgetattr(slave_, &cooked_), 0);
    ASSERT_TRUE(cooked_.c_lflag & ECHO);
    ASSERT_TRUE(cooked_.c_lflag & ICANON);
  }
  void TearDown() override {
    close(slave_);
    close(master_);
  }
  bool IsCooked() {
    termios t;
    tcgetattr(slave_, &t);
    return t.c_lflag == cooked_.c_lflag && t.c_iflag == cooked_.c_iflag;
  }
  int master_ = -1, slave_ = -1;
  termios cooked_;
};

TEST_F(PtyTest, RawWhileAliveCookedAfter) {
  {
    RawTerminal raw(slave_);
    ASSERT_TRUE(raw.active());
    termios t;
    ASSERT_EQ(tcgetattr(slave_, &t), 0);
    EXPECT_FALSE(t.c_lflag & (ECHO | ICANON | ISIG));
    EXPECT_FALSE(t.c_iflag & ICRNL);
    EXPECT_TRUE(t.c_oflag & OPOST);
  }
  EXPECT_TRUE(IsCooked());
}

TEST_F(PtyTest, NotATerminalIsLeftAlone) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  RawTerminal raw(fds[0]);
  EXPECT_FALSE(raw.active());
  close(fds[0]);
  close(fds[1]);
}

// A process killed by a signal, or ending with exit(), while raw leaves
// the terminal as it found it.
TEST_F(PtyTest, RestoredWhenKilledOrExiting) {
  for (int how : {SIGTERM, SIGHUP, 0}) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      RawTerminal* raw = new RawTerminal(slave_);  // never destroyed
      if (!raw->active()) _exit(3);
      if (how) raise(how);
      exit(7);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (how) {
      ASSERT_TRUE(WIFSIGNALED(status)) << status;
      EXPECT_EQ(WTERMSIG(status), how);
    } else {
      ASSERT_TRUE(WIFEXITED(status));
      EXPECT_EQ(WEXITSTATUS(status), 7);
    }
    EXPECT_TRUE(IsCooked()) << "after signal " << how;
  }
}

}  // namespace
}  // namespace btvm
