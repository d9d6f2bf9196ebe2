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

# The cancel poller's schedule, calls and log lines (CancelBatch from
# another replica), on a fake clock with a fake store.
add_executable(cancel_poller_test cancel_poller_test.cc)
target_link_libraries(cancel_poller_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(cancel_poller_test DISCOVERY_TIMEOUT 60)

# The retention keeper's schedule (a pass every interval, short pauses
# through a backlog), cutoff and log lines, on a fake clock with a fake
# store.
add_executable(retention_keeper_test retention_keeper_test.cc)
target_link_libraries(retention_keeper_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(retention_keeper_test DISCOVERY_TIMEOUT 60)

# PeriodicWorker, the keepers' thread: hooks, rounds until stopped, the
# wait for the first round (no sleeps).
add_executable(periodic_worker_test periodic_worker_test.cc)
target_link_libraries(periodic_worker_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(periodic_worker_test DISCOVERY_TIMEOUT 60)

# The server_started log line: the effective configuration, no secret.
add_executable(startup_log_test startup_log_test.cc)
target_link_libraries(startup_log_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(startup_log_test DISCOVERY_TIMEOUT 60)

# The drain on SIGTERM, health from our own grpc.health.v1 (grpcurl with
# reflection only), health through a MariaDB outage, fail-fast start-up.
batchfetch_e2e_test(lifecycle_e2e_test lifecycle_e2e_test.cc)
# The README's grpcurl cookbook, run as written with the real grpcurl and jq
# (skipped, saying so, without them).
batchfetch_e2e_test(grpcurl_cookbook_e2e_test grpcurl_cookbook_e2e_test.cc)
batchfetch_e2e_test(outage_e2e_test outage_e2e_test.cc)

# kill -9 of the real binary mid-batch, then a restart: the batch is marked
# interrupted by the new process's lease sweep, every streamed result is
# stored.
batchfetch_e2e_test(crash_e2e_test crash_e2e_test.cc)

# Takeover (issue 11): two server processes, a detached batch on the first,
# kill -9 of it; the second takes the batch over and finishes it, fetching
# only what was missing; a streamed batch stays interrupted.
batchfetch_e2e_test(takeover_e2e_test takeover_e2e_test.cc)

# A COMMIT whose answer is lost (a proxy between the binary and MariaDB cuts
# the connection after forwarding it): replayed, no duplicate, no loss.
batchfetch_e2e_test(lost_commit_e2e_test lost_commit_e2e_test.cc)

# The metrics the server exposes (CollectServerMetrics), without a server.
add_executable(server_metrics_test server_metrics_test.cc)
target_link_libraries(server_metrics_test PRIVATE batchfetch_server_lib
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(server_metrics_test DISCOVERY_TIMEOUT 60)

# GET /metrics on --metrics_listen during and after a batch, in process and
# on the real binary.
batchfetch_e2e_test(metrics_e2e_test metrics_e2e_test.cc)

# Scale-out: three server processes on one MariaDB behind one round_robin
# channel (and the CLI's ipv4: list); metrics, ids, cross-instance reads,
# and the batch_accepted / batch_finished / server_started log lines.
batchfetch_e2e_test(scale_out_e2e_test scale_out_e2e_test.cc)
