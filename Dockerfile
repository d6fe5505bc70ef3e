# Multi-stage build: compile in the Rust image, run from a slim one.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/conveyor /conveyor

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 conveyor
COPY --from=build /conveyor /usr/local/bin/conveyor
USER conveyor
EXPOSE 8080
ENTRYPOINT ["conveyor"]
CMD ["run"]
