// batchfetch: command-line client for the BatchFetcher gRPC service.
//
//   batchfetch fetch [flags] URL... | -f FILE | -
//   batchfetch get ID [flags] [--results]
//
// stdout carries only machine-readable JSON lines (one per result, plus an
// optional summary line); everything meant for people (progress bar, summary,
// errors) goes to stderr. Run `batchfetch --help` for the full syntax.

#include <errno.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "client/cli_output.h"

namespace {

namespace pb = ::batchfetch::v1;
using ::batchfetch::cli::ResultToJson;
using ::batchfetch::cli::StateName;
using ::batchfetch::cli::SummaryToJson;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // Some result failed, batch not DONE, or
                                // (get) the batch does not exist.
constexpr int kExitError = 2;   // Usage, connection, RPC or output error.
constexpr int kExitInterrupted = 130;  // 128 + SIGINT, as shells report it.

constexpr char kDefaultServer[] = "localhost:50051";
constexpr absl::Duration kDefaultConnectTimeout = absl::Seconds(5);
// A single FetchResult (or a ListResults page) can carry large bodies; the
// 4 MiB gRPC default would turn a big but legitimate response into an error.
constexpr int kMaxReceiveMessageBytes = 256 << 20;

constexpr char kUsage[] =
    R"(batchfetch - fetch a batch of URLs through a batchfetch server

Usage:
  batchfetch fetch [flags] URL...     fetch the given URLs
  batchfetch fetch [flags] -f FILE    fetch the URLs listed in FILE
  batchfetch fetch [flags] -          fetch the URLs read from stdin
  batchfetch get ID [flags]           show a stored batch
  batchfetch help                     show this text

URL sources may be mixed and repeated; requests keep command-line order.
In files and on stdin, blank lines and lines starting with '#' are skipped.
Flags accept both --flag=value and --flag value.

Common flags:
  --server ADDR          server address (default: $BATCHFETCH_SERVER,
                         else localhost:50051)
  --connect-timeout DUR  give up when not connected within DUR (default 5s)
  --deadline DUR         gRPC deadline for the whole command (default: none)

fetch flags:
  -f, --file FILE        read URLs from FILE ('-' = stdin); repeatable
  --concurrency N        simultaneous requests (default: server default)
  --timeout DUR          per-request timeout, e.g. 5s, 300ms
  --method M             HTTP method for every URL (default GET)
  -H, --header 'N: V'    request header for every URL; repeatable
  --extract NAME=/PTR    reduce each JSON body to {NAME: value at JSON
                         Pointer PTR}; repeatable
  --batch-id ID          use this batch id (default: server generates one)
  --quiet                no progress bar and no summary on stderr
  --summary-json         end stdout with a {"summary":{...}} line

get flags:
  --results              also print every stored result
  --page-size N          results per ListResults call (server default 100)

Output (stdout): one JSON object per result, as results arrive:
  {"index":0,"url":"...","outcome":"ok","http_status":200,"attempts":1,
   "elapsed_ms":12.5,"content_type":"...","error":"...","json":{...},
   "body":"..."}
  content_type, error, json and body appear only when non-empty; a body that
  is not valid UTF-8 is emitted as "body_base64" instead of "body".
  `get` first prints the batch summary object.

Exit status:
  0    every result OK (get: batch found)
  1    some results failed or the batch did not finish (get: not found)
  2    usage error, connection or RPC error
  130  interrupted (Ctrl-C); results received so far were printed
)";

// ---------------------------------------------------------------------------
// Command-line parsing.

struct FlagSpec {
  const char* name;        // Canonical long form, e.g. "--file".
  const char* short_name;  // e.g. "-f", or nullptr.
  bool takes_value;
};

// One command-line item in its original order. `flag` is the canonical flag
// name, or empty for a positional argument.
struct Arg {
  std::string flag;
  std::string value;
};

const FlagSpec* FindFlag(const std::vector<FlagSpec>& specs,
                         absl::string_view name) {
  for (const FlagSpec& spec : specs) {
    if (name == spec.name ||
        (spec.short_name != nullptr && name == spec.short_name)) {
      return &spec;
    }
  }
  return nullptr;
}

