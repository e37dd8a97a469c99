# The `pas-agent` image: the node agent alone, a static binary (musl) on a
# distroless base; no libtorch, no InfluxDB client (scripts/check-agent-deps.sh).
#
#   docker build -f docker/agent.Dockerfile -t ghcr.io/pas/pas-agent:0.1.0 .

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pas-agent --target x86_64-unknown-linux-musl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/pas-agent /usr/bin/pas-agent
USER 65532:65532
ENTRYPOINT ["/usr/bin/pas-agent"]
