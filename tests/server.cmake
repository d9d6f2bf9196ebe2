# service/server: flags and their environment variables.
add_executable(server_config_test server_config_test.cc)
target_link_libraries(server_config_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(server_config_test DISCOVERY_TIMEOUT 60)

# gRPC TLS and mTLS on the real binary, and the CLI's --tls* flags against
# it; certificates made at test time with the openssl CLI (skipped without).
batchfetch_e2e_test(tls_e2e_test tls_e2e_test.cc)
