"""Image bytes -> an 8-bit RGB image, for the server, predict.py and the calibration photos alike.
Raster formats only, a pixel limit checked before decoding; every failure is a BadRequest naming
what was wrong, never another exception.
"""
from __future__ import annotations

import io
import os
import warnings

from PIL import Image, UnidentifiedImageError

from ..errors import BadRequest
from .preprocess import to_rgb

# Raster formats only: Pillow's EPS/PDF plugins would shell out to Ghostscript.
Image.init()  # register every plugin now, so open(formats=...) never meets an unknown one
FORMATS = tuple(f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO") if f in Image.OPEN)
Image.MAX_IMAGE_PIXELS = None  # our own limit below is checked before any pixel is decoded
# The file names of those formats, with their media types: the one list of image files that
# calibration, training data and the benchmarks take (training once took .ppm, which serving
# refuses).
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff"}


def is_image_name(path: str | os.PathLike) -> bool:
    """An image file by its name: one of IMAGE_TYPES, and not hidden (macOS's ._photo.jpg)."""
    name = os.path.basename(path)
    return os.path.splitext(name)[1].lower() in IMAGE_TYPES and not name.startswith(".")


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
        raise BadRequest(f"{where} could not be decoded as an image ({describe(error)})") from None


def describe(error: BaseException) -> str:
    """A one-line reason without paths or internals."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]
