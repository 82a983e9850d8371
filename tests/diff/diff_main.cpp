// btvm_difftest: differential testing of the bt engine against the host CPU.
//
//   btvm_difftest --seed S --count N [--start I] [--cpl 0|3|both]
//                 [--include a,b] [--exclude a,b] [--only a,b]
//                 [--no-minimize] [--max-reports K] [--jobs J] [--exact-fault-flags]
//                 [--verbose] [--list]
//   btvm_difftest --code "48 01 d8 ..." [--set rax=1,r15=2] [--seed S] [--cpl ...]
//
// --code runs the given bytes instead (a reproducer), from the initial
// state of sequence --start of the seed, --set registers overridden; its
// flag masks follow the direct branches in the code.
//
// --exact-fault-flags compares the arithmetic flags of a fault's frame even
// where they are dead at the faulting instruction (FaultFlags, difftest.h).
//
// Sequence I of seed S is the same on every run and every machine with the
// same host features, so a mismatch is reproduced with
//   btvm_difftest --seed S --start I --count 1 --cpl C --verbose
// Exit status: 0 if every run matched, 1 on a mismatch, 2 on a usage or
// setup error.

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tests/diff/bt_runner.h"
#include "tests/diff/difftest.h"
#include "tests/diff/generator.h"

namespace btvm::diff {
namespace {

constexpr int kMaxJobs = 64;

struct Options {
  uint64_t seed = 1;
  uint64_t start = 0;
  uint64_t count = 100;
  bool cpl0 = true, cpl3 = true;
  bool verbose = false;
  bool minimize = true;
  bool list = false;
  FaultFlags fault_flags = FaultFlags::kMaskDead;
  CategorySet categories = DefaultCategories();
  int max_reports = 20;  // per job
  uint64_t jobs = 1;  // --jobs: processes the range is split over
  std::vector<uint8_t> code;                       // --code
  std::vector<std::pair<int, uint64_t>> settings;  // --set: register (16 = rflags), value
};

void Usage(std::FILE* out) {
  std::fprintf(out,
               "usage: btvm_difftest [--seed S] [--count N] [--start I] [--cpl 0|3|both]\n"
               "                     [--include CATS] [--exclude CATS] [--only CATS]\n"
               "                     [--no-minimize] [--max-reports K] [--jobs J]\n"
               "                     [--exact-fault-flags] [--verbose] [--list]\n"
               "       btvm_difftest --code HEX [--set REG=V,...] [--seed S] [--cpl 0|3|both]\n"
               "Runs N random instruction sequences natively and on the bt engine and\n"
               "compares the final state. CATS is a comma-separated list (--list).\n"
               "--jobs J splits the range over J processes; --max-reports counts per job.\n"
               "--exact-fault-flags: compare a fault's flags even where they are dead.\n");
}

bool ParseCategories(std::string_view list, CategorySet* out) {
  out->reset();
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view name = list.substr(0, comma);
    if (name == "all") {
      out->set();
    } else if (auto c = CategoryByName(name)) {
      out->set(static_cast<size_t>(*c));
    } else {
      std::fprintf(stderr, "btvm_difftest: unknown category '%.*s' (see --list)\n",
                   static_cast<int>(name.size()), name.data());
      return false;
    }
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return true;
}

bool ParseU64(const char* s, uint64_t* v) {
  char* end = nullptr;
  errno = 0;
  *v = std::strtoull(s, &end, 0);
  return errno == 0 && end != s && *end == '\0';
}

bool ParseCode(std::string_view hex, std::vector<uint8_t>* out) {
  std::string digits;
  for (char c : hex) {
    if (std::isxdigit(static_cast<unsigned char>(c))) {
      digits += c;
    } else if (c != ' ' && c != ',') {
      return false;
    }
  }
  if (digits.empty() || digits.size() % 2) return false;
  for (size_t i = 0; i < digits.size(); i += 2) {
    out->push_back(static_cast<uint8_t>(std::stoul(digits.substr(i, 2), nullptr, 16)));
  }
  return true;
}

bool ParseSettings(std::string_view list, std::vector<std::pair<int, uint64_t>>* out) {
  static constexpr const char* kNames[] = {"rax", "rcx", "rdx", "rbx", "rsp",   "rbp",
                                           "rsi", "rdi", "r8",  "r9",  "r10",   "r11",
                                           "r12", "r13", "r14", "r15", "rflags"};
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view item = list.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) return false;
    const std::string_view name = item.substr(0, eq);
    int reg = -1;
    for (int i = 0; i < 17; ++i) {
      if (name == kNames[i]) reg = i;
    }
    uint64_t v;
    if (reg < 0 || !ParseU64(std::string(item.substr(eq + 1)).c_str(), &v)) return false;
    out->emplace_back(reg, v);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return true;
}

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "btvm_difftest: %s needs a value\n", argv[i]);
        return nullptr;
      }
      return argv[++i];
    };
    if (a == "--seed" || a == "--count" || a == "--start" || a == "--max-reports" ||
        a == "--jobs") {
      const char* v = value();
      uint64_t n;
      if (!v || !ParseU64(v, &n)) return false;
      if (a == "--seed") o->seed = n;
      if (a == "--count") o->count = n;
      if (a == "--start") o->start = n;
      if (a == "--max-reports") o->max_reports = static_cast<int>(n);
      if (a == "--jobs") {
        if (n < 1 || n > kMaxJobs) {
          std::fprintf(stderr, "btvm_difftest: --jobs takes 1 to %d\n", kMaxJobs);
          return false;
        }
        o->jobs = n;
      }
    } else if (a == "--cpl") {
      const char* v = value();
      if (!v) return false;
      const std::string_view s = v;
      o->cpl0 = s == "0" || s == "both";
      o->cpl3 = s == "3" || s == "both";
      if (!o->cpl0 && !o->cpl3) return false;
    } else if (a == "--include" || a == "--exclude" || a == "--only") {
      const char* v = value();
      CategorySet set;
      if (!v || !ParseCategories(v, &set)) return false;
      if (a == "--include") o->categories |= set;
      if (a == "--exclude") o->categories &= ~set;
      if (a == "--only") o->categories = set;
    } else if (a == "--code") {
      const char* v = value();
      if (!v || !ParseCode(v, &o->code)) return false;
      o->count = 1;
    } else if (a == "--set") {
      const char* v = value();
      if (!v || !ParseSettings(v, &o->settings)) return false;
    } else if (a == "--verbose") {
      o->verbose = true;
    } else if (a == "--exact-fault-flags") {
      o->fault_flags = FaultFlags::kExact;
    } else if (a == "--no-minimize") {
      o->minimize = false;
    } else if (a == "--list") {
      o->list = true;
    } else if (a == "--help" || a == "-h") {
      Usage(stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "btvm_difftest: unknown argument '%s'\n", argv[i]);
      return false;
    }
  }
  return true;
}

