// CollectServerMetrics: every required name, its type and labels, read from
// the parts' counters; the text it renders parses as the exposition format.
#include "service/server/server_metrics.h"

#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

const MetricFamily* Find(const std::vector<MetricFamily>& families,
                         const std::string& name) {
  for (const MetricFamily& family : families) {
    if (family.name == name) return &family;
  }
  return nullptr;
}

bool HasLine(const std::string& text, const std::string& line) {
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    if (l == line) return true;
  }
  return false;
}

TEST(ServerMetricsTest, OutcomeAndStateLabelsAreLowerCaseWithoutPrefix) {
  EXPECT_EQ(OutcomeLabel(v1::OUTCOME_OK), "ok");
  EXPECT_EQ(OutcomeLabel(v1::OUTCOME_HTTP_ERROR), "http_error");
  EXPECT_EQ(OutcomeLabel(v1::OUTCOME_INVALID_REQUEST), "invalid_request");
  EXPECT_EQ(BatchStateLabel(v1::BATCH_STATE_DONE), "done");
  EXPECT_EQ(BatchStateLabel(v1::BATCH_STATE_CANCELLED), "cancelled");
  EXPECT_EQ(BatchStateLabel(v1::BATCH_STATE_INTERRUPTED), "interrupted");
}

TEST(ServerMetricsTest, EveryRequiredFamilyIsThereWithItsType) {
  BatchStats batches;
  StoreStats store;
  const std::vector<MetricFamily> families =
      CollectServerMetrics(FetchStatsSnapshot{}, batches, &store);
  const std::pair<const char*, MetricType> required[] = {
      {"batchfetch_results_total", MetricType::kCounter},
      {"batchfetch_batches_total", MetricType::kCounter},
      {"batchfetch_batches_active", MetricType::kGauge},
      {"batchfetch_transfers_in_flight", MetricType::kGauge},
      {"batchfetch_transfers_queued", MetricType::kGauge},
      {"batchfetch_retries_total", MetricType::kCounter},
      {"batchfetch_upstream_seconds", MetricType::kHistogram},
      {"batchfetch_response_bytes_total", MetricType::kCounter},
      {"batchfetch_blocked_total", MetricType::kCounter},
      {"batchfetch_store_queue_depth", MetricType::kGauge},
      {"batchfetch_store_commit_seconds", MetricType::kHistogram},
      {"batchfetch_store_rows_total", MetricType::kCounter},
      {"batchfetch_store_errors_total", MetricType::kCounter},
      {"batchfetch_batches_interrupted_total", MetricType::kCounter},
      {"batchfetch_spool_bytes", MetricType::kGauge},
      {"batchfetch_spooled_writes_total", MetricType::kCounter},
      {"batchfetch_spool_replayed_writes_total", MetricType::kCounter},
      {"batchfetch_spool_parked_writes", MetricType::kGauge},
  };
  EXPECT_EQ(families.size(), std::size(required));
  for (const auto& [name, type] : required) {
    const MetricFamily* family = Find(families, name);
    ASSERT_NE(family, nullptr) << name;
    EXPECT_EQ(family->type, type) << name;
    EXPECT_FALSE(family->help.empty()) << name;
    if (type == MetricType::kCounter) {
      EXPECT_TRUE(absl::EndsWith(name, "_total")) << name;
    }
  }
}

TEST(ServerMetricsTest, WithoutAStoreThereAreNoStoreFamilies) {
  BatchStats batches;
  for (const MetricFamily& family :
       CollectServerMetrics(FetchStatsSnapshot{}, batches, nullptr)) {
    EXPECT_FALSE(absl::StartsWith(family.name, "batchfetch_store_"))
        << family.name;
  }
}

TEST(ServerMetricsTest, EveryOutcomeAndFinalStateHasASeriesEvenAtZero) {
  BatchStats batches;
  const std::vector<MetricFamily> families =
      CollectServerMetrics(FetchStatsSnapshot{}, batches, nullptr);
  std::set<std::string> outcomes;
  for (const MetricSeries& s :
       Find(families, "batchfetch_results_total")->series) {
    ASSERT_EQ(s.labels.size(), 1u);
    EXPECT_EQ(s.labels[0].name, "outcome");
    outcomes.insert(s.labels[0].value);
  }
  EXPECT_EQ(outcomes,
            (std::set<std::string>{"ok", "http_error", "timeout", "dns_error",
                                   "connect_error", "tls_error", "invalid_json",
                                   "too_large", "blocked", "cancelled",
                                   "invalid_request", "transport_error"}));
  std::set<std::string> states;
  for (const MetricSeries& s :
       Find(families, "batchfetch_batches_total")->series) {
    states.insert(s.labels.at(0).value);
  }
  EXPECT_EQ(states, (std::set<std::string>{"done", "cancelled", "failed"}));
  EXPECT_EQ(Find(families, "batchfetch_upstream_seconds")->series.size(),
            outcomes.size());
}

TEST(ServerMetricsTest, ReadsEachNumberFromItsSource) {
  FetchStatsSnapshot fetch;
  fetch.transfers_in_flight = 4;
  fetch.requests_queued = 9;
  fetch.retries = 2;
  fetch.response_bytes = 12345;
  BatchStats batches;
  batches.results[v1::OUTCOME_OK].Increment(7);
  batches.results[v1::OUTCOME_HTTP_ERROR].Increment(3);
  batches.results[v1::OUTCOME_BLOCKED].Increment(1);
  batches.batches_finished[v1::BATCH_STATE_DONE].Increment();
  batches.batches_active.Add(2);
  batches.upstream_seconds[v1::OUTCOME_OK]->Observe(0.004);
  StoreStats store;
  store.queue_depth.Set(5);
  store.rows.Increment(10);
  store.errors.Increment(1);
  store.batches_interrupted.Increment(3);
  store.commit_seconds.Observe(0.02);

  const std::string text =
      RenderText(CollectServerMetrics(fetch, batches, &store));
  for (const char* line : {
           "batchfetch_results_total{outcome=\"ok\"} 7",
           "batchfetch_results_total{outcome=\"http_error\"} 3",
           "batchfetch_results_total{outcome=\"timeout\"} 0",
           "batchfetch_batches_total{state=\"done\"} 1",
           "batchfetch_batches_total{state=\"failed\"} 0",
           "batchfetch_batches_active 2",
           "batchfetch_transfers_in_flight 4",
           "batchfetch_transfers_queued 9",
           "batchfetch_retries_total 2",
           "batchfetch_response_bytes_total 12345",
           "batchfetch_blocked_total 1",
           "batchfetch_upstream_seconds_bucket{outcome=\"ok\",le=\"0.005\"} 1",
           "batchfetch_upstream_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 1",
           "batchfetch_upstream_seconds_count{outcome=\"ok\"} 1",
           "batchfetch_upstream_seconds_count{outcome=\"timeout\"} 0",
           "batchfetch_store_queue_depth 5",
           "batchfetch_store_rows_total 10",
           "batchfetch_store_errors_total 1",
           "batchfetch_batches_interrupted_total 3",
           "batchfetch_store_commit_seconds_bucket{le=\"0.01\"} 0",
           "batchfetch_store_commit_seconds_bucket{le=\"0.025\"} 1",
           "batchfetch_store_commit_seconds_count 1",
           "# TYPE batchfetch_upstream_seconds histogram",
           "# TYPE batchfetch_results_total counter",
       }) {
    EXPECT_TRUE(HasLine(text, line)) << "missing: " << line << "\n" << text;
  }
  EXPECT_FALSE(absl::StrContains(text, "# invalid")) << text;
}

}  // namespace
}  // namespace batchfetch
