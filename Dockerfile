# syntax=docker/dockerfile:1
# Build: docker build -t frontgate .      (BuildKit, the default builder since Docker 23)
# Run:   docker run -d --name frontgate --network host \
#          -v /etc/frontgate:/etc/frontgate:ro -v frontgate-state:/var/lib/frontgate frontgate
#        (host networking keeps the clients' real addresses; see deploy/docker-compose.yml)
#
# The image runs as user frontgate, uid:gid 10001:10001, and binds :443 through a file
# capability on the binary (Docker gives a non-root user none of --cap-add's capabilities;
# `--security-opt no-new-privileges` would disable it). Without a mount it serves its own copy
# of routes.example.yaml (127.0.0.1:8443, metrics on 127.0.0.1:9100). Mount your
# /etc/frontgate over it, with the route file readable by that group only (it holds the
# MTProto secrets):
#   install -d -m 0755 /etc/frontgate
#   install -m 0640 -o root -g 10001 routes.yaml /etc/frontgate/routes.yaml
# The HEALTHCHECK runs `frontgate health`, which asks the route file's metrics.listen: keep a
# `metrics: { listen: 127.0.0.1:9100 }` in it.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# A dev-dependency by path: cargo reads its manifest even to build the binary alone.
COPY tests/common/kit ./tests/common/kit
RUN cargo build --release --locked --bin frontgate

FROM debian:bookworm-slim
# The binary is written and given CAP_NET_BIND_SERVICE in one layer: a capability set in one
# stage or layer is lost on the way to the next by some builders.
RUN --mount=type=bind,from=build,source=/src/target/release/frontgate,target=/tmp/frontgate \
    apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && install -m 0755 /tmp/frontgate /usr/local/bin/frontgate \
    && setcap cap_net_bind_service=+ep /usr/local/bin/frontgate \
    && apt-get purge -y libcap2-bin \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 frontgate \
    && useradd --system --uid 10001 --gid frontgate --no-create-home \
       --home-dir /var/lib/frontgate --shell /usr/sbin/nologin frontgate \
    && install -d -m 0750 -o frontgate -g frontgate /var/lib/frontgate \
    && install -d -m 0755 /etc/frontgate
COPY --chown=root:frontgate --chmod=0640 routes.example.yaml /etc/frontgate/routes.yaml
USER frontgate
EXPOSE 443
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/frontgate", "health", "--config", "/etc/frontgate/routes.yaml"]
ENTRYPOINT ["/usr/local/bin/frontgate"]
CMD ["run", "--config", "/etc/frontgate/routes.yaml"]
