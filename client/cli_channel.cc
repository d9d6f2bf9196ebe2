// The batchfetch CLI's side of gRPC.

#include "client/cli_channel.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace batchfetch::cli {

namespace {

// A single FetchResult (or a ListResults page) can carry large bodies; the
// 4 MiB gRPC default would turn a big but legitimate response into an error.
constexpr int kMaxReceiveMessageBytes = 256 << 20;

constexpr char kInterrupt = 'i';
constexpr char kStop = 's';

grpc::Status WaitForConnection(grpc::Channel& channel,
                               std::chrono::system_clock::time_point deadline,
                               absl::Duration timeout) {
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY &&
         state != GRPC_CHANNEL_TRANSIENT_FAILURE) {
    if (!channel.WaitForStateChange(state, deadline)) {
      return grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("no connection within ", absl::FormatDuration(timeout)));
    }
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return grpc::Status::OK;
}

}  // namespace

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsSettings& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.root_certs_pem;
  options.pem_cert_chain = tls.cert_chain_pem;
  options.pem_private_key = tls.private_key_pem;
  return grpc::SslCredentials(options);
}

std::shared_ptr<grpc::Channel> MakeChannel(const ServerTarget& server,
                                           const TlsSettings& tls) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  // Several replicas: gRPC keeps one long-lived connection per channel, so
  // with pick_first every call of a command would go to one of them.
  if (server.round_robin) args.SetLoadBalancingPolicyName("round_robin");
  if (tls.enabled && !tls.server_name.empty()) {
    // GRPC_SSL_TARGET_NAME_OVERRIDE_ARG: the name checked against the
    // certificate (and sent as SNI) instead of the host of `server`.
    args.SetSslTargetNameOverride(tls.server_name);
  }
  return grpc::CreateCustomChannel(server.target, MakeChannelCredentials(tls),
                                   args);
}

void AttachBearerToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

grpc::Status Connect(
    grpc::Channel& channel, const ConnectionOptions& options,
    std::optional<std::chrono::system_clock::time_point>* call_deadline) {
  const auto now = std::chrono::system_clock::now();
  absl::Duration connect_timeout = options.connect_timeout;
  if (options.deadline.has_value()) {
    *call_deadline = now + absl::ToChronoNanoseconds(*options.deadline);
    connect_timeout = std::min(connect_timeout, *options.deadline);
  }
  return WaitForConnection(channel,
                           now + absl::ToChronoNanoseconds(connect_timeout),
                           connect_timeout);
}

const char* StatusCodeName(grpc::StatusCode code) {
  // Indexed by the numeric code, which gRPC fixes across all languages.
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const auto index = static_cast<size_t>(code);
  return index < std::size(kNames) ? kNames[index] : "UNKNOWN_CODE";
}

int ReportRpcError(const char* rpc, const std::string& server,
                   const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "batchfetch: server unavailable at %s: %s\n",
                 server.c_str(), status.error_message().c_str());
  } else {
    std::fprintf(stderr, "batchfetch: %s failed: %s: %s\n", rpc,
                 StatusCodeName(status.error_code()),
                 status.error_message().c_str());
  }
  return kExitError;
}

std::atomic<int> InterruptCanceller::signal_fd_{-1};

InterruptCanceller::InterruptCanceller(grpc::ClientContext* context) {
  if (pipe(fds_) != 0) return;  // Ctrl-C then just kills the process.
  signal_fd_.store(fds_[1]);
  struct sigaction action = {};
  action.sa_handler = &InterruptCanceller::OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, &previous_);
  watcher_ = std::thread([this, context] { Watch(context); });
}

InterruptCanceller::~InterruptCanceller() {
  if (!watcher_.joinable()) return;
  sigaction(SIGINT, &previous_, nullptr);
  signal_fd_.store(-1);
  Notify(fds_[1], kStop);
  watcher_.join();
  close(fds_[0]);
  close(fds_[1]);
}

void InterruptCanceller::Notify(int fd, char what) {
  ssize_t n = write(fd, &what, 1);
  (void)n;  // Nothing useful to do if the pipe is gone.
}

void InterruptCanceller::OnSignal(int /*signo*/) {
  const int saved_errno = errno;
  if (int fd = signal_fd_.load(); fd >= 0) Notify(fd, kInterrupt);
  errno = saved_errno;
}

void InterruptCanceller::Watch(grpc::ClientContext* context) {
  for (;;) {
    char what;
    ssize_t n = read(fds_[0], &what, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || what == kStop) return;
    interrupted_.store(true);
    context->TryCancel();
  }
}

}  // namespace batchfetch::cli
