// End to end: TLS and mTLS on the gRPC port of the real server binary
// (--tls_cert, --tls_key, --tls_client_ca) and the CLI's --tls* flags
// against it. The certificates are made at test time with the openssl CLI
// (tests/support/test_certificates.h): a CA, a server certificate for
// 127.0.0.1 and localhost, a client certificate from the same CA, and a CA
// and client certificate the server does not trust. Loopback only.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/support/logged_server.h"
#include "tests/support/plain_http_client.h"
#include "tests/support/service_fixture.h"
#include "tests/support/test_certificates.h"

namespace batchfetch {
namespace e2e {
namespace {

using testing::PlainHttpGet;
using testing::TestCertificates;

// What TlsStub presents and trusts.
struct ClientTls {
  std::string root_certs;  // PEM of the CA to trust.
  std::string cert_chain;  // PEM client certificate, or empty.
  std::string private_key;
  std::string target_name_override;  // Empty: the name in the address.
};

class TlsTest : public BinaryTest {
 protected:
  // The certificates are made once for the whole test program (key
  // generation is the slow part) and removed at its end.
  static void SetUpTestSuite() {
    if (!TestCertificates::OpensslAvailable()) return;
    absl::StatusOr<std::unique_ptr<TestCertificates>> certs =
        TestCertificates::Make();
    if (certs.ok()) {
      certs_ = certs->release();
    } else {
      certs_error_ = certs.status().ToString();
    }
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  void SetUp() override {
    if (!TestCertificates::OpensslAvailable()) {
      GTEST_SKIP() << "the openssl command is not on PATH: it makes the "
                      "test certificates";
    }
    ASSERT_NE(certs_, nullptr) << certs_error_;
    BinaryTest::SetUp();
  }

  const TestCertificates& certs() const { return *certs_; }

  // The server with TLS on, plus `extra` flags.
  void StartTlsServer(std::vector<std::string> extra = {}) {
    extra.push_back("--tls_cert=" + certs().server_cert());
    extra.push_back("--tls_key=" + certs().server_key());
    StartServerBinary(extra);
  }

  // The server requiring client certificates from the CA.
  void StartMutualTlsServer() {
    StartTlsServer({"--tls_client_ca=" + certs().ca()});
  }

  // The trusted CA, and no client certificate.
  ClientTls TrustingTheCa() const {
    ClientTls tls;
    tls.root_certs = TestCertificates::Read(certs().ca());
    return tls;
  }

  // The trusted CA, presenting the client certificate `cert` with `key`.
  ClientTls TrustingTheCaPresenting(const std::string& cert,
                                    const std::string& key) const {
    ClientTls tls = TrustingTheCa();
    tls.cert_chain = TestCertificates::Read(cert);
    tls.private_key = TestCertificates::Read(key);
    return tls;
  }

  // A stub on a fresh channel (its own subchannel pool, so no connection is
  // shared with an earlier channel) to 127.0.0.1:port_ over TLS.
  std::unique_ptr<v1::BatchFetcher::Stub> TlsStub(const ClientTls& tls) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = tls.root_certs;
    options.pem_cert_chain = tls.cert_chain;
    options.pem_private_key = tls.private_key;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!tls.target_name_override.empty()) {
      args.SetSslTargetNameOverride(tls.target_name_override);
    }
    return v1::BatchFetcher::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                  grpc::SslCredentials(options), args));
  }

  // GetBatch of an id that does not exist: NOT_FOUND shows the call went
  // through the handshake to the handler.
  static grpc::Status Probe(v1::BatchFetcher::Stub& stub) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    v1::GetBatchRequest request;
    request.set_batch_id("no-such-batch");
    v1::BatchSummary summary;
    return stub.GetBatch(&context, request, &summary);
  }

  static TestCertificates* certs_;
  static std::string certs_error_;
};

TestCertificates* TlsTest::certs_ = nullptr;
std::string TlsTest::certs_error_;

