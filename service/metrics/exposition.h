#ifndef BATCHFETCH_SERVICE_METRICS_EXPOSITION_H_
#define BATCHFETCH_SERVICE_METRICS_EXPOSITION_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "service/metrics/metric_types.h"

namespace batchfetch {

// The Prometheus text exposition format, version 0.0.4 (what GET /metrics
// answers; https://prometheus.io/docs/instrumenting/exposition_formats/).
// Written here because Debian ships no prometheus-cpp.

// The Content-Type of a scrape's answer.
inline constexpr char kExpositionContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };

// One label of a series. The name must be a valid label name (checked by
// RenderText); the value may be any UTF-8 text (it is escaped).
struct MetricLabel {
  std::string name;
  std::string value;
};

// One series of a family: its labels and its value (kCounter, kGauge) or
// its histogram (kHistogram).
struct MetricSeries {
  std::vector<MetricLabel> labels;
  double value = 0;
  Histogram::Snapshot histogram;
};

// A metric family: every series of one name. A counter's name ends in
// "_total" (the text format names the family by the full sample name).
struct MetricFamily {
  std::string name;
  MetricType type = MetricType::kGauge;
  std::string help;
  std::vector<MetricSeries> series;
};

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(absl::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved), not "le" (the
// histogram's own).
bool IsValidLabelName(absl::string_view name);

// HELP text: backslash -> \\, line feed -> \n.
std::string EscapeHelp(absl::string_view help);
// A label value: backslash -> \\, double quote -> \", line feed -> \n.
std::string EscapeLabelValue(absl::string_view value);
// A sample value: integers (|v| < 2^53) without a fraction ("7"), others
// in the shortest form that reads back exactly ("0.25", "1e-07"), and
// "+Inf", "-Inf", "NaN".
std::string FormatSampleValue(double value);

// Every family as "# HELP", "# TYPE" and its samples, one per line, each
// line ending in "\n". A histogram series becomes <name>_bucket lines (one
// per bound, cumulative, then le="+Inf"), <name>_sum and <name>_count, with
// the series' labels before "le". A family with no series still gets its
// HELP and TYPE lines. A family whose name, or a series whose label name,
// is invalid is left out whole (with a "# invalid metric ..." comment line
// saying which), so one mistake cannot make a scrape unreadable.
std::string RenderText(const std::vector<MetricFamily>& families);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_METRICS_EXPOSITION_H_
