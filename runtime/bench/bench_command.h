#pragma once
// `btvm bench`: the Linux guest's workloads (guest/linux/btvm-bench.c) on
// every configuration this host can run — natively, on btvm's engines and
// under QEMU — with the same kernel, initramfs and command line, several
// repetitions interleaved; a table on the terminal, a results file and an
// HTML report (runtime/bench/results.h).

#include <string>

namespace btvm::bench {

struct Defaults {
  std::string kernel, initrd;  // the guest image the build made, if any
  std::string native;          // the host build of btvm-bench, if any
};

// argv[0] is "bench". Exit status: 0, 1 when a run failed or a result
// differed, 2 for a bad command line.
int RunBenchCommand(int argc, char** argv, const Defaults& defaults);

}  // namespace btvm::bench
