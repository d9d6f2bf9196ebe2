#!/usr/bin/env bash
# Builds the installed Debian Abseil again, from Debian's own source package
# (same version, same patches, same absl/base/options.h), with
# -fsanitize=thread, and prints the install prefix on the last line of stdout.
#
# Why: absl::Mutex blocks on futexes that ThreadSanitizer cannot see; only an
# Abseil compiled with -fsanitize=thread tells TSan about its locks (through
# the annotations in absl/synchronization). Debian's libabsl is not, so a TSan
# build against it reports races on every absl::Mutex-protected field.
#
# The result is cached under $BATCHFETCH_VAR_DIR (default var/, git-ignored),
# keyed by the Abseil and clang versions, so a machine builds it once.
# The source is fetched with a private apt state (a deb-src list for the
# Debian mirror in var/), so the system's apt configuration is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

VAR_DIR=$(realpath -m "${BATCHFETCH_VAR_DIR:-var}")
ABSL_VERSION=$(dpkg-query -W -f='${Version}' libabsl-dev)
CLANG_VERSION=$(clang++ -dumpversion)
PREFIX="$VAR_DIR/tsan-deps/abseil-$ABSL_VERSION-clang$CLANG_VERSION"

if [[ -e "$PREFIX/.complete" ]]; then
  echo "$PREFIX"
  exit 0
fi

WORK="$VAR_DIR/tsan-deps/work"
rm -rf "$WORK" "$PREFIX"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cat >"$WORK/apt/sources.list" <<EOF
deb-src http://deb.debian.org/debian $CODENAME main
deb-src http://deb.debian.org/debian $CODENAME-updates main
deb-src http://deb.debian.org/debian-security $CODENAME-security main
EOF
APT_OPTS=(
  -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$WORK/apt/lists"
  -o "Dir::Cache=$WORK/apt/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)"
)
echo "tsan-abseil: fetching the abseil $ABSL_VERSION source package" >&2
apt-get "${APT_OPTS[@]}" -qq update >&2
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" -qq source --download-only "abseil=$ABSL_VERSION" >&2)
dpkg-source -x "$WORK/src/abseil_$ABSL_VERSION.dsc" "$WORK/src/abseil" >&2
# The whole point is to match the headers we compile against.
cmp "$WORK/src/abseil/absl/base/options.h" /usr/include/absl/base/options.h >&2

echo "tsan-abseil: building with -fsanitize=thread into $PREFIX" >&2
cmake -S "$WORK/src/abseil" -B "$WORK/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_C_FLAGS="-fsanitize=thread" \
  -DCMAKE_CXX_STANDARD=17 -DABSL_PROPAGATE_CXX_STD=ON \
  -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
  -DBUILD_TESTING=OFF -DABSL_BUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" >&2
cmake --build "$WORK/build" -j"${BATCHFETCH_JOBS:-$(nproc)}" >&2
cmake --install "$WORK/build" >&2
touch "$PREFIX/.complete"
rm -rf "$WORK"
echo "$PREFIX"
