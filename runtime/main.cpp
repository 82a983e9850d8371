// btvm's command line: `btvm run [--engine bt|direct] [--memory SIZE] [--kernel FILE]
// [--initrd FILE] [--append TEXT] [--decompress host|guest] [--demo]
// [--code-cache SIZE] [--stats]`, and `btvm bench` (runtime/bench/).
// Exit status: the guest's, as QEMU gives it ((v << 1) | 1 for a write of v
// to isa-debug-exit; 0 for a guest reset or power-off); 2 for a bad command
// line; 125 when btvm cannot run the guest (bad kernel file, an instruction
// btvm does not support yet, a triple fault, a halt nothing can end).

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/bench/bench_command.h"
#include "runtime/console.h"
#include "runtime/linux_boot.h"
#include "runtime/loader.h"
#include "runtime/machine.h"

namespace btvm {
namespace {

constexpr int kUsageError = 2;
constexpr int kRunError = 125;
constexpr uint64_t kMinCodeCache = uint64_t{64} << 10;
constexpr uint64_t kMaxCodeCache = uint64_t{1} << 30;

void PrintUsage(std::FILE* out) {
  std::fputs(
      "usage: btvm run [--engine bt|direct|kvm] [--memory SIZE] [--kernel FILE] [--initrd FILE]\n"
      "                [--append TEXT] [--decompress host|guest] [--demo]\n"
      "                [--code-cache SIZE] [--direct-transport seccomp|ptrace]\n"
      "                [--direct-policy adaptive|child] [--direct-check-maps] [--stats]\n"
      "                [--trace blocks,exits,faults] [--trace-file F] [--trace-range LO-HI]\n"
      "                [--trace-cpl N] [--gdb tcp::PORT] [--gdb-wait]\n"
      "\n"
      "  --engine bt      translate every guest instruction (the default)\n"
      "  --engine direct  translate guest kernel code, run 64-bit guest user code\n"
      "                   directly in a child process\n"
      "  --engine kvm     the host's KVM runs the guest (hardware assist), with\n"
      "                   btvm's devices and interrupt controllers\n"
      "  --memory SIZE    guest RAM: a number of MiB, or with a suffix K, M, G\n"
      "                   (2M to 64G; default 128M)\n"
      "  --kernel FILE    a Linux bzImage, or an ELF64 guest kernel with a btvm\n"
      "                   entry note (docs/entry-contract.md)\n"
      "  --initrd FILE    Linux: an initramfs\n"
      "  --append TEXT    Linux: the kernel command line (default \"console=ttyS0\")\n"
      "  --decompress host|guest  Linux: decompress the kernel on the host and enter\n"
      "                   it directly (default), or boot through its own decompressor\n"
      "  --demo           the built-in demo guest\n"
      "  --code-cache SIZE  translated-code cache, flushed whole when full\n"
      "                   (64K to 1G; default 64M)\n"
      "  --direct-transport seccomp|ptrace  how the child's traps reach btvm: a\n"
      "                   signal handler and a futex (default), or ptrace\n"
      "  --direct-policy adaptive|child  where the direct engine runs user code:\n"
      "                   a process starts translated and moves to the child once\n"
      "                   it traps sparsely (default), or always in the child\n"
      "  --direct-check-maps  after each guest TLB flush or invlpg, check that the\n"
      "                   child maps nothing the guest's page tables do not (slow;\n"
      "                   for tests)\n"
      "  --stats          when the run ends, print to stderr where the time went,\n"
      "                   the hottest blocks' code and every counter\n"
      "  --gdb tcp::PORT  a GDB remote stub on PORT (tcp:HOST:PORT; 0: any free port)\n"
      "  --gdb-wait       wait for gdb before the guest runs its first instruction\n"
      "  --trace KINDS    blocks: each block as it is translated, guest instructions\n"
      "                   beside the host code they became, and how; exits: every\n"
      "                   exit to the runtime, why and its cost; faults: every event\n"
      "                   delivered to the guest and every trap of the direct\n"
      "                   engine's child (runtime/trace.h)\n"
      "  --trace-file F   the trace into F (default: stderr)\n"
      "  --trace-range LO-HI  only blocks, exits and faults at guest addresses LO..HI\n"
      "  --trace-cpl 0|3  only those at that CPL\n"
      "\n"
      "Without --kernel: the Linux guest image if it has been built (the\n"
      "guest-image target, next to this binary's build), else the demo guest.\n"
      "The console is COM1 on the terminal; C-a x quits, C-a h lists the escapes.\n"
      "\n"
      "       btvm bench [--reps N] [--workloads LIST] [--configs LIST] ...\n"
      "  the Linux guest's workloads natively, on btvm's engines and under QEMU,\n"
      "  side by side (btvm bench --help)\n",
      out);
}

// The build directory this binary is in (build, for build/runtime/btvm).
std::string BuildDir() {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return ".";
  std::string dir(exe, static_cast<size_t>(n));
  dir = dir.substr(0, dir.rfind('/'));
  return dir.substr(0, dir.rfind('/'));
}

// The guest image the guest-image target builds (build/guest-image, this
// binary being build/runtime/btvm): sets *kernel and *initrd if it is there.
bool FindGuestImage(std::string* kernel, std::string* initrd) {
  const std::string dir = BuildDir() + "/guest-image/";
  const std::string k = dir + "vmlinuz-cloud", i = dir + "initramfs.cpio.gz";
  if (access(k.c_str(), R_OK) != 0 || access(i.c_str(), R_OK) != 0) return false;
  *kernel = k;
  *initrd = i;
  return true;
}

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "btvm: error: %s\n", message.c_str());
  return code;
}

