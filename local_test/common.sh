# Shared helpers sourced by the local_test/ scripts: the Docker checks and GPU detection.
# Source it; it does nothing on its own.
# shellcheck shell=bash

# require_docker: fail with a clear message unless the docker CLI and its engine answer.
require_docker() {
    command -v docker >/dev/null 2>&1 || { echo "error: docker not found on PATH" >&2; exit 1; }
    docker info >/dev/null 2>&1 ||
        { echo "error: cannot reach the Docker engine; is it running?" >&2; exit 1; }
}

# docker_gpus: sets GPUS to (--gpus all) when Docker has an NVIDIA runtime, else to ().
# shellcheck disable=SC2034  # GPUS is read by the scripts that source this
docker_gpus() {
    GPUS=()
    if docker info --format '{{json .Runtimes}}' | grep -q nvidia; then
        GPUS=(--gpus all)
    fi
}