// Splits `args` into flags and positionals, keeping their order (URL sources
// are numbered in the order given). Accepts --flag=value, --flag value,
// -X value and -Xvalue; "-" is positional and "--" ends flag parsing.
absl::StatusOr<std::vector<Arg>> SplitArgs(const std::vector<std::string>& args,
                                           const std::vector<FlagSpec>& specs) {
  std::vector<Arg> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) out.push_back({"", args[i]});
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      out.push_back({"", arg});
      continue;
    }
    std::string name = arg;
    std::optional<std::string> value;
    if (absl::StartsWith(arg, "--")) {
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
      }
    } else if (arg.size() > 2) {
      name = arg.substr(0, 2);
      value = arg.substr(2);
    }
    const FlagSpec* spec = FindFlag(specs, name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '", arg, "'"));
    }
    if (!spec->takes_value) {
      if (value.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", spec->name, " takes no value"));
      }
      out.push_back({spec->name, ""});
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag ", spec->name, " needs a value"));
      }
      value = args[++i];
    }
    out.push_back({spec->name, *std::move(value)});
  }
  return out;
}

// Durations must be finite and non-negative; `allow_zero` is false where zero
// would mean "fail immediately" rather than "use the default".
absl::StatusOr<absl::Duration> ParseDurationFlag(const Arg& arg,
                                                 bool allow_zero) {
  absl::Duration d;
  if (!absl::ParseDuration(arg.value, &d) || d == absl::InfiniteDuration() ||
      d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration for ", arg.flag, ": '", arg.value,
                     "' (expected e.g. 5s, 300ms, 1m30s)"));
  }
  if (!allow_zero && d == absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(arg.flag, " must be greater than zero"));
  }
  return d;
}

absl::StatusOr<uint32_t> ParseUintFlag(const Arg& arg) {
  uint32_t n;
  if (!absl::SimpleAtoi(arg.value, &n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad value for ", arg.flag, ": '", arg.value, "' (expected a number)"));
  }
  return n;
}

// Flags shared by every command that talks to the server.
struct ConnectionOptions {
  std::string server;
  absl::Duration connect_timeout = kDefaultConnectTimeout;
  std::optional<absl::Duration> deadline;
};

const std::vector<FlagSpec> kConnectionFlags = {
    {"--server", nullptr, true},
    {"--connect-timeout", nullptr, true},
    {"--deadline", nullptr, true},
    {"--help", "-h", false},
};

ConnectionOptions DefaultConnectionOptions() {
  ConnectionOptions options;
  const char* env = std::getenv("BATCHFETCH_SERVER");
  options.server = (env != nullptr && *env != '\0') ? env : kDefaultServer;
  return options;
}

// Applies `arg` if it is a connection flag. Returns true when it was one.
absl::StatusOr<bool> ApplyConnectionFlag(const Arg& arg,
                                         ConnectionOptions* options) {
  if (arg.flag == "--server") {
    if (arg.value.empty()) {
      return absl::InvalidArgumentError("--server must not be empty");
    }
    options->server = arg.value;
  } else if (arg.flag == "--connect-timeout") {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, false);
    if (!d.ok()) return d.status();
    options->connect_timeout = *d;
  } else if (arg.flag == "--deadline") {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, false);
    if (!d.ok()) return d.status();
    options->deadline = *d;
  } else {
    return false;
  }
  return true;
}

struct FetchOptions {
  ConnectionOptions connection;
  pb::FetchBatchRequest request;
  bool quiet = false;
  bool summary_json = false;
  bool help = false;
};

// Appends the URLs of a file or stdin: one per line, surrounding whitespace
// ignored, blank lines and '#' comments skipped.
void ReadUrlLines(std::istream& in, std::vector<std::string>* urls) {
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view url = absl::StripAsciiWhitespace(line);
    if (url.empty() || url.front() == '#') continue;
    urls->emplace_back(url);
  }
}

absl::Status ReadUrlSource(const std::string& source,
                           std::vector<std::string>* urls) {
  if (source == "-") {
    ReadUrlLines(std::cin, urls);
    if (std::cin.bad()) return absl::InvalidArgumentError("cannot read stdin");
    return absl::OkStatus();
  }
  std::ifstream file(source);
  if (!file) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot open URL file '", source, "': ", std::strerror(errno)));
  }
  ReadUrlLines(file, urls);
  if (file.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read URL file '", source, "'"));
  }
  return absl::OkStatus();
}

