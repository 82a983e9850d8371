#pragma once
// What `btvm bench` measured, and its three renderings: the terminal
// table, the results file (JSON) and the self-contained HTML report.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace btvm::bench {

struct Workload {
  std::string name;   // "boot", or a btvm-bench subcommand
  std::string what;   // one line for people
  uint64_t count = 0;  // operations a run times (boot: 1)
};

struct Configuration {
  std::string name;  // native, bt, direct, kvm, qemu-tcg, qemu-kvm
  std::string what;
  bool ran = false;
  std::string why;  // when it did not run (or stopped running), why
  std::vector<std::string> command;  // what runs the guest (empty for native)
};

struct Sample {
  std::string workload, config;
  int rep = 0;
  double ns = 0;       // per operation (boot: to the prompt)
  std::string result;  // the workload's printed result (boot: empty)
};

struct Results {
  // The host, the guest and this run.
  std::string date, host_cpu, host_kernel, btvm_version, qemu_version;
  int host_cpus = 0;
  std::string guest_kernel, guest_initrd, guest_append;
  uint64_t guest_memory_mib = 0;
  int reps = 0;
  double scale = 1;
  std::vector<Workload> workloads;
  std::vector<Configuration> configs;
  std::vector<Sample> samples;
  std::vector<std::string> problems;  // failed runs, results that differ
};

struct Summary {
  double min = 0, median = 0;
  size_t runs = 0;
};

std::optional<Summary> Summarize(const Results& r, const std::string& workload,
                                 const std::string& config);
// The configuration the workload's ratios are taken against: native when it
// has samples for it, else the first configuration that has (boot has no
// native run).
std::string Baseline(const Results& r, const std::string& workload);
// median(config) / median(baseline), if both have samples.
std::optional<double> Ratio(const Results& r, const std::string& workload,
                            const std::string& config);

// "2.08 ns", "15.5 us", "1.93 ms", "2.63 s": three significant digits.
std::string FormatNs(double ns);

std::string FormatTable(const Results& r);
std::string ToJson(const Results& r);
std::string ToHtml(const Results& r);

}  // namespace btvm::bench
