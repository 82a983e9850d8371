#include "runtime/bench/bench_command.h"

#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits.h>
#include <map>
#include <regex>
#include <sstream>
#include <string_view>

#include "runtime/bench/console_process.h"
#include "runtime/bench/results.h"

#ifndef BTVM_VERSION
#define BTVM_VERSION "unknown"
#endif

namespace btvm::bench {
namespace {

using Clock = ConsoleProcess::Clock;

constexpr std::string_view kPrompt = "btvm# ";  // scripts/build-guest-image.sh's PS1

struct WorkloadDef {
  const char* name;
  const char* what;
  uint64_t count;  // at --scale 1
};

// The counts make one repetition of everything take about a minute on a
// 2-core machine; pagefault's pages come out of the guest's memory.
constexpr WorkloadDef kWorkloads[] = {
    {"boot", "launch to the guest's shell prompt", 1},
    {"spin", "user compute loop, registers only (xorshift)", 200'000'000},
    {"compute", "memory-bound user loop: a hash over a 16 KiB table", 20'000},
    {"syscall", "getppid() round trip", 200'000},
    {"pagefault", "first touch of a fresh anonymous page", 16'000},
    {"forkwait", "fork() + waitpid() of a child that exits at once", 300},
    {"forkexec", "fork() + execve(\"/bin/true\") + waitpid()", 100},
    {"pingpong", "a byte there and back between two processes over pipes", 4'000},
    {"fsmix", "16 files created, written, listed, renamed, read and removed (tmpfs)", 200},
};

struct ConfigDef {
  const char* name;
  const char* what;
};

constexpr ConfigDef kConfigs[] = {
    {"native", "the workload program on the host, no virtualization"},
    {"bt", "btvm, every guest instruction translated (--engine bt)"},
    {"direct", "btvm, guest kernel translated, guest user code run directly (--engine direct)"},
    {"kvm", "btvm on the host's KVM (hardware assist)"},
    {"qemu-tcg", "QEMU, its binary translator (-accel tcg)"},
    {"qemu-kvm", "QEMU on the host's KVM (-accel kvm)"},
};

struct Options {
  int reps = 3;
  double scale = 1;
  std::vector<std::string> workloads, configs;
  std::string out_dir, kernel, initrd, append = "console=ttyS0", qemu = "qemu-system-x86_64",
                       native;
  uint64_t memory_mib = 256;
  double timeout_s = 900;
  bool progress = true;
};

void PrintUsage(std::FILE* out) {
  std::fputs(
      "usage: btvm bench [--reps N] [--workloads LIST] [--configs LIST] [--scale F]\n"
      "                  [--out DIR] [--kernel FILE] [--initrd FILE] [--append TEXT]\n"
      "                  [--memory MiB] [--qemu PROGRAM] [--native PROGRAM]\n"
      "                  [--timeout S] [--no-progress]\n"
      "\n"
      "Runs the Linux guest's workloads on every configuration, --reps times each\n"
      "(interleaved), and writes the table to stdout, DIR/results.json and\n"
      "DIR/report.html (DIR: --out, default btvm-bench-DATE-TIME).\n"
      "\n"
      "  --workloads LIST  of boot spin compute syscall pagefault forkwait forkexec\n"
      "                    pingpong fsmix (default: all), comma- or space-separated\n"
      "  --configs LIST    of native bt direct kvm qemu-tcg qemu-kvm (default: all;\n"
      "                    the report says why one did not run)\n"
      "  --reps N          repetitions (default 3)\n"
      "  --scale F         multiply the workloads' counts (default 1)\n"
      "  --kernel, --initrd  the guest (default: the guest image of this build)\n"
      "  --append TEXT     its command line (default \"console=ttyS0\")\n"
      "  --memory MiB      guest RAM for every configuration (default 256)\n"
      "  --qemu PROGRAM    default qemu-system-x86_64\n"
      "  --native PROGRAM  the host build of btvm-bench (default: this build's)\n"
      "  --timeout S       limit for one boot and its workloads (default 900)\n"
      "  --no-progress     no progress bar on stderr\n",
      out);
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "btvm: error: %s (see btvm bench --help)\n", message.c_str());
  return 2;
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    if (c == ',' || c == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool Executable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// A program name as execvp would find it: its path, or empty.
std::string FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return Executable(name) ? name : "";
  const char* path = std::getenv("PATH");
  const std::string all = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find(':', start);
    if (end == std::string::npos) end = all.size();
    const std::string candidate = all.substr(start, end - start) + "/" + name;
    if (end > start && Executable(candidate)) return candidate;
    start = end + 1;
  }
  return "";
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// What a KVM failure may be owed to: "" or "; ...".
std::string KvmNote() {
  struct stat st;
  if (stat("/sys/module/kvm_pvm", &st) != 0) return "";
  return "; this host's /dev/kvm is KVM's PVM module (kvm_pvm), which cannot run an unmodified "
         "guest kernel";
}

// The last non-empty line, without its line end (a console's \r\n).
std::string LastLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  const size_t nl = text.find_last_of('\n');
  std::string line = nl == std::string::npos ? text : text.substr(nl + 1);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line.size() > 200 ? line.substr(0, 200) + "..." : line;
}

std::string ReadFileText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string HostCpu() {
  std::istringstream in(ReadFileText("/proc/cpuinfo"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

std::string ProgramVersion(const std::string& program) {
  Result<ConsoleProcess> p = ConsoleProcess::Start({program, "--version"});
  if (!p) return "";
  const int status = p->Finish(Clock::now() + std::chrono::seconds(10));
  return status == 0 ? FirstLine(p->output()) : "";
}

std::string Now() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z", std::localtime(&t));
  return buf;
}

std::string DefaultOutDir() {
  char buf[64];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "btvm-bench-%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// The progress bar on stderr (a terminal), or a line a finished run.
class Progress {
 public:
  Progress(bool on, size_t total) : bar_(on && isatty(2)), total_(total ? total : 1) {}
  void Step(const std::string& label) {
    ++done_;
    Show(label);
  }
  void Show(const std::string& label) {
    if (!bar_) return;
    constexpr size_t kWidth = 30;
    const size_t filled = kWidth * done_ / total_;
    std::string line = "\r[" + std::string(filled, '#') + std::string(kWidth - filled, '.') +
                       "] " + std::to_string(100 * done_ / total_) + "% " + label;
    if (line.size() < last_) line += std::string(last_ - line.size(), ' ');
    last_ = line.size();
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }
  void Line(const std::string& text) {
    if (bar_) {
      Clear();
      std::fprintf(stderr, "%s\n", text.c_str());
    } else {
      std::fprintf(stderr, "btvm bench: %s\n", text.c_str());
    }
  }
  void Clear() {
    if (bar_ && last_) std::fprintf(stderr, "\r%s\r", std::string(last_, ' ').c_str());
    last_ = 0;
  }

 private:
  bool bar_;
  size_t total_, done_ = 0, last_ = 0;
};

class Bench {
 public:
  Bench(Options o, Results* r) : o_(std::move(o)), r_(*r) {}
  int Run();

 private:
  void Prepare();
  void RunNative(int rep);
  void RunGuest(Configuration& c, int rep);
  // The btvm-bench line for `w` in `text`: records the sample, or a problem.
  void Record(const std::string& config, int rep, const Workload& w, const std::string& text);
  void CheckResults();

  Options o_;
  Results& r_;
  std::unique_ptr<Progress> progress_;
};

void Bench::Prepare() {
  for (const std::string& name : o_.workloads) {
    for (const WorkloadDef& d : kWorkloads) {
      if (name != d.name) continue;
      const uint64_t n = d.count == 1 ? 1 : static_cast<uint64_t>(std::llround(d.count * o_.scale));
      r_.workloads.push_back({d.name, d.what, n < 1 ? 1 : n});
    }
  }
  const bool image = !o_.kernel.empty() && !o_.initrd.empty() &&
                     access(o_.kernel.c_str(), R_OK) == 0 && access(o_.initrd.c_str(), R_OK) == 0;
  const std::string no_image =
      o_.kernel.empty() ? "no guest image (build the guest-image target, or give --kernel and "
                          "--initrd)"
                        : "cannot read the guest image " + o_.kernel + " / " + o_.initrd;
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  const std::string btvm = n > 0 ? std::string(self, static_cast<size_t>(n)) : "btvm";
  const std::string qemu = FindProgram(o_.qemu);
  r_.qemu_version = qemu.empty() ? "" : ProgramVersion(qemu);
  const std::string memory = std::to_string(o_.memory_mib);
  for (const std::string& name : o_.configs) {
    for (const ConfigDef& d : kConfigs) {
      if (name != d.name) continue;
      Configuration c{d.name, d.what, true, "", {}};
      if (c.name == "native") {
        if (o_.native.empty() || !Executable(o_.native)) {
          c.ran = false;
          c.why = o_.native.empty() ? "no host build of btvm-bench (give --native)"
                                    : "cannot run " + o_.native;
        }
      } else if (!image) {
        c.ran = false;
        c.why = no_image;
      } else if (c.name == "bt" || c.name == "direct") {
        c.command = {btvm, "run", "--engine", c.name, "--memory", memory + "M", "--kernel",
                     o_.kernel, "--initrd", o_.initrd, "--append", o_.append};
      } else if (c.name == "kvm") {
        c.command = {btvm, "run", "--engine", "kvm", "--memory", memory + "M", "--kernel",
                     o_.kernel, "--initrd", o_.initrd, "--append", o_.append};
      } else if (qemu.empty()) {
        c.ran = false;
        c.why = o_.qemu + " not found";
      } else {
        const bool kvm = c.name == "qemu-kvm";
        if (kvm && access("/dev/kvm", R_OK | W_OK) != 0) {
          c.ran = false;
          c.why = std::string("no usable /dev/kvm (") + std::strerror(errno) + ")";
        }
        c.command = {qemu, "-accel", kvm ? "kvm" : "tcg", "-cpu", kvm ? "host" : "max",
                     "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
                     "-no-reboot", "-m", memory, "-kernel", o_.kernel, "-initrd", o_.initrd,
                     "-append", o_.append};
      }
      r_.configs.push_back(std::move(c));
    }
  }
}

void Bench::Record(const std::string& config, int rep, const Workload& w,
                   const std::string& text) {
  const std::regex line("btvm-bench " + w.name + " " + std::to_string(w.count) +
                        ": result (0x[0-9a-f]+), ([0-9]+) ns");
  std::smatch m;
  if (!std::regex_search(text, m, line)) {
    const std::string last = LastLine(text);
    r_.problems.push_back(w.name + " on " + config + " (repetition " + std::to_string(rep) +
                          "): no result line" + (last.empty() ? "" : " (it said: " + last + ")"));
    return;
  }
  const double ns = std::stod(m[2].str()) / static_cast<double>(w.count);
  r_.samples.push_back({w.name, config, rep, ns, m[1].str()});
}

void Bench::RunNative(int rep) {
  for (const Workload& w : r_.workloads) {
    if (w.name == "boot") continue;
    progress_->Show("repetition " + std::to_string(rep) + ", native: " + w.name);
    Result<ConsoleProcess> p = ConsoleProcess::Start({o_.native, w.name, std::to_string(w.count)});
    if (!p) {
      r_.problems.push_back("native " + w.name + ": " + p.error().message);
      continue;
    }
    const int status = p->Finish(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(o_.timeout_s)));
    if (status != 0) {
      r_.problems.push_back("native " + w.name + ": exit status " + std::to_string(status));
    }
    Record("native", rep, w, p->output());
    progress_->Step("repetition " + std::to_string(rep) + ", native: " + w.name);
  }
}

void Bench::RunGuest(Configuration& c, int rep) {
  const std::string label = "repetition " + std::to_string(rep) + ", " + c.name;
  progress_->Show(label + ": boot");
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.timeout_s));
  Result<ConsoleProcess> started = ConsoleProcess::Start(c.command);
  if (!started) {
    c.ran = false;
    c.why = started.error().message;
    return;
  }
  ConsoleProcess& p = started.value();
  const bool on_kvm = c.name == "kvm" || c.name == "qemu-kvm";
  const std::string who = c.name == "kvm" ? "btvm's kvm engine" : "QEMU with KVM";
  if (on_kvm && !p.AnyOutput(start + std::chrono::seconds(20))) {
    // A KVM that cannot run the guest (the PVM module, say) may leave the
    // guest silent instead of failing.
    c.ran = false;
    c.why = who + " printed nothing in 20 s" + KvmNote();
    return;
  }
  std::string text;
  ConsoleProcess::Read got = p.ReadUntil(kPrompt, deadline, &text);
  if (got != ConsoleProcess::Read::kFound) {
    const std::string what = got == ConsoleProcess::Read::kTimeout ? "no shell prompt in time"
                                                                    : "it ended before the prompt";
    const std::string last = LastLine(p.output());
    if (rep == 1 && on_kvm) {
      c.ran = false;
      c.why = who + " did not boot the guest: " + what +
              (last.empty() ? "" : " (it said: " + last + ")") + KvmNote();
    } else {
      r_.problems.push_back(c.name + " (repetition " + std::to_string(rep) + "): " + what +
                            (last.empty() ? "" : " (its last line: " + last + ")"));
    }
    return;
  }
  const double boot_ns =
      std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  for (const Workload& w : r_.workloads) {
    if (w.name == "boot") {
      r_.samples.push_back({"boot", c.name, rep, boot_ns, ""});
      progress_->Step(label + ": boot");
      continue;
    }
    progress_->Show(label + ": " + w.name);
    if (Status s = p.Type("btvm-bench " + w.name + " " + std::to_string(w.count)); !s) {
      r_.problems.push_back(c.name + ": " + s.error().message);
      return;
    }
    got = p.ReadUntil(kPrompt, deadline, &text);
    Record(c.name, rep, w, text);
    progress_->Step(label + ": " + w.name);
    if (got != ConsoleProcess::Read::kFound) {
      r_.problems.push_back(c.name + " (repetition " + std::to_string(rep) +
                            "): no prompt after " + w.name);
      return;
    }
  }
  // The end, as at a console: the guest reboots, which ends btvm and QEMU
  // (-no-reboot).
  if (p.Type("reboot -f")) {
    const int status = p.Finish(Clock::now() + std::chrono::seconds(30));
    if (status < 0) {
      r_.problems.push_back(c.name + " (repetition " + std::to_string(rep) +
                            "): did not end after reboot -f");
    }
  }
}

void Bench::CheckResults() {
  // Every run of a workload must print the same result: native's, or for
  // syscall (a sum of getppid(): the parent's pid differs on the host) the
  // first guest configuration's.
  for (const Workload& w : r_.workloads) {
    if (w.name == "boot") continue;
    const Sample* ref = nullptr;
    for (const Sample& s : r_.samples) {
      if (s.workload != w.name) continue;
      if (w.name == "syscall" && s.config == "native") continue;
      if (!ref || (s.config == "native" && ref->config != "native")) ref = &s;
    }
    if (!ref) continue;
    for (const Sample& s : r_.samples) {
      if (s.workload != w.name || s.result == ref->result) continue;
      if (w.name == "syscall" && s.config == "native") continue;
      r_.problems.push_back(w.name + " on " + s.config + " (repetition " +
                            std::to_string(s.rep) + ") printed " + s.result + ", " +
                            ref->config + " " + ref->result);
    }
  }
}

int Bench::Run() {
  Prepare();
  size_t steps = 0;
  for (const Configuration& c : r_.configs) {
    if (!c.ran) continue;
    for (const Workload& w : r_.workloads) steps += !(c.name == "native" && w.name == "boot");
  }
  progress_ = std::make_unique<Progress>(o_.progress, steps * static_cast<size_t>(o_.reps));
  for (int rep = 1; rep <= o_.reps; ++rep) {
    for (Configuration& c : r_.configs) {
      if (!c.ran) continue;
      const Clock::time_point t0 = Clock::now();
      if (c.name == "native") {
        RunNative(rep);
      } else {
        RunGuest(c, rep);
      }
      char took[32];
      std::snprintf(took, sizeof took, "%.1f s",
                    std::chrono::duration<double>(Clock::now() - t0).count());
      progress_->Line("repetition " + std::to_string(rep) + "/" + std::to_string(o_.reps) +
                      ", " + c.name + ": " + (c.ran ? took : "did not run: " + c.why));
    }
  }
  progress_->Clear();
  CheckResults();
  return r_.problems.empty() ? 0 : 1;
}

}  // namespace

int RunBenchCommand(int argc, char** argv, const Defaults& defaults) {
  Options o;
  o.kernel = defaults.kernel;
  o.initrd = defaults.initrd;
  o.native = defaults.native;
  for (const WorkloadDef& d : kWorkloads) o.workloads.push_back(d.name);
  for (const ConfigDef& d : kConfigs) o.configs.push_back(d.name);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(stdout);
      return 0;
    }
    if (arg == "--no-progress") {
      o.progress = false;
      continue;
    }
    constexpr std::string_view kValued[] = {"--reps", "--scale", "--timeout", "--memory",
                                            "--workloads", "--configs", "--out", "--kernel",
                                            "--initrd", "--append", "--qemu", "--native"};
    if (std::find(std::begin(kValued), std::end(kValued), arg) == std::end(kValued)) {
      return Usage("unknown argument '" + std::string(arg) + "'");
    }
    if (i + 1 >= argc) return Usage(std::string(arg) + " needs a value");
    const std::string v = argv[++i];
    char* end = nullptr;
    if (arg == "--reps") {
      const long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n < 1 || n > 1000) return Usage("--reps takes 1 to 1000, not '" + v + "'");
      o.reps = static_cast<int>(n);
    } else if (arg == "--scale") {
      o.scale = std::strtod(v.c_str(), &end);
      if (*end || !(o.scale > 0) || o.scale > 1e6) return Usage("--scale takes a positive number, not '" + v + "'");
    } else if (arg == "--timeout") {
      o.timeout_s = std::strtod(v.c_str(), &end);
      if (*end || !(o.timeout_s > 0)) return Usage("--timeout takes seconds, not '" + v + "'");
    } else if (arg == "--memory") {
      const long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n < 64 || n > 65536) return Usage("--memory takes 64 to 65536 (MiB), not '" + v + "'");
      o.memory_mib = static_cast<uint64_t>(n);
    } else if (arg == "--workloads" || arg == "--configs") {
      std::vector<std::string> list = SplitList(v);
      if (list.empty()) return Usage(std::string(arg) + " needs at least one name");
      for (const std::string& name : list) {
        bool known = false;
        if (arg == "--workloads") {
          for (const WorkloadDef& d : kWorkloads) known |= name == d.name;
        } else {
          for (const ConfigDef& d : kConfigs) known |= name == d.name;
        }
        if (!known) {
          return Usage("unknown " + std::string(arg == "--workloads" ? "workload" : "configuration") +
                       " '" + name + "'");
        }
      }
      (arg == "--workloads" ? o.workloads : o.configs) = list;
    } else if (arg == "--out") {
      o.out_dir = v;
    } else if (arg == "--kernel") {
      o.kernel = v;
    } else if (arg == "--initrd") {
      o.initrd = v;
    } else if (arg == "--append") {
      o.append = v;
    } else if (arg == "--qemu") {
      o.qemu = v;
    } else {
      o.native = v;
    }
  }
  if (o.out_dir.empty()) o.out_dir = DefaultOutDir();
  if (mkdir(o.out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "btvm: error: cannot make %s: %s\n", o.out_dir.c_str(),
                 std::strerror(errno));
    return 1;
  }

  Results r;
  r.date = Now();
  r.host_cpu = HostCpu();
  r.host_cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  utsname u;
  r.host_kernel = uname(&u) == 0 ? u.release : "unknown";
  r.btvm_version = BTVM_VERSION;
  r.guest_kernel = o.kernel;
  r.guest_initrd = o.initrd;
  r.guest_append = o.append;
  r.guest_memory_mib = o.memory_mib;
  r.reps = o.reps;
  r.scale = o.scale;
  const std::string out_dir = o.out_dir;
  const int status = Bench(std::move(o), &r).Run();

  std::fputs(FormatTable(r).c_str(), stdout);
  const std::string json = out_dir + "/results.json", html = out_dir + "/report.html";
  for (const auto& [path, text] : {std::pair{json, ToJson(r)}, std::pair{html, ToHtml(r)}}) {
    std::ofstream f(path);
    f << text;
    if (!f.good()) {
      std::fprintf(stderr, "btvm: error: cannot write %s\n", path.c_str());
      return 1;
    }
  }
  std::printf("results: %s\nreport: %s\n", json.c_str(), html.c_str());
  return status;
}

}  // namespace btvm::bench
