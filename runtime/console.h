#pragma once
// The interactive console, as `qemu -nographic` has it: the host terminal
// in raw mode, connected to COM1, with Ctrl-A escapes for the monitor.
//
// RawTerminal puts a terminal in raw mode (no echo, no line editing, no
// signals from Ctrl-C/Ctrl-Z/Ctrl-\: those bytes go to the guest; output
// post-processing kept, as QEMU keeps it) and restores it on every way out
// of the process: its destructor, exit(), and the signals that would end
// the process (restored, then the signal is raised again with its default
// action, so the exit status still says which signal it was).
//
// ConsoleEscapes filters the bytes typed: Ctrl-A x ends the run, Ctrl-A h
// prints the list of escapes, Ctrl-A Ctrl-A sends one Ctrl-A to the guest;
// another byte after Ctrl-A is dropped with the Ctrl-A (QEMU's mux does the
// same for escapes it does not know).

#include <cstdint>
#include <cstdio>
#include <string>

namespace btvm {

class RawTerminal {
 public:
  // Does nothing unless `fd` is a terminal.
  explicit RawTerminal(int fd);
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

  bool active() const { return active_; }
  // Puts the terminal back as it was (idempotent; async-signal-safe).
  static void Restore();

 private:
  bool active_ = false;
};

class ConsoleEscapes {
 public:
  static constexpr uint8_t kEscape = 0x01;  // Ctrl-A

  enum class Action { kNone, kDeliver, kQuit, kHelp };
  // What typing `byte` does; with kDeliver, *out is the byte for the guest.
  Action Feed(uint8_t byte, uint8_t* out);
  // The text Ctrl-A h prints.
  static std::string HelpText();

 private:
  bool pending_ = false;  // the previous byte was Ctrl-A
};

}  // namespace btvm
