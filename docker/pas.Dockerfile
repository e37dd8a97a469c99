# The `pas` image: every stage but the node agent, and `pas loadgen` for the
# chart's example StatefulSet. The CPU libtorch comes from the same recipe
# as on a developer's machine (scripts/setup.sh libtorch).
#
#   docker build -f docker/pas.Dockerfile -t ghcr.io/pas/pas:0.1.0 .

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
ENV PAS_CACHE=/opt/pas-cache
RUN scripts/setup.sh libtorch
ENV LIBTORCH=/opt/pas-cache/libtorch-2.11.0-cpu LIBTORCH_CXX11_ABI=1
ENV LD_LIBRARY_PATH=/opt/pas-cache/libtorch-2.11.0-cpu/lib
COPY . .
RUN cargo build --release --locked -p pas-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/pas-cache/libtorch-2.11.0-cpu/lib/ /usr/lib/pas/libtorch/
COPY --from=build /src/target/release/pas /usr/bin/pas
# The traces `pas loadgen` and `pas replay` can play (MIT, see their README).
COPY testdata/traces/ /usr/share/pas/traces/
ENV LD_LIBRARY_PATH=/usr/lib/pas/libtorch
USER 65532:65532
ENTRYPOINT ["/usr/bin/pas"]
