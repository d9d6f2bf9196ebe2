#include "service/metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

bool IsNameChar(char c, bool first, bool colon_ok) {
  if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
    return true;
  }
  if (colon_ok && c == ':') return true;
  return !first && absl::ascii_isdigit(static_cast<unsigned char>(c));
}

bool IsValidName(absl::string_view name, bool colon_ok) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, colon_ok)) return false;
  }
  return true;
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// `{a="x",b="y"}` for `labels` plus an optional `le`; "" when there are
// none.
std::string LabelSet(const std::vector<MetricLabel>& labels,
                     const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return "";
  std::string out = "{";
  for (const MetricLabel& label : labels) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, label.name, "=\"", EscapeLabelValue(label.value),
                    "\"");
  }
  if (le != nullptr) {
    if (out.size() > 1) out += ',';
    absl::StrAppend(&out, "le=\"", *le, "\"");
  }
  out += '}';
  return out;
}

// Why `family` cannot be written, or "" when it can.
std::string Invalidity(const MetricFamily& family) {
  if (!IsValidMetricName(family.name)) return "name";
  for (const MetricSeries& series : family.series) {
    for (const MetricLabel& label : series.labels) {
      if (!IsValidLabelName(label.name) ||
          (family.type == MetricType::kHistogram && label.name == "le")) {
        return absl::StrCat("label name '", EscapeHelp(label.name), "'");
      }
    }
  }
  return "";
}

void RenderHistogram(const std::string& name, const MetricSeries& series,
                     std::string* out) {
  const Histogram::Snapshot& h = series.histogram;
  for (size_t i = 0; i < h.cumulative_counts.size(); ++i) {
    const std::string le = i < h.upper_bounds.size()
                               ? FormatSampleValue(h.upper_bounds[i])
                               : std::string("+Inf");
    absl::StrAppend(out, name, "_bucket", LabelSet(series.labels, &le), " ",
                    h.cumulative_counts[i], "\n");
  }
  if (h.cumulative_counts.empty()) {
    // A default (never filled) snapshot: still a valid, empty histogram.
    const std::string le = "+Inf";
    absl::StrAppend(out, name, "_bucket", LabelSet(series.labels, &le), " 0\n");
  }
  const std::string labels = LabelSet(series.labels);
  absl::StrAppend(out, name, "_sum", labels, " ", FormatSampleValue(h.sum),
                  "\n");
  absl::StrAppend(out, name, "_count", labels, " ", h.count, "\n");
}

}  // namespace

bool IsValidMetricName(absl::string_view name) {
  return IsValidName(name, /*colon_ok=*/true);
}

bool IsValidLabelName(absl::string_view name) {
  return IsValidName(name, /*colon_ok=*/false) &&
         !(name.size() >= 2 && name[0] == '_' && name[1] == '_');
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatSampleValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
  if (value == std::trunc(value) && std::fabs(value) < kExactIntegers) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buffer[64];
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string RenderText(const std::vector<MetricFamily>& families) {
  std::string out;
  for (const MetricFamily& family : families) {
    if (std::string why = Invalidity(family); !why.empty()) {
      absl::StrAppend(&out, "# invalid metric '", EscapeHelp(family.name),
                      "' left out: its ", why, " is not valid\n");
      continue;
    }
    absl::StrAppend(&out, "# HELP ", family.name, " ", EscapeHelp(family.help),
                    "\n");
    absl::StrAppend(&out, "# TYPE ", family.name, " ", TypeName(family.type),
                    "\n");
    for (const MetricSeries& series : family.series) {
      if (family.type == MetricType::kHistogram) {
        RenderHistogram(family.name, series, &out);
      } else {
        absl::StrAppend(&out, family.name, LabelSet(series.labels), " ",
                        FormatSampleValue(series.value), "\n");
      }
    }
  }
  return out;
}

}  // namespace batchfetch
