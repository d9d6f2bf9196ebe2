// Command-line parsing for the batchfetch CLI.

#include "client/cli_args.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace batchfetch::cli {

namespace pb = ::batchfetch::v1;

const char kUsage[] =
    R"(batchfetch - fetch a batch of URLs through a batchfetch server

Usage:
  batchfetch fetch [flags] URL...     fetch the given URLs
  batchfetch fetch [flags] -f FILE    fetch the URLs listed in FILE
  batchfetch fetch [flags] -          fetch the URLs read from stdin
  batchfetch get ID [flags]           show a stored batch
  batchfetch watch ID [flags]         follow a batch: its stored results,
                                      then live ones, then the summary
  batchfetch cancel ID [flags]        cancel a running batch (any replica)
  batchfetch list [flags]             list your batches, newest first
  batchfetch help                     show this text

URL sources may be mixed and repeated; requests keep command-line order.
In files and on stdin, blank lines and lines starting with '#' are skipped.
Flags accept both --flag=value and --flag value.

Common flags:
  --server ADDR          server address (default: $BATCHFETCH_SERVER,
                         else localhost:50051); several replicas as
                         ipv4:HOST:PORT,HOST:PORT,... or dns:///NAME:PORT,
                         with calls spread round-robin over them
  --connect-timeout DUR  give up when not connected within DUR (default 5s)
  --deadline DUR         gRPC deadline for the whole command (default: none)
  --tls                  connect with TLS, trusting the system's CA
                         certificates ($BATCHFETCH_TLS=1)
  --tls-ca FILE          connect with TLS, trusting the CA certificates in
                         PEM FILE instead ($BATCHFETCH_TLS_CA)
  --tls-cert FILE        client certificate (PEM) for a server that requires
                         one (mTLS); needs --tls-key ($BATCHFETCH_TLS_CERT)
  --tls-key FILE         private key of --tls-cert (PEM; $BATCHFETCH_TLS_KEY)
  --tls-server-name NAME name the server certificate must carry when it
                         differs from the --server host, e.g. when
                         connecting by IP ($BATCHFETCH_TLS_SERVER_NAME)
                         Each --tls* flag wins over its variable; any of
                         them turns TLS on (default: plaintext).
  --token-file FILE      send 'authorization: Bearer <token>' with every
                         call, the token read from FILE: its first line
                         that is not blank or a '#' comment, holding the
                         token alone or a '<name> <token>' line of the
                         server's --auth_token_file ($BATCHFETCH_TOKEN_FILE;
                         default: no token)

fetch flags:
  -f, --file FILE        read URLs from FILE ('-' = stdin); repeatable
  --concurrency N        simultaneous requests (default: server default)
  --timeout DUR          per-request timeout, e.g. 5s, 300ms
  --method M             HTTP method for every URL (default GET)
  -H, --header 'N: V'    request header for every URL; repeatable
  --extract NAME=/PTR    reduce each JSON body to {NAME: value at JSON
                         Pointer PTR}; repeatable
  --batch-id ID          use this batch id (default: server generates one)
  --resume ID            continue the stored batch ID with the same URLs
                         and flags for requests: its stored results are
                         printed first, then only requests without an OK
                         result are fetched again
  --retry N              up to N attempts per request (retry.max_attempts)
  --retry-on LIST        what is retried, comma-separated: connect, timeout,
                         transport, 5xx, 429 and HTTP status codes (e.g.
                         timeout,5xx,408; default: connect, timeout, 429,
                         502, 503, 504)
  --per-host N           simultaneous requests to one host
  --deadline-batch DUR   budget for the whole batch (request deadline);
                         requests not started by then end CANCELLED
  --body TEXT            request body for every URL, as UTF-8 text
                         (body_text); use with --method POST
  --body-file FILE       request body for every URL, read from FILE as bytes
  --output FORMAT        ndjson (default: one JSON object per result) or csv
                         (index,url,outcome,http_status,attempts,
                         elapsed_ms,content_type,error)
  --quiet                no progress line and no summary on stderr
  --summary-json         end stdout with a {"summary":{...}} line
  --detach               keep the batch running after the command ends:
                         print its batch id on stdout once accepted and
                         exit 0 (follow it with 'batchfetch watch ID')

watch flags:
  --from-index N         only results with index >= N

list flags:
  --state S              only batches in state S: running, done,
                         cancelled, failed or interrupted
  --page-size N          batches per ListBatches call (server default 50)
  --limit N              print at most N batches (default: all)

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

