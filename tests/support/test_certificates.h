#ifndef BATCHFETCH_TESTS_SUPPORT_TEST_CERTIFICATES_H_
#define BATCHFETCH_TESTS_SUPPORT_TEST_CERTIFICATES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace batchfetch::testing {

// Certificates for TLS tests, made at test time with the openssl CLI in a
// fresh directory under ::testing::TempDir(), which the destructor removes:
//   - a CA (ca()), and a server certificate it signed for IP 127.0.0.1 and
//     DNS localhost (CN=localhost; server_cert(), server_key());
//   - a client certificate (clientAuth) from the same CA (client_cert(),
//     client_key());
//   - another CA (other_ca()) and a client certificate it signed
//     (other_ca_client_cert(), other_ca_client_key()), for "not trusted".
// Keys are EC P-256 (quick to make; gRPC, libcurl and Python's ssl take
// them); certificates are valid for two days. All paths are PEM files.
// Making them runs openssl eight times, so a suite may make one set for all
// its tests.
//
// Thread-safety: immutable after Make(); const methods may be called
// concurrently.
class TestCertificates {
 public:
  // True when the openssl command is on PATH; without it Make() fails, so
  // tests check this first and skip.
  static bool OpensslAvailable();

  // Makes the files. On failure the error names the openssl command that
  // failed and carries its output.
  static absl::StatusOr<std::unique_ptr<TestCertificates>> Make();

  TestCertificates(const TestCertificates&) = delete;
  TestCertificates& operator=(const TestCertificates&) = delete;

  // Removes the directory and everything in it.
  ~TestCertificates();

  // The directory holding the files. Callers may put files of their own in
  // it; they are removed with it.
  const std::string& dir() const { return dir_; }
  // `name` in dir(); the file need not exist.
  std::string Path(const std::string& name) const;

  std::string ca() const { return Path("ca.crt"); }
  std::string server_cert() const { return Path("server.crt"); }
  std::string server_key() const { return Path("server.key"); }
  std::string client_cert() const { return Path("client.crt"); }
  std::string client_key() const { return Path("client.key"); }
  std::string other_ca() const { return Path("other-ca.crt"); }
  std::string other_ca_client_cert() const { return Path("rogue.crt"); }
  std::string other_ca_client_key() const { return Path("rogue.key"); }

  // The contents of the file at `path` (e.g. ca()); "" when unreadable.
  static std::string Read(const std::string& path);

 private:
  explicit TestCertificates(std::string dir);

  const std::string dir_;
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_TEST_CERTIFICATES_H_
