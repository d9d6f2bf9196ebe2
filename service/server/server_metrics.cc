#include "service/server/server_metrics.h"

#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"

namespace batchfetch {
namespace {

MetricFamily Family(std::string name, MetricType type, std::string help) {
  MetricFamily family;
  family.name = std::move(name);
  family.type = type;
  family.help = std::move(help);
  return family;
}

MetricFamily Single(std::string name, MetricType type, std::string help,
                    double value) {
  MetricFamily family = Family(std::move(name), type, std::move(help));
  family.series.emplace_back().value = value;
  return family;
}

// Every outcome but UNSPECIFIED, in enum order.
std::vector<v1::Outcome> Outcomes() {
  std::vector<v1::Outcome> outcomes;
  for (int i = v1::Outcome_MIN; i <= v1::Outcome_MAX; ++i) {
    if (v1::Outcome_IsValid(i) && i != v1::OUTCOME_UNSPECIFIED) {
      outcomes.push_back(static_cast<v1::Outcome>(i));
    }
  }
  return outcomes;
}

std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  absl::string_view label = name;
  absl::ConsumePrefix(&label, prefix);
  return absl::AsciiStrToLower(label);
}

}  // namespace

std::string OutcomeLabel(v1::Outcome outcome) {
  return EnumLabel(v1::Outcome_Name(outcome), "OUTCOME_");
}

std::string BatchStateLabel(v1::BatchState state) {
  return EnumLabel(v1::BatchState_Name(state), "BATCH_STATE_");
}

std::vector<MetricFamily> CollectServerMetrics(const FetchStatsSnapshot& fetch,
                                               const BatchStats& batches,
                                               const StoreStats* store) {
  std::vector<MetricFamily> out;
  MetricFamily results =
      Family("batchfetch_results_total", MetricType::kCounter,
             "Results delivered, by outcome (one per request of a batch).");
  MetricFamily upstream = Family(
      "batchfetch_upstream_seconds", MetricType::kHistogram,
      "Total time of each result's last attempt (DNS to last byte), by "
      "outcome; results that never started an attempt are not observed.");
  for (v1::Outcome outcome : Outcomes()) {
    MetricSeries& count = results.series.emplace_back();
    count.labels.push_back({"outcome", OutcomeLabel(outcome)});
    count.value = static_cast<double>(batches.results[outcome].value());
    MetricSeries& time = upstream.series.emplace_back();
    time.labels.push_back({"outcome", OutcomeLabel(outcome)});
    time.histogram = batches.upstream_seconds[outcome]->snapshot();
  }
  out.push_back(std::move(results));

  MetricFamily finished =
      Family("batchfetch_batches_total", MetricType::kCounter,
             "Batches finished, by final state.");
  for (v1::BatchState state : {v1::BATCH_STATE_DONE, v1::BATCH_STATE_CANCELLED,
                               v1::BATCH_STATE_FAILED}) {
    MetricSeries& series = finished.series.emplace_back();
    series.labels.push_back({"state", BatchStateLabel(state)});
    series.value = static_cast<double>(batches.batches_finished[state].value());
  }
  out.push_back(std::move(finished));

  out.push_back(Single("batchfetch_batches_active", MetricType::kGauge,
                       "Batches accepted and not yet finished (results "
                       "still being fetched or stored).",
                       static_cast<double>(batches.batches_active.value())));
  out.push_back(Single("batchfetch_transfers_in_flight", MetricType::kGauge,
                       "HTTP transfers running now.",
                       static_cast<double>(fetch.transfers_in_flight)));
  out.push_back(
      Single("batchfetch_transfers_queued", MetricType::kGauge,
             "Requests accepted by the engine and waiting to start (per-host "
             "queues, batch windows, the server-wide cap).",
             static_cast<double>(fetch.requests_queued)));
  out.push_back(Single("batchfetch_retries_total", MetricType::kCounter,
                       "Retries scheduled (attempts after a request's first).",
                       static_cast<double>(fetch.retries)));
  out.push_back(std::move(upstream));
  out.push_back(Single("batchfetch_response_bytes_total", MetricType::kCounter,
                       "Decoded response body bytes received, all attempts.",
                       static_cast<double>(fetch.response_bytes)));
  out.push_back(Single(
      "batchfetch_blocked_total", MetricType::kCounter,
      "Requests refused by the egress policy (results with outcome "
      "\"blocked\"; each also logged as request_blocked).",
      static_cast<double>(batches.results[v1::OUTCOME_BLOCKED].value())));
  if (store == nullptr) return out;

  out.push_back(Single("batchfetch_store_queue_depth", MetricType::kGauge,
                       "Writes waiting for the database writer.",
                       static_cast<double>(store->queue_depth.value())));
  MetricFamily commit =
      Family("batchfetch_store_commit_seconds", MetricType::kHistogram,
             "Time to write and commit one group of rows (INSERTs to COMMIT).");
  commit.series.emplace_back().histogram = store->commit_seconds.snapshot();
  out.push_back(std::move(commit));
  out.push_back(Single(
      "batchfetch_spool_bytes", MetricType::kGauge,
      "Bytes of the local spool's files (--spool_dir; 0 without a spool).",
      static_cast<double>(store->spool_bytes.value())));
  out.push_back(Single(
      "batchfetch_spooled_writes_total", MetricType::kCounter,
      "Writes MySQL could not take in time, appended to the local spool.",
      static_cast<double>(store->spooled_writes.value())));
  out.push_back(Single("batchfetch_spool_replayed_writes_total",
                       MetricType::kCounter,
                       "Spooled writes replayed into MySQL.",
                       static_cast<double>(store->replayed_writes.value())));
  out.push_back(
      Single("batchfetch_spool_parked_writes", MetricType::kGauge,
             "Writes held in memory because the spool was full (their batches "
             "start no new transfers meanwhile).",
             static_cast<double>(store->parked_writes.value())));
  out.push_back(Single("batchfetch_store_rows_total", MetricType::kCounter,
                       "Result rows committed to the database.",
                       static_cast<double>(store->rows.value())));
  out.push_back(Single(
      "batchfetch_store_errors_total", MetricType::kCounter,
      "Failed database write attempts (a reconnect or a transaction that "
      "failed; each retry counts).",
      static_cast<double>(store->errors.value())));
  out.push_back(Single(
      "batchfetch_batches_interrupted_total", MetricType::kCounter,
      "Batches this replica marked interrupted because the replica running "
      "them stopped renewing their lease (each also logged as "
      "batch_interrupted).",
      static_cast<double>(store->batches_interrupted.value())));
  return out;
}

}  // namespace batchfetch
