"""Turns a request body into RGB images: one raw image, or JSON {"instances": [{"b64": ...}]}.
Every failure becomes a 400 naming what was wrong; no decoder error escapes as a 500.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import BadRequest
from .preprocess import to_rgb

# Raster formats only: Pillow's EPS/PDF plugins would shell out to Ghostscript.
Image.init()  # register every plugin now, so open(formats=...) never meets an unknown one
FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO") if f in Image.OPEN)
Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked before any pixel is decoded


def decode_image(data: bytes, max_pixels: int, where: str = "body") -> Image.Image:
    """Bytes of a JPEG/PNG/WebP/GIF/BMP/TIFF -> RGB image, or BadRequest."""
    if not data:
        raise BadRequest(f"empty {where}: send the bytes of a JPEG or PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise BadRequest(f"{where} declares an empty image ({width}x{height})")
            if width * height > max_pixels:
                raise BadRequest(
                    f"{where} is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (MAX_IMAGE_PIXELS); send a smaller image")
            image.load()
            return to_rgb(image)
    except BadRequest:
        raise
    except UnidentifiedImageError:
        raise BadRequest(
            f"{where} is not a readable image; accepted formats: {', '.join(FORMATS)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError,
            MemoryError, Image.DecompressionBombError) as error:
        raise BadRequest(f"{where} could not be decoded as an image ({_describe(error)})") from None


def decode_instances(data: bytes, max_pixels: int, max_instances: int) -> list[Image.Image]:
    """JSON {"instances": [{"b64": "..."}, ...]} -> RGB images, in order."""
    expected = 'expected JSON {"instances": [{"b64": "<base64 image>"}, ...]}'
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"JSON body is not UTF-8; {expected}") from None
    except (ValueError, RecursionError) as error:  # ValueError: JSONDecodeError, or an int
        # literal over Python's 4300-digit limit, which json raises as a plain ValueError
        raise BadRequest(f"malformed JSON ({_describe(error)}); {expected}") from None
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


def _describe(error: BaseException) -> str:
    """A one-line reason without paths or internals."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]
