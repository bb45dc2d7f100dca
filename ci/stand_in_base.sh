#!/usr/bin/env bash
# Build a local stand-in for the Dockerfile's base image (CI/tests only, never published).
# debootstrap a minimal bookworm from this machine's apt mirror, add python3/pip/venv + host CAs.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: ci/stand_in_base.sh [--help] [--force]

Tags a debootstrap'ed Debian bookworm with python3, pip, venv and ca-certificates as
\$BASE_TAG (default python:3.11-slim-bookworm), so 'docker build' works without Docker Hub.
Test-only extras baked into the stand-in: this host's CA bundle (for a TLS-intercepting
proxy), the wheels in \$WHEEL_DIR (default /opt/wheels), the torch and torchvision wheels that
requirements.txt pins with everything they need (fetched once with this host's pip, which takes
them from its local package files; cached in \$CACHE_DIR/torch-wheels), and an /etc/pip.conf
pointing pip at them, so that building the image installs them without downloading ~3 GB.
Skips work when the tag already exists with the same torch pins (--force rebuilds).
Env: MIRROR (default: read from /etc/apt sources), CACHE_DIR (default /var/cache/flower-ci).
USAGE
}

force=0
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    --force) force=1 ;;
    "") ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

tag=${BASE_TAG:-python:3.11-slim-bookworm}
rootfs_tag=flower-ci/bookworm-minbase:latest
cache=${CACHE_DIR:-/var/cache/flower-ci}
wheels=${WHEEL_DIR:-/opt/wheels}
suite=bookworm

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mapfile -t torch_pins < <(grep -E '^(torch|torchvision)==' "$here/../requirements.txt")
((${#torch_pins[@]} == 2)) || { echo "error: requirements.txt must pin torch and torchvision" >&2; exit 1; }
pins_label="${torch_pins[*]}"
if ((!force)) && [[ $(docker image inspect -f '{{index .Config.Labels "flower-ci.torch-wheels"}}' \
    "$tag" 2>/dev/null) == "$pins_label" ]]; then
    echo "stand-in base $tag already exists (with $pins_label)"
    exit 0
fi

# First bookworm mirror in the apt sources: deb822 *.sources or classic one-line lists.
find_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v s="$suite" '
            /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
            END { if (uri != "" && hit) print uri }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        sed -E 's/\[[^]]*\]//' "$f" | awk -v s="$suite" '$1 == "deb" && $3 == s { print $2 }'
    done
}

rootfs_tar=$cache/$suite-minbase.tar
if ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
    if [[ ! -s $rootfs_tar ]]; then
        command -v debootstrap >/dev/null || { echo "error: debootstrap missing: run ci/docker_engine.sh" >&2; exit 1; }
        mirror=${MIRROR:-$(find_mirror | head -n 1)}
        [[ -n $mirror ]] || { echo "error: no $suite mirror in /etc/apt sources; set MIRROR" >&2; exit 1; }
        echo "debootstrap $suite from $mirror (cached in $cache) ..."
        mkdir -p "$cache"
        work=$(mktemp -d "$cache/rootfs.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
            "$suite" "$work" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
            { tail -n 20 "$cache/debootstrap.log" >&2; echo "error: debootstrap failed" >&2; exit 1; }
        rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/*
        tar -C "$work" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
        rm -rf "$work"
        trap - EXIT
    fi
    docker import "$rootfs_tar" "$rootfs_tag" >/dev/null
fi

# The pinned torch pair and its CUDA wheels, once: this host's pip finds them on local disk.
torch_wheels=$cache/torch-wheels
if [[ $(cat "$torch_wheels/.pins" 2>/dev/null) != "$pins_label" ]]; then
    echo "fetching ${torch_pins[*]} and their dependencies into $torch_wheels ..."
    rm -rf "$torch_wheels"
    mkdir -p "$torch_wheels"
    # this host's Python (3.11, x86_64, glibc >= 2.28) takes the same wheels as the stand-in's
    python3 -m pip download --quiet --only-binary=:all: -d "$torch_wheels" "${torch_pins[@]}" ||
        { echo "error: could not fetch ${torch_pins[*]}" >&2; exit 1; }
    echo "$pins_label" >"$torch_wheels/.pins"
fi

# Test-only layer: host CAs, local wheels, pip config. Never part of the published image.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/ca" "$ctx/wheels"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-bundle.crt"
cp /usr/local/share/ca-certificates/* "$ctx/ca/" 2>/dev/null || true
cp "$wheels"/*.whl "$ctx/wheels/" 2>/dev/null || true
ln "$torch_wheels"/*.whl "$ctx/wheels/" 2>/dev/null || cp "$torch_wheels"/*.whl "$ctx/wheels/"
printf '[global]\nfind-links = /opt/wheels\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ctx/pip.conf"
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs_tag
LABEL flower-ci.torch-wheels="$pins_label"
COPY ca/ /usr/local/share/ca-certificates/
COPY ca-bundle.crt /etc/ssl/certs/ca-certificates.crt
COPY wheels/ /opt/wheels/
COPY pip.conf /etc/pip.conf
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
DOCKERFILE
docker build -q -t "$tag" "$ctx" >/dev/null
echo "stand-in base $tag ready: $(docker run --rm "$tag" python3 --version)"
