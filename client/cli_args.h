// Command-line parsing for the batchfetch CLI. Nothing here starts a process,
// opens a connection, reads the environment or touches the real stdin: the
// caller passes in the default server and the stream that "-" reads, so every
// function can be unit-tested.

#ifndef BATCHFETCH_CLIENT_CLI_ARGS_H_
#define BATCHFETCH_CLIENT_CLI_ARGS_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"

namespace batchfetch::cli {

// Process exit codes, as documented in kUsage.
inline constexpr int kExitOk = 0;
// Some result failed, the batch did not end DONE, or (get) the batch does not
// exist.
inline constexpr int kExitFailed = 1;
// Usage, connection, RPC or output error.
inline constexpr int kExitError = 2;
// Ctrl-C: 128 + SIGINT, as shells report it.
inline constexpr int kExitInterrupted = 130;

// The full `batchfetch --help` text, ending in a newline.
extern const char kUsage[];

// Used when neither --server nor $BATCHFETCH_SERVER is given.
inline constexpr char kDefaultServer[] = "localhost:50051";
inline constexpr absl::Duration kDefaultConnectTimeout = absl::Seconds(5);

// The server to use when --server is absent: `env_value` (the value of
// $BATCHFETCH_SERVER, or null when unset) unless it is null or empty, else
// kDefaultServer.
std::string DefaultServer(const char* env_value);

// What --server names, ready for gRPC.
struct ServerTarget {
  std::string target;        // A gRPC target, passed on as given.
  bool round_robin = false;  // It may name several servers: spread calls.
};

// Parses a --server value (`source` names where it came from, for errors):
// "host:port"; "ipv4:A:P,B:P,..." and "ipv6:[A]:P,..." (gRPC's address
// lists); "dns:///name:port" (also "dns:name:port" and
// "dns://resolver/name:port"), whose name may resolve to several addresses.
// Several addresses (a list of more than one, or any dns: target) use gRPC's
// round_robin policy, so calls spread over every server instead of all
// going to the first (pick_first, gRPC's default). Other targets are passed
// on as they are. INVALID_ARGUMENT naming `source` for an address list with
// an empty entry or one without a port, or a dns: target without a name.
absl::StatusOr<ServerTarget> ParseServerTarget(absl::string_view value,
                                               absl::string_view source);

// One flag a command accepts.
struct FlagSpec {
  const char* name;        // Canonical long form, e.g. "--file".
  const char* short_name;  // e.g. "-f", or nullptr.
  bool takes_value;
};

// One command-line item in its original order. `flag` is the canonical long
// name of the flag, or empty for a positional argument (then `value` is the
// argument itself). A flag without a value has an empty `value`.
struct Arg {
  std::string flag;
  std::string value;
};

// Splits `args` into flags and positionals, keeping their order (URL sources
// are numbered in the order given). Accepts --flag=value, --flag value,
// -X value and -Xvalue; "-" is positional and "--" makes every later argument
// positional. Fails with INVALID_ARGUMENT on a flag not in `specs`, a value
// flag at the end without its value, or a value given to a boolean flag.
absl::StatusOr<std::vector<Arg>> SplitArgs(const std::vector<std::string>& args,
                                           const std::vector<FlagSpec>& specs);

// Parses `arg.value` as an absl duration ("5s", "300ms", "1m30s"). It must be
// finite and non-negative; with `allow_zero` false it must also be positive
// (where zero would mean "fail at once" rather than "use the default").
absl::StatusOr<absl::Duration> ParseDurationFlag(const Arg& arg,
                                                 bool allow_zero);

// Parses `arg.value` as a decimal uint32.
absl::StatusOr<uint32_t> ParseUintFlag(const Arg& arg);

// "Name: value" -> {"Name", "value"}, both trimmed of surrounding whitespace.
// The name must be non-empty and contain no whitespace; the value may be
// empty.
absl::StatusOr<std::pair<std::string, std::string>> ParseHeader(
    absl::string_view header);

// "name=/json/pointer" -> {"name", "/json/pointer"}. The name must be
// non-empty. An empty pointer selects the whole document (RFC 6901); any other
// pointer must start with '/'.
absl::StatusOr<std::pair<std::string, std::string>> ParseExtract(
    absl::string_view spec);

// Appends the URLs in `in`: one per line, surrounding whitespace ignored,
// blank lines and lines starting with '#' skipped.
void ReadUrlLines(std::istream& in, std::vector<std::string>* urls);

// The bytes of the file at `path`. Fails with INVALID_ARGUMENT "cannot read
// <what> '<path>': <reason>" when it cannot be opened or read (a directory
// fails with "Is a directory" rather than reading as empty).
absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view what);

