# The store's pure logic (no database): error classification, value
# conversions, the give-up decision on a fake clock, grouping, paging,
# migration steps.
add_executable(store_unit_tests
  mysql_session_test.cc
  mysql_values_test.cc
  mysql_writer_unit_test.cc
  mysql_reader_unit_test.cc
  mysql_schema_unit_test.cc
  store_write_retry_policy_test.cc)
target_link_libraries(store_unit_tests PRIVATE batchfetch_store batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(store_unit_tests DISCOVERY_TIMEOUT 60)

# MysqlResultStore and its parts against a private MariaDB (and a TCP black
# hole in front of it). One CTest test so the instance is started once.
add_executable(store_test store_test.cc store_resume_test.cc
  store_retention_test.cc store_dedicated_session_test.cc)
target_link_libraries(store_test PRIVATE batchfetch_store batchfetch_test_support
  batchfetch_warnings GTest::gtest_main)
add_test(NAME store_test COMMAND store_test)
# Private MariaDB instances bootstrap badly side by side (ctest -j).
set_tests_properties(store_test PROPERTIES TIMEOUT 600 RESOURCE_LOCK mariadb)

# The durable local spool (no database): CRC-32C, the log format and its
# reader on hostile input, the record codec, ResultSpool on a temp dir.
add_executable(spool_unit_tests
  spool_crc32c_test.cc
  spool_log_test.cc
  spool_record_test.cc
  spool_result_spool_test.cc
  spooling_result_store_test.cc)
target_link_libraries(spool_unit_tests PRIVATE batchfetch_spool batchfetch_store
  batchfetch_warnings GTest::gtest_main Threads::Threads)
gtest_discover_tests(spool_unit_tests DISCOVERY_TIMEOUT 60)
