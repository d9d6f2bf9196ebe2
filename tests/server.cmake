# service/server: flags and their environment variables.
add_executable(server_config_test server_config_test.cc)
target_link_libraries(server_config_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(server_config_test DISCOVERY_TIMEOUT 60)

# gRPC TLS and mTLS on the real binary, and the CLI's --tls* flags against
# it; certificates made at test time with the openssl CLI (skipped without).
batchfetch_e2e_test(tls_e2e_test tls_e2e_test.cc)

# The health checker's decision (database ping, engine heartbeat, drain)
# with a fake clock and hand-made probes.
add_executable(health_checker_test health_checker_test.cc)
target_link_libraries(health_checker_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(health_checker_test DISCOVERY_TIMEOUT 60)

# The lease keeper's schedule (renew every quarter lease, sweep every half),
# its log lines and counter, on a fake clock with a fake store.
add_executable(lease_keeper_test lease_keeper_test.cc)
target_link_libraries(lease_keeper_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(lease_keeper_test DISCOVERY_TIMEOUT 60)

# The drain on SIGTERM, health from our own grpc.health.v1 (grpcurl with
# reflection only), health through a MariaDB outage, fail-fast start-up.
batchfetch_e2e_test(lifecycle_e2e_test lifecycle_e2e_test.cc)
batchfetch_e2e_test(outage_e2e_test outage_e2e_test.cc)

# kill -9 of the real binary mid-batch, then a restart: the batch is marked
# interrupted by the new process's lease sweep, every streamed result is
# stored.
batchfetch_e2e_test(crash_e2e_test crash_e2e_test.cc)

# The metrics the server exposes (CollectServerMetrics), without a server.
add_executable(server_metrics_test server_metrics_test.cc)
target_link_libraries(server_metrics_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(server_metrics_test DISCOVERY_TIMEOUT 60)

# GET /metrics on --metrics_listen during and after a batch, in process and
# on the real binary.
batchfetch_e2e_test(metrics_e2e_test metrics_e2e_test.cc)