std::string CategoriesOf(const Sequence& s) {
  CategorySet seen;
  for (const Item& it : s.items) seen.set(static_cast<size_t>(it.category));
  std::string out;
  for (size_t c = 0; c < kCategoryCount; ++c) {
    if (seen.test(c))
      out += std::string(out.empty() ? "" : ",") + CategoryName(static_cast<Category>(c));
  }
  return out;
}

// The flow of a decoded instruction, for the flag masks of a --code run:
// direct jumps, jccs, loops and calls go to their target; anything else
// (ret, indirect branches included) counts as falling through.
Op::Flow FlowOf(const ZydisDecodedInstruction& insn, const ZydisDecodedOperand& op0) {
  if (insn.meta.category != ZYDIS_CATEGORY_COND_BR &&
      insn.meta.category != ZYDIS_CATEGORY_UNCOND_BR && insn.meta.category != ZYDIS_CATEGORY_CALL) {
    return Op::Flow::kNext;
  }
  if (insn.operand_count_visible == 0 || op0.type != ZYDIS_OPERAND_TYPE_IMMEDIATE ||
      !op0.imm.is_relative) {
    return Op::Flow::kNext;
  }
  if (insn.meta.category == ZYDIS_CATEGORY_COND_BR) return Op::Flow::kBranch;
  return insn.meta.category == ZYDIS_CATEGORY_CALL ? Op::Flow::kCall : Op::Flow::kJump;
}

