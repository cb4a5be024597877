# Multi-stage build: a small, non-root runtime image with a HEALTHCHECK.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/timproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/timproxy --create-home timproxy \
    && install -d -o timproxy -g timproxy -m 0755 /var/lib/timproxy/ca
# /var/lib/timproxy/ca: where docker-compose.yml's timproxy-ca volume keeps the interception CA
# (a new volume takes this directory's owner, so `gen-ca` can write into it as timproxy).
COPY --from=build /src/target/release/timproxy /usr/local/bin/timproxy
COPY timproxy.example.yaml /etc/timproxy/timproxy.example.yaml
USER timproxy
WORKDIR /var/lib/timproxy
# inbound (client API + federation), information API; outbound 8093 and admin 1233 stay internal.
EXPOSE 8090 7777
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["timproxy", "check-health", "--url", "http://127.0.0.1:1233"]
ENTRYPOINT ["timproxy"]
CMD ["serve"]