// Appends the URLs of `source` (see ReadUrlLines): the file of that name, or
// `stdin_stream` when `source` is "-". Fails with INVALID_ARGUMENT when the
// file cannot be opened or either cannot be read.
absl::Status ReadUrlSource(const std::string& source,
                           std::istream& stdin_stream,
                           std::vector<std::string>* urls);

// The --tls* flags as given on the command line (unset: not given, so its
// BATCHFETCH_* variable may apply; see ResolveTls).
struct TlsFlags {
  bool tls = false;                        // --tls
  std::optional<std::string> ca_file;      // --tls-ca
  std::optional<std::string> cert_file;    // --tls-cert
  std::optional<std::string> key_file;     // --tls-key
  std::optional<std::string> server_name;  // --tls-server-name
};

// How to secure the channel: the flags and variables resolved and the PEM
// files read. Holds the client's private key: never print it.
struct TlsSettings {
  bool enabled = false;
  std::string root_certs_pem;  // Empty: the system's trusted roots.
  // The client certificate for servers that require one (mTLS): both or
  // neither.
  std::string cert_chain_pem;
  std::string private_key_pem;
  // The name the server's certificate must carry; empty: the host of
  // --server.
  std::string server_name;
};

// The value of an environment variable, or null when it is unset.
using EnvLookup = std::function<const char*(const char*)>;

// Resolves `flags` against BATCHFETCH_TLS (1/true/yes/on or 0/false/no/off),
// BATCHFETCH_TLS_CA, BATCHFETCH_TLS_CERT, BATCHFETCH_TLS_KEY and
// BATCHFETCH_TLS_SERVER_NAME, looked up with `env`: a flag wins over its
// variable and an empty variable counts as unset. A CA, client certificate
// or server name implies TLS. Reads the PEM files. Fails with
// INVALID_ARGUMENT naming the flag (or the variable it came from) for an
// unreadable file or one without its PEM block, a certificate without a key
// or a key without a certificate, or a bad BATCHFETCH_TLS value.
absl::StatusOr<TlsSettings> ResolveTls(const TlsFlags& flags,
                                       const EnvLookup& env);

// The bearer token in the contents of a --token-file: the first line that
// is neither blank nor a '#' comment, trimmed, holding either just the token
// or the server's `<name> <token>` line (the token is then the second
// field), so a line of the server's --auth_token_file can be used as it is.
// INVALID_ARGUMENT, never quoting the file, when there is no such line or
// it has more than two fields.
absl::StatusOr<std::string> ParseTokenFileContents(absl::string_view contents);

// The bearer token to send: read from --token-file (`token_file`, when
// given) or else from the file BATCHFETCH_TOKEN_FILE names (looked up with
// `env`; empty counts as unset). "" when neither is given: no token is
// sent. INVALID_ARGUMENT naming the flag or variable and the path for an
// unreadable file or one without a token (see ParseTokenFileContents).
absl::StatusOr<std::string> ResolveToken(
    const std::optional<std::string>& token_file, const EnvLookup& env);

