// The batchfetch CLI's side of gRPC: transport credentials, the channel,
// connecting within a bounded time, turning Ctrl-C into a clean cancel, and
// reporting failed RPCs on stderr.

#ifndef BATCHFETCH_CLIENT_CLI_CHANNEL_H_
#define BATCHFETCH_CLIENT_CLI_CHANNEL_H_

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "client/cli_args.h"

namespace batchfetch::cli {

// The single place that decides transport security: plaintext unless
// `tls.enabled`; then TLS trusting tls.root_certs_pem (empty: the system's
// roots), presenting the client certificate when one is given (mTLS).
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsSettings& tls);

// A channel to `server` (see ParseServerTarget; round_robin over its
// addresses when it may name several) secured as `tls` says (with TLS, the
// server's certificate must carry tls.server_name, else the host of
// `server`), that accepts messages of up to 256 MiB: a single result or
// results page can carry large bodies, which the 4 MiB gRPC default would
// turn into an error. Does not connect yet.
std::shared_ptr<grpc::Channel> MakeChannel(const ServerTarget& server,
                                           const TlsSettings& tls);

// Adds `authorization: Bearer <token>` to the call's metadata (see
// ResolveToken); nothing when `token` is empty.
void AttachBearerToken(grpc::ClientContext* context, const std::string& token);

// Connects `channel`, giving up with UNAVAILABLE "no connection within ..."
// after options.connect_timeout (or options.deadline, if shorter). A refused
// or unresolvable server ends the wait early with OK: calls are not
// wait-for-ready, so the first RPC then fails fast with gRPC's own reason.
// This only catches a server that never answers (SYN into a black hole),
// which gRPC would otherwise retry for its 20s connect timeout.
// On return, `*call_deadline` holds the absolute deadline for the calls when
// options.deadline is set (measured from the start of connecting, since it
// bounds the whole command), and is left unchanged otherwise.
grpc::Status Connect(
    grpc::Channel& channel, const ConnectionOptions& options,
    std::optional<std::chrono::system_clock::time_point>* call_deadline);

// "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN_CODE" out of range.
const char* StatusCodeName(grpc::StatusCode code);

// Prints why `rpc` (e.g. "FetchBatch") to `server` failed as one line on
// stderr ("server unavailable at ..." for UNAVAILABLE) and returns
// kExitError, for `return ReportRpcError(...)`.
int ReportRpcError(const char* rpc, const std::string& server,
                   const grpc::Status& status);

// While alive, turns SIGINT into `context->TryCancel()` so the server sees a
// clean cancellation and the results already received still get printed.
// gRPC calls are not async-signal-safe, so the handler only writes to a pipe
// and a watcher thread does the cancelling. The first Ctrl-C restores the
// default action (SA_RESETHAND), so a second one kills the process if
// cancelling hangs; the destructor restores the previous SIGINT action.
// At most one may exist at a time; `context` must outlive it. If no pipe can
// be made, it does nothing and Ctrl-C kills the process as usual.
class InterruptCanceller {
 public:
  explicit InterruptCanceller(grpc::ClientContext* context);
  ~InterruptCanceller();

  InterruptCanceller(const InterruptCanceller&) = delete;
  InterruptCanceller& operator=(const InterruptCanceller&) = delete;

  // True once a SIGINT has cancelled the call.
  bool interrupted() const { return interrupted_.load(); }

 private:
  static void Notify(int fd, char what);
  static void OnSignal(int signo);
  void Watch(grpc::ClientContext* context);

  // Lock-free so the signal handler may read it.
  static std::atomic<int> signal_fd_;
  int fds_[2] = {-1, -1};
  struct sigaction previous_ = {};
  std::thread watcher_;
  std::atomic<bool> interrupted_{false};
};

}  // namespace batchfetch::cli

#endif  // BATCHFETCH_CLIENT_CLI_CHANNEL_H_
