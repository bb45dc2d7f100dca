"""Request bodies built rather than stored: a small JPEG, and the near-limit bodies of the hostile
corpus (tests/corpus/manifest.json's "generate" recipes, 6 MB each), for its test and the soak.
"""
from __future__ import annotations

import io

from PIL import Image


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 40, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def generated_body(case: dict, limit: int) -> bytes:
    """A corpus case's body from its recipe, sized against the payload `limit` in bytes."""
    if case["generate"] in ("pad_jpeg", "chunked_jpeg"):
        image = small_jpeg()
        if case["offset"] is None:
            return image
        return image + b"\0" * (limit + case["offset"] - len(image))
    if case["generate"] == "big_json":
        head, tail = b'{"instances": [{"b64": "', b'"}]}'
        return head + b"A" * (limit + case["offset"] - len(head) - len(tail)) + tail
    raise ValueError(f"unknown recipe {case['generate']}")
