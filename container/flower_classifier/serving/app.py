"""The Flask app: SageMaker's GET /ping and POST /invocations, plus /execution-parameters and
the page to try the model (GET /, /model-info, /samples; SageMaker never routes to them).
Every error is a JSON {"error": ...} with the right status; tracebacks go to the log only.
"""
from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from gunicorn.http.body import ChunkedReader, LengthReader
from werkzeug.exceptions import HTTPException

from ..environment import Environment
from ..errors import BadRequest, PayloadTooLarge, ServingError
from . import page
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


def create_app(handler: Handler, env: Environment) -> Flask:
    app = Flask("flower_classifier")
    app.config["MAX_CONTENT_LENGTH"] = env.max_payload_bytes

    @app.get("/ping")
    def ping() -> Response:
        return Response(status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        check_accept(request.accept_mimetypes)
        k = top_k_from(request.headers.get(CUSTOM_ATTRIBUTES), env.top_k, handler.num_classes)
        body = handler.invoke(read_body(), request.headers.get("Content-Type"), k)
        return _json(body)

    def read_body() -> bytes:
        limit = env.max_payload_bytes
        length = request.content_length
        stream = request.environ["wsgi.input"]
        if length is not None:
            if length > limit:
                raise PayloadTooLarge(payload_message())
            data = read_input(stream, length)
            if len(data) < length:
                raise BadRequest(f"body ended after {len(data)} of its Content-Length of "
                                 f"{length} bytes")
            return data
        # Chunked upload: read one byte more than the limit and refuse if it is there.
        data = read_input(stream, limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(payload_message())
        return data

    def payload_message() -> str:
        return f"payload over the limit of {env.max_payload_mb:g} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)"

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        # What a transform job should use; SAGEMAKER_* values (a job's own) are reported back.
        return _json(json.dumps({
            "MaxConcurrentTransforms": env.max_concurrent_transforms or (
                handler.batcher.max_batch * handler.batcher.lanes * env.workers),
            "BatchStrategy": env.batch_strategy.upper(),
            "MaxPayloadInMB": int(env.max_payload_mb),
        }).encode())

    @app.get("/")
    @app.get("/model-info")
    @app.get("/samples")
    @app.get("/samples/<path:name>")
    def try_it(name: str | None = None) -> Response:
        status, content_type, body = page.answer(request.path, env.calibration_dir,
                                                   model_info(handler, env))
        return Response(body, status=status, content_type=content_type, headers=page.HEADERS)

    @app.errorhandler(ServingError)
    def serving_error(error: ServingError) -> Response:
        if error.status >= 500:
            log.error("%s: %s", type(error).__name__, error)
        return _json(error_body(str(error)), error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        if error.code == 413:
            message = payload_message()
        else:
            message = HTTP_MESSAGES.get(error.code, (error.description or error.name).strip())
        response = _json(error_body(message), error.code or 500)
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json(error_body("internal server error; see the server logs"), 500)

    return app
