// Unit tests for the batchfetch CLI's argument parsing (client/cli_args.h).
// Hermetic: stdin is an istringstream and the default server is passed in.

#include "client/cli_args.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/cli_output.h"
#include "gtest/gtest.h"

namespace batchfetch::cli {
namespace {

constexpr char kTestServer[] = "default.example:7000";

absl::StatusOr<FetchOptions> ParseFetch(const std::vector<std::string>& args,
                                        std::istream& in) {
  return ParseFetchArgs(args, kTestServer, in);
}

// Parses with an empty stdin.
absl::StatusOr<FetchOptions> ParseFetch(const std::vector<std::string>& args) {
  std::istringstream no_input;
  return ParseFetch(args, no_input);
}

absl::StatusOr<GetOptions> ParseGet(const std::vector<std::string>& args) {
  return ParseGetArgs(args, kTestServer);
}

std::vector<std::string> Urls(const FetchOptions& options) {
  std::vector<std::string> urls;
  for (const auto& request : options.request.requests()) {
    urls.push_back(request.url());
  }
  return urls;
}

// The INVALID_ARGUMENT message of a failed parse, or a note that it passed.
template <typename T>
std::string ErrorOf(const absl::StatusOr<T>& parsed) {
  if (parsed.ok()) return "(parsed without error)";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

// A file in the test's temporary directory, removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& contents)
      : path_(absl::StrCat(testing::TempDir(), "cli_args_test_", getpid(), "_",
                           name)) {
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// --- Flag syntax -----------------------------------------------------------

TEST(CliArgs, FlagTakesItsValueAfterAnEqualsSign) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--concurrency=7", "--batch-id=b-1", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.concurrency(), 7u);
  EXPECT_EQ(options->request.batch_id(), "b-1");
}

TEST(CliArgs, FlagTakesItsValueFromTheNextArgument) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--concurrency", "7", "--batch-id", "b-1", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.concurrency(), 7u);
  EXPECT_EQ(options->request.batch_id(), "b-1");
  EXPECT_EQ(Urls(*options), std::vector<std::string>{"http://a/"});
}

TEST(CliArgs, ShortFlagTakesAGluedOrSeparateValue) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"-HA: 1", "-H", "B: 2", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  const auto& headers = options->request.requests(0).headers();
  EXPECT_EQ(headers.size(), 2u);
  EXPECT_EQ(headers.at("A"), "1");
  EXPECT_EQ(headers.at("B"), "2");
}

TEST(CliArgs, ResumeSetsTheBatchIdAndTheResumeFlag) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--resume", "b-1", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.batch_id(), "b-1");
  EXPECT_TRUE(options->request.resume());
  EXPECT_FALSE(ParseFetch({"--batch-id=b-1", "http://a/"})->request.resume());
  // The same id twice is fine; two different ones are not.
  EXPECT_TRUE(ParseFetch({"--batch-id=b-1", "--resume=b-1", "http://a/"}).ok());
  absl::StatusOr<FetchOptions> two =
      ParseFetch({"--batch-id=b-1", "--resume=b-2", "http://a/"});
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("--resume"), std::string::npos);
  absl::StatusOr<FetchOptions> empty = ParseFetch({"--resume=", "http://a/"});
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("--resume"), std::string::npos);
}

TEST(CliArgs, ValueThatLooksLikeAFlagIsStillTheValue) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--batch-id", "--quiet", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.batch_id(), "--quiet");
  EXPECT_FALSE(options->quiet);
}

TEST(CliArgs, DoubleDashMakesEveryLaterArgumentAUrl) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--quiet", "--", "--summary-json", "-x", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->quiet);
  EXPECT_FALSE(options->summary_json);
  EXPECT_EQ(Urls(*options),
            (std::vector<std::string>{"--summary-json", "-x", "http://a/"}));
}

TEST(CliArgs, BooleanFlagsAreSetByLongAndShortNames) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"-q", "--summary-json", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->quiet);
  EXPECT_TRUE(options->summary_json);
  EXPECT_FALSE(options->help);
}

TEST(CliArgs, UnknownLongFlagIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--bogus=1", "http://a/"})),
            "unknown flag '--bogus=1'");
}

TEST(CliArgs, UnknownShortFlagIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"-xyz", "http://a/"})), "unknown flag '-xyz'");
}

TEST(CliArgs, FetchOnlyFlagIsUnknownToGet) {
  EXPECT_EQ(ErrorOf(ParseGet({"id", "--quiet"})), "unknown flag '--quiet'");
}

TEST(CliArgs, ValueFlagAtTheEndWithoutValueIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"http://a/", "--timeout"})),
            "flag --timeout needs a value");
  EXPECT_EQ(ErrorOf(ParseFetch({"http://a/", "-f"})),
            "flag --file needs a value");
}

