#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang, ASan+UBSan) into
# build-fuzz/ (or $FUZZ_BUILD_DIR) and runs each for a bounded time.
# Fails when any target finds a crash, leak, sanitizer report or broken
# invariant; the input that did it is saved under var/fuzz/artifacts/.
#
# Environment:
#   FUZZ_SECONDS   time per target (default 60)
#   FUZZ_TARGETS   space-separated subset (default: all)
#   FUZZ_BUILD_DIR build directory (default build-fuzz)
# Extra arguments go to every libFuzzer run (e.g. -jobs=2, -dict=...).
#
# The working corpus of each target (what it found so far, seeded from
# tests/fuzz/corpus/<target>/) is kept in var/fuzz/corpus/<target>/, so
# later runs on the same machine start where the last one stopped. To keep
# a crash as a regression test, copy its input into tests/fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."

BATCHFETCH_SANITIZER_DEPS=1 scripts/install-deps.sh
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGETS=(${FUZZ_TARGETS:-json_cleaner request_validation retry_after egress_address spool_record})
VAR_DIR=${BATCHFETCH_VAR_DIR:-var}/fuzz

start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATCHFETCH_FUZZ=ON \
  -DBATCHFETCH_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]/#/fuzz_}"
echo "fuzz: built ${#TARGETS[@]} targets in $(($(date +%s) - start)) s"

# Sanitizer reports abort the run (libFuzzer then saves the input).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for target in "${TARGETS[@]}"; do
  corpus="$VAR_DIR/corpus/$target"
  artifacts="$VAR_DIR/artifacts"
  log="$VAR_DIR/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "fuzz: $target for ${SECONDS_PER_TARGET} s"
  # -max_len: room for a URL just past kMaxUrlLength (8 KiB).
  # -timeout: one input taking this long is a finding (a hang).
  if "$BUILD_DIR/tests/fuzz_$target" \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=12000 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$target-" \
      "$@" "$corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$log" | tr '\n' ' ' || true
    echo
  else
    echo "fuzz: $target FAILED; the log ($log) ends:"
    tail -n 60 "$log"
    failed+=("$target")
  fi
done

echo "fuzz: finished in $(($(date +%s) - start)) s"
if ((${#failed[@]})); then
  echo "fuzz: findings in: ${failed[*]} (inputs in $VAR_DIR/artifacts/)"
  exit 1
fi
