"""Test helpers for images: a tiny, easily separable ImageFolder dataset of real JPEG files (three
classes of noisy solid colours: enough for a loss to fall in one epoch), and phone-sized photos.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

COLOURS = {"1": (220, 40, 40), "2": (40, 200, 40), "3": (40, 40, 220)}


def make_color_dataset(root: Path, train: int = 8, valid: int = 3) -> Path:
    """3 classes of noisy solid-colour 64x48 JPEGs (easily separable) + cat_to_name.json."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("valid", valid)):
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.normal(0, 25, (48, 64, 3))
                pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    names = {"1": "red flower", "2": "green flower", "3": "blue flower"}
    (root / "cat_to_name.json").write_text(json.dumps(names))
    return root


def phone_photo(photo, long_side: int = 3000, orientation: int = 1) -> bytes:
    """A phone-sized JPEG from a real photo: enlarged, with sensor-like noise, optionally with
    an EXIF orientation."""
    image = Image.open(photo).convert("RGB")
    scale = long_side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 4, (image.height, image.width, 3))
    image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
