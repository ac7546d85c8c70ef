# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in a layer of their own (cached until Cargo.toml or
# Cargo.lock change), then the two release binaries, then a slim non-root runtime image holding
# only the binaries and CA certificates. That image comes in two targets, which differ only in
# their command and health check: `runtime` (the api, the default: the last stage) and `worker`
# (`docker build --target worker .`).

FROM rust:1-bookworm AS build
WORKDIR /src
# The SQL is checked at compile time against the prepared query data in .sqlx/ (copied with
# the sources below), so the build needs no database. .cargo/config.toml says the same; this
# holds even if it is left out.
ENV SQLX_OFFLINE=true

# 1. Dependencies only: stub sources with the real manifests, so this layer is reused across
#    code changes.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY api/Cargo.toml api/Cargo.toml
COPY worker/Cargo.toml worker/Cargo.toml
COPY shared/Cargo.toml shared/Cargo.toml
COPY queue/Cargo.toml queue/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p api/src worker/src shared/src queue/src bench/src \
 && echo 'fn main() {}' > api/src/main.rs && touch api/src/lib.rs \
 && echo 'fn main() {}' > worker/src/main.rs && touch worker/src/lib.rs \
 && touch shared/src/lib.rs queue/src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --locked -p orderly-api -p orderly-worker || true

# 2. The real sources (migrations are embedded into the binaries at compile time) and the query
#    data .sqlx/ the SQL is checked against.
COPY . .
RUN touch api/src/main.rs api/src/lib.rs worker/src/main.rs worker/src/lib.rs shared/src/lib.rs queue/src/lib.rs \
 && cargo build --release --locked -p orderly-api -p orderly-worker \
 && install -Dm755 target/release/orderly-api /out/orderly-api \
 && install -Dm755 target/release/orderly-worker /out/orderly-worker

FROM debian:bookworm-slim AS runtime-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home orderly
COPY --from=build /out/orderly-api /out/orderly-worker /usr/local/bin/
WORKDIR /app
USER orderly
ENV RUST_LOG=info LOG_FORMAT=json PORT=8080 MAIL_DIR=/app/var/mail STORAGE_DIR=/app/var/storage

# The worker: nothing listens on the api's port here, so it has a health check of its own: this
# container's worker heartbeats in the worker registry and Redis and PostgreSQL answer. The start
# period covers its start-up (schedules and report schedules are set up before the first job).
FROM runtime-base AS worker
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/orderly-worker", "healthcheck"]
CMD ["orderly-worker"]

# The api, the default target. A worker run from this image (`orderly-worker` as the command)
# must bring the worker's health check with it, as docker-compose.yml's worker service does.
FROM runtime-base AS runtime
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/orderly-api", "healthcheck"]
CMD ["orderly-api"]
