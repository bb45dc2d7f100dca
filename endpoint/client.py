# Python client for the flower classifier SageMaker endpoint: predict() for programmatic use
# (boto3 with adaptive retries) and a small command line, `python endpoint/client.py --help`.
"""Call the flower classifier endpoint with boto3."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
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


def predict(
    endpoint_name: str,
    image_path_or_bytes: str | Path | bytes,
    top_k: int | None = None,
    content_type: str | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Classify one image; returns the endpoint's JSON, e.g. {"predictions": [...]}.

    Region (AWS_REGION too), profile and AWS_ENDPOINT_URL come from the boto3 configuration.
    """
    if isinstance(image_path_or_bytes, bytes):
        data, path = image_path_or_bytes, None
    else:
        path = str(image_path_or_bytes)
        data = Path(path).read_bytes()
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify a flower image with the endpoint.")
    parser.add_argument("endpoint_name")
    parser.add_argument("image", help="a .jpg or .png file")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--content-type", default=None)
    args = parser.parse_args(argv)
    try:
        result = predict(args.endpoint_name, args.image, args.top_k, args.content_type)
    except Exception as exc:  # noqa: BLE001 - a CLI reports any failure as one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
