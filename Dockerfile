# Build: docker build -t frontgate .
# Run:   docker run --rm --network host -v /etc/frontgate:/etc/frontgate:ro frontgate
#        (host networking keeps the clients' real addresses; see deploy/docker-compose.yml)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin frontgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --home-dir /var/lib/frontgate frontgate \
    && install -d -o frontgate /var/lib/frontgate /etc/frontgate
COPY --from=build /src/target/release/frontgate /usr/local/bin/frontgate
COPY routes.example.yaml /etc/frontgate/routes.example.yaml
USER frontgate
# Binding :443 as a non-root user needs the capability (granted by docker run --cap-add or
# compose's cap_add; host networking with net.ipv4.ip_unprivileged_port_start also works).
ENTRYPOINT ["/usr/local/bin/frontgate"]
CMD ["run", "--config", "/etc/frontgate/routes.yaml"]
