"""Starts the real `container/serve` entrypoint on a free loopback port (bounded waits; SIGTERM,
then SIGKILL, at the end), and RuntimeProxy: SageMaker runtime's invoke path in front of it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "container" / "serve"


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
        self.process = subprocess.Popen([sys.executable, str(SERVE)], env=self.env,
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
        while time.monotonic() - started < timeout:
            if "from now on" in self.log:
                return time.monotonic() - started
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log}")
            time.sleep(0.2)
        raise AssertionError(f"the precision check did not end in {timeout} s:\n{self.log}")

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


class RuntimeProxy:
    """SageMaker runtime's part, on loopback: boto3's `POST /endpoints/NAME/invocations` goes to
    the real server's `/invocations` with the headers SageMaker passes on. Records each body.
    A container error comes back as SageMaker sends it: HTTP 424, a ModelError carrying the
    container's status and body as OriginalStatusCode and OriginalMessage."""

    FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")

    def __init__(self, server: ServerProcess) -> None:
        self.bodies: list[bytes] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = self.path.split("/")
                if len(parts) != 4 or parts[1] != "endpoints" or parts[3] != "invocations":
                    return self.answer(404, b'{"message": "not an InvokeEndpoint path"}')
                proxy.bodies.append(body)
                headers = {k: self.headers[k] for k in proxy.FORWARDED if k in self.headers}
                reply = server.post(body, headers.pop("Content-Type", None), **headers)
                if reply.ok:
                    return self.answer(reply.status_code, reply.content)
                kind = "client" if reply.status_code < 500 else "server"
                error = {"ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
                         "Message": f"Received {kind} error ({reply.status_code}) from primary "
                                    f"with message \"{reply.text}\"",
                         "OriginalStatusCode": reply.status_code, "OriginalMessage": reply.text}
                return self.answer(424, json.dumps(error).encode(), "ModelError")

            def answer(self, status: int, body: bytes, error_type: str | None = None) -> None:
                self.send_response(status)
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RuntimeProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
