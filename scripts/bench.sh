#!/usr/bin/env bash
# Installs the benchmark's extra packages (nginx + echo module, aiohttp,
# gnuplot), builds, and runs bench/run.py. Arguments go to bench/run.py,
# e.g. scripts/bench.sh --runs 5 --chart docs/bench-throughput.png
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHFETCH_BENCH_DEPS=1 scripts/build.sh -DCMAKE_BUILD_TYPE=Release
ulimit -n 65536 2>/dev/null || true
exec /usr/bin/python3 bench/run.py "$@"
