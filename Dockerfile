# syntax=docker/dockerfile:1
# The worker image: `registrar worker` as a non-root user, health-checked through /healthz.
#
#   docker build -t agentcore-registrar .
#   docker run --rm -e AWS_REGION=us-east-1 -e REGISTRY_URL=... -e REGISTRAR_QUEUE_URL=... agentcore-registrar
#
# Stage 1 builds the one binary with the workspace's lock file; stage 2 is distroless (glibc,
# CA certificates, no shell, no package manager), so the health check is the binary itself.

FROM rust:1.95-slim-bookworm AS build
# rust-toolchain.toml names `stable`; use the image's toolchain instead of downloading one.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never
# jemalloc (the worker's allocator) is built from C sources with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p registrar-worker --bin registrar \
    && install -m 0755 target/release/registrar /registrar

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /registrar /usr/local/bin/registrar
# 65532 is distroless's `nonroot`.
USER 65532:65532
ENV REGISTRAR_LISTEN=0.0.0.0:8080 \
    REGISTRAR_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz \
    REGISTRAR_LOG_FORMAT=json \
    REGISTRAR_LOG=info
EXPOSE 8080
# The worker drains on SIGTERM within REGISTRAR_SHUTDOWN_GRACE (25 s), inside ECS's 30 s
# stopTimeout (infra/cloudformation/registrar.yaml).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/registrar", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/registrar"]
CMD ["worker"]
