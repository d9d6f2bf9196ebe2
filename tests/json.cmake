# JsonCleaner: links neither MySQL nor curl nor gRPC.
add_executable(json_unit_tests json_cleaner_test.cc)
target_link_libraries(json_unit_tests PRIVATE batchfetch_json batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(json_unit_tests DISCOVERY_TIMEOUT 60)