// The --code sequence: one instruction an op, from a generated initial state.
Sequence FromCode(const Options& opt, const GeneratorConfig& gen) {
  Sequence seq;
  seq.initial = Generate(gen, SequenceSeed(opt.seed, opt.start)).initial;
  for (const auto& [reg, v] : opt.settings) {
    if (reg == 16) {
      seq.initial.rflags = v;
    } else {
      seq.initial.gpr[reg] = v;
    }
  }
  Item item;
  std::vector<uint64_t> offsets, targets;
  for (size_t at = 0; at < opt.code.size();) {
    ZydisDisassembledInstruction d;
    size_t len = opt.code.size() - at;
    Op op;
    uint64_t target = 0;
    if (ZYAN_SUCCESS(ZydisDisassembleIntel(ZYDIS_MACHINE_MODE_LONG_64, kCodeAddress + at,
                                           opt.code.data() + at, len, &d))) {
      len = d.info.length;
      op.flow = FlowOf(d.info, d.operands[0]);
      target = at + len + d.operands[0].imm.value.u;
    }
    op.raw.assign(opt.code.begin() + static_cast<long>(at),
                  opt.code.begin() + static_cast<long>(at + len));
    item.ops.push_back(op);
    offsets.push_back(at);
    targets.push_back(target);
    at += len;
  }
  // A branch target is an op of the code, or its end (the op past the
  // last); a branch elsewhere is taken as straight-line.
  for (size_t k = 0; k < item.ops.size(); ++k) {
    Op& op = item.ops[k];
    if (op.flow == Op::Flow::kNext) continue;
    const auto at = std::find(offsets.begin(), offsets.end(), targets[k]);
    if (at != offsets.end()) {
      op.target_op = static_cast<int>(at - offsets.begin());
    } else if (targets[k] == opt.code.size()) {
      op.target_op = static_cast<int>(item.ops.size());
    } else {
      op.flow = Op::Flow::kNext;
    }
  }
  seq.items.push_back(item);
  return seq;
}

// What a range of sequences added up to; a job sends its Totals to the
// parent as raw bytes (same binary, same layout).
struct Totals {
  uint64_t sequences = 0, runs = 0, mismatches = 0, native_faults = 0, setup_errors = 0;
  uint64_t by_kind[kDiffKindCount] = {};
  uint64_t by_category[kCategoryCount] = {};
  uint64_t dropped[kCategoryCount] = {};
  double native_seconds = 0, bt_seconds = 0;
  bool could_not_start = false;

  void Add(const Totals& o) {
    sequences += o.sequences;
    runs += o.runs;
    mismatches += o.mismatches;
    native_faults += o.native_faults;
    setup_errors += o.setup_errors;
    for (size_t k = 0; k < kDiffKindCount; ++k) by_kind[k] += o.by_kind[k];
    for (size_t c = 0; c < kCategoryCount; ++c) by_category[c] += o.by_category[c];
    for (size_t c = 0; c < kCategoryCount; ++c) dropped[c] += o.dropped[c];
    native_seconds += o.native_seconds;
    bt_seconds += o.bt_seconds;
    could_not_start |= o.could_not_start;
  }
};
static_assert(std::is_trivially_copyable_v<Totals>);