TEST(CliArgs, BooleanFlagGivenAValueIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--quiet=yes", "http://a/"})),
            "flag --quiet takes no value");
  EXPECT_EQ(ErrorOf(ParseFetch({"-qx", "http://a/"})),
            "flag --quiet takes no value");
}

// --- Durations and numbers -------------------------------------------------

TEST(CliArgs, MalformedDurationIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--timeout=soon", "http://a/"})),
            "bad duration for --timeout: 'soon' (expected e.g. 5s, 300ms, "
            "1m30s)");
  EXPECT_EQ(ErrorOf(ParseFetch({"--timeout=5", "http://a/"})),
            "bad duration for --timeout: '5' (expected e.g. 5s, 300ms, "
            "1m30s)");
}

TEST(CliArgs, NegativeDurationIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--timeout", "-1s", "http://a/"})),
            "bad duration for --timeout: '-1s' (expected e.g. 5s, 300ms, "
            "1m30s)");
}

TEST(CliArgs, InfiniteDurationIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--deadline=inf", "http://a/"})),
            "bad duration for --deadline: 'inf' (expected e.g. 5s, 300ms, "
            "1m30s)");
}

TEST(CliArgs, ZeroConnectTimeoutAndDeadlineAreRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--connect-timeout=0s", "http://a/"})),
            "--connect-timeout must be greater than zero");
  EXPECT_EQ(ErrorOf(ParseGet({"id", "--deadline=0"})),
            "--deadline must be greater than zero");
}

TEST(CliArgs, ZeroTimeoutIsAllowedAndMeansServerDefault) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--timeout=0", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.timeout().seconds(), 0);
  EXPECT_EQ(options->request.timeout().nanos(), 0);
}

TEST(CliArgs, TimeoutBecomesSecondsAndNanosInTheRequest) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--timeout=1m2.5s", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->request.has_timeout());
  EXPECT_EQ(options->request.timeout().seconds(), 62);
  EXPECT_EQ(options->request.timeout().nanos(), 500000000);

  options = ParseFetch({"--timeout=300ms", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.timeout().seconds(), 0);
  EXPECT_EQ(options->request.timeout().nanos(), 300000000);
}

TEST(CliArgs, NoTimeoutFlagLeavesTheTimeoutUnset) {
  absl::StatusOr<FetchOptions> options = ParseFetch({"http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->request.has_timeout());
  EXPECT_EQ(options->request.concurrency(), 0u);
}

TEST(CliArgs, ConnectionFlagsAreParsed) {
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"--server=h:1", "--connect-timeout=2s", "--deadline=1m", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->connection.server, "h:1");
  EXPECT_EQ(options->connection.connect_timeout, absl::Seconds(2));
  ASSERT_TRUE(options->connection.deadline.has_value());
  EXPECT_EQ(*options->connection.deadline, absl::Minutes(1));
}

TEST(CliArgs, ConnectionDefaultsApplyWithoutFlags) {
  absl::StatusOr<FetchOptions> options = ParseFetch({"http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->connection.server, kTestServer);
  EXPECT_EQ(options->connection.connect_timeout, kDefaultConnectTimeout);
  EXPECT_FALSE(options->connection.deadline.has_value());
}

TEST(CliArgs, EmptyServerIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--server=", "http://a/"})),
            "--server must not be empty");
}

TEST(CliArgs, DefaultServerIsTheEnvironmentValueUnlessUnsetOrEmpty) {
  EXPECT_EQ(DefaultServer("env.example:9"), "env.example:9");
  EXPECT_EQ(DefaultServer(""), "localhost:50051");
  EXPECT_EQ(DefaultServer(nullptr), "localhost:50051");
}

TEST(CliArgs, MalformedUintIsRejected) {
  for (const char* bad : {"many", "-3", "1.5", "4294967296", ""}) {
    EXPECT_EQ(ErrorOf(ParseFetch({"--concurrency", bad, "http://a/"})),
              absl::StrCat("bad value for --concurrency: '", bad,
                           "' (expected a number)"));
  }
  EXPECT_EQ(ErrorOf(ParseGet({"id", "--page-size=x"})),
            "bad value for --page-size: 'x' (expected a number)");
}

// --- Method and headers ----------------------------------------------------

TEST(CliArgs, MethodIsUpperCasedAndSetOnEveryRequest) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--method=post", "http://a/", "http://b/"});
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->request.requests_size(), 2);
  EXPECT_EQ(options->request.requests(0).method(), "POST");
  EXPECT_EQ(options->request.requests(1).method(), "POST");
}

