# End to end: in-process and spawned servers, MariaDB, upstream, the CLI.
add_executable(service_test service_test.cc)
target_link_libraries(service_test PRIVATE batchfetch_server_lib batchfetch_test_support
  batchfetch_warnings GTest::gtest_main)
target_compile_definitions(service_test PRIVATE
  BATCHFETCH_SERVER_BINARY="$<TARGET_FILE:batchfetch_server>"
  BATCHFETCH_CLI_BINARY="$<TARGET_FILE:batchfetch>")
add_dependencies(service_test batchfetch_server batchfetch)
# One MariaDB per test process: run the end-to-end suite as one CTest test
# so the instance is started once, not once per case.
add_test(NAME service_test COMMAND service_test)
set_tests_properties(service_test PROPERTIES TIMEOUT 900 RESOURCE_LOCK mariadb)

# service/api: request translation, the executor, the reactor's deadline
# rule. No server, no network.
add_executable(api_unit_tests
  executor_test.cc
  fetch_batch_reactor_test.cc
  request_translation_test.cc)
target_link_libraries(api_unit_tests PRIVATE batchfetch_api batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(api_unit_tests DISCOVERY_TIMEOUT 60)
