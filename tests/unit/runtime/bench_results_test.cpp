// `btvm bench`'s results (runtime/bench/results.h): the summaries, the
// ratios and their baseline, and the three renderings.

#include "runtime/bench/results.h"

#include <gtest/gtest.h>

#include <string>

namespace btvm::bench {
namespace {

Results Sample3() {
  Results r;
  r.date = "2026-12-08";
  r.host_cpu = "Test CPU <1>";
  r.reps = 3;
  r.workloads = {{"boot", "to the prompt", 1}, {"spin", "a loop", 1000}};
  r.configs = {{"native", "host", true, "", {}},
               {"bt", "btvm bt", true, "", {"btvm", "run"}},
               {"kvm", "btvm kvm", false, "no kvm engine \"yet\"", {}}};
  for (double ns : {2.0, 3.0, 2.5}) r.samples.push_back({"spin", "native", 1, ns, "0x1"});
  for (double ns : {5.0, 4.0, 6.0, 7.0}) r.samples.push_back({"spin", "bt", 1, ns, "0x1"});
  r.samples.push_back({"boot", "bt", 1, 3e9, ""});
  return r;
}

TEST(BenchResults, SummarizesMinAndMedian) {
  const Results r = Sample3();
  const std::optional<Summary> native = Summarize(r, "spin", "native");
  ASSERT_TRUE(native);
  EXPECT_EQ(native->runs, 3u);
  EXPECT_DOUBLE_EQ(native->min, 2.0);
  EXPECT_DOUBLE_EQ(native->median, 2.5);
  const std::optional<Summary> bt = Summarize(r, "spin", "bt");
  ASSERT_TRUE(bt);
  EXPECT_DOUBLE_EQ(bt->median, 5.5);  // an even count: the middle two's mean
  EXPECT_FALSE(Summarize(r, "spin", "kvm"));
}

TEST(BenchResults, RatiosAreAgainstNativeOrTheFirstConfigurationThatRan) {
  const Results r = Sample3();
  EXPECT_EQ(Baseline(r, "spin"), "native");
  EXPECT_DOUBLE_EQ(Ratio(r, "spin", "bt").value(), 5.5 / 2.5);
  EXPECT_EQ(Baseline(r, "boot"), "bt");  // boot has no native run
  EXPECT_DOUBLE_EQ(Ratio(r, "boot", "bt").value(), 1.0);
  EXPECT_FALSE(Ratio(r, "spin", "kvm"));
}

TEST(BenchResults, FormatsTimesWithThreeDigits) {
  EXPECT_EQ(FormatNs(2.084), "2.08 ns");
  EXPECT_EQ(FormatNs(15500), "15.5 us");
  EXPECT_EQ(FormatNs(1.934e6), "1.93 ms");
  EXPECT_EQ(FormatNs(263e7), "2.63 s");
  EXPECT_EQ(FormatNs(437.9), "438 ns");
}

TEST(BenchResults, TableNamesWhatDidNotRunAndWhy) {
  const std::string t = FormatTable(Sample3());
  EXPECT_NE(t.find("spin       bt            4    4.00 ns    5.50 ns   2.20x"), std::string::npos)
      << t;
  EXPECT_NE(t.find("boot       bt            1     3.00 s     3.00 s   1.00x bt"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("kvm       no kvm engine \"yet\""), std::string::npos) << t;
}

TEST(BenchResults, JsonEscapesAndCarriesEverySample) {
  const std::string j = ToJson(Sample3());
  EXPECT_NE(j.find("\"why\": \"no kvm engine \\\"yet\\\"\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"cpu\": \"Test CPU <1>\""), std::string::npos);
  size_t samples = 0;
  for (size_t at = j.find("\"rep\": "); at != std::string::npos; at = j.find("\"rep\": ", at + 1)) {
    ++samples;
  }
  EXPECT_EQ(samples, 8u);
  EXPECT_NE(j.find("{\"workload\": \"spin\", \"config\": \"bt\", \"runs\": 4, \"min_ns\": 4, "
                   "\"median_ns\": 5.5, \"ratio\": 2.2}"),
            std::string::npos)
      << j;
}

TEST(BenchResults, HtmlHasAChartPerWorkloadAndEscapesText) {
  const std::string h = ToHtml(Sample3());
  size_t charts = 0;
  for (size_t at = h.find("<svg"); at != std::string::npos; at = h.find("<svg", at + 1)) ++charts;
  EXPECT_EQ(charts, 2u);
  EXPECT_NE(h.find("Test CPU &lt;1&gt;"), std::string::npos);
  EXPECT_EQ(h.find("Test CPU <1>"), std::string::npos);
  EXPECT_NE(h.find("no: no kvm engine &quot;yet&quot;"), std::string::npos);
  // spin: bars for native and bt, none for kvm; the 1x line is drawn.
  EXPECT_NE(h.find("<title>bt: 2.20\u00d7 native, median 5.50 ns</title>"), std::string::npos) << h;
  EXPECT_NE(h.find("class=\"one\""), std::string::npos);
  EXPECT_EQ(h.find("<title>kvm:"), std::string::npos);
  EXPECT_EQ(h.find("http://", h.find("<body>")), std::string::npos);  // nothing from a network
}

}  // namespace
}  // namespace btvm::bench