TEST(CliArgs, MethodIsEmptyWithoutTheFlag) {
  absl::StatusOr<FetchOptions> options = ParseFetch({"http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.requests(0).method(), "");
}

TEST(CliArgs, EmptyMethodIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--method=", "http://a/"})),
            "--method must not be empty");
}

TEST(CliArgs, HeaderNameAndValueAreTrimmed) {
  absl::StatusOr<std::pair<std::string, std::string>> header =
      ParseHeader("  X-Token :  abc def  ");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->first, "X-Token");
  EXPECT_EQ(header->second, "abc def");
}

TEST(CliArgs, HeaderValueMayBeEmptyOrContainColons) {
  absl::StatusOr<std::pair<std::string, std::string>> header =
      ParseHeader("X-Empty:");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->second, "");
  header = ParseHeader("Referer: http://x:8080/");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->first, "Referer");
  EXPECT_EQ(header->second, "http://x:8080/");
}

TEST(CliArgs, HeaderWithoutColonIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"-H", "X-Token abc", "http://a/"})),
            "bad header 'X-Token abc' (expected 'Name: value')");
}

TEST(CliArgs, HeaderWithEmptyNameIsRejected) {
  EXPECT_EQ(ErrorOf(ParseHeader(" : v")),
            "bad header ' : v' (expected 'Name: value')");
}

TEST(CliArgs, HeaderNameWithSpaceIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--header=X Token: abc", "http://a/"})),
            "bad header 'X Token: abc' (expected 'Name: value')");
}

TEST(CliArgs, HeadersApplyToEveryRequest) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"http://a/", "-H", "A: 1", "http://b/"});
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->request.requests_size(), 2);
  for (const auto& request : options->request.requests()) {
    EXPECT_EQ(request.headers().size(), 1u);
    EXPECT_EQ(request.headers().at("A"), "1");
  }
}

TEST(CliArgs, LaterHeaderWithSameNameWins) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"-H", "X: first", "-H", "Y: y", "-H", "X: second", "u"});
  ASSERT_TRUE(options.ok()) << options.status();
  const auto& headers = options->request.requests(0).headers();
  EXPECT_EQ(headers.size(), 2u);
  EXPECT_EQ(headers.at("X"), "second");
  EXPECT_EQ(headers.at("Y"), "y");
}

// --- --extract -------------------------------------------------------------

TEST(CliArgs, ExtractMapsNamesToPointers) {
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"--extract=title=/title", "--extract", "id=/data/0/id", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  const auto& extract = options->request.extract();
  EXPECT_EQ(extract.size(), 2u);
  EXPECT_EQ(extract.at("title"), "/title");
  EXPECT_EQ(extract.at("id"), "/data/0/id");
}

TEST(CliArgs, ExtractWithEmptyPointerSelectsTheWholeDocument) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--extract=all=", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.extract().at("all"), "");
}

TEST(CliArgs, ExtractWithoutEqualsSignIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--extract=title", "http://a/"})),
            "bad --extract 'title' (expected NAME=/json/pointer)");
}

TEST(CliArgs, ExtractWithEmptyNameIsRejected) {
  EXPECT_EQ(ErrorOf(ParseExtract("=/title")),
            "bad --extract '=/title' (expected NAME=/json/pointer)");
}

TEST(CliArgs, ExtractPointerNotStartingWithSlashIsRejected) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--extract=t=title", "http://a/"})),
            "bad --extract 't=title': a JSON Pointer must be empty or start "
            "with '/'");
}

TEST(CliArgs, ExtractNameGivenTwiceIsRejected) {
  EXPECT_EQ(
      ErrorOf(ParseFetch({"--extract=t=/a", "--extract=t=/b", "http://a/"})),
      "--extract name 't' given twice");
}

// --- URL sources -----------------------------------------------------------

TEST(CliArgs, DashReadsUrlsFromTheGivenStdinStream) {
  std::istringstream in("http://a/\n  http://b/  \n");
  absl::StatusOr<FetchOptions> options = ParseFetch({"-"}, in);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(Urls(*options),
            (std::vector<std::string>{"http://a/", "http://b/"}));
}

TEST(CliArgs, FileDashAlsoReadsTheGivenStdinStream) {
  std::istringstream in("http://a/\n");
  absl::StatusOr<FetchOptions> options = ParseFetch({"-f", "-"}, in);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(Urls(*options), std::vector<std::string>{"http://a/"});
}

TEST(CliArgs, UnreadableStdinIsReported) {
  std::istringstream in("http://a/\n");
  in.setstate(std::ios::badbit);
  EXPECT_EQ(ErrorOf(ParseFetch({"-"}, in)), "cannot read stdin");
}

