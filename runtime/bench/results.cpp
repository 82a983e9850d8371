#include "runtime/bench/results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace btvm::bench {
namespace {

std::vector<double> Values(const Results& r, const std::string& workload,
                           const std::string& config) {
  std::vector<double> v;
  for (const Sample& s : r.samples) {
    if (s.workload == workload && s.config == config) v.push_back(s.ns);
  }
  return v;
}

std::string Printf(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// Three significant digits.
std::string Sig3(double v) {
  if (v >= 100) return Printf("%.0f", v);
  if (v >= 10) return Printf("%.1f", v);
  return Printf("%.2f", v);
}

std::string Pad(std::string s, size_t width, bool right) {
  if (s.size() >= width) return s;
  return right ? std::string(width - s.size(), ' ') + s : s + std::string(width - s.size(), ' ');
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string Html(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* Color(const std::string& config) {
  if (config == "native") return "#6b7280";
  if (config == "bt") return "#2563eb";
  if (config == "direct") return "#16a34a";
  if (config == "kvm") return "#9333ea";
  if (config == "qemu-tcg") return "#ea580c";
  if (config == "qemu-kvm") return "#a16207";
  return "#0891b2";
}

// The 1-2-5 steps around [lo, hi] for a log-scale axis.
std::vector<double> LogTicks(double lo, double hi) {
  std::vector<double> ticks;
  for (int e = -3; e <= 4; ++e) {
    for (double m : {1.0, 2.0, 5.0}) ticks.push_back(m * std::pow(10.0, e));
  }
  double a = ticks.front(), b = ticks.back();
  for (double t : ticks) {
    if (t <= lo) a = t;
  }
  for (auto it = ticks.rbegin(); it != ticks.rend(); ++it) {
    if (*it >= hi) b = *it;
  }
  if (a >= b) b = a * 2;
  std::vector<double> out;
  for (double t : ticks) {
    if (t >= a * 0.999 && t <= b * 1.001) out.push_back(t);
  }
  return out;
}

std::string TickLabel(double t) {
  if (t >= 1) return Printf("%.0f", t) + "\u00d7";
  return Printf("%g", t) + "\u00d7";
}

// One workload's chart: a bar a configuration, the ratio of its median to
// the baseline's on a log scale.
std::string Chart(const Results& r, const Workload& w) {
  struct Bar {
    std::string config;
    double ratio, median;
  };
  std::vector<Bar> bars;
  for (const Configuration& c : r.configs) {
    const std::optional<double> ratio = Ratio(r, w.name, c.name);
    const std::optional<Summary> s = Summarize(r, w.name, c.name);
    if (ratio && s && *ratio > 0) bars.push_back({c.name, *ratio, s->median});
  }
  if (bars.empty()) return "<p class=\"none\">No configuration measured this workload.</p>\n";
  double lo = 1, hi = 1;
  for (const Bar& b : bars) {
    lo = std::min(lo, b.ratio);
    hi = std::max(hi, b.ratio);
  }
  // Bars grow from the axis's left end, which lies a step below the
  // shortest (so that the baseline's bar shows too).
  const std::vector<double> ticks = LogTicks(lo / 1.5, hi);
  const double a = ticks.front(), b = ticks.back();
  constexpr int kLabel = 100, kPlot = 460, kValue = 170, kRow = 24, kTop = 8, kAxis = 26;
  const int height = kTop + kRow * static_cast<int>(bars.size()) + kAxis;
  const auto x = [&](double v) {
    return kLabel + (std::log(v) - std::log(a)) / (std::log(b) - std::log(a)) * kPlot;
  };
  std::string svg = "<svg class=\"chart\" width=\"" +
                    std::to_string(kLabel + kPlot + kValue) + "\" height=\"" +
                    std::to_string(height) + "\" role=\"img\" aria-label=\"" + Html(w.name) +
                    ": time against " + Html(Baseline(r, w.name)) + ", log scale\">\n";
  const int plot_bottom = kTop + kRow * static_cast<int>(bars.size());
  for (double t : ticks) {
    const double tx = x(t);
    svg += "<line x1=\"" + Printf("%.1f", tx) + "\" y1=\"" + std::to_string(kTop - 4) +
           "\" x2=\"" + Printf("%.1f", tx) + "\" y2=\"" + std::to_string(plot_bottom) +
           "\" class=\"" + (t == 1.0 ? "one" : "grid") + "\"/>\n";
    svg += "<text x=\"" + Printf("%.1f", tx) + "\" y=\"" + std::to_string(plot_bottom + 16) +
           "\" class=\"tick\">" + TickLabel(t) + "</text>\n";
  }
  for (size_t i = 0; i < bars.size(); ++i) {
    const int y = kTop + kRow * static_cast<int>(i);
    const double x0 = x(a), x1 = std::max(x(bars[i].ratio), x0 + 1);
    svg += "<text x=\"" + std::to_string(kLabel - 8) + "\" y=\"" + std::to_string(y + 16) +
           "\" class=\"label\">" + Html(bars[i].config) + "</text>\n";
    svg += "<rect x=\"" + Printf("%.1f", x0) + "\" y=\"" + std::to_string(y + 4) +
           "\" width=\"" + Printf("%.1f", x1 - x0) + "\" height=\"" + std::to_string(kRow - 8) +
           "\" fill=\"" + Color(bars[i].config) + "\"><title>" + Html(bars[i].config) + ": " +
           Printf("%.2f", bars[i].ratio) + "\u00d7 " + Html(Baseline(r, w.name)) + ", median " +
           FormatNs(bars[i].median) + "</title></rect>\n";
    svg += "<text x=\"" + std::to_string(kLabel + kPlot + 8) + "\" y=\"" +
           std::to_string(y + 16) + "\" class=\"value\">" + Printf("%.2f", bars[i].ratio) +
           "\u00d7 (" + FormatNs(bars[i].median) + ")</text>\n";
  }
  return svg + "</svg>\n";
}

}  // namespace

std::optional<Summary> Summarize(const Results& r, const std::string& workload,
                                 const std::string& config) {
  std::vector<double> v = Values(r, workload, config);
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  Summary s;
  s.runs = v.size();
  s.min = v.front();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return s;
}

std::string Baseline(const Results& r, const std::string& workload) {
  if (!Values(r, workload, "native").empty()) return "native";
  for (const Configuration& c : r.configs) {
    if (!Values(r, workload, c.name).empty()) return c.name;
  }
  return "native";
}

std::optional<double> Ratio(const Results& r, const std::string& workload,
                            const std::string& config) {
  const std::optional<Summary> base = Summarize(r, workload, Baseline(r, workload));
  const std::optional<Summary> s = Summarize(r, workload, config);
  if (!base || !s || base->median <= 0) return std::nullopt;
  return s->median / base->median;
}

std::string FormatNs(double ns) {
  if (ns < 1e3) return Sig3(ns) + " ns";
  if (ns < 1e6) return Sig3(ns / 1e3) + " us";
  if (ns < 1e9) return Sig3(ns / 1e6) + " ms";
  return Sig3(ns / 1e9) + " s";
}

std::string FormatTable(const Results& r) {
  std::string out = "workload   config     runs        min     median   ratio\n";
  for (const Workload& w : r.workloads) {
    const std::string base = Baseline(r, w.name);
    for (const Configuration& c : r.configs) {
      const std::optional<Summary> s = Summarize(r, w.name, c.name);
      if (!s) continue;
      const std::optional<double> ratio = Ratio(r, w.name, c.name);
      out += Pad(w.name, 10, false) + " " + Pad(c.name, 9, false) + " " +
             Pad(std::to_string(s->runs), 5, true) + " " + Pad(FormatNs(s->min), 10, true) + " " +
             Pad(FormatNs(s->median), 10, true) + " " +
             Pad(ratio ? Printf("%.2f", *ratio) + "x" : "-", 7, true) +
             (base == "native" ? "" : " " + base) + "\n";
    }
  }
  out += "(min and median per operation; ratio: median over native's, boot's over the first "
         "guest configuration's)\n";
  bool header = false;
  for (const Configuration& c : r.configs) {
    if (c.ran) continue;
    if (!header) out += "not run:\n";
    header = true;
    out += "  " + Pad(c.name, 9, false) + " " + c.why + "\n";
  }
  for (const std::string& p : r.problems) out += "PROBLEM: " + p + "\n";
  return out;
}

std::string ToJson(const Results& r) {
  std::string j = "{\n";
  j += "  \"tool\": \"btvm bench\",\n";
  j += "  \"date\": " + JsonString(r.date) + ",\n";
  j += "  \"host\": {\"cpu\": " + JsonString(r.host_cpu) +
       ", \"cpus\": " + std::to_string(r.host_cpus) +
       ", \"kernel\": " + JsonString(r.host_kernel) + "},\n";
  j += "  \"versions\": {\"btvm\": " + JsonString(r.btvm_version) +
       ", \"qemu\": " + JsonString(r.qemu_version) + "},\n";
  j += "  \"guest\": {\"kernel\": " + JsonString(r.guest_kernel) +
       ", \"initrd\": " + JsonString(r.guest_initrd) +
       ", \"append\": " + JsonString(r.guest_append) +
       ", \"memory_mib\": " + std::to_string(r.guest_memory_mib) + "},\n";
  j += "  \"reps\": " + std::to_string(r.reps) + ",\n";
  j += "  \"scale\": " + JsonNumber(r.scale) + ",\n";
  j += "  \"workloads\": [\n";
  for (size_t i = 0; i < r.workloads.size(); ++i) {
    const Workload& w = r.workloads[i];
    j += "    {\"name\": " + JsonString(w.name) + ", \"what\": " + JsonString(w.what) +
         ", \"count\": " + std::to_string(w.count) +
         ", \"baseline\": " + JsonString(Baseline(r, w.name)) + "}" +
         (i + 1 < r.workloads.size() ? ",\n" : "\n");
  }
  j += "  ],\n  \"configurations\": [\n";
  for (size_t i = 0; i < r.configs.size(); ++i) {
    const Configuration& c = r.configs[i];
    std::string command = "[";
    for (size_t k = 0; k < c.command.size(); ++k) {
      command += (k ? ", " : "") + JsonString(c.command[k]);
    }
    command += "]";
    j += "    {\"name\": " + JsonString(c.name) + ", \"what\": " + JsonString(c.what) +
         ", \"ran\": " + (c.ran ? "true" : "false") + ", \"why\": " + JsonString(c.why) +
         ", \"command\": " + command + "}" + (i + 1 < r.configs.size() ? ",\n" : "\n");
  }
  j += "  ],\n  \"samples\": [\n";
  for (size_t i = 0; i < r.samples.size(); ++i) {
    const Sample& s = r.samples[i];
    j += "    {\"workload\": " + JsonString(s.workload) + ", \"config\": " +
         JsonString(s.config) + ", \"rep\": " + std::to_string(s.rep) +
         ", \"ns\": " + JsonNumber(s.ns) + ", \"result\": " + JsonString(s.result) + "}" +
         (i + 1 < r.samples.size() ? ",\n" : "\n");
  }
  j += "  ],\n  \"summary\": [\n";
  std::string rows;
  for (const Workload& w : r.workloads) {
    for (const Configuration& c : r.configs) {
      const std::optional<Summary> s = Summarize(r, w.name, c.name);
      if (!s) continue;
      const std::optional<double> ratio = Ratio(r, w.name, c.name);
      if (!rows.empty()) rows += ",\n";
      rows += "    {\"workload\": " + JsonString(w.name) + ", \"config\": " + JsonString(c.name) +
              ", \"runs\": " + std::to_string(s->runs) + ", \"min_ns\": " + JsonNumber(s->min) +
              ", \"median_ns\": " + JsonNumber(s->median) +
              ", \"ratio\": " + (ratio ? JsonNumber(*ratio) : "null") + "}";
    }
  }
  j += rows + (rows.empty() ? "" : "\n") + "  ],\n  \"problems\": [";
  for (size_t i = 0; i < r.problems.size(); ++i) {
    j += (i ? ", " : "") + JsonString(r.problems[i]);
  }
  return j + "]\n}\n";
}

std::string ToHtml(const Results& r) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>btvm bench: " + Html(r.date) + "</title>\n"
      "<style>\n"
      "body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 800px;"
      " color: #111827; padding: 0 1em; }\n"
      "h1 { font-size: 1.5em; } h2 { font-size: 1.1em; margin: 1.6em 0 0.3em; }\n"
      "table { border-collapse: collapse; margin: 0.5em 0; }\n"
      "td, th { padding: 0.15em 0.8em 0.15em 0; text-align: left; vertical-align: top; }\n"
      "td.n { text-align: right; font-variant-numeric: tabular-nums; }\n"
      "th { border-bottom: 1px solid #9ca3af; }\n"
      ".no { color: #b91c1c; } .yes { color: #15803d; } .none, .note { color: #6b7280; }\n"
      ".chart text { font: 12px system-ui, sans-serif; fill: #111827; }\n"
      ".chart .label { text-anchor: end; } .chart .tick { text-anchor: middle; fill: #6b7280; }\n"
      ".chart .grid { stroke: #e5e7eb; } .chart .one { stroke: #111827; stroke-dasharray: 3 3; }\n"
      "</style>\n</head>\n<body>\n<h1>btvm bench</h1>\n";
  h += "<table>\n";
  const auto row = [&h](const std::string& k, const std::string& v) {
    h += "<tr><th scope=\"row\">" + Html(k) + "</th><td>" + Html(v) + "</td></tr>\n";
  };
  row("date", r.date);
  row("host", r.host_cpu + ", " + std::to_string(r.host_cpus) + " CPUs, Linux " + r.host_kernel);
  row("btvm", r.btvm_version);
  row("QEMU", r.qemu_version.empty() ? "not found" : r.qemu_version);
  row("guest", r.guest_kernel + " + " + r.guest_initrd + ", \"" + r.guest_append + "\", " +
                   std::to_string(r.guest_memory_mib) + " MiB");
  row("repetitions", std::to_string(r.reps) + " of every configuration, interleaved" +
                         (r.scale != 1 ? ", counts scaled by " + Printf("%g", r.scale) : ""));
  h += "</table>\n<h2>Configurations</h2>\n<table>\n"
       "<tr><th>name</th><th>what</th><th>ran</th></tr>\n";
  for (const Configuration& c : r.configs) {
    h += "<tr><td>" + Html(c.name) + "</td><td>" + Html(c.what) + "</td><td class=\"" +
         (c.ran ? "yes\">yes" : "no\">no") + (c.why.empty() ? "" : ": " + Html(c.why)) +
         "</td></tr>\n";
  }
  h += "</table>\n";
  if (!r.problems.empty()) {
    h += "<h2>Problems</h2>\n<ul>\n";
    for (const std::string& p : r.problems) h += "<li class=\"no\">" + Html(p) + "</li>\n";
    h += "</ul>\n";
  }
  h += "<p class=\"note\">Each chart: the median time of an operation on each configuration "
       "over the baseline's (native, or for boot the first guest configuration), on a log "
       "scale; the dashed line is 1\u00d7. Shorter is faster.</p>\n";
  for (const Workload& w : r.workloads) {
    h += "<h2>" + Html(w.name) + " <span class=\"note\">" + Html(w.what) +
         (w.name == "boot" ? "" : ", " + std::to_string(w.count) + " a run") + "; against " +
         Html(Baseline(r, w.name)) + "</span></h2>\n";
    h += Chart(r, w);
  }
  h += "<h2>All figures</h2>\n<table>\n<tr><th>workload</th><th>config</th><th>runs</th>"
       "<th>min</th><th>median</th><th>ratio</th></tr>\n";
  for (const Workload& w : r.workloads) {
    for (const Configuration& c : r.configs) {
      const std::optional<Summary> s = Summarize(r, w.name, c.name);
      if (!s) continue;
      const std::optional<double> ratio = Ratio(r, w.name, c.name);
      h += "<tr><td>" + Html(w.name) + "</td><td>" + Html(c.name) + "</td><td class=\"n\">" +
           std::to_string(s->runs) + "</td><td class=\"n\">" + FormatNs(s->min) +
           "</td><td class=\"n\">" + FormatNs(s->median) + "</td><td class=\"n\">" +
           (ratio ? Printf("%.2f", *ratio) + "\u00d7" : "-") + "</td></tr>\n";
    }
  }
  return h + "</table>\n</body>\n</html>\n";
}

}  // namespace btvm::bench