namespace {

constexpr FlagSpec kConnectionFlags[] = {
    {"--server", nullptr, true},
    {"--connect-timeout", nullptr, true},
    {"--deadline", nullptr, true},
    // Transport security, resolved with its variables by ResolveTls.
    {"--tls", nullptr, false},
    {"--tls-ca", nullptr, true},
    {"--tls-cert", nullptr, true},
    {"--tls-key", nullptr, true},
    {"--tls-server-name", nullptr, true},
    {"--token-file", nullptr, true},
    {"--help", "-h", false},
};

// kConnectionFlags followed by `more`.
std::vector<FlagSpec> CommandFlags(std::initializer_list<FlagSpec> more) {
  std::vector<FlagSpec> specs(std::begin(kConnectionFlags),
                              std::end(kConnectionFlags));
  specs.insert(specs.end(), more);
  return specs;
}

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

// Applies `arg` if it is a connection flag. Returns true when it was one.
absl::StatusOr<bool> ApplyConnectionFlag(const Arg& arg,
                                         ConnectionOptions* options) {
  if (arg.flag == "--server") {
    if (arg.value.empty()) {
      return absl::InvalidArgumentError("--server must not be empty");
    }
    absl::StatusOr<ServerTarget> target =
        ParseServerTarget(arg.value, "--server");
    if (!target.ok()) return target.status();
    options->server = arg.value;
  } else if (arg.flag == "--connect-timeout") {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, false);
    if (!d.ok()) return d.status();
    options->connect_timeout = *d;
  } else if (arg.flag == "--deadline") {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, false);
    if (!d.ok()) return d.status();
    options->deadline = *d;
  } else if (arg.flag == "--token-file") {
    if (arg.value.empty()) {
      return absl::InvalidArgumentError("--token-file must not be empty");
    }
    options->token_file = arg.value;
  } else if (arg.flag == "--tls") {
    options->tls.tls = true;
  } else if (arg.flag == "--tls-ca" || arg.flag == "--tls-cert" ||
             arg.flag == "--tls-key" || arg.flag == "--tls-server-name") {
    if (arg.value.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(arg.flag, " must not be empty"));
    }
    std::optional<std::string>& field =
        arg.flag == "--tls-ca"     ? options->tls.ca_file
        : arg.flag == "--tls-cert" ? options->tls.cert_file
        : arg.flag == "--tls-key"  ? options->tls.key_file
                                   : options->tls.server_name;
    field = arg.value;
  } else {
    return false;
  }
  return true;
}

// One --tls* setting after resolution: its value and where it came from
// (the flag, or the variable when the flag was not given), for messages.
struct TlsSetting {
  std::string value;  // Empty: neither given.
  const char* source = nullptr;
};

TlsSetting ResolveTlsSetting(const std::optional<std::string>& flag_value,
                             const char* flag, const char* variable,
                             const EnvLookup& env) {
  if (flag_value.has_value()) return {*flag_value, flag};
  const char* value = env(variable);
  if (value != nullptr && *value != '\0') return {value, variable};
  return {};
}

}  // namespace

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view what) {
  const auto failed = [&](int error) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read ", what, " '", path, "': ", std::strerror(error)));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failed(errno);
  std::string contents;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      contents.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {  // EISDIR for a directory
      const int error = errno;
      close(fd);
      return failed(error);
    }
  }
  close(fd);
  return contents;
}