TEST_F(TlsTest, StartUpLineSaysWhetherTlsIsOn) {
  StartServerBinary();
  EXPECT_TRUE(absl::StrContains(startup_line_, "tls: off")) << startup_line_;
  server_process_.reset();
  StartTlsServer();
  EXPECT_TRUE(absl::StrContains(startup_line_, "tls: on")) << startup_line_;
  EXPECT_FALSE(absl::StrContains(startup_line_, "mtls")) << startup_line_;
  server_process_.reset();
  StartMutualTlsServer();
  EXPECT_TRUE(absl::StrContains(startup_line_,
                                "tls: on, client certificates required (mtls)"))
      << startup_line_;
}

TEST_F(TlsTest, ATlsClientTrustingTheCaFetchesABatch) {
  StartTlsServer();
  stub_ = TlsStub(TrustingTheCa());
  Streamed s = Fetch(Batch({upstream_->Url("/a?n=1")}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ExpectWellFormedStream(s, 1);
  EXPECT_EQ(s.results().at(0).outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(Probe(*stub_).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(TlsTest, APlaintextClientFailsAndTheServerStillServesTls) {
  StartTlsServer();
  // The fixture's stub_ is plaintext.
  grpc::Status plaintext = Probe(*stub_);
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE)
      << plaintext.error_message();
  grpc::Status tls = Probe(*TlsStub(TrustingTheCa()));
  EXPECT_EQ(tls.error_code(), grpc::StatusCode::NOT_FOUND)
      << tls.error_message();
}

// What the TLS overlay (deploy/k8s/overlays/tls) relies on: kubelet's
// gRPC probe speaks plaintext and cannot reach a TLS port, so readiness
// and liveness are asked over plain HTTP on the metrics port.
TEST_F(TlsTest, WithTlsOnTheProbesAnswerPlainHttpOnTheMetricsPort) {
  StartTlsServer({"--metrics_listen=127.0.0.1:0"});
  const size_t at = startup_line_.find("metrics port ");
  ASSERT_NE(at, std::string::npos) << startup_line_;
  const int metrics_port =
      std::atoi(startup_line_.c_str() + at + strlen("metrics port "));
  ASSERT_GT(metrics_port, 0) << startup_line_;

  // What kubelet's grpc: probe would do: a plaintext Health/Check.
  absl::StatusOr<HealthCheckResponse::ServingStatus> grpc_probe =
      CheckHealth(port_);
  EXPECT_EQ(grpc_probe.status().code(), absl::StatusCode::kUnavailable)
      << grpc_probe.status();

  auto ready = PlainHttpGet(metrics_port, "/readyz");
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, "SERVING\n");
  auto live = PlainHttpGet(metrics_port, "/livez");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "ok\n");
}

TEST_F(TlsTest, AClientNotTrustingTheCaFails) {
  StartTlsServer();
  ClientTls other_ca;
  other_ca.root_certs = TestCertificates::Read(certs().other_ca());
  grpc::Status status = Probe(*TlsStub(other_ca));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
}

TEST_F(TlsTest, TheServerNameIsCheckedAndCanBeOverridden) {
  StartTlsServer();
  ClientTls localhost = TrustingTheCa();
  localhost.target_name_override = "localhost";
  EXPECT_EQ(Probe(*TlsStub(localhost)).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ClientTls wrong_name = TrustingTheCa();
  wrong_name.target_name_override = "not-the-server.example";
  EXPECT_EQ(Probe(*TlsStub(wrong_name)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheClientCa) {
  StartMutualTlsServer();
  grpc::Status without = Probe(*TlsStub(TrustingTheCa()));
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE)
      << without.error_message();
  grpc::Status other_ca = Probe(*TlsStub(TrustingTheCaPresenting(
      certs().other_ca_client_cert(), certs().other_ca_client_key())));
  EXPECT_EQ(other_ca.error_code(), grpc::StatusCode::UNAVAILABLE)
      << other_ca.error_message();
  grpc::Status right = Probe(*TlsStub(
      TrustingTheCaPresenting(certs().client_cert(), certs().client_key())));
  EXPECT_EQ(right.error_code(), grpc::StatusCode::NOT_FOUND)
      << right.error_message();
  // And a whole batch over mTLS.
  stub_ = TlsStub(
      TrustingTheCaPresenting(certs().client_cert(), certs().client_key()));
  Streamed s = Fetch(Batch({upstream_->Url("/a?n=1")}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.results().at(0).outcome(), v1::OUTCOME_OK);
}

TEST_F(TlsTest, AKeyThatDoesNotMatchTheCertificateStopsStartUp) {
  EXPECT_EQ(RunServerThatMustNotStart({"--tls_cert=" + certs().server_cert(),
                                       "--tls_key=" + certs().client_key()}),
            1);
}

TEST_F(TlsTest, AnUnreadableCertificateFileStopsStartUpAsAUsageError) {
  EXPECT_EQ(
      RunServerThatMustNotStart({"--tls_cert=" + certs().Path("no-such.crt"),
                                 "--tls_key=" + certs().server_key()}),
      2);
}

TEST_F(TlsTest, CliFetchesOverTlsTrustingTheGivenCa) {
  StartTlsServer();
  const std::string server = absl::StrCat("--server=127.0.0.1:", port_);
  const std::string url = upstream_->Url("/a?n=1");
  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", server, "--tls-ca", certs().ca(), url}, &lines),
            0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], R"("outcome":"ok")")) << lines[0];

  // By name, with the name the certificate carries.
  lines.clear();
  EXPECT_EQ(RunCli({"fetch", server, "--tls-ca=" + certs().ca(),
                    "--tls-server-name=localhost", url},
                   &lines),
            0);
  EXPECT_EQ(lines.size(), 1u);

  // The variable instead of the flag.
  lines.clear();
  EXPECT_EQ(RunCli({"fetch", server, url}, &lines,
                   {"BATCHFETCH_TLS_CA=" + certs().ca()}),
            0);
  EXPECT_EQ(lines.size(), 1u);
}

TEST_F(TlsTest, CliFailsWithoutTlsOrTrustInTheServersCa) {
  StartTlsServer();
  const std::string server = absl::StrCat("--server=127.0.0.1:", port_);
  const std::string url = upstream_->Url("/a?n=1");
  std::vector<std::string> lines;
  // Plaintext against the TLS port.
  EXPECT_EQ(RunCli({"fetch", server, url}, &lines), 2);
  // The system's roots do not include the test CA.
  EXPECT_EQ(RunCli({"fetch", server, "--tls", url}, &lines), 2);
  EXPECT_EQ(
      RunCli({"fetch", server, "--tls-ca", certs().other_ca(), url}, &lines),
      2);
  // A name the certificate does not carry.
  EXPECT_EQ(RunCli({"fetch", server, "--tls-ca", certs().ca(),
                    "--tls-server-name=not-the-server.example", url},
                   &lines),
            2);
  EXPECT_TRUE(lines.empty());
}

TEST_F(TlsTest, CliPresentsItsClientCertificateForMutualTls) {
  StartMutualTlsServer();
  const std::string server = absl::StrCat("--server=127.0.0.1:", port_);
  const std::string ca = "--tls-ca=" + certs().ca();
  const std::string url = upstream_->Url("/a?n=1");
  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", server, ca, url}, &lines), 2);
  EXPECT_EQ(RunCli({"fetch", server, ca,
                    "--tls-cert=" + certs().other_ca_client_cert(),
                    "--tls-key=" + certs().other_ca_client_key(), url},
                   &lines),
            2);
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(RunCli({"fetch", server, ca, "--batch-id=mtls-cli",
                    "--tls-cert=" + certs().client_cert(),
                    "--tls-key=" + certs().client_key(), url},
                   &lines),
            0);
  EXPECT_EQ(lines.size(), 1u);

  // `get` too, with everything from the variables.
  lines.clear();
  EXPECT_EQ(RunCli({"get", server, "mtls-cli"}, &lines,
                   {"BATCHFETCH_TLS_CA=" + certs().ca(),
                    "BATCHFETCH_TLS_CERT=" + certs().client_cert(),
                    "BATCHFETCH_TLS_KEY=" + certs().client_key()}),
            0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], R"("state":"done")")) << lines[0];
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch
