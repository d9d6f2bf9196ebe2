// The batchfetch CLI commands.

#include "client/cli_commands.h"

#include <errno.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "client/cli_args.h"
#include "client/cli_channel.h"
#include "client/cli_output.h"

namespace batchfetch::cli {

namespace pb = ::batchfetch::v1;

namespace {

using CallDeadline = std::optional<std::chrono::system_clock::time_point>;

// Counts results, prints their JSON lines and, when enabled, keeps a
// one-line progress bar on stderr. The bar is erased around each stdout line
// when stdout shares the terminal, so the two never end up on one line.
class Reporter {
 public:
  explicit Reporter(bool show_progress)
      : show_progress_(show_progress), stdout_is_tty_(isatty(1) != 0) {}

  void SetTotal(uint32_t total) {
    total_ = total;
    Draw();
  }

  // Returns false when stdout failed; the caller should stop the batch.
  bool AddResult(const pb::FetchResult& result) {
    if (result.outcome() == pb::OUTCOME_OK) {
      ++ok_;
    } else {
      ++failed_;
    }
    if (stdout_is_tty_) ClearProgress();
    bool written = WriteStdoutLine(ResultToJson(result));
    Draw();
    return written;
  }

  void ClearProgress() {
    if (!bar_visible_) return;
    std::fputs("\r\x1b[K", stderr);
    bar_visible_ = false;
  }

  uint32_t received() const { return ok_ + failed_; }
  uint32_t failed() const { return failed_; }

 private:
  void Draw() {
    if (!show_progress_) return;
    constexpr int kBarWidth = 30;
    const uint32_t done = received();
    const uint32_t total = std::max(total_, done);
    const int filled =
        total == 0 ? 0 : static_cast<int>(uint64_t{done} * kBarWidth / total);
    std::fputs(absl::StrFormat("\r\x1b[K[%s%s] %u/%u  %u ok  %u failed",
                               std::string(filled, '#'),
                               std::string(kBarWidth - filled, '.'), done,
                               total, ok_, failed_)
                   .c_str(),
               stderr);
    bar_visible_ = true;
  }

  const bool show_progress_;
  const bool stdout_is_tty_;
  bool bar_visible_ = false;
  uint32_t total_ = 0;
  uint32_t ok_ = 0;
  uint32_t failed_ = 0;
};

std::string DefaultServerFromEnvironment() {
  return DefaultServer(std::getenv("BATCHFETCH_SERVER"));
}

// The --tls* flags resolved against their BATCHFETCH_* variables.
absl::StatusOr<TlsSettings> TlsFromEnvironment(const TlsFlags& flags) {
  return ResolveTls(
      flags, [](const char* name) -> const char* { return std::getenv(name); });
}

// The --token-file (or BATCHFETCH_TOKEN_FILE) token; "" for none.
absl::StatusOr<std::string> TokenFromEnvironment(
    const std::optional<std::string>& token_file) {
  return ResolveToken(token_file, [](const char* name) -> const char* {
    return std::getenv(name);
  });
}

// What every RPC of one command needs: a stub on the connected channel, the
// deadline for the calls and the bearer token.
struct Session {
  std::unique_ptr<pb::BatchFetcher::Stub> stub;
  CallDeadline deadline;
  std::string token;  // "" for none.

