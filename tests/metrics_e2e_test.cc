// GET /metrics (--metrics_listen) end to end: a real server (in process and
// the binary), MariaDB, a loopback upstream. Each scrape is parsed as the
// Prometheus text format by a small parser here, and the counters must move
// by exactly what a batch of 7 OK and 3 HTTP 500 results did, both while it
// runs and after it.
#include <cmath>
#include <cstdlib>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tests/support/logged_server.h"
#include "tests/support/plain_http_client.h"
#include "tests/support/service_fixture.h"

namespace batchfetch::e2e {
namespace {

using testing::PlainHttpGet;

// One scrape: every sample by its series ("name{labels as written}").
struct Scrape {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;  // family -> type

  // The sample's value; absent series fail the test and count as NaN.
  double operator[](const std::string& series) const {
    auto it = samples.find(series);
    EXPECT_NE(it, samples.end()) << "no series " << series;
    return it == samples.end() ? std::nan("") : it->second;
  }
};

bool IsName(absl::string_view s, bool colon_ok) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok =
        absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_' ||
        (colon_ok && c == ':') ||
        (i > 0 && absl::ascii_isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

bool ParseValue(absl::string_view text, double* value) {
  if (text == "+Inf") {
    *value = INFINITY;
  } else if (text == "-Inf") {
    *value = -INFINITY;
  } else if (text == "NaN") {
    *value = std::nan("");
  } else {
    return absl::SimpleAtod(text, value) &&
           text.find_first_of(" \t") == absl::string_view::npos;
  }
  return true;
}

// The family a sample name belongs to, given the TYPE lines seen so far.
std::string FamilyOf(const std::string& sample,
                     const std::map<std::string, std::string>& types) {
  if (types.count(sample)) return sample;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    absl::string_view base = sample;
    if (absl::ConsumeSuffix(&base, suffix)) {
      auto it = types.find(std::string(base));
      if (it != types.end() && it->second == "histogram") return it->first;
    }
  }
  return "";
}

// Parses the text exposition format 0.0.4 strictly enough to catch what a
// Prometheus server would refuse: HELP/TYPE syntax, one TYPE per family
// before its samples, label syntax and escapes, sample values; and, per
// histogram series, buckets that never decrease and a +Inf bucket equal to
// _count.
absl::StatusOr<Scrape> ParseExposition(const std::string& text) {
  Scrape scrape;
  if (text.empty() || text.back() != '\n') {
    return absl::DataLossError("the text must end with a line feed");
  }
  std::map<std::string, double> last_bucket;  // series without le -> count
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  lines.pop_back();  // after the final line feed
  for (absl::string_view line : lines) {
    const std::string where = absl::StrCat(" in line: ", line);
    if (absl::ConsumePrefix(&line, "# ")) {
      std::vector<absl::string_view> parts =
          absl::StrSplit(line, absl::MaxSplits(' ', 2));
      if (parts[0] == "HELP") {
        if (parts.size() < 2 || !IsName(parts[1], true)) {
          return absl::DataLossError("bad HELP" + where);
        }
      } else if (parts[0] == "TYPE") {
        static const std::set<std::string> kTypes = {
            "counter", "gauge", "histogram", "summary", "untyped"};
        if (parts.size() != 3 || !IsName(parts[1], true) ||
            !kTypes.count(std::string(parts[2]))) {
          return absl::DataLossError("bad TYPE" + where);
        }
        if (!scrape.types.emplace(parts[1], parts[2]).second) {
          return absl::DataLossError("second TYPE" + where);
        }
      }
      continue;  // other comments are allowed
    }
    if (line.empty()) return absl::DataLossError("empty line");
    size_t at = 0;
    while (at < line.size() && line[at] != '{' && line[at] != ' ') ++at;
    const std::string name(line.substr(0, at));
    if (!IsName(name, true)) return absl::DataLossError("bad name" + where);
    const std::string family = FamilyOf(name, scrape.types);
    if (family.empty()) {
      return absl::DataLossError("sample before its TYPE" + where);
    }
    std::string labels_without_le;
    std::string le;
    if (at < line.size() && line[at] == '{') {
      ++at;
      bool first = true;
      while (true) {
        if (at >= line.size()) return absl::DataLossError("open {" + where);
        if (line[at] == '}') {
          ++at;
          break;
        }
        if (!first) {
          if (line[at] != ',') return absl::DataLossError("no ," + where);
          ++at;
        }
        first = false;
        const size_t eq = line.find('=', at);
        if (eq == absl::string_view::npos) {
          return absl::DataLossError("no =" + where);
        }
        const std::string label(line.substr(at, eq - at));
        if (!IsName(label, false)) {
          return absl::DataLossError("bad label name" + where);
        }
        at = eq + 1;
        if (at >= line.size() || line[at] != '"') {
          return absl::DataLossError("label value not quoted" + where);
        }
        ++at;
        std::string value;
        while (true) {
          if (at >= line.size()) return absl::DataLossError("open \"" + where);
          const char c = line[at++];
          if (c == '"') break;
          if (c == '\\') {
            if (at >= line.size()) return absl::DataLossError("\\ at end");
            const char e = line[at++];
            if (e == 'n') {
              value += '\n';
            } else if (e == '\\' || e == '"') {
              value += e;
            } else {
              return absl::DataLossError("bad escape" + where);
            }
          } else {
            value += c;
          }
        }
        if (label == "le") {
          le = value;
        } else {
          absl::StrAppend(&labels_without_le,
                          labels_without_le.empty() ? "" : ",", label, "=\"",
                          value, "\"");
        }
      }
    }
    if (at >= line.size() || line[at] != ' ') {
      return absl::DataLossError("no value" + where);
    }
    double value = 0;
    if (!ParseValue(line.substr(at + 1), &value)) {
      return absl::DataLossError("bad value" + where);
    }
    scrape.samples[std::string(line.substr(0, at))] = value;
    if (scrape.types[family] == "histogram") {
      const std::string series = absl::StrCat(family, "{", labels_without_le);
      if (absl::EndsWith(name, "_bucket")) {
        if (le.empty()) return absl::DataLossError("bucket without le" + where);
        auto [it, fresh] = last_bucket.emplace(series, value);
        if (!fresh && value < it->second) {
          return absl::DataLossError("bucket count decreases" + where);
        }
        it->second = value;
      } else if (absl::EndsWith(name, "_count")) {
        if (last_bucket[series] != value) {
          return absl::DataLossError("+Inf bucket != _count" + where);
        }
      }
    }
  }
  return scrape;
}

class MetricsTest : public ServiceTest {
 protected:
  Scrape ScrapeNow(int port) {
    auto response = PlainHttpGet(port, "/metrics");
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->content_type,
              "text/plain; version=0.0.4; charset=utf-8");
    absl::StatusOr<Scrape> scrape = ParseExposition(response->body);
    EXPECT_TRUE(scrape.ok()) << scrape.status() << "\n" << response->body;
    return scrape.ok() ? *std::move(scrape) : Scrape{};
  }
};

// 7 OK (100-byte bodies, held 1.5 s upstream) and 3 HTTP 500 (20 bytes, at
// once), all running together; the default retry policy is one attempt, so
// nothing is retried.
v1::FetchBatchRequest SevenOkThreeServerErrors(const TestUpstream& upstream) {
  std::vector<std::string> urls;
  for (int i = 0; i < 7; ++i) {
    urls.push_back(
        upstream.Url(absl::StrCat("/ok?bytes=100&delay_ms=1500&n=", i)));
  }
  for (int i = 0; i < 3; ++i) {
    urls.push_back(
        upstream.Url(absl::StrCat("/fail?status=500&bytes=20&n=", i)));
  }
  return Batch(urls, /*concurrency=*/10);
}

TEST_F(MetricsTest, CountersMoveByExactlyWhatABatchDidDuringAndAfterIt) {
  ServerConfig config = Config();
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  const int port = server_->metrics_port();
  ASSERT_GT(port, 0);
  const Scrape before = ScrapeNow(port);
  const auto delta = [&before](const Scrape& now, const std::string& series) {
    return now[series] - before[series];
  };

  std::future<Streamed> fetched = std::async(std::launch::async, [&] {
    return Fetch(SevenOkThreeServerErrors(*upstream_));
  });

  // During: the three 500s are in, the seven OK transfers are held upstream.
  Scrape during;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  do {
    during = ScrapeNow(port);
    if (delta(during, "batchfetch_results_total{outcome=\"http_error\"}") ==
            3 &&
        during["batchfetch_transfers_in_flight"] == 7) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < give_up);
  EXPECT_EQ(delta(during, "batchfetch_results_total{outcome=\"http_error\"}"),
            3);
  EXPECT_EQ(delta(during, "batchfetch_results_total{outcome=\"ok\"}"), 0);
  EXPECT_EQ(during["batchfetch_transfers_in_flight"], 7);
  EXPECT_EQ(delta(during, "batchfetch_batches_active"), 1);
  EXPECT_EQ(delta(during, "batchfetch_batches_total{state=\"done\"}"), 0);
  EXPECT_EQ(delta(during,
                  "batchfetch_upstream_seconds_count{outcome=\"http_error\"}"),
            3);

  const Streamed streamed = fetched.get();
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ExpectWellFormedStream(streamed, 10);
  EXPECT_EQ(streamed.summary().state(), v1::BATCH_STATE_DONE);

  // After: the summary comes only once every row is committed, so the store
  // counters are final too.
  const Scrape after = ScrapeNow(port);
  EXPECT_EQ(delta(after, "batchfetch_results_total{outcome=\"ok\"}"), 7);
  EXPECT_EQ(delta(after, "batchfetch_results_total{outcome=\"http_error\"}"),
            3);
  EXPECT_EQ(delta(after, "batchfetch_results_total{outcome=\"timeout\"}"), 0);
  EXPECT_EQ(delta(after, "batchfetch_batches_total{state=\"done\"}"), 1);
  EXPECT_EQ(delta(after, "batchfetch_batches_total{state=\"failed\"}"), 0);
  EXPECT_EQ(delta(after, "batchfetch_batches_total{state=\"cancelled\"}"), 0);
  EXPECT_EQ(after["batchfetch_batches_active"], 0);
  EXPECT_EQ(after["batchfetch_transfers_in_flight"], 0);
  EXPECT_EQ(after["batchfetch_transfers_queued"], 0);
  EXPECT_EQ(delta(after, "batchfetch_retries_total"), 0);
  EXPECT_EQ(delta(after, "batchfetch_response_bytes_total"), 7 * 100 + 3 * 20);
  EXPECT_EQ(delta(after, "batchfetch_blocked_total"), 0);
  EXPECT_EQ(delta(after, "batchfetch_upstream_seconds_count{outcome=\"ok\"}"),
            7);
  // The OK ones were held 1.5 s upstream.
  EXPECT_EQ(delta(after,
                  "batchfetch_upstream_seconds_bucket{outcome=\"ok\","
                  "le=\"1\"}"),
            0);
  EXPECT_EQ(delta(after,
                  "batchfetch_upstream_seconds_bucket{outcome=\"ok\","
                  "le=\"+Inf\"}"),
            7);
  EXPECT_GE(delta(after, "batchfetch_upstream_seconds_sum{outcome=\"ok\"}"),
            7 * 1.5);
  EXPECT_EQ(delta(after, "batchfetch_store_rows_total"), 10);
  EXPECT_EQ(delta(after, "batchfetch_store_errors_total"), 0);
  EXPECT_EQ(after["batchfetch_store_queue_depth"], 0);
  EXPECT_GE(delta(after, "batchfetch_store_commit_seconds_count"), 1);
}

TEST_F(MetricsTest, AnyPathButMetricsAndTheProbesIsNotFound) {
  ServerConfig config = Config();
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  for (const char* path : {"/", "/metrics2", "/favicon.ico"}) {
    auto response = PlainHttpGet(server_->metrics_port(), path);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 404) << path;
  }
}

