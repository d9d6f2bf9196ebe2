# batchfetch: build on Debian 12 with the repo's own scripts, ship only the
# runtime libraries.  Build from the repo root:  docker build -t batchfetch .

FROM debian:bookworm AS build
WORKDIR /src
# Dependencies first, so this layer is reused when only sources change.
# Only what the build needs (no MariaDB, GoogleTest or Python).
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN BATCHFETCH_DEPS=build scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# Build outside the source tree so a local build/ in the context cannot clash.
RUN cmake -S . -B /tmp/build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATCHFETCH_BUILD_TESTS=OFF \
 && cmake --build /tmp/build -j"$(nproc)" --target batchfetch_server batchfetch \
 && strip /tmp/build/batchfetch_server /tmp/build/batchfetch

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libcurl4 libmysqlcppconn7v5 libabsl20220623 libcivetweb1 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 batchfetch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin batchfetch \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/batchfetch/spool
COPY --from=build /tmp/build/batchfetch_server /tmp/build/batchfetch /usr/local/bin/
USER 10001:10001
# The local spool (docs/RELIABILITY.md): results MySQL cannot take are kept
# here until it is back. A volume, so it stays writable under --read-only;
# give it a volume that outlives the container to keep them across restarts.
ENV BATCHFETCH_SPOOL_DIR=/var/lib/batchfetch/spool
VOLUME ["/var/lib/batchfetch/spool"]
# gRPC; metrics when --metrics_listen=:9090 is given.
EXPOSE 50051 9090
# Configure with BATCHFETCH_* environment variables or flags after the image
# name. The server takes flags only; for the CLI use --entrypoint batchfetch.
ENTRYPOINT ["/usr/local/bin/batchfetch_server"]
