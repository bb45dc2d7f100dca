"""Shared helpers for the container tests (tests/test_image.py, tests/test_build_and_push.py).
Real docker engine, loopback only, bounded waits; import explicitly (not a conftest).

Docker helpers: engine check, one cached image build per session, ports, polling.
"""

import functools
import os
import pathlib
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGE_TAG = "flower-classifier:test"  # the default (gpu, CUDA 13.0) variant
CPU_IMAGE_TAG = "flower-classifier:test-cpu"
BASE_IMAGE = "python:3.11-slim-bookworm"
PLATFORM = "linux/amd64"
BUILD_TIMEOUT_S = int(os.environ.get("FLOWER_TEST_BUILD_TIMEOUT", "2400"))


@functools.cache
def stand_in_torch() -> str:
    """The torch pins whose wheels the CI stand-in base carries ('' for a real base image)."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "-f", '{{index .Config.Labels "flower-ci.torch-wheels"}}',
         BASE_IMAGE], capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def torch_index_url(variant: str) -> str | None:
    """Index for torch/torchvision in test builds.

    FLOWER_TEST_TORCH_INDEX_URL wins. The gpu variant takes PyPI's CUDA 13.0 builds, which the
    CI stand-in base carries as local files. The cpu variant's PyTorch CPU index cannot be
    reached from CI, so there it installs the same local files (through PyPI's name); elsewhere
    None: the Dockerfile's default, download.pytorch.org/whl/cpu.
    """
    if "FLOWER_TEST_TORCH_INDEX_URL" in os.environ:
        return os.environ["FLOWER_TEST_TORCH_INDEX_URL"] or None
    if variant == "cpu" and stand_in_torch():
        return "https://pypi.org/simple"
    return None


def build_args(variant: str = "gpu") -> list[str]:
    """`docker build` arguments (besides -t/--platform) shared by every test build."""
    args = ["--build-arg", f"VARIANT={variant}"]
    index = torch_index_url(variant)
    if index:
        args += ["--build-arg", f"TORCH_INDEX_URL={index}"]
    return args


def build_args_env(variant: str = "gpu") -> str:
    """The same arguments as one string, for build_and_push.sh's BUILD_ARGS."""
    return shlex.join(build_args(variant))


def tool(name: str) -> str:
    """Path of a CLI tool: next to this Python (the test venv) first, then PATH."""
    local = pathlib.Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found; pip install -r tests/requirements-docker.txt")
    return found


def run(
    cmd: list[str], timeout: float = 120, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    """Run a command with captured text output; on failure fail the test with its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{shlex.join(cmd)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def require_docker() -> None:
    """Fail (never skip) when no Docker engine answers."""
    if shutil.which("docker") is None:
        pytest.fail("docker CLI not found: run ci/docker_engine.sh")
    try:
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        pytest.fail("Docker engine not running: run ci/docker_engine.sh")


@functools.cache
def _build(tag: str, variant: str) -> str:
    if not (REPO / "requirements.txt").is_file():
        raise RuntimeError(
            "requirements.txt is missing at the repo root; the image cannot be built"
        )
    cmd = ["docker", "build", "--platform", PLATFORM, *build_args(variant), "-t", tag, str(REPO)]
    log = pathlib.Path(tempfile.gettempdir()) / f"flower-docker-build-{variant}.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
    tail = log.read_text()[-6000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}); log {log}:\n{tail}")
    print(f"built {tag} in {time.monotonic() - start:.0f}s (log {log})", file=sys.stderr)
    return tag


def build_image(tag: str = IMAGE_TAG, variant: str = "gpu") -> str:
    """Build the repo's Dockerfile once per session and tag; fails the test on error."""
    require_docker()
    try:
        return _build(tag, variant)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"image build failed: {e}")


def image_id(tag: str) -> str | None:
    """The ID of the image tagged `tag`, or None when there is none."""
    proc = run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 60,
) -> tuple[int, dict, bytes]:
    """(status, headers, body) for one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def container_running(name: str) -> bool:
    proc = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.strip() == "true"


def logs(name: str) -> str:
    proc = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return proc.stdout + proc.stderr


def wait_http(url: str, timeout: float, container: str | None = None) -> None:
    """Poll GET url until 200, at most `timeout` s; fail early if `container` stops."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _, _ = http("GET", url, timeout=5)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as e:
            last = str(e)
        if container and not container_running(container):
            pytest.fail(
                f"container {container} stopped before {url} answered:\n{logs(container)[-4000:]}"
            )
        time.sleep(0.5)
    extra = f"\ncontainer logs:\n{logs(container)[-4000:]}" if container else ""
    pytest.fail(f"{url} not ready after {timeout}s ({last}){extra}")


def wait_exit(name: str, timeout: float) -> int:
    """Wait for a container to exit; return its exit code (fail after `timeout` s)."""
    try:
        proc = subprocess.run(
            ["docker", "wait", name], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"container {name} still running after {timeout}s:\n{logs(name)[-4000:]}")
    return int(proc.stdout.strip())


def remove(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