// "Name: value" -> (Name, value). The name must be a non-empty token.
absl::StatusOr<std::pair<std::string, std::string>> ParseHeader(
    absl::string_view header) {
  size_t colon = header.find(':');
  absl::string_view name =
      colon == absl::string_view::npos
          ? absl::string_view()
          : absl::StripAsciiWhitespace(header.substr(0, colon));
  if (name.empty() || std::any_of(name.begin(), name.end(), [](char c) {
        return absl::ascii_isspace(static_cast<unsigned char>(c));
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad header '", header, "' (expected 'Name: value')"));
  }
  return std::make_pair(
      std::string(name),
      std::string(absl::StripAsciiWhitespace(header.substr(colon + 1))));
}

// "name=/json/pointer". An empty pointer selects the whole document
// (RFC 6901); any other pointer must start with '/'.
absl::StatusOr<std::pair<std::string, std::string>> ParseExtract(
    absl::string_view spec) {
  size_t eq = spec.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad --extract '", spec, "' (expected NAME=/json/pointer)"));
  }
  absl::string_view pointer = spec.substr(eq + 1);
  if (!pointer.empty() && pointer.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --extract '", spec,
                     "': a JSON Pointer must be empty or start with '/'"));
  }
  return std::make_pair(std::string(spec.substr(0, eq)), std::string(pointer));
}

absl::StatusOr<FetchOptions> ParseFetchArgs(
    const std::vector<std::string>& args) {
  std::vector<FlagSpec> specs = kConnectionFlags;
  specs.insert(specs.end(), {
                                {"--file", "-f", true},
                                {"--concurrency", nullptr, true},
                                {"--timeout", nullptr, true},
                                {"--method", nullptr, true},
                                {"--header", "-H", true},
                                {"--extract", nullptr, true},
                                {"--batch-id", nullptr, true},
                                {"--quiet", "-q", false},
                                {"--summary-json", nullptr, false},
                            });
  absl::StatusOr<std::vector<Arg>> split = SplitArgs(args, specs);
  if (!split.ok()) return split.status();

  FetchOptions options;
  options.connection = DefaultConnectionOptions();
  pb::FetchBatchRequest& request = options.request;
  std::vector<std::string> urls;
  std::string method;
  std::vector<std::pair<std::string, std::string>> headers;
  for (const Arg& arg : *split) {
    absl::StatusOr<bool> was_connection_flag =
        ApplyConnectionFlag(arg, &options.connection);
    if (!was_connection_flag.ok()) return was_connection_flag.status();
    if (*was_connection_flag) continue;

    if (arg.flag.empty()) {
      if (arg.value == "-") {
        if (absl::Status s = ReadUrlSource("-", &urls); !s.ok()) return s;
      } else {
        urls.push_back(arg.value);
      }
    } else if (arg.flag == "--file") {
      if (absl::Status s = ReadUrlSource(arg.value, &urls); !s.ok()) return s;
    } else if (arg.flag == "--concurrency") {
      absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
      if (!n.ok()) return n.status();
      request.set_concurrency(*n);
    } else if (arg.flag == "--timeout") {
      absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, true);
      if (!d.ok()) return d.status();
      absl::Duration nanos;
      int64_t seconds = absl::IDivDuration(*d, absl::Seconds(1), &nanos);
      request.mutable_timeout()->set_seconds(seconds);
      request.mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(nanos)));
    } else if (arg.flag == "--method") {
      if (arg.value.empty()) {
        return absl::InvalidArgumentError("--method must not be empty");
      }
      method = absl::AsciiStrToUpper(arg.value);
    } else if (arg.flag == "--header") {
      absl::StatusOr<std::pair<std::string, std::string>> header =
          ParseHeader(arg.value);
      if (!header.ok()) return header.status();
      headers.push_back(*std::move(header));
    } else if (arg.flag == "--extract") {
      absl::StatusOr<std::pair<std::string, std::string>> extract =
          ParseExtract(arg.value);
      if (!extract.ok()) return extract.status();
      if (!request.mutable_extract()
               ->try_emplace(extract->first, extract->second)
               .second) {
        return absl::InvalidArgumentError(
            absl::StrCat("--extract name '", extract->first, "' given twice"));
      }
    } else if (arg.flag == "--batch-id") {
      request.set_batch_id(arg.value);
    } else if (arg.flag == "--quiet") {
      options.quiet = true;
    } else if (arg.flag == "--summary-json") {
      options.summary_json = true;
    } else if (arg.flag == "--help") {
      options.help = true;
    }
  }
  if (options.help) return options;
  if (urls.empty()) return absl::InvalidArgumentError("no URLs given");

  for (std::string& url : urls) {
    pb::FetchRequest* fetch = request.add_requests();
    fetch->set_url(std::move(url));
    fetch->set_method(method);
    // A later -H for the same name wins, as with curl.
    for (const auto& [name, value] : headers) {
      (*fetch->mutable_headers())[name] = value;
    }
  }
  return options;
}

