#!/usr/bin/env bash
# Start a throw-away local image registry (Debian's docker-registry) for CI and tests.
# Listens on 127.0.0.1 only, no auth, filesystem storage; prints HOST:PORT when it answers.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: ci/local_registry.sh [--help] [PORT] [DIR]

Starts docker-registry in the background on 127.0.0.1:PORT (default 5000), storing
blobs, its config, log and pid file (registry.pid) under DIR (default: a new temp dir).
Waits up to 30 s for GET /v2/ to answer, then prints HOST:PORT.
Stop it with: kill "\$(cat DIR/registry.pid)". Installs the docker-registry package if missing.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac

port=${1:-5000}
dir=${2:-$(mktemp -d /tmp/local-registry.XXXXXX)}
[[ $port =~ ^[0-9]+$ ]] || { echo "error: PORT must be a number, got '$port'" >&2; exit 2; }

if ! command -v docker-registry >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || { echo "error: docker-registry missing and not root to install it" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
fi

mkdir -p "$dir/storage"
cat >"$dir/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
CONFIG

docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"

for _ in $(seq 60); do
    if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
        echo "127.0.0.1:$port"
        exit 0
    fi
    kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null || break
    sleep 0.5
done
echo "error: registry on 127.0.0.1:$port did not answer; log:" >&2
tail -n 20 "$dir/registry.log" >&2 || true
exit 1
