# CLI argument parsing: no process, no server, no real stdin or environment.
add_executable(cli_unit_tests cli_args_test.cc)
target_link_libraries(cli_unit_tests PRIVATE batchfetch_cli batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(cli_unit_tests DISCOVERY_TIMEOUT 60)

# The CLI's --token-file: format and flag/variable resolution.
add_executable(cli_token_unit_tests cli_token_test.cc)
target_link_libraries(cli_token_unit_tests PRIVATE batchfetch_cli
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(cli_token_unit_tests DISCOVERY_TIMEOUT 60)
