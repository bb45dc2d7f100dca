"""The media types /invocations accepts and produces, and the header parsing around them.
Parameters such as "; charset=utf-8" are ignored, as SageMaker clients often add them.
"""
from __future__ import annotations

from ..errors import BadRequest, NotAcceptable, UnsupportedMediaType

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
X_IMAGE = "application/x-image"
IMAGE_TYPES = (
    "image/jpeg", "image/jpg", "image/png", "image/webp", "image/gif", "image/bmp",
    "image/tiff", X_IMAGE, OCTET_STREAM,
)
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def media_type(header: str | None) -> str:
    """'Image/JPEG; charset=x' -> 'image/jpeg'. A missing header means raw bytes."""
    value = (header or "").split(";", 1)[0].strip().lower()
    return value or OCTET_STREAM


def request_kind(header: str | None) -> str:
    """'image' or 'json' for a supported Content-Type; 415 otherwise."""
    value = media_type(header)
    if value == JSON:
        return "json"
    if value in IMAGE_TYPES:
        return "image"
    raise UnsupportedMediaType(
        f"unsupported Content-Type {value!r}; send one image as image/jpeg, image/png, "
        f"application/x-image or application/octet-stream, or several as {JSON} "
        '{"instances": [{"b64": "..."}]}')


def check_accept(accept) -> None:
    """406 unless the client's Accept header admits application/json (werkzeug MIMEAccept)."""
    if accept and not accept.best_match([JSON]):
        raise NotAcceptable(f"cannot produce {accept.to_header()!r}; responses are {JSON}")


def top_k_from(custom_attributes: str | None, default: int, limit: int) -> int:
    """Read top_k from 'top_k=3,other=x'; other keys are ignored."""
    for item in (custom_attributes or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip().lower() == "top_k":
            value = value.strip()
            # ASCII digits only, few of them: '²'.isdigit() is true yet int('²') raises, and
            # int() refuses over 4300 digits; either would escape as a 500.
            if not (value.isascii() and value.isdigit() and len(value) <= 6) \
                    or not 1 <= int(value) <= limit:
                raise BadRequest(
                    f"top_k={value[:20]!r} in {CUSTOM_ATTRIBUTES} is invalid: "
                    f"expected an integer from 1 to {limit}")
            return int(value)
    return min(default, limit)