// Parses "128", "128M", "2G", "512K", "128MiB": a bare number is MiB, as
// in QEMU's -m.
Result<uint64_t> ParseSize(std::string_view text, std::string_view what) {
  if (text.empty()) return MakeError("empty " + std::string(what));
  uint64_t value = 0;
  size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (~0ull - 9) / 10) return MakeError(std::string(what) + " '" + std::string(text) + "' is too large");
    value = value * 10 + (text[i] - '0');
  }
  if (i == 0) return MakeError(std::string(what) + " '" + std::string(text) + "' is not a number");
  std::string_view suffix = text.substr(i);
  unsigned shift;
  if (suffix.empty() || suffix == "M" || suffix == "m" || suffix == "MiB" || suffix == "MB") {
    shift = 20;
  } else if (suffix == "K" || suffix == "k" || suffix == "KiB" || suffix == "KB") {
    shift = 10;
  } else if (suffix == "G" || suffix == "g" || suffix == "GiB" || suffix == "GB") {
    shift = 30;
  } else if (suffix == "T" || suffix == "t" || suffix == "TiB" || suffix == "TB") {
    shift = 40;
  } else {
    return MakeError(std::string(what) + " '" + std::string(text) + "' has an unknown suffix");
  }
  if (value > (~0ull >> shift)) return MakeError(std::string(what) + " '" + std::string(text) + "' is too large");
  return value << shift;
}

