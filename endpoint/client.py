"""Python client for the flower classifier SageMaker endpoint: predict() for programmatic use
(boto3 with adaptive retries), a small command line, `python endpoint/client.py --help`, and
`client.py page`: the container's try-it page on localhost, calling the endpoint.

Call the flower classifier endpoint with boto3.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

PAYLOAD_LIMIT = 6 * 1024 * 1024  # invoke_endpoint refuses request bodies over 6 MB
REPO = Path(__file__).resolve().parents[1]
PAGE_MODULE = REPO / "container" / "flower_classifier" / "serving" / "page.py"
FILE_TYPES_MODULE = PAGE_MODULE.with_name("file_types.py")  # the content type of a file name
# the sample photos: the image's calibration photos (a link to local_test/payloads)
SAMPLE_PHOTOS = REPO / "container" / "calibration"
SERVERLESS_PAYLOAD_LIMIT = 4 * 1024 * 1024  # ... and over 4 MB on a serverless endpoint
ASYNC_PAYLOAD_LIMIT = 1024**3  # invoke_endpoint_async takes inputs up to 1 GB in S3
LOADED: dict = {}  # container_module's modules, by name
RETRY_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=10, read_timeout=70
)


def guess_content_type(data: bytes, path: str | None = None) -> str:
    """Content type from the file name (the container's file_types.py), else from the image's
    magic bytes."""
    by_name = path and container_module("flower_file_types", FILE_TYPES_MODULE).type_of_name(path)
    if by_name:
        return by_name
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/x-image"


def shrink(data: bytes, max_side: int) -> tuple[bytes, str | None]:
    """The image with its longer side at most `max_side` pixels: a smaller upload, and far less
    decoding on the endpoint. EXIF orientation applied, Lanczos, then JPEG (quality 95), or PNG
    when it has transparency. Returns (bytes, content type); (data, None) when the image is
    already small enough or 16-bit/float, which is sent unchanged."""
    try:
        from PIL import ExifTags, Image, ImageOps
    except ImportError:
        raise ValueError("max_side needs Pillow: pip install pillow") from None
    try:
        image = Image.open(io.BytesIO(data))
        if max(image.size) <= max_side or image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            return data, None
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        target = "RGBA" if alpha else image.mode if image.mode in ("RGB", "L") else "RGB"
        if image.mode != target:  # palette, CMYK, transparency...: resample in RGB(A)
            image = image.convert(target)
        image.thumbnail((max_side, max_side), Image.LANCZOS)  # JPEGs decode at reduced scale
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"max_side: not an image Pillow can read ({error})") from None
    out = io.BytesIO()
    if image.mode == "RGBA":
        image.save(out, "PNG")
        return out.getvalue(), "image/png"
    image.save(out, "JPEG", quality=95)
    return out.getvalue(), "image/jpeg"


def predict(
    endpoint_name: str,
    image_path_or_bytes: str | Path | bytes,
    top_k: int | None = None,
    content_type: str | None = None,
    client: Any = None,
    max_side: int | None = None,
    serverless: bool = False,
) -> dict[str, Any]:
    """Classify one image; returns the endpoint's JSON, e.g. {"predictions": [...]}.

    `max_side` sends the image downscaled (see shrink()); `serverless` checks the 4 MB limit of
    serverless endpoints instead of the 6 MB one. Region (AWS_REGION too), profile
    and AWS_ENDPOINT_URL come from the boto3 configuration.
    """
    if isinstance(image_path_or_bytes, bytes):
        data, path = image_path_or_bytes, None
    else:
        path = str(image_path_or_bytes)
        data = Path(path).read_bytes()
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be a positive integer, got {max_side}")
        data, shrunk_type = shrink(data, max_side)
        content_type = shrunk_type or content_type
    problem = too_large(len(data), serverless)
    if problem:
        raise ValueError(f"{problem}; send it downscaled with max_side (--max-side), e.g. 2048")
    attributes = f"top_k={top_k}" if top_k is not None else None
    body = invoke(client or runtime_client(), endpoint_name, data,
                  content_type or guess_content_type(data, path), attributes)
    return json.loads(body)


def too_large(size: int, serverless: bool = False) -> str | None:
    """Why `size` bytes cannot be sent to the endpoint, or None."""
    limit = SERVERLESS_PAYLOAD_LIMIT if serverless else PAYLOAD_LIMIT
    if size > limit:
        kind = "a serverless endpoint's" if serverless else "invoke_endpoint's"
        return f"the image is {size / 2**20:.1f} MB, over {kind} {limit // 2**20} MB limit"
    return None


def runtime_client() -> Any:
    """boto3's sagemaker-runtime client: profile, credentials and AWS_ENDPOINT_URL from boto3's
    own configuration; botocore reads AWS_DEFAULT_REGION but not AWS_REGION, so that too."""
    region = os.environ.get("AWS_REGION") or None
    return boto3.client("sagemaker-runtime", region_name=region, config=RETRY_CONFIG)


def invoke(runtime: Any, endpoint_name: str, data: bytes, content_type: str,
           custom_attributes: str | None = None) -> bytes:
    """One InvokeEndpoint call; the response body as the container wrote it."""
    kwargs: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "ContentType": content_type,
        "Accept": "application/json",
        "Body": data,
    }
    if custom_attributes:
        kwargs["CustomAttributes"] = custom_attributes
    return runtime.invoke_endpoint(**kwargs)["Body"].read()


def error_json(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def forward(runtime: Any, endpoint_name: str, data: bytes, headers: Any) -> tuple[int, bytes]:
    """The page's POST /invocations as InvokeEndpoint: (status, body) as the container
    answered, or a JSON error naming what failed on the way (never credentials)."""
    try:
        return 200, invoke(runtime, endpoint_name, data,
                           headers.get("Content-Type") or guess_content_type(data),
                           headers.get("X-Amzn-SageMaker-Custom-Attributes"))
    except ClientError as error:
        response = error.response
        if "OriginalStatusCode" in response:  # ModelError: the container's own answer
            return int(response["OriginalStatusCode"]), str(response.get("OriginalMessage",
                                                                         "")).encode()
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 502
        return status, error_json(f"InvokeEndpoint failed: {error}")
    except BotoCoreError as error:
        return 502, error_json(f"InvokeEndpoint failed: {error}")


def container_module(name: str, path: Path):
    """A standard-library-only module of the container (page.py, file_types.py), read from this
    checkout as a file, once: the client needs neither torch nor the package installed."""
    if name not in LOADED:
        spec = importlib.util.spec_from_file_location(name, path)
        LOADED[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(LOADED[name])
    return LOADED[name]


def page_module():
    """The container's page.py."""
    return container_module("flower_page", PAGE_MODULE)


def serve_page(endpoint_name: str, port: int = 8000, bind: str = "127.0.0.1",
               runtime: Any = None) -> None:
    """Serve the container's page (flower_classifier/serving/page.html) and its sample photos,
    and send its /invocations calls to the endpoint with boto3, which signs them here: the
    browser sees the answers and never the credentials. Requests from other sites' pages (an
    Origin other than this server's) or under another host name (DNS rebinding) are refused:
    they would spend the endpoint's invocations with these credentials."""
    page = page_module()

    runtime = runtime or runtime_client()
    info = {"endpoint": endpoint_name, "region": runtime.meta.region_name}
    hosts: set[str] = set()  # host:port names this server answers to, once it is bound

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            if self.refused():
                return
            path = unquote(urlsplit(self.path).path)
            status, content_type, body = page.answer(path, str(SAMPLE_PHOTOS), info) or (
                404, page.JSON, error_json("not found; this server answers GET / (the page) "
                                           "and POST /invocations"))
            self.reply(status, body, content_type)

        def do_POST(self) -> None:  # noqa: N802
            if self.refused():
                return
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or too_large(int(length)):
                self.close_connection = True  # the body is left unread
                if not length.isdigit():
                    return self.reply(400, error_json(f"bad Content-Length {length[:20]!r}"))
                return self.reply(413, error_json(f"{too_large(int(length))}; untick "
                                                  "'Send the original photo'"))
            data = self.rfile.read(int(length))
            if urlsplit(self.path).path != "/invocations":
                return self.reply(404, error_json("not found; POST /invocations"))
            self.reply(*forward(runtime, endpoint_name, data, self.headers))

        def refused(self) -> bool:
            host, origin = self.headers.get("Host", ""), self.headers.get("Origin")
            if host in hosts and origin in (None, f"http://{host}"):
                return False
            self.close_connection = True  # a body, if any, is left unread
            self.reply(403, error_json(f"refused: only the page at http://{min(hosts)}/ may "
                                       "call this server"))
            return True

        def reply(self, status: int, body: bytes, content_type: str = page.JSON) -> None:
            self.send_response(status)
            for key, value in {**page.HEADERS, "Content-Type": content_type,
                               "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            print(f"{self.address_string()} {fmt % args}", file=sys.stderr)

    server = ThreadingHTTPServer((bind, port), Handler)
    hosts.update(f"{name}:{server.server_port}" for name in ("127.0.0.1", "localhost", bind))
    print(f"the page for endpoint {endpoint_name} is on http://{bind}:{server.server_port}/ "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def page_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="client.py page",
        description="Serve the try-it page on this machine, calling the endpoint with boto3.")
    parser.add_argument("--endpoint", required=True, help="the SageMaker endpoint's name")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1: this machine only)")
    args = parser.parse_args(argv)
    try:
        serve_page(args.endpoint, args.port, args.bind)
    except (OSError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def predict_async(
    endpoint_name: str,
    image_path: str | Path,
    input_prefix: str,
    top_k: int | None = None,
    content_type: str | None = None,
    timeout: float = 900.0,
    poll_seconds: float = 5.0,
) -> dict[str, Any]:
    """Classify one image with an asynchronous endpoint (deploy.sh --async): upload it under
    `input_prefix` (s3://BUCKET/PREFIX), call invoke_endpoint_async, wait for the answer in S3.
    Inputs may be up to 1 GB, so phone photos go as they are."""
    import time
    import uuid

    path = Path(image_path)
    data = path.read_bytes()
    if len(data) > ASYNC_PAYLOAD_LIMIT:
        raise ValueError(f"the image is {len(data) / 2**30:.1f} GB, over the 1 GB async limit")
    bucket, _, prefix = input_prefix.removeprefix("s3://").partition("/")
    if not input_prefix.startswith("s3://") or not bucket:
        raise ValueError(f"input_prefix must be s3://BUCKET/PREFIX, got {input_prefix!r}")
    region = os.environ.get("AWS_REGION") or None
    s3 = boto3.client("s3", region_name=region, config=RETRY_CONFIG)
    runtime = boto3.client("sagemaker-runtime", region_name=region, config=RETRY_CONFIG)
    key = f"{prefix.strip('/')}/{uuid.uuid4().hex}{path.suffix.lower()}".lstrip("/")
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    kwargs: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "InputLocation": f"s3://{bucket}/{key}",
        "ContentType": content_type or guess_content_type(data, str(path)),
        "Accept": "application/json",
    }
    if top_k is not None:
        kwargs["CustomAttributes"] = f"top_k={top_k}"
    response = runtime.invoke_endpoint_async(**kwargs)
    deadline = time.monotonic() + timeout
    while True:
        for location, failed in ((response["OutputLocation"], False),
                                 (response.get("FailureLocation"), True)):
            if not location:
                continue
            out_bucket, _, out_key = location.removeprefix("s3://").partition("/")
            try:
                body = s3.get_object(Bucket=out_bucket, Key=out_key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue
            if failed:
                raise RuntimeError(f"the endpoint failed on {kwargs['InputLocation']}: "
                                   f"{body.decode(errors='replace')[:500]}")
            return json.loads(body)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer at {response['OutputLocation']} after {timeout:g} s")
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["page"]:
        return page_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="Classify a flower image with the endpoint.",
        epilog="client.py page --endpoint NAME [--port 8000] [--bind 127.0.0.1] serves a page "
        "to try the endpoint in a browser, on this machine (client.py page --help).")
    parser.add_argument("endpoint_name")
    parser.add_argument("image", help="a .jpg or .png file")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--content-type", default=None)
    parser.add_argument(
        "--max-side",
        type=int,
        default=None,
        metavar="PIXELS",
        help="send the image downscaled to at most this many pixels on its "
        "longer side (e.g. 1024 for phone photos)",
    )
    parser.add_argument("--serverless", action="store_true",
                        help="the endpoint is serverless: check its 4 MB payload limit")
    parser.add_argument("--async", dest="async_prefix", metavar="S3_PREFIX", default=None,
                        help="the endpoint is asynchronous (deploy.sh --async): upload the "
                        "image under S3_PREFIX, invoke it and wait for the answer")
    args = parser.parse_args(argv)
    try:
        if args.async_prefix:
            result = predict_async(args.endpoint_name, args.image, args.async_prefix,
                                   args.top_k, args.content_type)
            print(json.dumps(result, indent=2))
            return 0
        result = predict(
            args.endpoint_name, args.image, args.top_k, args.content_type, max_side=args.max_side,
            serverless=args.serverless,
        )
    except Exception as exc:  # noqa: BLE001 - a CLI reports any failure as one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
