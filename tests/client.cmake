# CLI argument parsing: no process, no server, no real stdin or environment.
# cli_server_target_test.cc: --server targets (address lists, dns:) and the
# load-balancing policy they get, dialling closed loopback ports only.
add_executable(cli_unit_tests cli_args_test.cc cli_server_target_test.cc)
target_link_libraries(cli_unit_tests PRIVATE batchfetch_cli batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(cli_unit_tests DISCOVERY_TIMEOUT 60)

# The CLI's --token-file: format and flag/variable resolution.
add_executable(cli_token_unit_tests cli_token_test.cc)
target_link_libraries(cli_token_unit_tests PRIVATE batchfetch_cli
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(cli_token_unit_tests DISCOVERY_TIMEOUT 60)

# `batchfetch fetch` flags of issue 11 (--output csv/ndjson, --retry,
# --retry-on, --per-host, --deadline-batch, --body) on the real binaries.
batchfetch_e2e_test(cli_fetch_e2e_test cli_fetch_e2e_test.cc)