struct GetOptions {
  ConnectionOptions connection;
  std::string batch_id;
  bool results = false;
  uint32_t page_size = 0;
  bool help = false;
};

absl::StatusOr<GetOptions> ParseGetArgs(const std::vector<std::string>& args) {
  std::vector<FlagSpec> specs = kConnectionFlags;
  specs.insert(specs.end(), {
                                {"--results", nullptr, false},
                                {"--page-size", nullptr, true},
                            });
  absl::StatusOr<std::vector<Arg>> split = SplitArgs(args, specs);
  if (!split.ok()) return split.status();

  GetOptions options;
  options.connection = DefaultConnectionOptions();
  std::vector<std::string> positional;
  for (const Arg& arg : *split) {
    absl::StatusOr<bool> was_connection_flag =
        ApplyConnectionFlag(arg, &options.connection);
    if (!was_connection_flag.ok()) return was_connection_flag.status();
    if (*was_connection_flag) continue;

    if (arg.flag.empty()) {
      positional.push_back(arg.value);
    } else if (arg.flag == "--results") {
      options.results = true;
    } else if (arg.flag == "--page-size") {
      absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
      if (!n.ok()) return n.status();
      options.page_size = *n;
    } else if (arg.flag == "--help") {
      options.help = true;
    }
  }
  if (options.help) return options;
  if (positional.size() != 1 || positional[0].empty()) {
    return absl::InvalidArgumentError("get needs exactly one batch ID");
  }
  options.batch_id = positional[0];
  return options;
}

int UsageError(const absl::Status& status) {
  std::fprintf(stderr, "batchfetch: %s\nRun 'batchfetch --help' for usage.\n",
               std::string(status.message()).c_str());
  return kExitError;
}

// Flushes every line so a consumer of the pipe sees results as they arrive.
// Returns false (errno set) when stdout can no longer be written.
bool WriteStdoutLine(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  return std::fflush(stdout) == 0 && !std::ferror(stdout);
}

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

// ---------------------------------------------------------------------------
// gRPC plumbing.

// The single place that decides transport security (TLS comes later).
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials() {
  return grpc::InsecureChannelCredentials();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  return grpc::CreateCustomChannel(server, MakeChannelCredentials(), args);
}

// Bounds the time spent connecting. Calls are not wait-for-ready, so a
// refused or unresolvable server already fails fast with gRPC's own reason;
// this only catches a server that never answers (SYN into a black hole),
// which gRPC would otherwise retry for its 20s connect timeout.
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

// Connects and returns the absolute call deadline (if any). The connect time
// counts against --deadline, since that bounds the whole command.
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

// While alive, turns SIGINT into ClientContext::TryCancel() so the server
// sees a clean cancellation and the results already received still get
// printed. gRPC calls are not async-signal-safe, so the handler only writes
// to a pipe and a watcher thread does the cancelling. SA_RESETHAND makes a
// second Ctrl-C kill the process the usual way if cancelling hangs.
class InterruptCanceller {
 public:
  explicit InterruptCanceller(grpc::ClientContext* context) {
    if (pipe(fds_) != 0) return;  // Ctrl-C then just kills the process.
    signal_fd_.store(fds_[1]);
    struct sigaction action = {};
    action.sa_handler = &InterruptCanceller::OnSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &action, &previous_);
    watcher_ = std::thread([this, context] { Watch(context); });
  }

  ~InterruptCanceller() {
    if (!watcher_.joinable()) return;
    sigaction(SIGINT, &previous_, nullptr);
    signal_fd_.store(-1);
    Notify(fds_[1], kStop);
    watcher_.join();
    close(fds_[0]);
    close(fds_[1]);
  }

  InterruptCanceller(const InterruptCanceller&) = delete;
  InterruptCanceller& operator=(const InterruptCanceller&) = delete;

  bool interrupted() const { return interrupted_.load(); }

 private:
  static constexpr char kInterrupt = 'i';
  static constexpr char kStop = 's';

  static void Notify(int fd, char what) {
    ssize_t n = write(fd, &what, 1);
    (void)n;  // Nothing useful to do if the pipe is gone.
  }

  static void OnSignal(int /*signo*/) {
    const int saved_errno = errno;
    if (int fd = signal_fd_.load(); fd >= 0) Notify(fd, kInterrupt);
    errno = saved_errno;
  }

  void Watch(grpc::ClientContext* context) {
    for (;;) {
      char what;
      ssize_t n = read(fds_[0], &what, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || what == kStop) return;
      interrupted_.store(true);
      context->TryCancel();
    }
  }

  // Lock-free so the signal handler may read it.
  static inline std::atomic<int> signal_fd_{-1};
  int fds_[2] = {-1, -1};
  struct sigaction previous_ = {};
  std::thread watcher_;
  std::atomic<bool> interrupted_{false};
};

