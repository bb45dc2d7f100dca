"""Starts the real `serve` entrypoint (container/serve, as the image runs it) on a free loopback
port with SageMaker's environment: bounded waits; SIGTERM, then SIGKILL, at the end.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

# container/serve beside the package (the image's /opt/program/serve); an installed wheel has no
# such file, and runs the same main() that the script does
SERVE = Path(__file__).resolve().parents[2] / "serve"


def serve_command() -> list[str]:
    """The command SageMaker's `docker run IMAGE serve` amounts to, with this Python."""
    if SERVE.is_file():
        return [sys.executable, str(SERVE)]
    return [sys.executable, "-c", "from flower_classifier.serving.server import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`serve` on 127.0.0.1 with the given model dir and extra environment."""

    def __init__(self, model_dir: Path, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SM_MODEL_DIR": str(model_dir),
                    "SAGEMAKER_BIND_TO_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
                    # a fresh TMPDIR: no precision decision cached by an earlier test's server
                    "TMPDIR": tempfile.mkdtemp(prefix="serve-tmp-"), **(env or {})}
        logs = Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_path = log_path or logs / f"serve-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(serve_command(), env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll /ping until 200; returns seconds from start. Fails if the process dies."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log}")
            try:
                if requests.get(self.url + "/ping", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve not ready after {timeout} s:\n{self.log}")

    def wait_decided(self, timeout: float = 300.0) -> float | None:
        """After wait_ready(): wait until the background precision check has switched the
        model (its log line "... from now on"); returns the seconds waited, or None when no
        check runs (a forced precision, PRECISION_CHECK=startup). Fails after `timeout`
        seconds or if the process dies."""
        if "the precision check runs once /ping answers" not in self.log:
            return None
        started = time.monotonic()
        self.wait_logged("from now on", timeout=timeout, what="the precision check's end")
        return time.monotonic() - started

    def wait_logged(self, *texts: str, timeout: float = 60.0, what: str = "",
                    count: int = 1) -> str:
        """The log once it holds every one of `texts`, each at least `count` times (one line
        per worker: a worker that forks late logs late). Fails after `timeout` seconds or if
        the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log
            if all(log.count(text) >= count for text in texts):
                return log
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what or ', '.join(map(repr, texts))} not logged in {timeout} s:\n{log}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def post(self, body: bytes, content_type: str | None = "image/jpeg", **headers):
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(self.url + "/invocations", data=body, headers=headers, timeout=120)