  // Applies the per-call deadline and the bearer token; every RPC (each page
  // of `get --results`) needs a fresh context.
  void PrepareContext(grpc::ClientContext* context) const {
    if (deadline.has_value()) context->set_deadline(*deadline);
    AttachBearerToken(context, token);
  }
};

// Resolves the TLS settings and the token (flags, then BATCHFETCH_*
// variables) and connects to connection.server. Returns kExitOk with
// `*session` filled in; otherwise prints why and returns the exit code: a
// usage error for bad TLS or token settings, and for a failed connection
// `rpc`'s error (the RPC the command was about to make, e.g. "FetchBatch").
int OpenSession(const ConnectionOptions& connection, const char* rpc,
                Session* session) {
  absl::StatusOr<TlsSettings> tls = TlsFromEnvironment(connection.tls);
  if (!tls.ok()) return UsageError(tls.status());
  absl::StatusOr<std::string> token =
      TokenFromEnvironment(connection.token_file);
  if (!token.ok()) return UsageError(token.status());
  std::shared_ptr<grpc::Channel> channel = MakeChannel(connection.server, *tls);
  if (grpc::Status s = Connect(*channel, connection, &session->deadline);
      !s.ok()) {
    return ReportRpcError(rpc, connection.server, s);
  }
  session->stub = pb::BatchFetcher::NewStub(channel);
  session->token = *std::move(token);
  return kExitOk;
}

// Prints every stored result of `options.batch_id`, page by page, in index
// order.
int PrintStoredResults(const Session& session, const GetOptions& options) {
  pb::ListResultsRequest request;
  request.set_batch_id(options.batch_id);
  request.set_page_size(options.page_size);
  do {
    grpc::ClientContext context;
    session.PrepareContext(&context);
    pb::ListResultsResponse response;
    grpc::Status status =
        session.stub->ListResults(&context, request, &response);
    if (!status.ok()) {
      return ReportRpcError("ListResults", options.connection.server, status);
    }
    for (const pb::FetchResult& result : response.results()) {
      if (!WriteStdoutLine(ResultToJson(result))) return kExitError;
    }
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return kExitOk;
}

}  // namespace

int UsageError(const absl::Status& status) {
  std::fprintf(stderr, "batchfetch: %s\nRun 'batchfetch --help' for usage.\n",
               std::string(status.message()).c_str());
  return kExitError;
}

int RunFetch(const std::vector<std::string>& args) {
  absl::StatusOr<FetchOptions> options =
      ParseFetchArgs(args, DefaultServerFromEnvironment(), std::cin);
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const std::string& server = options->connection.server;
  const uint32_t requested = options->request.requests_size();

  Session session;
  if (int code = OpenSession(options->connection, "FetchBatch", &session);
      code != kExitOk) {
    return code;
  }

  grpc::ClientContext context;
  session.PrepareContext(&context);
  InterruptCanceller canceller(&context);
  Reporter reporter(/*show_progress=*/!options->quiet && isatty(2) != 0);
  reporter.SetTotal(requested);

  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReader<pb::FetchBatchEvent>> reader =
      session.stub->FetchBatch(&context, options->request);
  std::string batch_id;
  uint32_t total = requested;
  std::optional<pb::BatchSummary> summary;
  std::optional<int> output_errno;
  pb::FetchBatchEvent event;
  while (reader->Read(&event)) {
    if (output_errno.has_value()) continue;  // Draining after TryCancel.
    switch (event.event_case()) {
      case pb::FetchBatchEvent::kAccepted:
        batch_id = event.accepted().batch_id();
        total = event.accepted().total();
        reporter.SetTotal(total);
        break;
      case pb::FetchBatchEvent::kResult:
        if (!reporter.AddResult(event.result())) {
          output_errno = errno;
          context.TryCancel();
        }
        break;
      case pb::FetchBatchEvent::kSummary:
        summary = event.summary();
        break;
      case pb::FetchBatchEvent::EVENT_NOT_SET:
        break;  // An event type newer than this client; skip it.
    }
  }
  const grpc::Status status = reader->Finish();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  reporter.ClearProgress();
  if (batch_id.empty() && summary.has_value()) batch_id = summary->batch_id();

  if (output_errno.has_value()) {
    // EPIPE means the reader went away (e.g. `| head`); nothing to report.
    if (*output_errno != EPIPE) {
      std::fprintf(stderr, "batchfetch: cannot write to stdout: %s\n",
                   std::strerror(*output_errno));
    }
    return kExitError;
  }
  if (canceller.interrupted()) {
    std::fprintf(stderr,
                 "batchfetch: interrupted; batch %s: %u of %u results "
                 "received\n",
                 batch_id.empty() ? "(unknown)" : batch_id.c_str(),
                 reporter.received(), total);
    return kExitInterrupted;
  }
  if (!status.ok()) return ReportRpcError("FetchBatch", server, status);
  if (!summary.has_value()) {
    std::fprintf(stderr,
                 "batchfetch: batch %s: stream ended without a summary "
                 "(%u of %u results received)\n",
                 batch_id.c_str(), reporter.received(), total);
    return kExitFailed;
  }

  if (!options->quiet) {
    std::fprintf(stderr, "batch %s %s: %u ok, %u failed, %u stored in %.2fs\n",
                 batch_id.c_str(), StateName(summary->state()).c_str(),
                 summary->succeeded(), summary->failed(), summary->stored(),
                 seconds);
  }
  if (options->summary_json &&
      !WriteStdoutLine(SummaryToJson(*summary, true))) {
    return kExitError;
  }
  const bool all_ok = summary->state() == pb::BATCH_STATE_DONE &&
                      reporter.failed() == 0 && summary->failed() == 0 &&
                      reporter.received() == total;
  return all_ok ? kExitOk : kExitFailed;
}

int RunGet(const std::vector<std::string>& args) {
  absl::StatusOr<GetOptions> options =
      ParseGetArgs(args, DefaultServerFromEnvironment());
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const std::string& server = options->connection.server;
  Session session;
  if (int code = OpenSession(options->connection, "GetBatch", &session);
      code != kExitOk) {
    return code;
  }

  grpc::ClientContext context;
  session.PrepareContext(&context);
  pb::GetBatchRequest request;
  request.set_batch_id(options->batch_id);
  pb::BatchSummary summary;
  grpc::Status status = session.stub->GetBatch(&context, request, &summary);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    std::fprintf(stderr, "batchfetch: batch %s not found\n",
                 options->batch_id.c_str());
    return kExitFailed;
  }
  if (!status.ok()) return ReportRpcError("GetBatch", server, status);
  if (!WriteStdoutLine(SummaryToJson(summary, false))) return kExitError;
  if (!options->results) return kExitOk;
  return PrintStoredResults(session, *options);
}

}  // namespace batchfetch::cli