// ---------------------------------------------------------------------------
// Commands.

int RunFetch(const std::vector<std::string>& args) {
  absl::StatusOr<FetchOptions> options = ParseFetchArgs(args);
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const std::string& server = options->connection.server;
  const uint32_t requested = options->request.requests_size();

  std::shared_ptr<grpc::Channel> channel = MakeChannel(server);
  std::optional<std::chrono::system_clock::time_point> deadline;
  if (grpc::Status s = Connect(*channel, options->connection, &deadline);
      !s.ok()) {
    return ReportRpcError("FetchBatch", server, s);
  }
  std::unique_ptr<pb::BatchFetcher::Stub> stub =
      pb::BatchFetcher::NewStub(channel);

  grpc::ClientContext context;
  if (deadline.has_value()) context.set_deadline(*deadline);
  InterruptCanceller canceller(&context);
  Reporter reporter(/*show_progress=*/!options->quiet && isatty(2) != 0);
  reporter.SetTotal(requested);

  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReader<pb::FetchBatchEvent>> reader =
      stub->FetchBatch(&context, options->request);
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

// Applies the per-call deadline; every RPC of `get` needs a fresh context.
void PrepareContext(
    grpc::ClientContext* context,
    const std::optional<std::chrono::system_clock::time_point>& deadline) {
  if (deadline.has_value()) context->set_deadline(*deadline);
}

// Prints every stored result of `batch_id`, page by page, in index order.
int PrintStoredResults(
    pb::BatchFetcher::Stub& stub, const GetOptions& options,
    const std::optional<std::chrono::system_clock::time_point>& deadline) {
  pb::ListResultsRequest request;
  request.set_batch_id(options.batch_id);
  request.set_page_size(options.page_size);
  do {
    grpc::ClientContext context;
    PrepareContext(&context, deadline);
    pb::ListResultsResponse response;
    grpc::Status status = stub.ListResults(&context, request, &response);
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

int RunGet(const std::vector<std::string>& args) {
  absl::StatusOr<GetOptions> options = ParseGetArgs(args);
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const std::string& server = options->connection.server;
  std::shared_ptr<grpc::Channel> channel = MakeChannel(server);
  std::optional<std::chrono::system_clock::time_point> deadline;
  if (grpc::Status s = Connect(*channel, options->connection, &deadline);
      !s.ok()) {
    return ReportRpcError("GetBatch", server, s);
  }
  std::unique_ptr<pb::BatchFetcher::Stub> stub =
      pb::BatchFetcher::NewStub(channel);

  grpc::ClientContext context;
  PrepareContext(&context, deadline);
  pb::GetBatchRequest request;
  request.set_batch_id(options->batch_id);
  pb::BatchSummary summary;
  grpc::Status status = stub->GetBatch(&context, request, &summary);
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    std::fprintf(stderr, "batchfetch: batch %s not found\n",
                 options->batch_id.c_str());
    return kExitFailed;
  }
  if (!status.ok()) return ReportRpcError("GetBatch", server, status);
  if (!WriteStdoutLine(SummaryToJson(summary, false))) return kExitError;
  if (!options->results) return kExitOk;
  return PrintStoredResults(*stub, *options, deadline);
}

}  // namespace

int main(int argc, char** argv) {
  // Writes to a closed pipe should fail with EPIPE (handled, and the RPC
  // cancelled) instead of killing the process mid-stream.
  signal(SIGPIPE, SIG_IGN);

  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitError;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (command == "fetch") return RunFetch(args);
  if (command == "get") return RunGet(args);
  return UsageError(absl::InvalidArgumentError(
      absl::StrCat("unknown command '", command, "'")));
}
