#include "tests/support/test_certificates.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch::testing {
namespace {

// Extensions for the certificates, so the result does not depend on the
// system's openssl.cnf.
constexpr char kOpensslConfig[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
)";

}  // namespace

bool TestCertificates::OpensslAvailable() {
  return std::system("command -v openssl >/dev/null 2>&1") == 0;
}

absl::StatusOr<std::unique_ptr<TestCertificates>> TestCertificates::Make() {
  std::string dir =
      absl::StrCat(::testing::TempDir(), "batchfetch_certs_XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError("mkdtemp failed");
  }
  std::unique_ptr<TestCertificates> certs(new TestCertificates(dir));
  std::ofstream(certs->Path("openssl.cnf")) << kOpensslConfig;
  // EC P-256 keys: quick to make, and gRPC takes them.
  const std::string new_key =
      "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-config openssl.cnf";
  const std::vector<std::string> commands = {
      // The CA the server and the CLI trust, and one they do not.
      absl::StrCat("openssl req -x509 ", new_key,
                   " -extensions ca -subj /CN=batchfetch-test-ca"
                   " -days 2 -keyout ca.key -out ca.crt"),
      absl::StrCat("openssl req -x509 ", new_key,
                   " -extensions ca -subj /CN=batchfetch-other-ca"
                   " -days 2 -keyout other-ca.key -out other-ca.crt"),
      // The server, for 127.0.0.1 and localhost.
      absl::StrCat("openssl req -new ", new_key,
                   " -subj /CN=localhost -keyout server.key"
                   " -out server.csr"),
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key"
      " -set_serial 2 -days 2 -extfile openssl.cnf -extensions server"
      " -out server.crt",
      // A client of the trusted CA and one of the other CA.
      absl::StrCat("openssl req -new ", new_key,
                   " -subj /CN=client -keyout client.key"
                   " -out client.csr"),
      "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key"
      " -set_serial 3 -days 2 -extfile openssl.cnf -extensions client"
      " -out client.crt",
      absl::StrCat("openssl req -new ", new_key,
                   " -subj /CN=rogue -keyout rogue.key -out rogue.csr"),
      "openssl x509 -req -in rogue.csr -CA other-ca.crt"
      " -CAkey other-ca.key -set_serial 4 -days 2 -extfile openssl.cnf"
      " -extensions client -out rogue.crt",
  };
  for (const std::string& command : commands) {
    const std::string shell =
        absl::StrCat("cd '", dir, "' && ", command, " >>openssl.log 2>&1");
    if (std::system(shell.c_str()) != 0) {
      return absl::InternalError(absl::StrCat(
          "failed: ", command, "\n", Read(certs->Path("openssl.log"))));
    }
  }
  return certs;
}

TestCertificates::TestCertificates(std::string dir) : dir_(std::move(dir)) {}

TestCertificates::~TestCertificates() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string TestCertificates::Path(const std::string& name) const {
  return absl::StrCat(dir_, "/", name);
}

std::string TestCertificates::Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace batchfetch::testing