TEST(CliArgs, UrlFileSkipsBlankLinesAndComments) {
  TempFile file("urls.txt",
                "# a comment\n"
                "http://a/\n"
                "\n"
                "   \t\n"
                "  http://b/  \r\n"
                "  # indented comment\n"
                "http://c/#fragment");
  absl::StatusOr<FetchOptions> options = ParseFetch({"-f", file.path()});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(Urls(*options), (std::vector<std::string>{"http://a/", "http://b/",
                                                      "http://c/#fragment"}));
}

TEST(CliArgs, UrlSourcesKeepCommandLineOrder) {
  TempFile file("order.txt", "http://f1/\nhttp://f2/\n");
  std::istringstream in("http://s1/\n");
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"http://a1/", "--file=" + file.path(), "http://a2/", "-"}, in);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(Urls(*options),
            (std::vector<std::string>{"http://a1/", "http://f1/", "http://f2/",
                                      "http://a2/", "http://s1/"}));
  for (int i = 0; i < options->request.requests_size(); ++i) {
    EXPECT_TRUE(options->request.requests(i).headers().empty());
  }
}

TEST(CliArgs, NonexistentUrlFileIsRejected) {
  const std::string path =
      absl::StrCat(testing::TempDir(), "cli_args_test_no_such_file.txt");
  EXPECT_EQ(ErrorOf(ParseFetch({"-f", path})),
            absl::StrCat("cannot read URL file '", path,
                         "': No such file or directory"));
}

TEST(CliArgs, NoUrlsIsAnError) {
  EXPECT_EQ(ErrorOf(ParseFetch({})), "no URLs given");
  EXPECT_EQ(ErrorOf(ParseFetch({"--quiet"})), "no URLs given");
}

TEST(CliArgs, EmptyUrlFileAndStdinGiveNoUrls) {
  TempFile file("empty.txt", "# nothing here\n\n");
  std::istringstream in("");
  EXPECT_EQ(ErrorOf(ParseFetch({"-f", file.path(), "-"}, in)), "no URLs given");
}

// --- --help ----------------------------------------------------------------

TEST(CliArgs, HelpNeedsNoUrls) {
  for (const char* help : {"--help", "-h"}) {
    absl::StatusOr<FetchOptions> options = ParseFetch({help});
    ASSERT_TRUE(options.ok()) << options.status();
    EXPECT_TRUE(options->help);
  }
}

TEST(CliArgs, HelpForGetNeedsNoBatchId) {
  absl::StatusOr<GetOptions> options = ParseGet({"--help"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->help);
}

TEST(CliArgs, UsageDocumentsEveryFlag) {
  const std::string usage = kUsage;
  for (const char* flag :
       {"--server", "--connect-timeout", "--deadline", "-f, --file",
        "--concurrency", "--timeout", "--method", "-H, --header", "--extract",
        "--batch-id", "--quiet", "--summary-json", "--results",
        "--page-size"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

// --- get -------------------------------------------------------------------

TEST(CliArgs, GetTakesOneBatchIdAndItsFlags) {
  absl::StatusOr<GetOptions> options =
      ParseGet({"--results", "b-1", "--page-size", "50", "--server=h:2"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->batch_id, "b-1");
  EXPECT_TRUE(options->results);
  EXPECT_EQ(options->page_size, 50u);
  EXPECT_EQ(options->connection.server, "h:2");
  EXPECT_FALSE(options->help);
}

TEST(CliArgs, GetDefaultsToSummaryOnlyAndServerPageSize) {
  absl::StatusOr<GetOptions> options = ParseGet({"b-1"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->results);
  EXPECT_EQ(options->page_size, 0u);
  EXPECT_EQ(options->connection.server, kTestServer);
}

TEST(CliArgs, GetNeedsExactlyOneBatchId) {
  EXPECT_EQ(ErrorOf(ParseGet({})), "get needs exactly one batch ID");
  EXPECT_EQ(ErrorOf(ParseGet({"a", "b"})), "get needs exactly one batch ID");
  EXPECT_EQ(ErrorOf(ParseGet({""})), "get needs exactly one batch ID");
}

TEST(CliArgs, GetAcceptsABatchIdStartingWithDashAfterDoubleDash) {
  absl::StatusOr<GetOptions> options = ParseGet({"--", "-odd-id"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->batch_id, "-odd-id");
}

// --- TLS flags and variables -------------------------------------------------

// PEM-shaped stand-ins: ResolveTls checks the blocks are there; gRPC parses
// them (tests/tls_e2e_test.cc uses real ones).
constexpr char kCaPem[] =
    "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
constexpr char kCertPem[] =
    "-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n";
constexpr char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE "
    "KEY-----\n";

// An environment for ResolveTls: only these variables are set.
EnvLookup FakeEnv(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const char* name) -> const char* {
    auto it = variables.find(name);
    return it == variables.end() ? nullptr : it->second.c_str();
  };
}

absl::StatusOr<TlsSettings> ResolveTlsArgs(
    const std::vector<std::string>& args,
    std::map<std::string, std::string> variables = {}) {
  std::vector<std::string> with_url(args);
  with_url.push_back("http://a/");
  absl::StatusOr<FetchOptions> options = ParseFetch(with_url);
  if (!options.ok()) return options.status();
  return ResolveTls(options->connection.tls, FakeEnv(std::move(variables)));
}

std::string MissingFile() {
  return absl::StrCat(testing::TempDir(), "cli_args_test_missing.pem");
}

TEST(CliTls, UsageDocumentsTheTlsFlagsAndTheirVariables) {
  const std::string usage = kUsage;
  for (const char* text :
       {"--tls ", "--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE",
        "--tls-server-name NAME", "$BATCHFETCH_TLS=1", "$BATCHFETCH_TLS_CA",
        "$BATCHFETCH_TLS_CERT", "$BATCHFETCH_TLS_KEY",
        "$BATCHFETCH_TLS_SERVER_NAME"}) {
    EXPECT_NE(usage.find(text), std::string::npos) << text;
  }
}

TEST(CliTls, PlaintextWithoutFlagsOrVariables) {
  absl::StatusOr<TlsSettings> tls = ResolveTlsArgs({});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_FALSE(tls->enabled);
}

TEST(CliTls, TlsFlagTrustsTheSystemRoots) {
  absl::StatusOr<TlsSettings> tls = ResolveTlsArgs({"--tls"});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->enabled);
  EXPECT_EQ(tls->root_certs_pem, "");
  EXPECT_EQ(tls->cert_chain_pem, "");
  EXPECT_EQ(tls->server_name, "");
}

TEST(CliTls, TlsFlagIsTakenByGetToo) {
  absl::StatusOr<GetOptions> options =
      ParseGet({"id", "--tls", "--tls-server-name=name.example"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->connection.tls.tls);
  EXPECT_EQ(options->connection.tls.server_name, "name.example");
}

TEST(CliTls, CaFileImpliesTlsAndIsRead) {
  TempFile ca("ca.pem", kCaPem);
  absl::StatusOr<TlsSettings> tls = ResolveTlsArgs({"--tls-ca", ca.path()});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->enabled);
  EXPECT_EQ(tls->root_certs_pem, kCaPem);
}

TEST(CliTls, ClientCertificateAndKeyAreReadAndImplyTls) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  absl::StatusOr<TlsSettings> tls =
      ResolveTlsArgs({"--tls-cert=" + cert.path(), "--tls-key=" + key.path()});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->enabled);
  EXPECT_EQ(tls->root_certs_pem, "");
  EXPECT_EQ(tls->cert_chain_pem, kCertPem);
  EXPECT_EQ(tls->private_key_pem, kKeyPem);
}

TEST(CliTls, ServerNameImpliesTls) {
  absl::StatusOr<TlsSettings> tls =
      ResolveTlsArgs({"--tls-server-name=localhost"});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->enabled);
  EXPECT_EQ(tls->server_name, "localhost");
}

TEST(CliTls, VariablesApplyWhenTheFlagsAreAbsent) {
  TempFile ca("ca.pem", kCaPem), cert("cert.pem", kCertPem),
      key("key.pem", kKeyPem);
  absl::StatusOr<TlsSettings> tls =
      ResolveTlsArgs({}, {{"BATCHFETCH_TLS_CA", ca.path()},
                          {"BATCHFETCH_TLS_CERT", cert.path()},
                          {"BATCHFETCH_TLS_KEY", key.path()},
                          {"BATCHFETCH_TLS_SERVER_NAME", "localhost"}});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->enabled);
  EXPECT_EQ(tls->root_certs_pem, kCaPem);
  EXPECT_EQ(tls->cert_chain_pem, kCertPem);
  EXPECT_EQ(tls->private_key_pem, kKeyPem);
  EXPECT_EQ(tls->server_name, "localhost");
}

TEST(CliTls, AFlagWinsOverItsVariable) {
  TempFile ca("ca.pem", kCaPem);
  absl::StatusOr<TlsSettings> tls = ResolveTlsArgs(
      {"--tls-ca", ca.path(), "--tls-server-name", "flag.example"},
      {{"BATCHFETCH_TLS_CA", MissingFile()},
       {"BATCHFETCH_TLS_SERVER_NAME", "env.example"}});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_EQ(tls->root_certs_pem, kCaPem);
  EXPECT_EQ(tls->server_name, "flag.example");
}

TEST(CliTls, EmptyVariablesCountAsUnset) {
  absl::StatusOr<TlsSettings> tls =
      ResolveTlsArgs({}, {{"BATCHFETCH_TLS", ""},
                          {"BATCHFETCH_TLS_CA", ""},
                          {"BATCHFETCH_TLS_CERT", ""},
                          {"BATCHFETCH_TLS_SERVER_NAME", ""}});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_FALSE(tls->enabled);
}

TEST(CliTls, TlsVariableTakesYesAndNoWords) {
  for (const char* on : {"1", "true", "TRUE", "yes", "on"}) {
    absl::StatusOr<TlsSettings> tls =
        ResolveTlsArgs({}, {{"BATCHFETCH_TLS", on}});
    ASSERT_TRUE(tls.ok()) << tls.status();
    EXPECT_TRUE(tls->enabled) << on;
  }
  for (const char* off : {"0", "false", "no", "Off"}) {
    absl::StatusOr<TlsSettings> tls =
        ResolveTlsArgs({}, {{"BATCHFETCH_TLS", off}});
    ASSERT_TRUE(tls.ok()) << tls.status();
    EXPECT_FALSE(tls->enabled) << off;
  }
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({}, {{"BATCHFETCH_TLS", "maybe"}})),
            "bad value for BATCHFETCH_TLS: 'maybe' (expected 1, true, yes, "
            "on, 0, false, no or off)");
}