TEST_F(MetricsTest, ReadyzTurnsNotServingWhenTheDrainStartsAndLivezStaysOk) {
  ServerConfig config = Config();
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  const int port = server_->metrics_port();
  auto ready = PlainHttpGet(port, "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "SERVING\n");

  // A batch held 2 s upstream keeps the drain (30 s of grace) going while
  // the probes are asked.
  BackgroundFetch running(stub_.get(),
                          Batch({upstream_->Url("/slow?delay_ms=2000")}));
  ASSERT_TRUE(running.WaitReady());
  // No ASSERT from here until the join: the drain thread must be joined.
  std::thread drain([this] { server_->Shutdown(absl::Seconds(30)); });
  absl::StatusOr<testing::PlainHttpResponse> readyz;
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  do {
    readyz = PlainHttpGet(port, "/readyz");
    if (!readyz.ok() || readyz->status != 200) break;
    absl::SleepFor(absl::Milliseconds(10));
  } while (absl::Now() < give_up);
  EXPECT_TRUE(readyz.ok()) << readyz.status();
  if (readyz.ok()) {
    EXPECT_EQ(readyz->status, 503) << "still ready after the drain started";
    EXPECT_EQ(readyz->body, "NOT_SERVING\n");
  }
  // The process is alive and still scraped while the batch finishes.
  auto live = PlainHttpGet(port, "/livez");
  EXPECT_TRUE(live.ok()) << live.status();
  if (live.ok()) {
    EXPECT_EQ(live->status, 200);
    EXPECT_EQ(live->body, "ok\n");
  }
  EXPECT_EQ(ScrapeNow(port)["batchfetch_batches_active"], 1);

  const Streamed& done = running.Join();
  EXPECT_TRUE(done.status.ok()) << done.status.error_message();
  EXPECT_EQ(done.summary().state(), v1::BATCH_STATE_DONE);
  drain.join();
  EXPECT_EQ(PlainHttpGet(port, "/readyz")->status, 503);
}

TEST_F(MetricsTest, ATakenMetricsPortFailsStartNamingTheFlag) {
  ServerConfig config = Config();
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  ServerConfig second = Config();
  second.metrics_listen = absl::StrCat("127.0.0.1:", server_->metrics_port());
  absl::StatusOr<std::unique_ptr<BatchFetchServer>> refused =
      BatchFetchServer::Start(second);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--metrics_listen"))
      << refused.status();
}

TEST_F(MetricsTest, MetricsAreOffByDefault) {
  StartServer(Config());
  EXPECT_EQ(server_->metrics_port(), 0);
}

TEST_F(MetricsTest, WithoutAStoreTheStoreMetricsAreLeftOut) {
  ServerConfig config = Config();
  config.store_enabled = false;
  config.metrics_listen = "127.0.0.1:0";
  StartServer(config);
  auto response = PlainHttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(absl::StrContains(response->body, "batchfetch_results_total"));
  EXPECT_FALSE(absl::StrContains(response->body, "batchfetch_store_"));
}

class MetricsBinaryTest : public BinaryTest {};

TEST_F(MetricsBinaryTest, TheBinaryServesMetricsOnTheFlagsAddress) {
  StartServerBinary({"--metrics_listen=127.0.0.1:0"});
  absl::string_view line = startup_line_;
  const size_t at = line.find("metrics port ");
  ASSERT_NE(at, absl::string_view::npos) << startup_line_;
  const int metrics_port =
      std::atoi(std::string(line.substr(at + strlen("metrics port "))).c_str());
  ASSERT_GT(metrics_port, 0) << startup_line_;

  const Streamed streamed = Fetch(Batch({upstream_->Url("/a?n=1")}));
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  auto response = PlainHttpGet(metrics_port, "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  absl::StatusOr<Scrape> scrape = ParseExposition(response->body);
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ((*scrape)["batchfetch_results_total{outcome=\"ok\"}"], 1);
  EXPECT_EQ((*scrape)["batchfetch_store_rows_total"], 1);
  EXPECT_EQ(PlainHttpGet(metrics_port, "/other")->status, 404);
}

TEST_F(MetricsBinaryTest, TheBinaryListensForMetricsOnlyWhenAsked) {
  StartServerBinary();
  EXPECT_FALSE(absl::StrContains(startup_line_, "metrics")) << startup_line_;
}

TEST_F(MetricsBinaryTest, AnAddressCivetwebCannotBindStopsStartUp) {
  EXPECT_EQ(RunServerThatMustNotStart({"--metrics_listen=[::1]:9090"}), 2);
  EXPECT_EQ(RunServerThatMustNotStart({"--metrics_listen=localhost:9090"}), 2);
}

TEST(ExpositionParserTest, RefusesWhatPrometheusWouldRefuse) {
  EXPECT_TRUE(ParseExposition("# TYPE a counter\na 1\n").ok());
  EXPECT_FALSE(ParseExposition("a 1\n").ok());                  // no TYPE
  EXPECT_FALSE(ParseExposition("# TYPE a counter\na 1").ok());  // no \n
  EXPECT_FALSE(ParseExposition("# TYPE a counter\na{x=1} 1\n").ok());
  EXPECT_FALSE(ParseExposition("# TYPE a counter\na{x=\"\\q\"} 1\n").ok());
  EXPECT_FALSE(ParseExposition("# TYPE a counter\na one\n").ok());
  EXPECT_FALSE(ParseExposition("# TYPE h histogram\n"
                               "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                               "h_sum 0\nh_count 1\n")
                   .ok());
  EXPECT_FALSE(ParseExposition("# TYPE h histogram\n"
                               "h_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n")
                   .ok());
}

}  // namespace
}  // namespace batchfetch::e2e