namespace {

// The PEM file of `setting`, which must hold a "-----BEGIN ...`marker`-----"
// block. Messages name the setting's source and the path, never the
// contents.
absl::StatusOr<std::string> ReadPemFile(const TlsSetting& setting,
                                        const char* marker) {
  absl::StatusOr<std::string> read =
      ReadWholeFile(setting.value, absl::StrCat(setting.source, " file"));
  if (!read.ok()) return read.status();
  const std::string& pem = *read;
  const size_t begin = pem.find("-----BEGIN ");
  if (begin == std::string::npos ||
      pem.find(absl::StrCat(marker, "-----"), begin) == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(setting.source, " file '", setting.value,
                     "' holds no PEM ", marker, " block"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<TlsSettings> ResolveTls(const TlsFlags& flags,
                                       const EnvLookup& env) {
  TlsSettings settings;
  settings.enabled = flags.tls;
  if (const char* value = env("BATCHFETCH_TLS");
      !flags.tls && value != nullptr && *value != '\0') {
    const std::string lower = absl::AsciiStrToLower(value);
    if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") {
      settings.enabled = true;
    } else if (lower != "0" && lower != "false" && lower != "no" &&
               lower != "off") {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for BATCHFETCH_TLS: '", value,
                       "' (expected 1, true, yes, on, 0, false, no or off)"));
    }
  }
  const TlsSetting ca =
      ResolveTlsSetting(flags.ca_file, "--tls-ca", "BATCHFETCH_TLS_CA", env);
  const TlsSetting cert = ResolveTlsSetting(flags.cert_file, "--tls-cert",
                                            "BATCHFETCH_TLS_CERT", env);
  const TlsSetting key =
      ResolveTlsSetting(flags.key_file, "--tls-key", "BATCHFETCH_TLS_KEY", env);
  const TlsSetting server_name =
      ResolveTlsSetting(flags.server_name, "--tls-server-name",
                        "BATCHFETCH_TLS_SERVER_NAME", env);
  if (cert.value.empty() != key.value.empty()) {
    return absl::InvalidArgumentError(
        cert.value.empty()
            ? absl::StrCat(key.source,
                           " needs --tls-cert (or BATCHFETCH_TLS_CERT)")
            : absl::StrCat(cert.source,
                           " needs --tls-key (or BATCHFETCH_TLS_KEY)"));
  }
  if (!ca.value.empty()) {
    absl::StatusOr<std::string> pem = ReadPemFile(ca, "CERTIFICATE");
    if (!pem.ok()) return pem.status();
    settings.root_certs_pem = *std::move(pem);
  }
  if (!cert.value.empty()) {
    absl::StatusOr<std::string> pem = ReadPemFile(cert, "CERTIFICATE");
    if (!pem.ok()) return pem.status();
    settings.cert_chain_pem = *std::move(pem);
    pem = ReadPemFile(key, "PRIVATE KEY");
    if (!pem.ok()) return pem.status();
    settings.private_key_pem = *std::move(pem);
  }
  settings.server_name = server_name.value;
  settings.enabled = settings.enabled || !ca.value.empty() ||
                     !cert.value.empty() || !server_name.value.empty();
  return settings;
}

absl::StatusOr<std::string> ParseTokenFileContents(absl::string_view contents) {
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() > 2) {
      return absl::InvalidArgumentError(
          "its first line has more than two fields (expected '<token>' or "
          "'<name> <token>')");
    }
    return std::string(fields.back());
  }
  return absl::InvalidArgumentError("it holds no token");
}

absl::StatusOr<std::string> ResolveToken(
    const std::optional<std::string>& token_file, const EnvLookup& env) {
  std::string path;
  const char* source = "--token-file";
  if (token_file.has_value()) {
    path = *token_file;
  } else if (const char* value = env("BATCHFETCH_TOKEN_FILE");
             value != nullptr && *value != '\0') {
    path = value;
    source = "BATCHFETCH_TOKEN_FILE";
  } else {
    return std::string();
  }
  absl::StatusOr<std::string> contents =
      ReadWholeFile(path, absl::StrCat(source, " file"));
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::string> token = ParseTokenFileContents(*contents);
  if (!token.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " file '", path, "': ", token.status().message()));
  }
  return token;
}

absl::StatusOr<ServerTarget> ParseServerTarget(absl::string_view value,
                                               absl::string_view source) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": '", value, "' ", why));
  };
  ServerTarget target{std::string(value), false};
  absl::string_view rest = value;
  if (absl::ConsumePrefix(&rest, "ipv4:") ||
      absl::ConsumePrefix(&rest, "ipv6:")) {
    const std::vector<absl::string_view> entries = absl::StrSplit(rest, ',');
    for (absl::string_view entry : entries) {
      const size_t colon = entry.rfind(':');
      uint32_t port = 0;
      if (entry.empty() || colon == absl::string_view::npos || colon == 0 ||
          !absl::SimpleAtoi(entry.substr(colon + 1), &port) || port == 0 ||
          port > 65535) {
        return bad(
            "is not a list of ADDRESS:PORT (e.g. "
            "ipv4:10.0.0.1:50051,10.0.0.2:50051)");
      }
    }
    target.round_robin = entries.size() > 1;
  } else if (absl::ConsumePrefix(&rest, "dns:")) {
    if (absl::ConsumePrefix(&rest, "//")) {  // dns://[resolver]/name:port
      const size_t slash = rest.find('/');
      rest = slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
    }
    if (rest.empty())
      return bad("names no host (e.g. dns:///batchfetch:50051)");
    target.round_robin = true;
  }
  return target;
}