TEST(CliTls, EmptyTlsFileFlagsAreRejected) {
  for (const char* flag :
       {"--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"}) {
    EXPECT_EQ(ErrorOf(ParseFetch({absl::StrCat(flag, "="), "http://a/"})),
              absl::StrCat(flag, " must not be empty"));
  }
}

TEST(CliTls, TlsTakesNoValue) {
  EXPECT_EQ(ErrorOf(ParseFetch({"--tls=yes", "http://a/"})),
            "flag --tls takes no value");
}

TEST(CliTls, HalfAClientCertificatePairIsRejectedNamingTheMissingFlag) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({"--tls-cert", cert.path()})),
            "--tls-cert needs --tls-key (or BATCHFETCH_TLS_KEY)");
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({"--tls-key", key.path()})),
            "--tls-key needs --tls-cert (or BATCHFETCH_TLS_CERT)");
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({}, {{"BATCHFETCH_TLS_KEY", key.path()}})),
            "BATCHFETCH_TLS_KEY needs --tls-cert (or BATCHFETCH_TLS_CERT)");
}

TEST(CliTls, AnUnreadableFileIsRejectedNamingWhereItCameFrom) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  const std::string missing = MissingFile();
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({"--tls-ca", missing})),
            absl::StrCat("cannot read --tls-ca file '", missing,
                         "': No such file or directory"));
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({}, {{"BATCHFETCH_TLS_CA", missing}})),
            absl::StrCat("cannot read BATCHFETCH_TLS_CA file '", missing,
                         "': No such file or directory"));
  EXPECT_EQ(
      ErrorOf(ResolveTlsArgs({"--tls-cert", missing, "--tls-key", key.path()})),
      absl::StrCat("cannot read --tls-cert file '", missing,
                   "': No such file or directory"));
  EXPECT_EQ(ErrorOf(ResolveTlsArgs(
                {"--tls-cert", cert.path(), "--tls-key", missing})),
            absl::StrCat("cannot read --tls-key file '", missing,
                         "': No such file or directory"));
}

TEST(CliTls, AFileWithoutItsPemBlockIsRejectedWithoutEchoingIt) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  // The key given as the CA, and the certificate given as the key.
  EXPECT_EQ(ErrorOf(ResolveTlsArgs({"--tls-ca", key.path()})),
            absl::StrCat("--tls-ca file '", key.path(),
                         "' holds no PEM CERTIFICATE block"));
  EXPECT_EQ(ErrorOf(ResolveTlsArgs(
                {"--tls-cert", cert.path(), "--tls-key", cert.path()})),
            absl::StrCat("--tls-key file '", cert.path(),
                         "' holds no PEM PRIVATE KEY block"));
}

// --- fetch: retries, per-host, batch deadline, bodies, output (issue 11) ---

