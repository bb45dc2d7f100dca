"""The Flask app: SageMaker's GET /ping and POST /invocations, plus /execution-parameters and
the page to try the model (GET /, /model-info, /samples; SageMaker never routes to them).
Every error is a JSON {"error": ...} with the right status; tracebacks go to the log only.
"""
from __future__ import annotations

import json
import logging
import threading

from flask import Flask, Response, request
from gunicorn.http.body import ChunkedReader, LengthReader
from werkzeug.exceptions import HTTPException

from ..environment import Environment
from ..errors import BadRequest, PayloadTooLarge, ServingError
from . import page
from .batcher import name_os_thread
from .content_types import CUSTOM_ATTRIBUTES, JSON, check_accept, top_k_from
from .encoder import error_body
from .handler import Handler
from .model_info import model_info

log = logging.getLogger(__name__)
HTTP_MESSAGES = {
    404: "not found; this server answers GET /ping, POST /invocations, "
         "GET /execution-parameters and, to try the model in a browser, GET /",
    405: "method not allowed; use GET /ping and POST /invocations",
}


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=JSON)


def read_input(stream, size: int) -> bytes:
    """Up to `size` bytes of the request body. gunicorn's wsgi.input reads a body 1 KiB per
    turn of a Python loop, copying the rest of each socket chunk back every turn (30 ms of held
    GIL for 6 MB; benoitc/gunicorn#2596, fixed in gunicorn 27, whose rewritten worker drops
    keep-alive connections under load); the reader under it takes any size in one call."""
    reader = getattr(stream, "reader", None)
    if isinstance(reader, (LengthReader, ChunkedReader)) and not stream.buf.tell():
        return reader.read(size)
    return stream.read(size)


class Routes:
    """The app's handlers: each route and error handler is one method, on the handler and the
    settings the server loaded."""

    def __init__(self, handler: Handler, env: Environment) -> None:
        self.handler, self.env = handler, env

    def ping(self) -> Response:
        return Response(status=200)

    def invocations(self) -> Response:
        check_accept(request.accept_mimetypes)
        k = top_k_from(request.headers.get(CUSTOM_ATTRIBUTES), self.env.top_k,
                       self.handler.num_classes)
        body = self.handler.invoke(self.read_body(), request.headers.get("Content-Type"), k)
        return _json(body)

    def read_body(self) -> bytes:
        limit = self.env.max_payload_bytes
        length = request.content_length
        stream = request.environ["wsgi.input"]
        if length is not None:
            if length > limit:
                raise PayloadTooLarge(self.payload_message())
            data = read_input(stream, length)
            if len(data) < length:
                raise BadRequest(f"body ended after {len(data)} of its Content-Length of "
                                 f"{length} bytes")
            return data
        # Chunked upload: read one byte more than the limit and refuse if it is there.
        data = read_input(stream, limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(self.payload_message())
        return data

    def payload_message(self) -> str:
        return (f"payload over the limit of {self.env.max_payload_mb:g} MB "
                f"(SAGEMAKER_MAX_PAYLOAD_IN_MB)")

    def execution_parameters(self) -> Response:
        # What a transform job should use; SAGEMAKER_* values (a job's own) are reported back.
        env, batcher = self.env, self.handler.batcher
        return _json(json.dumps({
            "MaxConcurrentTransforms": env.max_concurrent_transforms or (
                batcher.max_batch * batcher.lanes * env.workers),
            "BatchStrategy": env.batch_strategy.upper(),
            "MaxPayloadInMB": int(env.max_payload_mb),
        }).encode())

    def try_it(self, name: str | None = None) -> Response:
        # model_info as it is now: the background precision check changes what serves
        status, content_type, body = page.answer(request.path, self.env.calibration_dir,
                                                 model_info(self.handler, self.env))
        return Response(body, status=status, content_type=content_type, headers=page.HEADERS)

    def serving_error(self, error: ServingError) -> Response:
        if error.status >= 500:
            log.error("%s: %s", type(error).__name__, error)
        return _json(error_body(str(error)), error.status)

    def http_error(self, error: HTTPException) -> Response:
        if error.code == 413:
            message = self.payload_message()
        else:
            message = HTTP_MESSAGES.get(error.code, (error.description or error.name).strip())
        response = _json(error_body(message), error.code or 500)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    def unexpected(self, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json(error_body("internal server error; see the server logs"), 500)


REQUEST_THREAD = "request"  # the OS name of gunicorn's request threads, as top -H shows them
_named = threading.local()


def name_request_thread() -> None:
    """Name the thread handling this request REQUEST_THREAD in the OS, once per thread:
    `top -H` and the benchmark then tell decoding, HTTP and JSON apart from the lanes' forwards
    (and the OpenMP or OpenVINO threads those start, which take other names)."""
    if not getattr(_named, "done", False):
        name_os_thread(REQUEST_THREAD)
        _named.done = True


# (rule, endpoint, method): every route the app answers; the page's four share try_it
ROUTES = (
    ("/ping", "ping", "GET"),
    ("/invocations", "invocations", "POST"),
    ("/execution-parameters", "execution_parameters", "GET"),
    ("/", "try_it", "GET"),
    ("/model-info", "try_it", "GET"),
    ("/samples", "try_it", "GET"),
    ("/samples/<path:name>", "try_it", "GET"),
)


def create_app(handler: Handler, env: Environment) -> Flask:
    """The Flask app: ROUTES to Routes' methods, and its error handlers (most specific first)."""
    app = Flask("flower_classifier")
    app.config["MAX_CONTENT_LENGTH"] = env.max_payload_bytes
    routes = Routes(handler, env)
    app.before_request(name_request_thread)
    for rule, endpoint, method in ROUTES:
        app.add_url_rule(rule, endpoint, getattr(routes, endpoint), methods=[method])
    app.register_error_handler(ServingError, routes.serving_error)
    app.register_error_handler(HTTPException, routes.http_error)
    app.register_error_handler(Exception, routes.unexpected)
    return app
