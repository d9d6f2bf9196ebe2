// bench_driver: one FetchBatch against a running batchfetch server, timed
// from the RPC's start to the summary (not process start). Prints one JSON
// line: {"seconds":..,"results":..,"ok":..,"http_error":..,"attempts":..,
// "stored":..,"urls_per_s":..,"peak_rss_kb":..} where peak_rss_kb is the
// server's VmHWM when --pid is given and attempts sums every result's
// attempts. --max_attempts > 1 sends a RetryPolicy (W6).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/proc_status.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "batchfetch server");
ABSL_FLAG(std::string, url, "", "URL fetched `count` times (a ?i=N is added)");
ABSL_FLAG(int, count, 1000, "Requests in the batch");
ABSL_FLAG(int, concurrency, 64, "Batch concurrency");
ABSL_FLAG(int, pid, 0, "Server pid, to report its peak RSS");
ABSL_FLAG(int, max_attempts, 0,
          "RetryPolicy.max_attempts; 0 = send no RetryPolicy (no retry)");
ABSL_FLAG(absl::Duration, initial_backoff, absl::ZeroDuration(),
          "RetryPolicy.initial_backoff; 0 = server default (100ms)");
ABSL_FLAG(absl::Duration, max_backoff, absl::ZeroDuration(),
          "RetryPolicy.max_backoff; 0 = server default (10s)");
ABSL_FLAG(bool, retry_on_5xx, false,
          "RetryPolicy.retry_on = [RETRY_ON_5XX] (else the server's default "
          "conditions: connect error, timeout, 429, 502/503/504)");
ABSL_FLAG(std::string, body, "",
          "Request body: when set, every request is a POST of it (else GET)");
ABSL_FLAG(int, sample_rss_ms, 0,
          "Also sample the server's current RSS this often and report the "
          "largest value (VmHWM cannot be reset between runs)");

using batchfetch::testing::ProcStatusKb;

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string base = absl::GetFlag(FLAGS_url);
  const char* sep = base.find('?') == std::string::npos ? "?" : "&";
  batchfetch::v1::FetchBatchRequest request;
  const std::string body = absl::GetFlag(FLAGS_body);
  for (int i = 0; i < absl::GetFlag(FLAGS_count); ++i) {
    batchfetch::v1::FetchRequest* r = request.add_requests();
    r->set_url(absl::StrCat(base, sep, "i=", i));
    if (!body.empty()) {
      r->set_method("POST");
      r->set_body(body);
    }
  }
  request.set_concurrency(
      static_cast<uint32_t>(absl::GetFlag(FLAGS_concurrency)));
  if (absl::GetFlag(FLAGS_max_attempts) > 0) {
    batchfetch::v1::RetryPolicy* retry = request.mutable_retry();
    retry->set_max_attempts(
        static_cast<uint32_t>(absl::GetFlag(FLAGS_max_attempts)));
    const auto set = [](absl::Duration d, google::protobuf::Duration* out) {
      if (d <= absl::ZeroDuration()) return;
      const int64_t ns = absl::ToInt64Nanoseconds(d);
      out->set_seconds(ns / 1000000000);
      out->set_nanos(static_cast<int32_t>(ns % 1000000000));
    };
    set(absl::GetFlag(FLAGS_initial_backoff), retry->mutable_initial_backoff());
    set(absl::GetFlag(FLAGS_max_backoff), retry->mutable_max_backoff());
    if (absl::GetFlag(FLAGS_retry_on_5xx)) {
      retry->add_retry_on(batchfetch::v1::RETRY_ON_5XX);
    }
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_server), grpc::InsecureChannelCredentials(), args);
  auto stub = batchfetch::v1::BatchFetcher::NewStub(channel);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::seconds(10))) {
    std::cerr << "bench_driver: cannot connect\n";
    return 2;
  }
  const int pid = absl::GetFlag(FLAGS_pid);
  const int sample_ms = absl::GetFlag(FLAGS_sample_rss_ms);
  int64_t rss_start_kb = pid > 0 ? ProcStatusKb(pid, "VmRSS:") : -1;
  int64_t rss_max_kb = rss_start_kb;
  absl::Time next_sample = absl::Now();

  grpc::ClientContext context;
  const absl::Time start = absl::Now();
  auto reader = stub->FetchBatch(&context, request);
  batchfetch::v1::FetchBatchEvent event;
  int results = 0, ok = 0, http_error = 0;
  int64_t attempts = 0;
  batchfetch::v1::BatchSummary summary;
  while (reader->Read(&event)) {
    if (event.has_result()) {
      ++results;
      if (event.result().outcome() == batchfetch::v1::OUTCOME_OK) ++ok;
      if (event.result().outcome() == batchfetch::v1::OUTCOME_HTTP_ERROR) {
        ++http_error;
      }
      attempts += event.result().attempts();
    } else if (event.has_summary()) {
      summary = event.summary();
    }
    if (sample_ms > 0 && absl::Now() >= next_sample) {
      rss_max_kb = std::max(rss_max_kb, ProcStatusKb(pid, "VmRSS:"));
      next_sample = absl::Now() + absl::Milliseconds(sample_ms);
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    std::cerr << "bench_driver: " << status.error_message() << "\n";
    return 1;
  }
  std::cout << "{\"seconds\":" << seconds << ",\"results\":" << results
            << ",\"ok\":" << ok << ",\"http_error\":" << http_error
            << ",\"attempts\":" << attempts
            << ",\"stored\":" << summary.stored()
            << ",\"urls_per_s\":" << results / seconds << ",\"peak_rss_kb\":"
            << (pid > 0 ? ProcStatusKb(pid, "VmHWM:") : -1)
            << ",\"rss_start_kb\":" << rss_start_kb
            << ",\"rss_max_kb\":" << rss_max_kb << "}" << std::endl;
  return 0;
}
