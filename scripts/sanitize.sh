#!/usr/bin/env bash
# Runs the test suite under the sanitizers (README, "Sanitizers"):
#   asan: the whole suite with AddressSanitizer (leaks included) and UBSan
#         (BATCHFETCH_SANITIZE, gcc, RelWithDebInfo) in build-asan/;
#   tsan: the tests of the concurrent parts that link no gRPC (fetch engine,
#         batch, store, base, test support) with ThreadSanitizer (clang,
#         against an Abseil built with TSan by scripts/tsan-abseil.sh) in
#         build-tsan/.
# Fails on a failing test and on any sanitizer report from any process (the
# test binaries and the server binaries they start): every report goes to a
# file under <build dir>/sanitizer-reports/ (log_path) and is printed here.
#
# Environment: SANITIZE_STEPS ("asan tsan" by default, or one of them),
# ASAN_BUILD_DIR, TSAN_BUILD_DIR. Extra arguments go to ctest (asan step).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BATCHFETCH_SANITIZER_DEPS=1 scripts/install-deps.sh
STEPS=${SANITIZE_STEPS:-asan tsan}
JOBS=$(nproc)

# Prints every report in $1 and fails when there is one.
check_reports() {
  local dir=$1 found=0 f
  for f in "$dir"/*; do
    [[ -e "$f" ]] || continue
    found=1
    echo "=== sanitizer report $f"
    cat "$f"
  done
  if ((found)); then
    echo "sanitize: sanitizer reports above (in $dir)"
    return 1
  fi
}

run_asan() {
  local dir=${ASAN_BUILD_DIR:-build-asan} start
  start=$(date +%s)
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBATCHFETCH_SANITIZE=ON -DBATCHFETCH_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j"$JOBS"
  echo "sanitize: asan build took $(($(date +%s) - start)) s"
  local reports="$ROOT/$dir/sanitizer-reports"
  rm -rf "$reports" && mkdir -p "$reports"
  # abort_on_error: a report ends the process at once, so the test fails
  # even when the report is in a server child. LSan runs at exit.
  export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:log_path=$reports/asan:suppressions=$ROOT/scripts/sanitizers/asan.supp"
  export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitizers/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
  local status=0
  (cd "$dir" && ctest --output-on-failure --timeout 900 "$@") || status=$?
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  check_reports "$reports" || status=1
  echo "sanitize: asan step took $(($(date +%s) - start)) s (status $status)"
  return "$status"
}

# The TSan subset: every test executable whose code runs threads and that
# can be built without gRPC (whose Debian build is not TSan-instrumented and
# links Debian's uninstrumented Abseil: see README "Sanitizers").
TSAN_TESTS=(
  fetch_unit_tests fetch_engine_test fetch_policy_test
  curl_driver_epoll_failure_test
  batch_unit_tests
  store_unit_tests store_test spool_unit_tests
  base_unit_tests support_selftest
)

run_tsan() {
  local dir=${TSAN_BUILD_DIR:-build-tsan} start absl_prefix
  start=$(date +%s)
  absl_prefix=$(scripts/tsan-abseil.sh | tail -n 1)
  echo "sanitize: TSan Abseil ready in $(($(date +%s) - start)) s: $absl_prefix"
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATCHFETCH_TSAN=ON \
    -DBATCHFETCH_BUILD_BENCH=OFF \
    -DCMAKE_PREFIX_PATH="$absl_prefix" -Dabsl_DIR="$absl_prefix/lib/cmake/absl" \
    >/dev/null
  cmake --build "$dir" -j"$JOBS" --target "${TSAN_TESTS[@]}"
  echo "sanitize: tsan build took $(($(date +%s) - start)) s"
  local reports="$ROOT/$dir/sanitizer-reports" status=0 test
  rm -rf "$reports" && mkdir -p "$reports"
  for test in "${TSAN_TESTS[@]}"; do
    # Honest only when every Abseil in the process is the instrumented one.
    if ldd "$dir/tests/$test" | grep -q 'libabsl'; then
      echo "sanitize: $test links Debian's uninstrumented libabsl; not a TSan test"
      status=1
      continue
    fi
  done
  export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$ROOT/scripts/sanitizers/tsan.supp"
  for test in "${TSAN_TESTS[@]}"; do
    echo "sanitize: tsan $test"
    local t0=$(date +%s)
    (cd "$dir/tests" && "./$test" --gtest_brief=1) || {
      echo "sanitize: tsan $test FAILED"
      status=1
    }
    echo "sanitize: tsan $test took $(($(date +%s) - t0)) s"
  done
  unset TSAN_OPTIONS
  check_reports "$reports" || status=1
  echo "sanitize: tsan step took $(($(date +%s) - start)) s (status $status)"
  return "$status"
}

overall=0
for step in $STEPS; do
  case "$step" in
    asan) run_asan "$@" || overall=1 ;;
    tsan) run_tsan || overall=1 ;;
    *) echo "sanitize: unknown step '$step' (asan, tsan)"; exit 2 ;;
  esac
done
exit "$overall"
