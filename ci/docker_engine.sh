#!/usr/bin/env bash
# Make a Docker engine available for CI and the container tests (idempotent).
# Installs docker.io, debootstrap and iptables if missing, starts dockerd, waits for `docker info`.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: ci/docker_engine.sh [--help]

Ensures a running Docker engine on this machine:
  1. apt-get installs docker.io, debootstrap and iptables when missing (needs root);
  2. starts dockerd in the background (log: \$DOCKERD_LOG, default /var/log/dockerd.log)
     unless 'docker info' already works;
  3. polls 'docker info' for up to \$DOCKER_WAIT seconds (default 60).
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

log=${DOCKERD_LOG:-/var/log/dockerd.log}
wait_s=${DOCKER_WAIT:-60}

if docker info >/dev/null 2>&1; then
    echo "docker engine already running"
    exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "starting dockerd (log: $log)"
    nohup dockerd >"$log" 2>&1 &
fi

for ((i = 0; i < wait_s; i++)); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine is up"
        exit 0
    fi
    sleep 1
done
echo "error: docker engine did not come up within ${wait_s}s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
