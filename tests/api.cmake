# End to end: in-process and spawned servers, MariaDB, upstream, the CLI.
batchfetch_e2e_test(service_test service_test.cc)
# Bearer tokens, SIGHUP reload, tenancy, active-batch limits, CLI token.
batchfetch_e2e_test(auth_e2e_test auth_e2e_test.cc)
# Request safety: smuggling headers, control characters, credentials in
# URLs, message size; against the in-process server and a loopback upstream.
batchfetch_e2e_test(request_safety_e2e_test request_safety_e2e_test.cc)
# FetchBatchRequest.resume: stored results first, only the missing fetched.
batchfetch_e2e_test(resume_e2e_test resume_e2e_test.cc)
# Callers first: detached batches, WatchBatch (live and across replicas),
# CancelBatch across replicas, ListBatches paging and tokens, owners.
batchfetch_e2e_test(callers_e2e_test callers_e2e_test.cc)
# Result sizes and paging (issue 11): max_body_bytes and its stream-safe
# default, big rows cut in ListResults, page tokens, more_may_come,
# body_text.
batchfetch_e2e_test(result_size_e2e_test result_size_e2e_test.cc)

# service/api: request translation, the executor, the reactor's deadline
# rule. No server, no network.
add_executable(api_unit_tests
  executor_test.cc
  fetch_batch_reactor_test.cc
  page_token_test.cc
  batch_list_token_test.cc
  batch_broadcaster_test.cc
  batch_takeover_test.cc
  request_translation_test.cc
  watch_batch_reactor_test.cc)
target_link_libraries(api_unit_tests PRIVATE batchfetch_api batchfetch_warnings
  GTest::gtest_main)
gtest_discover_tests(api_unit_tests DISCOVERY_TIMEOUT 60)

# service/api auth and admission: the token file and authenticator, the
# active-batch limiter. No server, no network.
add_executable(auth_unit_tests
  active_batch_limiter_test.cc
  token_authenticator_test.cc)
target_link_libraries(auth_unit_tests PRIVATE batchfetch_api
  batchfetch_warnings GTest::gtest_main)
gtest_discover_tests(auth_unit_tests DISCOVERY_TIMEOUT 60)
