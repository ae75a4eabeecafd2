# mmsim in a container: `docker build -t mmsim .`, then
#   docker run --rm -v "$PWD/hunt-out:/out" mmsim hunt --scenarios 2000 --seed 1 --out /out
# (see docs/HUNT.md; examples/k8s and examples/slurm run one hunt sharded).

# Build stage: the release binary.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY crates crates
COPY scenarios scenarios
COPY src src
COPY tests tests
RUN cargo build --release --locked --bin mmsim

# Runtime stage: the binary alone on a slim image.
FROM debian:bookworm-slim
COPY --from=build /src/target/release/mmsim /usr/local/bin/mmsim
WORKDIR /out
ENTRYPOINT ["mmsim"]
CMD ["--help"]
