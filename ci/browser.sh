#!/usr/bin/env bash
# Make Debian's chromium and chromedriver available for the page's browser tests (idempotent).
# Installs chromium and chromium-driver with apt-get when either is missing, then checks both run.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: ci/browser.sh [--help]

Ensures the browser that tests/test_page.py drives with Selenium:
  1. apt-get installs chromium, chromium-driver and fonts-liberation (text for the
     screenshot) when 'chromium' or 'chromedriver' is missing from PATH (needs root);
  2. prints both versions, which fails if either does not start.
The tests fail, not skip, without them.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "error: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: need root to apt-get install chromium chromium-driver" >&2
        exit 1
    fi
    echo "installing chromium and chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-liberation >/dev/null
fi

chromium --version
chromedriver --version
