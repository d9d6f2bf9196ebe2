// MapCurlCode: every CURLcode class lands on its TransferResult. Options
// CurlDriver::Create checks (no transfer is made).
#include "service/fetch/curl_driver.h"

#include <curl/curl.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

TEST(MapCurlCode, MapsEachFailureClass) {
  EXPECT_EQ(MapCurlCode(CURLE_OK), TransferResult::kResponse);
  EXPECT_EQ(MapCurlCode(CURLE_OPERATION_TIMEDOUT), TransferResult::kTimeout);
  EXPECT_EQ(MapCurlCode(CURLE_COULDNT_RESOLVE_HOST), TransferResult::kDnsError);
  EXPECT_EQ(MapCurlCode(CURLE_COULDNT_RESOLVE_PROXY),
            TransferResult::kDnsError);
  EXPECT_EQ(MapCurlCode(CURLE_COULDNT_CONNECT), TransferResult::kConnectError);
  for (CURLcode tls :
       {CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION,
        CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE,
        CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_CLIENTCERT}) {
    EXPECT_EQ(MapCurlCode(tls), TransferResult::kTlsError) << tls;
  }
  EXPECT_EQ(MapCurlCode(CURLE_FILESIZE_EXCEEDED), TransferResult::kTooLarge);
  EXPECT_EQ(MapCurlCode(CURLE_UNSUPPORTED_PROTOCOL), TransferResult::kBlocked);
  for (CURLcode other : {CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING,
                         CURLE_PARTIAL_FILE, CURLE_WEIRD_SERVER_REPLY}) {
    EXPECT_EQ(MapCurlCode(other), TransferResult::kTransportError) << other;
  }
}

TEST(CurlDriverResolve, AcceptsCurlResolveEntries) {
  CurlDriver::Options options;
  options.resolve = {"api.example:443:203.0.113.7",
                     "api.example:80:10.0.0.1,10.0.0.2",
                     "v6.example:8443:[2001:db8::1]"};
  absl::StatusOr<std::unique_ptr<CurlDriver>> driver =
      CurlDriver::Create(options, nullptr);
  EXPECT_TRUE(driver.ok()) << driver.status();
}

TEST(CurlDriverResolve, RejectsAMalformedEntryNamingIt) {
  for (const char* entry :
       {"api.example:443", ":443:10.0.0.1", "api.example:0:10.0.0.1",
        "api.example:http:10.0.0.1", "api.example:443:not-an-ip",
        "api.example:443:[2001:db8::1", "api.example:443:10.0.0.1,",
        "-api.example:443:10.0.0.1", "+api.example:443:10.0.0.1"}) {
    CurlDriver::Options options;
    options.resolve = {entry};
    absl::StatusOr<std::unique_ptr<CurlDriver>> driver =
        CurlDriver::Create(options, nullptr);
    ASSERT_FALSE(driver.ok()) << entry;
    EXPECT_EQ(driver.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(driver.status().message(),
                                  absl::StrCat("resolve entry '", entry, "'")))
        << driver.status();
  }
}

}  // namespace
}  // namespace batchfetch
