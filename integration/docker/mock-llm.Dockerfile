# syntax=docker/dockerfile:1
# The mock LLM (integration/mock-llm) built from source. Build context: the
# repository root (the mock is a member of the Cargo workspace and Cargo.lock
# pins its dependencies); mock-llm.Dockerfile.dockerignore keeps target/,
# .venv/ and .run/ out of the context.
#
# rust:1-bookworm rather than plain rust:1 so that the builder's glibc matches
# the debian:bookworm-slim runtime stage (rust:1 follows Debian's newest
# release and its binaries may need a newer glibc than bookworm's).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mock-llm \
 && cp target/release/mock-llm /usr/local/bin/mock-llm

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/mock-llm /usr/local/bin/mock-llm
# --host 0.0.0.0: reachable from the envoy container (the default is 127.0.0.1).
ENTRYPOINT ["mock-llm", "--host", "0.0.0.0"]
CMD ["--port", "18001", "--name", "primary"]