int Run(int argc, char** argv) {
  MachineConfig config;
  std::string kernel_path, initrd_path, trace_path, gdb_spec;
  bool stats = false, demo = false, have_append = false, gdb_wait = false;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)name;
      return argv[++i];
    };
    if (arg == "--engine" || arg == "--memory" || arg == "--kernel" || arg == "--code-cache" ||
        arg == "--initrd" || arg == "--append" || arg == "--decompress" ||
        arg == "--direct-transport" || arg == "--direct-policy" || arg == "--trace" ||
        arg == "--trace-file" || arg == "--trace-range" || arg == "--trace-cpl" ||
        arg == "--gdb") {
      const char* v = value(argv[i]);
      if (!v) return Fail(kUsageError, std::string(arg) + " needs a value");
      if (arg == "--engine") {
        config.engine = v;
        if (config.engine != "bt" && config.engine != "direct" && config.engine != "kvm") {
          return Fail(kUsageError,
                      "unknown engine '" + config.engine + "' (this build has: bt, direct, kvm)");
        }
      } else if (arg == "--memory") {
        Result<uint64_t> size = ParseSize(v, "memory size");
        if (!size) return Fail(kUsageError, size.error().message);
        config.memory = size.value();
      } else if (arg == "--code-cache") {
        Result<uint64_t> size = ParseSize(v, "code cache size");
        if (!size) return Fail(kUsageError, size.error().message);
        if (size.value() < kMinCodeCache || size.value() > kMaxCodeCache) {
          return Fail(kUsageError, "code cache size '" + std::string(v) +
                                       "' is outside 64K to 1G");
        }
        config.code_cache = size.value();
      } else if (arg == "--direct-transport") {
        config.direct_transport = v;
        if (config.direct_transport != "seccomp" && config.direct_transport != "ptrace") {
          return Fail(kUsageError,
                      "--direct-transport takes seccomp or ptrace, not '" + std::string(v) + "'");
        }
      } else if (arg == "--direct-policy") {
        if (std::string_view(v) != "adaptive" && std::string_view(v) != "child") {
          return Fail(kUsageError,
                      "--direct-policy takes adaptive or child, not '" + std::string(v) + "'");
        }
        config.direct_always_child = std::string_view(v) == "child";
      } else if (arg == "--trace" || arg == "--trace-range" || arg == "--trace-cpl") {
        Status t = arg == "--trace"         ? ParseTraceKinds(v, &config.trace)
                   : arg == "--trace-range" ? ParseTraceRange(v, &config.trace)
                                            : ParseTraceCpl(v, &config.trace);
        if (!t) return Fail(kUsageError, t.error().message);
      } else if (arg == "--trace-file") {
        trace_path = v;
      } else if (arg == "--gdb") {
        gdb_spec = v;
      } else if (arg == "--initrd") {
        initrd_path = v;
      } else if (arg == "--append") {
        config.cmdline = v;
        have_append = true;
      } else if (arg == "--decompress") {
        if (std::string_view(v) == "host") {
          config.linux_entry = KernelEntry::kDecompressed;
        } else if (std::string_view(v) == "guest") {
          config.linux_entry = KernelEntry::kBzImage;
        } else {
          return Fail(kUsageError, "--decompress takes host or guest, not '" + std::string(v) + "'");
        }
      } else {
        kernel_path = v;
      }
    } else if (arg == "--gdb-wait") {
      gdb_wait = true;
    } else if (arg == "--direct-check-maps") {
      config.direct_check_maps = true;
    } else if (arg == "--demo") {
      demo = true;
    } else if (arg == "--stats") {
      stats = true;
      config.stats = true;
    } else if (arg == "--help" || arg == "-h") {
      PrintUsage(stdout);
      return 0;
    } else {
      return Fail(kUsageError, "unknown argument '" + std::string(arg) + "' (see btvm --help)");
    }
  }

  if (demo && !kernel_path.empty()) return Fail(kUsageError, "--demo and --kernel exclude each other");
  if (kernel_path.empty() && !demo && initrd_path.empty()) {
    FindGuestImage(&kernel_path, &initrd_path);
  }
  if (kernel_path.empty()) {
    if (!initrd_path.empty() || have_append) {
      return Fail(kUsageError, "--initrd and --append need a Linux --kernel");
    }
    std::span<const uint8_t> image = DefaultGuestImage();
    config.kernel.assign(image.begin(), image.end());
  } else {
    Result<std::vector<uint8_t>> file = ReadKernelFile(kernel_path);
    if (!file) return Fail(kRunError, file.error().message);
    config.kernel = std::move(file.value());
  }
  if (!initrd_path.empty()) {
    Result<std::vector<uint8_t>> file = ReadKernelFile(initrd_path, "initrd");
    if (!file) return Fail(kRunError, file.error().message);
    config.initrd = std::move(file.value());
  }
  if (IsBzImage(config.kernel) && !have_append && config.cmdline.empty()) {
    config.cmdline = "console=ttyS0";
  }

  if (!trace_path.empty() && !config.trace.any()) {
    return Fail(kUsageError, "--trace-file needs --trace");
  }
  if (config.trace.any() && config.engine == "kvm") {
    return Fail(kUsageError, "--trace shows translation: it needs --engine bt or direct");
  }
  // The trace file (stderr by default), closed at exit.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> trace_file(nullptr, std::fclose);
  if (!trace_path.empty()) {
    trace_file.reset(std::fopen(trace_path.c_str(), "w"));
    if (!trace_file) {
      return Fail(kRunError, "cannot write the trace file " + trace_path + ": " + std::strerror(errno));
    }
    config.trace_out = trace_file.get();
  }

  if (gdb_wait && gdb_spec.empty()) return Fail(kUsageError, "--gdb-wait needs --gdb");
  if (!gdb_spec.empty() && config.engine == "kvm") {
    return Fail(kUsageError, "--gdb needs --engine bt or direct");
  }
  std::unique_ptr<GdbStub> gdb;
  if (!gdb_spec.empty()) {
    Result<std::unique_ptr<GdbStub>> listening = GdbStub::Listen(gdb_spec);
    if (!listening) return Fail(kUsageError, listening.error().message);
    gdb = std::move(listening.value());
    config.gdb = gdb.get();
  }

  Result<std::unique_ptr<Machine>> machine = Machine::Create(config);
  if (!machine) return Fail(kRunError, machine.error().message);
  if (gdb && gdb_wait) {
    // The port too, for --gdb tcp::0 (any free port).
    std::fprintf(stderr, "btvm: waiting for gdb on port %u\n", gdb->port());
    if (Status s = gdb->Accept(); !s) return Fail(kRunError, s.error().message);
  }
  RunOutcome o;
  {
    // A terminal on stdin is in raw mode while the guest runs (qemu
    // -nographic); restored here, at exit and on fatal signals.
    RawTerminal terminal(config.console_in);
    o = machine.value()->Run();
  }
  if (stats) {
    machine.value()->PrintStats(stderr);
  }
  if (!o.ok) return Fail(kRunError, o.message);
  return o.status;
}

}  // namespace
}  // namespace btvm

int main(int argc, char** argv) {
  if (argc < 2) {
    btvm::PrintUsage(stderr);
    return btvm::kUsageError;
  }
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    btvm::PrintUsage(stdout);
    return 0;
  }
  if (cmd == "bench") {
    btvm::bench::Defaults defaults;
    btvm::FindGuestImage(&defaults.kernel, &defaults.initrd);
    defaults.native = btvm::BuildDir() + "/tests/linux/btvm_bench_native";
    return btvm::bench::RunBenchCommand(argc - 1, argv + 1, defaults);
  }
  if (cmd != "run") {
    return btvm::Fail(btvm::kUsageError, "unknown command '" + std::string(cmd) +
                                             "' (try: btvm run --help, btvm bench --help)");
  }
  return btvm::Run(argc, argv);
}