absl::Status ParseRetryOn(absl::string_view value, pb::RetryPolicy* policy) {
  if (value.empty()) {
    return absl::InvalidArgumentError(
        "--retry-on: empty (give conditions such as timeout,5xx,429)");
  }
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const std::string lower = absl::AsciiStrToLower(item);
    int status = 0;
    if (lower == "connect") {
      policy->add_retry_on(pb::RETRY_ON_CONNECT_ERROR);
    } else if (lower == "timeout") {
      policy->add_retry_on(pb::RETRY_ON_TIMEOUT);
    } else if (lower == "transport") {
      policy->add_retry_on(pb::RETRY_ON_TRANSPORT_ERROR);
    } else if (lower == "5xx") {
      policy->add_retry_on(pb::RETRY_ON_5XX);
    } else if (lower == "429") {
      policy->add_retry_on(pb::RETRY_ON_429);
    } else if (absl::SimpleAtoi(item, &status) && status >= 100 &&
               status <= 599) {
      policy->add_retry_on_status(status);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--retry-on: '", item,
          "' is neither a condition (connect, timeout, transport, 5xx, 429) "
          "nor an HTTP status (100-599)"));
    }
  }
  return absl::OkStatus();
}

std::string DefaultServer(const char* env_value) {
  return (env_value != nullptr && *env_value != '\0') ? env_value
                                                      : kDefaultServer;
}

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

void ReadUrlLines(std::istream& in, std::vector<std::string>* urls) {
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view url = absl::StripAsciiWhitespace(line);
    if (url.empty() || url.front() == '#') continue;
    urls->emplace_back(url);
  }
}

