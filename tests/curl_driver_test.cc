// MapCurlCode: every CURLcode class lands on its TransferResult.
#include "service/fetch/curl_driver.h"

#include <curl/curl.h>

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

}  // namespace
}  // namespace batchfetch
