# End to end: in-process and spawned servers, MariaDB, upstream, the CLI.
batchfetch_e2e_test(service_test service_test.cc)

# service/api: request translation, the executor, the reactor's deadline
# rule. No server, no network.
add_executable(api_unit_tests
  executor_test.cc
  fetch_batch_reactor_test.cc
  request_translation_test.cc)
target_link_libraries(api_unit_tests PRIVATE batchfetch_api batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(api_unit_tests DISCOVERY_TIMEOUT 60)