absl::Status ReadUrlSource(const std::string& source,
                           std::istream& stdin_stream,
                           std::vector<std::string>* urls) {
  if (source == "-") {
    ReadUrlLines(stdin_stream, urls);
    if (stdin_stream.bad()) {
      return absl::InvalidArgumentError("cannot read stdin");
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> contents = ReadWholeFile(source, "URL file");
  if (!contents.ok()) return contents.status();
  std::istringstream lines(*contents);
  ReadUrlLines(lines, urls);
  return absl::OkStatus();
}

namespace {

// Parses `arg` as ParseDurationFlag does into the protobuf Duration `*out`.
absl::Status SetDurationFlag(const Arg& arg, bool allow_zero,
                             google::protobuf::Duration* out) {
  absl::StatusOr<absl::Duration> d = ParseDurationFlag(arg, allow_zero);
  if (!d.ok()) return d.status();
  absl::Duration nanos;
  const int64_t seconds = absl::IDivDuration(*d, absl::Seconds(1), &nanos);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(nanos)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FetchOptions> ParseFetchArgs(
    const std::vector<std::string>& args, const std::string& default_server,
    std::istream& stdin_stream) {
  const std::vector<FlagSpec> specs = CommandFlags({
      {"--file", "-f", true},
      {"--concurrency", nullptr, true},
      {"--timeout", nullptr, true},
      {"--method", nullptr, true},
      {"--header", "-H", true},
      {"--extract", nullptr, true},
      {"--batch-id", nullptr, true},
      {"--resume", nullptr, true},
      {"--quiet", "-q", false},
      {"--summary-json", nullptr, false},
      {"--detach", nullptr, false},
      {"--retry", nullptr, true},
      {"--retry-on", nullptr, true},
      {"--per-host", nullptr, true},
      {"--deadline-batch", nullptr, true},
      {"--body", nullptr, true},
      {"--body-file", nullptr, true},
      {"--output", nullptr, true},
  });
  absl::StatusOr<std::vector<Arg>> split = SplitArgs(args, specs);
  if (!split.ok()) return split.status();

  FetchOptions options;
  std::optional<std::string> body;       // --body
  std::optional<std::string> body_file;  // --body-file's contents
  options.connection.server = default_server;
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
        if (absl::Status s = ReadUrlSource("-", stdin_stream, &urls); !s.ok()) {
          return s;
        }
      } else {
        urls.push_back(arg.value);
      }
    } else if (arg.flag == "--file") {
      if (absl::Status s = ReadUrlSource(arg.value, stdin_stream, &urls);
          !s.ok()) {
        return s;
      }
    } else if (arg.flag == "--concurrency") {
      absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
      if (!n.ok()) return n.status();
      request.set_concurrency(*n);
    } else if (arg.flag == "--timeout") {
      if (absl::Status s = SetDurationFlag(arg, /*allow_zero=*/true,
                                           request.mutable_timeout());
          !s.ok()) {
        return s;
      }
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
    } else if (arg.flag == "--batch-id" || arg.flag == "--resume") {
      if (arg.flag == "--resume" && arg.value.empty()) {
        return absl::InvalidArgumentError(
            "--resume needs the id of the batch to resume");
      }
      if (!request.batch_id().empty() && request.batch_id() != arg.value) {
        return absl::InvalidArgumentError(
            absl::StrCat(arg.flag, " ", arg.value, " names another batch than ",
                         request.batch_id()));
      }
      request.set_batch_id(arg.value);
      if (arg.flag == "--resume") request.set_resume(true);
    } else if (arg.flag == "--quiet") {
      options.quiet = true;
    } else if (arg.flag == "--summary-json") {
      options.summary_json = true;
    } else if (arg.flag == "--detach") {
      request.set_detach(true);
    } else if (arg.flag == "--retry") {
      absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
      if (!n.ok()) return n.status();
      request.mutable_retry()->set_max_attempts(*n);
    } else if (arg.flag == "--retry-on") {
      if (absl::Status s = ParseRetryOn(arg.value, request.mutable_retry());
          !s.ok()) {
        return s;
      }
    } else if (arg.flag == "--per-host") {
      absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
      if (!n.ok()) return n.status();
      request.set_per_host_concurrency(*n);
    } else if (arg.flag == "--deadline-batch") {
      if (absl::Status s = SetDurationFlag(arg, /*allow_zero=*/false,
                                           request.mutable_deadline());
          !s.ok()) {
        return s;
      }
    } else if (arg.flag == "--body") {
      body = arg.value;
    } else if (arg.flag == "--body-file") {
      absl::StatusOr<std::string> contents =
          ReadWholeFile(arg.value, "--body-file");
      if (!contents.ok()) return contents.status();
      body_file = *std::move(contents);
    } else if (arg.flag == "--output") {
      if (arg.value == "ndjson") {
        options.output = OutputFormat::kNdjson;
      } else if (arg.value == "csv") {
        options.output = OutputFormat::kCsv;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "--output: '", arg.value, "' is not a format (ndjson or csv)"));
      }
    } else if (arg.flag == "--help") {
      options.help = true;
    }
  }
  if (options.help) return options;
  if (urls.empty()) return absl::InvalidArgumentError("no URLs given");
  if (body.has_value() && body_file.has_value()) {
    return absl::InvalidArgumentError(
        "--body and --body-file: give one request body, not both");
  }

  for (std::string& url : urls) {
    pb::FetchRequest* fetch = request.add_requests();
    fetch->set_url(std::move(url));
    fetch->set_method(method);
    if (body.has_value()) fetch->set_body_text(*body);
    if (body_file.has_value()) fetch->set_body(*body_file);
    // A later -H for the same name wins, as with curl.
    for (const auto& [name, value] : headers) {
      (*fetch->mutable_headers())[name] = value;
    }
  }
  return options;
}

absl::StatusOr<GetOptions> ParseGetArgs(const std::vector<std::string>& args,
                                        const std::string& default_server) {
  const std::vector<FlagSpec> specs = CommandFlags({
      {"--results", nullptr, false},
      {"--page-size", nullptr, true},
  });
  absl::StatusOr<std::vector<Arg>> split = SplitArgs(args, specs);
  if (!split.ok()) return split.status();

  GetOptions options;
  options.connection.server = default_server;
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

namespace {

// The one batch ID of watch/cancel, unless --help.
absl::Status TakeBatchId(const char* command,
                         const std::vector<std::string>& positional,
                         BatchCommandOptions* options) {
  if (options->help) return absl::OkStatus();
  if (positional.size() != 1 || positional[0].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(command, " needs exactly one batch ID"));
  }
  options->batch_id = positional[0];
  return absl::OkStatus();
}

// Parses `args` with the connection flags and `more`; `apply` takes each
// non-connection item and returns false if it is not its own.
absl::StatusOr<BatchCommandOptions> ParseBatchCommand(
    const std::vector<std::string>& args, const std::string& default_server,
    std::initializer_list<FlagSpec> more,
    const std::function<absl::Status(const Arg&, BatchCommandOptions*)>& apply,
    std::vector<std::string>* positional) {
  absl::StatusOr<std::vector<Arg>> split = SplitArgs(args, CommandFlags(more));
  if (!split.ok()) return split.status();
  BatchCommandOptions options;
  options.connection.server = default_server;
  for (const Arg& arg : *split) {
    absl::StatusOr<bool> was_connection_flag =
        ApplyConnectionFlag(arg, &options.connection);
    if (!was_connection_flag.ok()) return was_connection_flag.status();
    if (*was_connection_flag) continue;
    if (arg.flag.empty()) {
      positional->push_back(arg.value);
    } else if (arg.flag == "--help") {
      options.help = true;
    } else if (absl::Status s = apply(arg, &options); !s.ok()) {
      return s;
    }
  }
  return options;
}

}  // namespace

