#!/usr/bin/env bash
# Runs the whole test suite: installs the pinned dev requirements into .venv, lints, runs pytest.
# Container tests need a Docker engine; ci/docker_engine.sh starts one on a bare Linux machine.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: ./run_tests.sh [PYTEST_ARGS...]

Creates .venv (python3 -m venv) with requirements-dev.txt, runs ruff, then pytest on tests/.
Extra arguments go to pytest, e.g. ./run_tests.sh -k invocations -x
Environment: PYTHON (default python3), VENV (default .venv).
TXT
}
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { usage; exit 0; }

cd "$(dirname "${BASH_SOURCE[0]}")"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "error: $python not found; install Python 3.11" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]]; then
  echo "==> creating $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
wanted="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  echo "==> installing requirements-dev.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip==26.3
  "$venv/bin/python" -m pip install --quiet -r requirements-dev.txt
  echo "$wanted" >"$stamp"
fi

echo "==> ruff"
"$venv/bin/ruff" check .
echo "==> pytest"
exec "$venv/bin/python" -m pytest tests "$@"
