# webdis (HTTP front of Redis) for integration/docker-compose.yml: Debian's own
# package, the same one `make up` installs natively (bookworm: 0.1.9), rather
# than the nicolas/webdis image, which bundles its own Redis and a different
# webdis version.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends webdis \
 && rm -rf /var/lib/apt/lists/*
COPY webdis.json /etc/webdis/llmgate.json
EXPOSE 17379
CMD ["webdis", "/etc/webdis/llmgate.json"]