absl::StatusOr<v1::BatchState> ParseStateFlag(absl::string_view value) {
  const std::string lower = absl::AsciiStrToLower(value);
  const std::string name = absl::StartsWith(lower, "batch_state_")
                               ? lower.substr(strlen("batch_state_"))
                               : lower;
  if (name == "running") return v1::BATCH_STATE_RUNNING;
  if (name == "done") return v1::BATCH_STATE_DONE;
  if (name == "cancelled") return v1::BATCH_STATE_CANCELLED;
  if (name == "failed") return v1::BATCH_STATE_FAILED;
  if (name == "interrupted") return v1::BATCH_STATE_INTERRUPTED;
  return absl::InvalidArgumentError(
      absl::StrCat("--state: '", value,
                   "' is not one of running, done, cancelled, failed, "
                   "interrupted"));
}

absl::StatusOr<BatchCommandOptions> ParseWatchArgs(
    const std::vector<std::string>& args, const std::string& default_server) {
  std::vector<std::string> positional;
  absl::StatusOr<BatchCommandOptions> options = ParseBatchCommand(
      args, default_server, {{"--from-index", nullptr, true}},
      [](const Arg& arg, BatchCommandOptions* o) -> absl::Status {
        absl::StatusOr<uint32_t> n = ParseUintFlag(arg);  // --from-index
        if (!n.ok()) return n.status();
        o->from_index = *n;
        return absl::OkStatus();
      },
      &positional);
  if (!options.ok()) return options.status();
  if (absl::Status s = TakeBatchId("watch", positional, &*options); !s.ok()) {
    return s;
  }
  return options;
}

absl::StatusOr<BatchCommandOptions> ParseCancelArgs(
    const std::vector<std::string>& args, const std::string& default_server) {
  std::vector<std::string> positional;
  absl::StatusOr<BatchCommandOptions> options = ParseBatchCommand(
      args, default_server, {},
      [](const Arg&, BatchCommandOptions*) { return absl::OkStatus(); },
      &positional);
  if (!options.ok()) return options.status();
  if (absl::Status s = TakeBatchId("cancel", positional, &*options); !s.ok()) {
    return s;
  }
  return options;
}

absl::StatusOr<BatchCommandOptions> ParseListArgs(
    const std::vector<std::string>& args, const std::string& default_server) {
  std::vector<std::string> positional;
  absl::StatusOr<BatchCommandOptions> options = ParseBatchCommand(
      args, default_server,
      {{"--state", nullptr, true},
       {"--page-size", nullptr, true},
       {"--limit", nullptr, true}},
      [](const Arg& arg, BatchCommandOptions* o) -> absl::Status {
        if (arg.flag == "--state") {
          absl::StatusOr<v1::BatchState> state = ParseStateFlag(arg.value);
          if (!state.ok()) return state.status();
          o->state = *state;
          return absl::OkStatus();
        }
        absl::StatusOr<uint32_t> n = ParseUintFlag(arg);
        if (!n.ok()) return n.status();
        (arg.flag == "--page-size" ? o->page_size : o->limit) = *n;
        return absl::OkStatus();
      },
      &positional);
  if (!options.ok()) return options.status();
  if (!positional.empty() && !options->help) {
    return absl::InvalidArgumentError(
        absl::StrCat("list takes no arguments (got '", positional[0], "')"));
  }
  return options;
}

}  // namespace batchfetch::cli