TEST(ParseFetchArgs, RetryFlagsFillTheRetryPolicy) {
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"--retry", "4", "--retry-on", "timeout, 5xx,408,connect", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  const v1::RetryPolicy& retry = options->request.retry();
  EXPECT_EQ(retry.max_attempts(), 4u);
  ASSERT_EQ(retry.retry_on_size(), 3);
  EXPECT_EQ(retry.retry_on(0), v1::RETRY_ON_TIMEOUT);
  EXPECT_EQ(retry.retry_on(1), v1::RETRY_ON_5XX);
  EXPECT_EQ(retry.retry_on(2), v1::RETRY_ON_CONNECT_ERROR);
  ASSERT_EQ(retry.retry_on_status_size(), 1);
  EXPECT_EQ(retry.retry_on_status(0), 408);
}

TEST(ParseFetchArgs, RetryOnRejectsAnUnknownItemNamingIt) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--retry-on", "timeout,sometimes", "http://a/"});
  ASSERT_FALSE(options.ok());
  EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(options.status().message().find("--retry-on: 'sometimes'"),
            std::string::npos)
      << options.status().message();
  EXPECT_FALSE(ParseFetch({"--retry-on", "600", "http://a/"}).ok());
  EXPECT_FALSE(ParseFetch({"--retry-on", "", "http://a/"}).ok());
  EXPECT_FALSE(ParseFetch({"--retry", "many", "http://a/"}).ok());
}

TEST(ParseFetchArgs, PerHostAndDeadlineBatchAreSent) {
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"--per-host", "3", "--deadline-batch", "1m30.5s", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.per_host_concurrency(), 3u);
  EXPECT_EQ(options->request.deadline().seconds(), 90);
  EXPECT_EQ(options->request.deadline().nanos(), 500000000);
  EXPECT_FALSE(ParseFetch({"--deadline-batch", "0s", "http://a/"}).ok());
  EXPECT_FALSE(ParseFetch({"--deadline-batch", "soon", "http://a/"}).ok());
}

TEST(ParseFetchArgs, BodyIsSentAsTextToEveryUrl) {
  absl::StatusOr<FetchOptions> options = ParseFetch(
      {"--method", "post", "--body", R"({"q":"é"})", "http://a/", "http://b/"});
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->request.requests_size(), 2);
  for (const v1::FetchRequest& r : options->request.requests()) {
    EXPECT_EQ(r.method(), "POST");
    EXPECT_EQ(r.body_text(), R"({"q":"é"})");
    EXPECT_TRUE(r.body().empty());
  }
}

TEST(ParseFetchArgs, BodyFileIsSentAsBytes) {
  char path[] = "/tmp/cli_args_body_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string bytes("{\"a\":1}\n\xff\x00", 10);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--body-file", path, "http://a/"});
  unlink(path);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->request.requests(0).body(), bytes);
  EXPECT_TRUE(options->request.requests(0).body_text().empty());

  absl::StatusOr<FetchOptions> missing =
      ParseFetch({"--body-file", "/nonexistent/body.json", "http://a/"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("--body-file"), std::string::npos);
}

TEST(ParseFetchArgs, ADirectoryAsBodyFileOrUrlFileIsAnErrorNotAnEmptyRead) {
  const std::string dir = testing::TempDir();
  EXPECT_EQ(
      ErrorOf(ParseFetch({"--body-file", dir, "http://a/"})),
      absl::StrCat("cannot read --body-file '", dir, "': Is a directory"));
  EXPECT_EQ(ErrorOf(ParseFetch({"-f", dir})),
            absl::StrCat("cannot read URL file '", dir, "': Is a directory"));
}

TEST(ParseFetchArgs, BodyAndBodyFileTogetherAreRejected) {
  absl::StatusOr<FetchOptions> options =
      ParseFetch({"--body", "x", "--body-file", "/dev/null", "http://a/"});
  ASSERT_FALSE(options.ok());
  EXPECT_NE(options.status().message().find("--body and --body-file"),
            std::string::npos);
}

