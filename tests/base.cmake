# service/base: the clock and the structured event log.
add_executable(base_unit_tests log_test.cc outage_log_test.cc)
target_link_libraries(base_unit_tests PRIVATE batchfetch_base batchfetch_warnings
  GTest::gmock GTest::gtest_main)
gtest_discover_tests(base_unit_tests DISCOVERY_TIMEOUT 60)
