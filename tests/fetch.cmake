# Pure parts of the fetch engine: no network, no sleeps.
add_executable(fetch_unit_tests
  retry_policy_test.cc request_validation_test.cc scheduler_test.cc
  curl_driver_test.cc egress_rules_test.cc url_redaction_test.cc)
target_link_libraries(fetch_unit_tests PRIVATE batchfetch_fetch batchfetch_warnings
  CURL::libcurl absl::random_random GTest::gtest_main)
gtest_discover_tests(fetch_unit_tests DISCOVERY_TIMEOUT 60)

# The fetch engine against a real loopback upstream.
add_executable(fetch_engine_test fetch_engine_test.cc)
target_link_libraries(fetch_engine_test PRIVATE batchfetch_fetch batchfetch_test_support
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(fetch_engine_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

add_executable(fetch_policy_test fetch_policy_test.cc)
target_link_libraries(fetch_policy_test PRIVATE batchfetch_fetch batchfetch_test_support
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(fetch_policy_test DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

# epoll_ctl failures, injected by wrapping the symbol at link time.
add_executable(curl_driver_epoll_failure_test curl_driver_epoll_failure_test.cc)
target_link_libraries(curl_driver_epoll_failure_test PRIVATE batchfetch_fetch
  batchfetch_test_support batchfetch_warnings GTest::gtest_main)
target_link_options(curl_driver_epoll_failure_test PRIVATE -Wl,--wrap=epoll_ctl)
gtest_discover_tests(curl_driver_epoll_failure_test DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 60)
# The egress policy end to end: reused connections, redirects, pinned names,
# upstream TLS and --ca_bundle.
batchfetch_e2e_test(egress_e2e_test egress_e2e_test.cc)
# Hostile upstreams (broken framing, endless headers or body, resets, bad
# JSON, redirect loops, silence) mixed with normal URLs in one batch, and
# oversized values that must still be stored.
batchfetch_e2e_test(hostile_upstream_e2e_test hostile_upstream_e2e_test.cc)
