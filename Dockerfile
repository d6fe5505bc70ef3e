# Multi-stage build: compile in the Rust image, run from a slim one.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The service only: the benchmark (`conveyor-bench`) stays out of the image.
RUN cargo build --release --locked -p conveyor --bin conveyor && cp target/release/conveyor /conveyor

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 conveyor
COPY --from=build /conveyor /usr/local/bin/conveyor
USER conveyor
EXPOSE 8080
ENTRYPOINT ["conveyor"]
CMD ["run"]