TEST(ParseFetchArgs, OutputIsNdjsonByDefaultOrCsv) {
  EXPECT_EQ(ParseFetch({"http://a/"})->output, OutputFormat::kNdjson);
  EXPECT_EQ(ParseFetch({"--output", "csv", "http://a/"})->output,
            OutputFormat::kCsv);
  EXPECT_EQ(ParseFetch({"--output=ndjson", "http://a/"})->output,
            OutputFormat::kNdjson);
  absl::StatusOr<FetchOptions> bad =
      ParseFetch({"--output", "xml", "http://a/"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--output: 'xml'"), std::string::npos);
}

TEST(ResultToCsv, WritesTheFlatColumnsQuotingWhatNeedsIt) {
  v1::FetchResult r;
  r.set_index(3);
  r.set_url("http://a/x?p=1,2");
  r.set_outcome(v1::OUTCOME_HTTP_ERROR);
  r.set_http_status(503);
  r.set_attempts(2);
  r.mutable_elapsed()->set_seconds(1);
  r.mutable_elapsed()->set_nanos(234500000);
  r.set_content_type("text/plain");
  r.set_error("upstream said \"busy\"\nretry later");
  r.set_json("{\"ignored\":true}");
  EXPECT_EQ(ResultToCsv(r),
            "3,\"http://a/x?p=1,2\",http_error,503,2,1234.500,text/plain,"
            "\"upstream said \"\"busy\"\"\nretry later\"");
  EXPECT_EQ(std::string(kCsvColumns),
            "index,url,outcome,http_status,attempts,elapsed_ms,content_type,"
            "error");
  v1::FetchResult bad_bytes;
  bad_bytes.set_error(std::string("a\xff") + "b");
  EXPECT_EQ(ResultToCsv(bad_bytes),
            std::string("0,,unspecified,0,0,0.000,,a\xEF\xBF\xBD") + "b");
}

TEST(FormatProgress, ShowsCountRateFailuresAndEta) {
  EXPECT_EQ(FormatProgress(20, 80, 2, absl::Seconds(5)),
            "[#######.......................] 20/80  4.0/s  2 failed  ETA 15s");
  // No ETA before the first result, nor once every result is in.
  EXPECT_EQ(FormatProgress(0, 10, 0, absl::Seconds(1)),
            "[..............................] 0/10  0.0/s  0 failed");
  EXPECT_EQ(FormatProgress(10, 10, 1, absl::Seconds(2)),
            "[##############################] 10/10  5.0/s  1 failed");
}

TEST(ParseFetchArgs, DetachSetsTheRequestField) {
  absl::StatusOr<FetchOptions> options = ParseFetch({"--detach", "http://a/"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->request.detach());
  absl::StatusOr<FetchOptions> plain = ParseFetch({"http://a/"});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->request.detach());
}

TEST(ParseBatchCommands, WatchTakesOneIdAndFromIndex) {
  absl::StatusOr<BatchCommandOptions> options =
      ParseWatchArgs({"ID1", "--from-index", "7"}, kTestServer);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->batch_id, "ID1");
  EXPECT_EQ(options->from_index, 7u);
  EXPECT_EQ(options->connection.server, kTestServer);
  EXPECT_FALSE(ParseWatchArgs({}, kTestServer).ok());
  EXPECT_FALSE(ParseWatchArgs({"a", "b"}, kTestServer).ok());
  EXPECT_FALSE(ParseWatchArgs({"a", "--from-index", "x"}, kTestServer).ok());
}

TEST(ParseBatchCommands, CancelTakesExactlyOneIdAndNoOtherFlag) {
  absl::StatusOr<BatchCommandOptions> options =
      ParseCancelArgs({"ID2", "--server", "h:1"}, kTestServer);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->batch_id, "ID2");
  EXPECT_EQ(options->connection.server, "h:1");
  absl::StatusOr<BatchCommandOptions> none = ParseCancelArgs({}, kTestServer);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("cancel needs exactly one batch ID"),
            std::string::npos);
  EXPECT_FALSE(ParseCancelArgs({"ID", "--from-index", "1"}, kTestServer).ok());
  absl::StatusOr<BatchCommandOptions> help =
      ParseCancelArgs({"--help"}, kTestServer);
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->help);
}

TEST(ParseBatchCommands, ListParsesStatePageSizeAndLimit) {
  absl::StatusOr<BatchCommandOptions> options = ParseListArgs(
      {"--state", "Cancelled", "--page-size", "10", "--limit", "3"},
      kTestServer);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->state, v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(options->page_size, 10u);
  EXPECT_EQ(options->limit, 3u);
  absl::StatusOr<BatchCommandOptions> any = ParseListArgs({}, kTestServer);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->state, v1::BATCH_STATE_UNSPECIFIED);
  EXPECT_FALSE(ParseListArgs({"stray"}, kTestServer).ok());
}

TEST(ParseBatchCommands, StateAcceptsEveryNameAndRejectsOthersNamingTheFlag) {
  EXPECT_EQ(*ParseStateFlag("running"), v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(*ParseStateFlag("DONE"), v1::BATCH_STATE_DONE);
  EXPECT_EQ(*ParseStateFlag("failed"), v1::BATCH_STATE_FAILED);
  EXPECT_EQ(*ParseStateFlag("BATCH_STATE_INTERRUPTED"),
            v1::BATCH_STATE_INTERRUPTED);
  absl::StatusOr<v1::BatchState> bad = ParseStateFlag("finished");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--state"), std::string::npos);
}

}  // namespace
}  // namespace batchfetch::cli
