"""Turns a request body into RGB images: one raw image, or JSON {"instances": [{"b64": ...}]}.
Every failure becomes a 400 naming what was wrong; no decoder error escapes as a 500.
"""
from __future__ import annotations

import base64
import binascii
import json

from PIL import Image

from ..errors import BadRequest
from ..model.images import decode_image, describe


def decode_instances(data: bytes, max_pixels: int, max_instances: int) -> list[Image.Image]:
    """JSON {"instances": [{"b64": "..."}, ...]} -> RGB images, in order."""
    expected = 'expected JSON {"instances": [{"b64": "<base64 image>"}, ...]}'
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"JSON body is not UTF-8; {expected}") from None
    except (ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, or an int
        # literal over Python's 4300-digit limit, which json raises as a plain ValueError
        raise BadRequest(f"malformed JSON ({describe(error)}); {expected}") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f"JSON has no non-empty 'instances' list; {expected}")
    if len(instances) > max_instances:
        raise BadRequest(f"{len(instances)} instances is over the limit of {max_instances}")
    images = []
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        encoded = instance.get("b64") if isinstance(instance, dict) else None
        if not isinstance(encoded, str):
            raise BadRequest(f"{where} has no 'b64' string; {expected}")
        try:  # line-wrapped base64 (the `base64` command's default) is fine
            raw = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}.b64 is not valid base64") from None
        images.append(decode_image(raw, max_pixels, where))
    return images
