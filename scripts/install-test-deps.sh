#!/usr/bin/env bash
# System packages the tests need, from Debian, installed only where missing: a Docker engine
# (the tests start their own dockerd on a private socket), busybox for locally made images,
# Debian's docker-compose to check the compose files, Chromium for the Web UI browser test
# (tests/e2e; driven headless, never a browser a tool downloads), redis-server for the Redis
# Streams source and rabbitmq-server for the RabbitMQ one (the tests start their own on free
# ports; no PyPI package ships them), prometheus for the alert rules (promtool tests them; a
# Prometheus of the test's own scrapes a worker), and HAProxy as the TLS terminator in front of a
# secured Temporal (stunnel cannot offer ALPN h2, which gRPC clients require). Needs root (as on
# CI); without it, it says what is missing and those tests skip (except under CI, where they
# fail).
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# The static build: test images hold busybox alone, with no libc beside it.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# RabbitMQ for the rabbitmq queue kind, with its management plugin and Erlang's epmd; the tests
# start their own broker on free ports (/usr/sbin is not on every user's PATH).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 \
  || missing+=(rabbitmq-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: not root; missing ${missing[*]} (those tests will skip)" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
