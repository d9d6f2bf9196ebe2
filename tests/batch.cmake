# service/batch: pure logic with fakes; no gRPC, no network, no sleeps.
add_executable(batch_unit_tests
  batch_id_test.cc
  batch_run_test.cc
  result_conversion_test.cc)
target_link_libraries(batch_unit_tests PRIVATE batchfetch_batch batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(batch_unit_tests DISCOVERY_TIMEOUT 60)
