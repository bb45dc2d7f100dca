"""Real photos for warm-up: int8 calibration and the check that reduced precision keeps answers.
Taken from <model dir>/calibration/ when it has images, else the flower photos in the image.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import BadRequest
from .images import decode_image, is_image_name
from .preprocess import Preprocessing, preprocess

log = logging.getLogger(__name__)
MODEL_SUBDIR = "calibration"
MAX_PHOTOS = 16


def find_photos(model_dir: str | Path, fallback_dir: str | Path) -> list[Path]:
    """Up to MAX_PHOTOS image files: the model's own calibration/ folder first, else fallback."""
    for folder in (Path(model_dir) / MODEL_SUBDIR, Path(fallback_dir)):
        found = sorted(p for p in folder.glob("*") if is_image_name(p))
        if found:
            return found[:MAX_PHOTOS]
    return []


def load_photos(paths: list[Path], spec: Preprocessing, max_pixels: int) -> torch.Tensor | None:
    """Decode and preprocess like a request; skip (and name) files that are not images."""
    tensors = []
    for path in paths:
        try:
            tensors.append(preprocess(decode_image(path.read_bytes(), max_pixels, str(path)),
                                      spec))
        except (OSError, BadRequest) as error:
            log.warning("calibration photo skipped: %s", error)
    return torch.stack(tensors) if tensors else None


def with_flips(photos: torch.Tensor) -> torch.Tensor:
    """The photos and their mirror images: the mirrors are inputs calibration never saw."""
    return torch.cat([photos, photos.flip(-1)])
