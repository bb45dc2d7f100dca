# Python client for the flower classifier SageMaker endpoint: predict() for programmatic use
# (boto3 with adaptive retries) and a small command line, `python endpoint/client.py --help`.
"""Call the flower classifier endpoint with boto3."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
PAYLOAD_LIMIT = 6 * 1024 * 1024  # invoke_endpoint refuses request bodies over 6 MB
SERVERLESS_PAYLOAD_LIMIT = 4 * 1024 * 1024  # ... and over 4 MB on a serverless endpoint
ASYNC_PAYLOAD_LIMIT = 1024**3  # invoke_endpoint_async takes inputs up to 1 GB in S3
RETRY_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"}, connect_timeout=10, read_timeout=70
)


def guess_content_type(data: bytes, path: str | None = None) -> str:
    """Content type from the file name, else from the image's magic bytes."""
    if path and Path(path).suffix.lower() in CONTENT_TYPES:
        return CONTENT_TYPES[Path(path).suffix.lower()]
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
    limit = SERVERLESS_PAYLOAD_LIMIT if serverless else PAYLOAD_LIMIT
    if len(data) > limit:
        kind = "a serverless endpoint's" if serverless else "invoke_endpoint's"
        raise ValueError(
            f"the image is {len(data) / 2**20:.1f} MB, over {kind} {limit // 2**20} MB "
            "limit; send it downscaled with max_side (--max-side), e.g. 2048"
        )
    # botocore reads AWS_DEFAULT_REGION and the profile but not AWS_REGION; honour it too.
    region = os.environ.get("AWS_REGION") or None
    runtime = client or boto3.client("sagemaker-runtime", region_name=region, config=RETRY_CONFIG)
    kwargs: dict[str, Any] = {
        "EndpointName": endpoint_name,
        "ContentType": content_type or guess_content_type(data, path),
        "Accept": "application/json",
        "Body": data,
    }
    if top_k is not None:
        kwargs["CustomAttributes"] = f"top_k={top_k}"
    response = runtime.invoke_endpoint(**kwargs)
    return json.loads(response["Body"].read())


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
    parser = argparse.ArgumentParser(description="Classify a flower image with the endpoint.")
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
