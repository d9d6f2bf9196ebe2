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
#include "absl/strings/str_cat.h"
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

// Counts results, prints their lines (JSON or CSV) and, when enabled, keeps
// a one-line progress line on stderr (FormatProgress: count, rate, failures,
// ETA). The line is erased around each stdout line when stdout shares the
// terminal, so the two never end up on one line.
class Reporter {
 public:
  Reporter(bool show_progress, OutputFormat output = OutputFormat::kNdjson)
      : show_progress_(show_progress),
        stdout_is_tty_(isatty(1) != 0),
        output_(output),
        start_(absl::Now()) {}

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
    bool written =
        WriteStdoutLine(output_ == OutputFormat::kCsv ? ResultToCsv(result)
                                                      : ResultToJson(result));
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
    std::fputs(
        absl::StrCat("\r\x1b[K", FormatProgress(received(), total_, failed_,
                                                absl::Now() - start_))
            .c_str(),
        stderr);
    bar_visible_ = true;
  }

  const bool show_progress_;
  const bool stdout_is_tty_;
  const OutputFormat output_;
  const absl::Time start_;
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
  // A --server value was checked when parsed; this catches a bad
  // $BATCHFETCH_SERVER.
  absl::StatusOr<ServerTarget> target =
      ParseServerTarget(connection.server, "$BATCHFETCH_SERVER");
  if (!target.ok()) return UsageError(target.status());
  std::shared_ptr<grpc::Channel> channel = MakeChannel(*target, *tls);
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
  Reporter reporter(/*show_progress=*/!options->quiet && isatty(2) != 0,
                    options->output);
  if (options->output == OutputFormat::kCsv && !WriteStdoutLine(kCsvColumns)) {
    return kExitError;
  }
  reporter.SetTotal(requested);

  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReader<pb::FetchBatchEvent>> reader =
      session.stub->FetchBatch(&context, options->request);
  std::string batch_id;
  uint32_t total = requested;
  std::optional<pb::BatchSummary> summary;
  std::optional<int> output_errno;
  bool detached = false;  // --detach: accepted, then we leave
  pb::FetchBatchEvent event;
  while (reader->Read(&event)) {
    if (output_errno.has_value() || detached) continue;  // After TryCancel.
    switch (event.event_case()) {
      case pb::FetchBatchEvent::kAccepted:
        batch_id = event.accepted().batch_id();
        total = event.accepted().total();
        reporter.SetTotal(total);
        if (options->request.detach()) {
          // The server keeps the batch running without us.
          detached = true;
          context.TryCancel();
        }
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
  if (detached) return WriteStdoutLine(batch_id) ? kExitOk : kExitError;

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

namespace {

// Opens the session of a watch/cancel/list command, or returns its exit code
// (kExitOk for --help, after printing the usage).
std::optional<int> OpenBatchCommand(
    const absl::StatusOr<BatchCommandOptions>& options, const char* rpc,
    Session* session) {
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (int code = OpenSession(options->connection, rpc, session);
      code != kExitOk) {
    return code;
  }
  return std::nullopt;
}

}  // namespace

int RunWatch(const std::vector<std::string>& args) {
  absl::StatusOr<BatchCommandOptions> options =
      ParseWatchArgs(args, DefaultServerFromEnvironment());
  Session session;
  if (std::optional<int> code =
          OpenBatchCommand(options, "WatchBatch", &session)) {
    return *code;
  }
  grpc::ClientContext context;
  session.PrepareContext(&context);
  InterruptCanceller canceller(&context);
  pb::WatchBatchRequest request;
  request.set_batch_id(options->batch_id);
  request.set_from_index(options->from_index);
  std::unique_ptr<grpc::ClientReader<pb::FetchBatchEvent>> reader =
      session.stub->WatchBatch(&context, request);
  std::optional<pb::BatchSummary> summary;
  bool all_ok = true;
  bool output_failed = false;
  pb::FetchBatchEvent event;
  while (reader->Read(&event)) {
    if (output_failed) continue;  // Draining after TryCancel.
    if (event.has_result()) {
      all_ok = all_ok && event.result().outcome() == pb::OUTCOME_OK;
      if (!WriteStdoutLine(ResultToJson(event.result()))) {
        output_failed = true;
        context.TryCancel();
      }
    } else if (event.has_summary()) {
      summary = event.summary();
    }
  }
  const grpc::Status status = reader->Finish();
  if (output_failed) return kExitError;
  if (canceller.interrupted()) return kExitInterrupted;
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    std::fprintf(stderr, "batchfetch: batch %s not found\n",
                 options->batch_id.c_str());
    return kExitFailed;
  }
  if (!status.ok()) {
    return ReportRpcError("WatchBatch", options->connection.server, status);
  }
  if (!summary.has_value()) return kExitFailed;
  if (!WriteStdoutLine(SummaryToJson(*summary, true))) return kExitError;
  return all_ok && summary->state() == pb::BATCH_STATE_DONE ? kExitOk
                                                            : kExitFailed;
}

int RunCancel(const std::vector<std::string>& args) {
  absl::StatusOr<BatchCommandOptions> options =
      ParseCancelArgs(args, DefaultServerFromEnvironment());
  Session session;
  if (std::optional<int> code =
          OpenBatchCommand(options, "CancelBatch", &session)) {
    return *code;
  }
  grpc::ClientContext context;
  session.PrepareContext(&context);
  pb::CancelBatchRequest request;
  request.set_batch_id(options->batch_id);
  pb::BatchSummary summary;
  grpc::Status status = session.stub->CancelBatch(&context, request, &summary);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    std::fprintf(stderr, "batchfetch: batch %s not found\n",
                 options->batch_id.c_str());
    return kExitFailed;
  }
  if (!status.ok()) {
    return ReportRpcError("CancelBatch", options->connection.server, status);
  }
  return WriteStdoutLine(SummaryToJson(summary, false)) ? kExitOk : kExitError;
}

int RunList(const std::vector<std::string>& args) {
  absl::StatusOr<BatchCommandOptions> options =
      ParseListArgs(args, DefaultServerFromEnvironment());
  Session session;
  if (std::optional<int> code =
          OpenBatchCommand(options, "ListBatches", &session)) {
    return *code;
  }
  pb::ListBatchesRequest request;
  request.set_state(options->state);
  request.set_page_size(options->page_size);
  uint32_t printed = 0;
  do {
    grpc::ClientContext context;
    session.PrepareContext(&context);
    pb::ListBatchesResponse response;
    grpc::Status status =
        session.stub->ListBatches(&context, request, &response);
    if (!status.ok()) {
      return ReportRpcError("ListBatches", options->connection.server, status);
    }
    for (const pb::BatchSummary& batch : response.batches()) {
      if (options->limit > 0 && printed == options->limit) return kExitOk;
      if (!WriteStdoutLine(SummaryToJson(batch, false))) return kExitError;
      ++printed;
    }
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return kExitOk;
}

}  // namespace batchfetch::cli
