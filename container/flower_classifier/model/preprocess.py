"""The one preprocessing function shared by the server, predict.py and training's evaluation.
It equals torchvision.transforms.v2's Resize, CenterCrop, ToImage, ToDtype, Normalize bit for bit.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
# Resize(255) of a 100000x2 image would be 12,750,000x255 pixels (GBs). Past this resized area
# only the centre crop is resampled, from the same source box: same pixels within +/-2 levels.
RESIZED_PIXELS_LIMIT = 4_000_000
# torchvision's InterpolationMode values that architectures' weights use, as Pillow filters
FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """The constants a checkpoint carries so training and serving cannot drift apart."""

    resize: int = 255
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not 1 <= self.crop <= self.resize:
            raise ValueError(
                f"preprocessing needs 1 <= crop <= resize, got {self.crop}/{self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("preprocessing needs 3 means and 3 positive stds")
        if self.interpolation not in FILTERS:
            raise ValueError(f"preprocessing interpolation must be one of {', '.join(FILTERS)}, "
                             f"got {self.interpolation!r}")

    @property
    def filter(self) -> int:
        return FILTERS[self.interpolation]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(resize=int(data["resize"]), crop=int(data["crop"]),
                   mean=tuple(float(x) for x in data["mean"]),
                   std=tuple(float(x) for x in data["std"]),
                   interpolation=str(data.get("interpolation", "bilinear")))


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any Pillow mode to 8-bit RGB."""
    try:
        # exif_transpose copies even when upright
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except (ValueError, TypeError, OSError, KeyError, SyntaxError):
        pass  # unreadable EXIF: keep the pixels as stored
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if mode != "F" and pixels.max(initial=0) > 255 else 1.0
        pixels = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels).convert("RGB")
    if mode == "P" and "transparency" in image.info or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


@functools.lru_cache(maxsize=8)
def _levels(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """What torchvision's ToTensor then Normalize make of each 8-bit level, per channel
    (3 x 256 float32): the same float32 operations, done once per level, not per pixel."""
    table = np.divide(np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256)), np.float32(255),
                      dtype=np.float32)
    table -= np.asarray(mean, np.float32).reshape(-1, 1)
    table /= np.asarray(std, np.float32).reshape(-1, 1)
    return table


def to_model_input(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    """ToTensor + Normalize of a cropped RGB image, bit for bit, by table lookup.

    numpy, not torch: request threads must not start OpenMP teams that compete with the
    model's threads."""
    pixels = np.asarray(image, np.uint8).reshape(image.size[1], image.size[0], 3)
    table = _levels(spec.mean, spec.std)
    array = np.empty((3, *pixels.shape[:2]), np.float32)
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=array[channel])
    return torch.from_numpy(array)


def crop_box_resize(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Resize-then-crop for extreme aspect ratios, resampling only the crop's source box."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(spec.resize * long / short)
    new_w, new_h = (spec.resize, new_long) if width <= height else (new_long, spec.resize)
    top = int(round((new_h - spec.crop) / 2.0))
    left = int(round((new_w - spec.crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + spec.crop) * sx, (top + spec.crop) * sy)
    return image.resize((spec.crop, spec.crop), spec.filter, box=box)


def preprocess(image: Image.Image, spec: Preprocessing = Preprocessing()) -> torch.Tensor:
    """PIL image of any mode -> normalised 3 x crop x crop float32 tensor."""
    image = to_rgb(image)
    short, long = sorted(image.size)
    if spec.resize * int(spec.resize * long / short) > RESIZED_PIXELS_LIMIT:
        image = crop_box_resize(image, spec)
    else:
        resized = F.resize(image, [spec.resize], InterpolationMode(spec.interpolation))
        image = F.center_crop(resized, [spec.crop])
    return to_model_input(image, spec)
