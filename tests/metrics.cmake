# service/metrics: the exposition format and the metric cells (pure), and
# the civetweb endpoint on a loopback port.
add_executable(metrics_unit_tests exposition_test.cc metrics_http_server_test.cc)
target_link_libraries(metrics_unit_tests PRIVATE batchfetch_metrics
  batchfetch_metrics_http batchfetch_warnings absl::status absl::statusor
  absl::strings GTest::gtest_main)
gtest_discover_tests(metrics_unit_tests DISCOVERY_TIMEOUT 60)
