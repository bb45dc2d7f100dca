"""The real `serve` process (flower_classifier.harness.server.ServerProcess, re-exported here for
the tests) and RuntimeProxy: SageMaker runtime's invoke path in front of it.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from flower_classifier.harness.server import ServerProcess, free_port
from flower_classifier.serving.file_types import type_of_name

__all__ = ["RuntimeProxy", "ServerProcess", "free_port", "served_answer"]


def served_answer(server: ServerProcess, photo: Path) -> dict:
    """The server's JSON answer for one photo file, sent with its file's content type (a 200)."""
    response = server.post(photo.read_bytes(), type_of_name(photo.name))
    assert response.status_code == 200, response.text
    return response.json()


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
