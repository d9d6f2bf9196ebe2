# service/server: flags and their environment variables.
add_executable(server_config_test server_config_test.cc)
target_link_libraries(server_config_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(server_config_test DISCOVERY_TIMEOUT 60)
