#!/usr/bin/env bash
# Installs every Debian 12 package batchfetch needs to build, test and benchmark.
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail

# What building the two binaries needs (BATCHFETCH_DEPS=build: the
# Dockerfile's build stage, without tests).
PACKAGES=(
  build-essential cmake pkg-config ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libcurl4-openssl-dev rapidjson-dev libmysqlcppconn-dev libssl-dev
  libcivetweb-dev  # the embedded HTTP server of GET /metrics (--metrics_listen)
)
# The tests too (the default).
if [[ "${BATCHFETCH_DEPS:-test}" != build ]]; then
  PACKAGES+=(
    git libgtest-dev libgmock-dev zlib1g-dev
    mariadb-server mariadb-client
    python3 curl openssl jq  # openssl: the TLS tests make their certificates with it; jq: the grpcurl cookbook test
  )
fi
# scripts/fuzz.sh and scripts/sanitize.sh (both run by .ci/run): clang with
# compiler-rt (libFuzzer, the ASan/UBSan/TSan runtimes: libclang-rt-14-dev
# is only a Recommends of clang-14), ninja, and dpkg-source to unpack
# Debian's Abseil source package for the TSan build (scripts/tsan-abseil.sh).
if [[ "${BATCHFETCH_SANITIZER_DEPS:-0}" == 1 ]]; then
  PACKAGES+=(clang libclang-rt-14-dev ninja-build dpkg-dev xz-utils)
fi
# scripts/lint-deploy.sh: kubectl (its built-in kustomize renders
# deploy/k8s offline) and yamllint. Debian's kubectl is kubernetes-client;
# a kubectl already on PATH (from another package) is used as it is, since
# both install /usr/bin/kubectl.
if [[ "${BATCHFETCH_DEPLOY_DEPS:-0}" == 1 ]]; then
  PACKAGES+=(yamllint)
  command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)
fi
# scripts/container-smoke.sh: podman and buildah build and run the image
# (with runc: crun refuses some VMs' hybrid cgroups), debootstrap makes the
# Debian base image from the apt mirror, so no registry is needed.
if [[ "${BATCHFETCH_CONTAINER_DEPS:-0}" == 1 ]]; then
  PACKAGES+=(podman buildah runc debootstrap)
fi
if [[ "${BATCHFETCH_BENCH_DEPS:-0}" == 1 ]]; then
  PACKAGES+=(nginx-light libnginx-mod-http-echo python3-aiohttp gnuplot-nox linux-perf)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Do not let the package start a system-wide MariaDB: we run private instances.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