// Runs sequences [first, first + count) of the seed, printing a report per
// mismatch (at most opt.max_reports) on stdout and progress on stderr.
Totals RunRange(const Options& opt, uint64_t first, uint64_t count) {
  Totals t;
  Result<std::unique_ptr<BtRunner>> runner = BtRunner::Create();
  if (!runner) {
    std::fprintf(stderr, "btvm_difftest: %s\n", runner.error().message.c_str());
    t.could_not_start = true;
    return t;
  }
  DiffTester tester(**runner, opt.fault_flags);
  GeneratorConfig gen;
  gen.categories = opt.categories;
  gen.host = HostFeatures::Detect();

  std::vector<unsigned> cpls;
  if (opt.cpl0) cpls.push_back(0);
  if (opt.cpl3) cpls.push_back(3);

  int reports = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t index = first; index < first + count; ++index) {
    if (index > first && (index - first) % 10000 == 0) {
      // Progress for long runs, on stderr so that reports stay clean.
      std::fprintf(stderr,
                   "btvm_difftest: sequences %" PRIu64 "..%" PRIu64 ": %" PRIu64 " done, %" PRIu64
                   " mismatches, %.0f s\n",
                   first, first + count, index - first, t.mismatches,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    ++t.sequences;
    const Sequence seq =
        opt.code.empty() ? Generate(gen, SequenceSeed(opt.seed, index)) : FromCode(opt, gen);
    for (size_t c = 0; c < kCategoryCount; ++c) t.dropped[c] += seq.dropped.test(c);
    Outcome native;
    bool have_native = false;
    for (unsigned cpl : cpls) {
      DiffTester::Run r = tester.RunAt(seq, cpl, have_native ? &native : nullptr);
      if (!r.encoded || r.native.kind == Outcome::kError) {
        ++t.setup_errors;
        std::printf("SETUP ERROR seed=%" PRIu64 " index=%" PRIu64 ": %s\n", opt.seed, index,
                    r.encoded ? r.native.message.c_str() : r.encode_error.c_str());
        break;
      }
      if (!have_native) {
        native = r.native;
        have_native = true;
        if (native.kind == Outcome::kFault) ++t.native_faults;
      }
      ++t.runs;
      if (opt.verbose) {
        std::printf("seed=%" PRIu64 " index=%" PRIu64 " cpl=%u: %s [%s]\n%s", opt.seed, index, cpl,
                    r.cmp.ok() ? "match" : "MISMATCH", CategoriesOf(seq).c_str(),
                    Disassemble(r.code).c_str());
      }
      if (r.cmp.ok()) continue;

      ++t.mismatches;
      for (size_t k = 0; k < kDiffKindCount; ++k) t.by_kind[k] += r.cmp.kinds.test(k);
      // Minimized only while reports are printed (it costs dozens of runs).
      const bool report = reports++ < opt.max_reports;
      Sequence small = seq;
      DiffTester::Run m = r;
      if (report && opt.minimize) {
        small = tester.Minimize(seq, cpl, r.native, r.cmp.kinds);
        m = tester.RunAt(small, cpl, nullptr);
        if (!m.encoded || m.native.kind == Outcome::kError || m.cmp.ok()) {
          small = seq;  // the minimized form stopped failing (flaky?): report the original
          m = r;
        }
      }
      CategorySet seen;
      for (const Item& it : small.items) seen.set(static_cast<size_t>(it.category));
      for (size_t c = 0; c < kCategoryCount; ++c) t.by_category[c] += seen.test(c);
      if (!report) continue;
      std::string kinds;
      for (size_t k = 0; k < kDiffKindCount; ++k) {
        if (m.cmp.kinds.test(k))
          kinds += std::string(kinds.empty() ? "" : ",") + DiffKindName(static_cast<DiffKind>(k));
      }
      std::printf("MISMATCH seed=%" PRIu64 " index=%" PRIu64 " cpl=%u [%s] categories %s\n",
                  opt.seed, index, cpl, kinds.c_str(), CategoriesOf(small).c_str());
      std::printf("  reproduce: btvm_difftest --seed %" PRIu64 " --start %" PRIu64
                  " --count 1 --cpl %u --verbose\n",
                  opt.seed, index, cpl);
      std::printf("  %s (%zu of %zu items):\n%s", opt.minimize ? "minimized" : "sequence",
                  small.items.size(), seq.items.size(), Disassemble(m.code).c_str());
      std::printf("  differences:\n%s", m.cmp.text.c_str());
      if (opt.verbose) {
        std::printf("  initial state:\n%s", FormatState(small.initial).c_str());
        std::printf("  native final state:\n%s", FormatState(m.native.state).c_str());
        std::printf("  bt final state:\n%s", FormatState(m.bt.state).c_str());
      }
      std::fflush(stdout);
    }
  }
  t.native_seconds = std::chrono::duration<double>(tester.timing().native).count();
  t.bt_seconds = std::chrono::duration<double>(tester.timing().bt).count();
  return t;
}

// Runs the range in `jobs` child processes, each on a contiguous slice with
// its own engine and native server. A job's stdout is collected through a
// pipe and printed when all are done, in slice order, so that reports never
// interleave; its Totals come back through a second pipe.
bool RunJobs(const Options& opt, Totals* total) {
  struct Job {
    pid_t pid = -1;
    int out = -1, totals = -1;
    std::string text;
  };
  std::vector<Job> jobs(opt.jobs);
  std::fflush(stdout);
  for (uint64_t k = 0; k < opt.jobs; ++k) {
    // Slices differ by at most one sequence; the first count % jobs are longer.
    const uint64_t per = opt.count / opt.jobs, extra = opt.count % opt.jobs;
    const uint64_t first = opt.start + per * k + std::min(k, extra);
    const uint64_t last = first + per + (k < extra ? 1 : 0);
    int out[2], totals[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(totals, O_CLOEXEC) != 0) {
      std::perror("btvm_difftest: pipe");
      return false;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("btvm_difftest: fork");
      return false;
    }
    if (pid == 0) {
      // The job: nothing of the parent's but the options (no engine, no
      // native server, no threads exist yet).
      dup2(out[1], STDOUT_FILENO);
      const Totals t = RunRange(opt, first, last - first);
      std::fflush(stdout);
      const bool sent = write(totals[1], &t, sizeof(t)) == static_cast<ssize_t>(sizeof(t));
      std::exit(sent ? 0 : 2);  // exit, not _exit: the native servers are reaped
    }
    close(out[1]);
    close(totals[1]);
    jobs[k] = Job{.pid = pid, .out = out[0], .totals = totals[0], .text = {}};
  }

  // Drain every job's stdout until all have closed it.
  for (size_t open = jobs.size(); open > 0;) {
    std::vector<pollfd> fds;
    for (const Job& j : jobs) {
      if (j.out >= 0) fds.push_back(pollfd{j.out, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) {
      std::perror("btvm_difftest: poll");
      return false;
    }
    for (Job& j : jobs) {
      if (j.out < 0) continue;
      const auto it = std::find_if(fds.begin(), fds.end(),
                                   [&](const pollfd& p) { return p.fd == j.out; });
      if (it == fds.end() || it->revents == 0) continue;
      char buf[65536];
      const ssize_t n = read(j.out, buf, sizeof(buf));
      if (n > 0) {
        j.text.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(j.out);
        j.out = -1;
        --open;
      }
    }
  }

  bool ok = true;
  for (size_t k = 0; k < jobs.size(); ++k) {
    Job& j = jobs[k];
    std::fwrite(j.text.data(), 1, j.text.size(), stdout);
    Totals t;
    const bool got = read(j.totals, &t, sizeof(t)) == static_cast<ssize_t>(sizeof(t));
    close(j.totals);
    int status = 0;
    while (waitpid(j.pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "btvm_difftest: job %zu ended without its totals (wait status 0x%x)\n",
                   k, status);
      ok = false;
      continue;
    }
    total->Add(t);
  }
  return ok;
}

void PrintSummary(const Options& opt, const Totals& t, double secs) {
  std::printf("btvm_difftest: seed %" PRIu64 ", sequences %" PRIu64 "..%" PRIu64 ", %" PRIu64
              " runs (%" PRIu64 " ending in a fault), %" PRIu64 " mismatches, %" PRIu64
              " setup errors, %.1f s\n",
              opt.seed, opt.start, opt.start + opt.count, t.runs, t.native_faults, t.mismatches,
              t.setup_errors, secs);
  std::printf("  %.0f sequences/s with %" PRIu64 " job%s; native runs took %.1f s, bt runs %.1f s%s\n",
              secs > 0 ? static_cast<double>(t.sequences) / secs : 0.0, opt.jobs,
              opt.jobs == 1 ? "" : "s", t.native_seconds, t.bt_seconds,
              opt.jobs == 1 ? "" : " (summed over the jobs)");
  if (t.mismatches) {
    std::printf("  mismatches by kind:");
    for (size_t k = 0; k < kDiffKindCount; ++k) {
      if (t.by_kind[k])
        std::printf(" %s %" PRIu64, DiffKindName(static_cast<DiffKind>(k)), t.by_kind[k]);
    }
    std::printf("\n  mismatches by category (of the sequence, minimized if reported):");
    for (size_t c = 0; c < kCategoryCount; ++c) {
      if (t.by_category[c])
        std::printf(" %s %" PRIu64, CategoryName(static_cast<Category>(c)), t.by_category[c]);
    }
    std::printf("\n");
  }
  bool any_dropped = false;
  for (size_t c = 0; c < kCategoryCount; ++c) {
    if (!t.dropped[c]) continue;
    if (!any_dropped) std::printf("  generator could not build items of:");
    any_dropped = true;
    std::printf(" %s %" PRIu64, CategoryName(static_cast<Category>(c)), t.dropped[c]);
  }
  if (any_dropped) std::printf("\n");
}

int Main(int argc, char** argv) {
  Options opt;
  if (!Parse(argc, argv, &opt)) {
    Usage(stderr);
    return 2;
  }
  if (opt.list) {
    const CategorySet def = DefaultCategories();
    for (size_t c = 0; c < kCategoryCount; ++c) {
      const auto cat = static_cast<Category>(c);
      std::printf("  %-10s %s %s\n", CategoryName(cat), def.test(c) ? "(default)" : "(opt-in) ",
                  CategoryHelp(cat));
    }
    return 0;
  }
  if (!opt.code.empty()) opt.jobs = 1;
  opt.jobs = std::max<uint64_t>(1, std::min(opt.jobs, opt.count));

  const auto t0 = std::chrono::steady_clock::now();
  Totals t;
  if (opt.jobs == 1) {
    t = RunRange(opt, opt.start, opt.count);
  } else if (!RunJobs(opt, &t)) {
    return 2;
  }
  if (t.could_not_start) return 2;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  PrintSummary(opt, t, secs);
  bool any_dropped = false;
  for (size_t c = 0; c < kCategoryCount; ++c) any_dropped |= t.dropped[c] != 0;
  return t.mismatches || t.setup_errors || any_dropped ? 1 : 0;
}

}  // namespace
}  // namespace btvm::diff

int main(int argc, char** argv) {
  return btvm::diff::Main(argc, argv);
}