// Flags shared by every command that talks to the server.
struct ConnectionOptions {
  std::string server;
  TlsFlags tls;
  std::optional<std::string> token_file;  // --token-file
  absl::Duration connect_timeout = kDefaultConnectTimeout;
  std::optional<absl::Duration> deadline;  // Bounds the whole command.
};

// How `fetch` prints results on stdout.
enum class OutputFormat {
  kNdjson,  // one JSON object per result (the default)
  kCsv,     // a header line, then one CSV row per result (kCsvColumns)
};

// Parses a --retry-on value into `policy`: a comma-separated list of
// conditions (connect, timeout, transport, 5xx, 429) and HTTP status codes
// (100-599), e.g. "timeout,5xx,408". INVALID_ARGUMENT naming --retry-on and
// the bad item otherwise.
absl::Status ParseRetryOn(absl::string_view value,
                          ::batchfetch::v1::RetryPolicy* policy);

// `batchfetch fetch`.
struct FetchOptions {
  ConnectionOptions connection;
  // Ready to send: one request per URL in command-line order, each with the
  // --method (upper-cased; empty = the server's default, GET) and every -H.
  ::batchfetch::v1::FetchBatchRequest request;
  bool quiet = false;
  bool summary_json = false;
  OutputFormat output = OutputFormat::kNdjson;  // --output
  // --help was given; the other fields are then only partly filled.
  bool help = false;
};

// `batchfetch get`.
struct GetOptions {
  ConnectionOptions connection;
  std::string batch_id;
  bool results = false;
  uint32_t page_size = 0;  // 0 = the server's default.
  bool help = false;       // As in FetchOptions.
};

// Parses the arguments after `fetch`. `default_server` is used unless
// --server is given (see DefaultServer); "-" and "-f -" read URLs from
// `stdin_stream`. Sources are read as they are met, so an error in a later
// argument may come after the stream has been consumed. Fails with
// INVALID_ARGUMENT, whose message is meant for the user, on any bad flag or
// value, an unreadable URL file, or (without --help) no URLs at all.
absl::StatusOr<FetchOptions> ParseFetchArgs(
    const std::vector<std::string>& args, const std::string& default_server,
    std::istream& stdin_stream);

// Parses the arguments after `get`; exactly one batch ID is required unless
// --help is given. Otherwise as ParseFetchArgs.
absl::StatusOr<GetOptions> ParseGetArgs(const std::vector<std::string>& args,
                                        const std::string& default_server);

// `batchfetch watch`, `cancel` and `list`.
struct BatchCommandOptions {
  ConnectionOptions connection;
  std::string batch_id;     // watch, cancel: the one positional argument
  uint32_t from_index = 0;  // watch --from-index
  // list --state; UNSPECIFIED: any.
  ::batchfetch::v1::BatchState state =
      ::batchfetch::v1::BATCH_STATE_UNSPECIFIED;
  uint32_t page_size = 0;  // list --page-size; 0 = the server's default
  uint32_t limit = 0;      // list --limit; 0 = all
  bool help = false;       // As in FetchOptions.
};

// A --state value: running, done, cancelled, failed or interrupted (any
// case; the BATCH_STATE_ prefix may be given). INVALID_ARGUMENT naming
// --state otherwise.
absl::StatusOr<::batchfetch::v1::BatchState> ParseStateFlag(
    absl::string_view value);

// The arguments after `watch` (one batch ID, --from-index), `cancel` (one
// batch ID) and `list` (no positional argument; --state, --page-size,
// --limit). As ParseGetArgs otherwise.
absl::StatusOr<BatchCommandOptions> ParseWatchArgs(
    const std::vector<std::string>& args, const std::string& default_server);
absl::StatusOr<BatchCommandOptions> ParseCancelArgs(
    const std::vector<std::string>& args, const std::string& default_server);
absl::StatusOr<BatchCommandOptions> ParseListArgs(
    const std::vector<std::string>& args, const std::string& default_server);

}  // namespace batchfetch::cli

#endif  // BATCHFETCH_CLIENT_CLI_ARGS_H_
