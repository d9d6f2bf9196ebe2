// A failed epoll_ctl must fail only the transfer that owns the socket, never
// the whole multi handle (libcurl 7.88 marks a multi dead when its socket
// callback returns -1). Linked with -Wl,--wrap=epoll_ctl, so the driver's
// calls go through __wrap_epoll_ctl below.
#include <sys/epoll.h>

#include <atomic>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "service/fetch/curl_driver.h"
#include "tests/support/test_upstream.h"

namespace {
// The n-th EPOLL_CTL_ADD from now fails with ENOSPC (0: none).
std::atomic<int> fail_add_countdown{0};
}  // namespace

extern "C" int __real_epoll_ctl(int epfd, int op, int fd, epoll_event* ev);
extern "C" int __wrap_epoll_ctl(int epfd, int op, int fd, epoll_event* ev) {
  if (op == EPOLL_CTL_ADD && fail_add_countdown.load() > 0 &&
      fail_add_countdown.fetch_sub(1) == 1) {
    errno = ENOSPC;
    return -1;
  }
  return __real_epoll_ctl(epfd, op, fd, ev);
}

namespace batchfetch {
namespace {

void ExpectOnlyOneTransferFails(bool lazy_epoll, int multi_handles) {
  auto upstream = testing::TestUpstream::Start();
  ASSERT_TRUE(upstream.ok());
  CurlDriver::Options options;
  options.lazy_epoll = lazy_epoll;
  options.multi_handles = multi_handles;
  auto driver = CurlDriver::Create(options, nullptr);
  ASSERT_TRUE(driver.ok());
  constexpr int kTransfers = 20;
  std::vector<FetchSpec> specs(kTransfers);
  fail_add_countdown.store(3);
  for (int i = 0; i < kTransfers; ++i) {
    specs[i].url = (*upstream)->Url(absl::StrCat("/x/", i, "?delay_ms=200"));
    TransferSpec spec;
    spec.token.index = static_cast<uint32_t>(i);
    spec.request = &specs[i];
    spec.timeout = absl::Seconds(5);
    ASSERT_TRUE((*driver)->Start(spec).ok());
  }
  std::vector<CompletedTransfer> done;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (done.size() < kTransfers && absl::Now() < give_up) {
    (*driver)->Poll(absl::Milliseconds(100), &done);
  }
  fail_add_countdown.store(0);
  ASSERT_EQ(done.size(), static_cast<size_t>(kTransfers));
  int ok = 0;
  for (const CompletedTransfer& c : done) {
    if (c.response.result == TransferResult::kResponse) {
      ++ok;
    } else {
      EXPECT_EQ(c.response.result, TransferResult::kTransportError);
      EXPECT_TRUE(absl::StrContains(c.response.error, "epoll_ctl"))
          << c.response.error;
    }
  }
  EXPECT_EQ(ok, kTransfers - 1);
  EXPECT_EQ((*driver)->running(), 0);
}

TEST(CurlDriverEpollFailure, FailsOnlyItsTransferWithEagerRegistration) {
  ExpectOnlyOneTransferFails(/*lazy_epoll=*/false, /*multi_handles=*/1);
}

TEST(CurlDriverEpollFailure, FailsOnlyItsTransferWithLazyRegistration) {
  ExpectOnlyOneTransferFails(/*lazy_epoll=*/true, /*multi_handles=*/4);
}

}  // namespace
}  // namespace batchfetch
