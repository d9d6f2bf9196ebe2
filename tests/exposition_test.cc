// The Prometheus text format (service/metrics/exposition.h) and the metric
// cells it reads (metric_types.h): exact expected text, no I/O.
#include "service/metrics/exposition.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "service/metrics/metric_types.h"

namespace batchfetch {
namespace {

TEST(ExpositionTest, CounterAndGaugeFamiliesHaveHelpTypeAndOneLinePerSeries) {
  MetricFamily results;
  results.name = "demo_results_total";
  results.type = MetricType::kCounter;
  results.help = "Results, by outcome.";
  results.series.push_back({{{"outcome", "ok"}}, 7, {}});
  results.series.push_back({{{"outcome", "http_error"}}, 3, {}});
  MetricFamily active;
  active.name = "demo_active";
  active.type = MetricType::kGauge;
  active.help = "Things running.";
  active.series.push_back({{}, 2, {}});

  EXPECT_EQ(RenderText({results, active}),
            "# HELP demo_results_total Results, by outcome.\n"
            "# TYPE demo_results_total counter\n"
            "demo_results_total{outcome=\"ok\"} 7\n"
            "demo_results_total{outcome=\"http_error\"} 3\n"
            "# HELP demo_active Things running.\n"
            "# TYPE demo_active gauge\n"
            "demo_active 2\n");
}

TEST(ExpositionTest, HistogramHasCumulativeBucketsInfSumAndCount) {
  // Binary-exact values, so the sum is exact too.
  Histogram histogram({0.125, 1});
  histogram.Observe(0.0625);
  histogram.Observe(0.125);  // le is inclusive: still the 0.125 bucket
  histogram.Observe(0.5);
  histogram.Observe(30);
  MetricFamily family;
  family.name = "demo_seconds";
  family.type = MetricType::kHistogram;
  family.help = "Time.";
  family.series.push_back({{{"outcome", "ok"}}, 0, histogram.snapshot()});

  EXPECT_EQ(RenderText({family}),
            "# HELP demo_seconds Time.\n"
            "# TYPE demo_seconds histogram\n"
            "demo_seconds_bucket{outcome=\"ok\",le=\"0.125\"} 2\n"
            "demo_seconds_bucket{outcome=\"ok\",le=\"1\"} 3\n"
            "demo_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 4\n"
            "demo_seconds_sum{outcome=\"ok\"} 30.6875\n"
            "demo_seconds_count{outcome=\"ok\"} 4\n");
}

TEST(ExpositionTest, UnlabelledHistogramPutsOnlyLeInItsBuckets) {
  Histogram histogram({0.001});
  MetricFamily family;
  family.name = "demo_commit_seconds";
  family.type = MetricType::kHistogram;
  family.help = "Commits.";
  family.series.push_back({{}, 0, histogram.snapshot()});

  EXPECT_EQ(RenderText({family}),
            "# HELP demo_commit_seconds Commits.\n"
            "# TYPE demo_commit_seconds histogram\n"
            "demo_commit_seconds_bucket{le=\"0.001\"} 0\n"
            "demo_commit_seconds_bucket{le=\"+Inf\"} 0\n"
            "demo_commit_seconds_sum 0\n"
            "demo_commit_seconds_count 0\n");
}

TEST(ExpositionTest, LabelValuesEscapeBackslashQuoteAndLineFeed) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  MetricFamily family;
  family.name = "demo";
  family.type = MetricType::kGauge;
  family.help = "x";
  family.series.push_back({{{"path", "C:\\dir\n\"q\""}}, 1, {}});
  EXPECT_EQ(RenderText({family}),
            "# HELP demo x\n"
            "# TYPE demo gauge\n"
            "demo{path=\"C:\\\\dir\\n\\\"q\\\"\"} 1\n");
}

TEST(ExpositionTest, HelpEscapesBackslashAndLineFeedButNotQuotes) {
  EXPECT_EQ(EscapeHelp("a \\ b\nc \"d\""), "a \\\\ b\\nc \"d\"");
  MetricFamily family;
  family.name = "demo";
  family.help = "line one\nline two";
  EXPECT_EQ(RenderText({family}),
            "# HELP demo line one\\nline two\n"
            "# TYPE demo gauge\n");
}

TEST(ExpositionTest, SampleValuesAreIntegersShortestDecimalsOrSpecialNames) {
  EXPECT_EQ(FormatSampleValue(0), "0");
  EXPECT_EQ(FormatSampleValue(7), "7");
  EXPECT_EQ(FormatSampleValue(-3), "-3");
  EXPECT_EQ(FormatSampleValue(1e6), "1000000");
  EXPECT_EQ(FormatSampleValue(0.25), "0.25");
  EXPECT_EQ(FormatSampleValue(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatSampleValue(1e-7), "1e-07");
  EXPECT_EQ(FormatSampleValue(1e300), "1e+300");
  EXPECT_EQ(FormatSampleValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatSampleValue(-std::numeric_limits<double>::infinity()),
            "-Inf");
  EXPECT_EQ(FormatSampleValue(std::nan("")), "NaN");
}

TEST(ExpositionTest, NamesFollowThePrometheusGrammar) {
  EXPECT_TRUE(IsValidMetricName("batchfetch_results_total"));
  EXPECT_TRUE(IsValidMetricName("ns:rule_1"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_FALSE(IsValidMetricName("a b"));
  EXPECT_TRUE(IsValidLabelName("outcome"));
  EXPECT_TRUE(IsValidLabelName("_x1"));
  EXPECT_FALSE(IsValidLabelName("__reserved"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName("9x"));
  EXPECT_FALSE(IsValidLabelName(""));
}

TEST(ExpositionTest, AnInvalidFamilyIsLeftOutWithACommentAndTheRestIsKept) {
  MetricFamily bad_name;
  bad_name.name = "bad-name";
  bad_name.series.push_back({{}, 1, {}});
  MetricFamily bad_label;
  bad_label.name = "demo_seconds";
  bad_label.type = MetricType::kHistogram;
  bad_label.series.push_back({{{"le", "1"}}, 0, {}});
  MetricFamily good;
  good.name = "good";
  good.help = "g";
  good.series.push_back({{}, 1, {}});
  EXPECT_EQ(RenderText({bad_name, bad_label, good}),
            "# invalid metric 'bad-name' left out: its name is not valid\n"
            "# invalid metric 'demo_seconds' left out: its label name 'le' "
            "is not valid\n"
            "# HELP good g\n"
            "# TYPE good gauge\n"
            "good 1\n");
}

TEST(HistogramTest, CountsEachObservationInTheFirstBucketItFitsAndIgnoresNaN) {
  Histogram histogram({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 2.0, 4.0, 9.0}) histogram.Observe(v);
  histogram.Observe(std::nan(""));
  const Histogram::Snapshot s = histogram.snapshot();
  EXPECT_EQ(s.upper_bounds, (std::vector<double>{1, 2, 5}));
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(s.count, 6u);
  EXPECT_DOUBLE_EQ(s.sum, 18.0);
}

TEST(HistogramTest, DefaultBucketSetsAreStrictlyIncreasing) {
  for (const std::vector<double>* buckets :
       {&UpstreamSecondsBuckets(), &DatabaseSecondsBuckets()}) {
    ASSERT_FALSE(buckets->empty());
    for (size_t i = 1; i < buckets->size(); ++i) {
      EXPECT_LT((*buckets)[i - 1], (*buckets)[i]);
    }
  }
}

TEST(CounterTest, CountsUpAndGaugeGoesBothWays) {
  Counter counter;
  counter.Increment();
  counter.Increment(4);
  EXPECT_EQ(counter.value(), 5u);
  Gauge gauge;
  gauge.Add(3);
  gauge.Add(-1);
  EXPECT_EQ(gauge.value(), 2);
  gauge.Set(10);
  EXPECT_EQ(gauge.value(), 10);
}

}  // namespace
}  // namespace batchfetch
