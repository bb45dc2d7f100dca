# Training data without torchvision: the ImageFolder scan, the seed's augmentations and a Dataset.
# Evaluation uses preprocess() unchanged, so what is validated is exactly what the server sees.
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .preprocess import Preprocessing, preprocess, to_model_input, to_rgb

# torchvision's IMG_EXTENSIONS, matched case-insensitively as ImageFolder does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ROTATION_DEGREES = 30.0
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

Sample = tuple[str, int]


class DataError(ValueError):
    """The data folders are not in ImageFolder layout; the message says what to fix."""


def find_classes(folder: Path) -> list[str]:
    """Class folder names sorted as strings (ImageFolder's numbering); dot-folders skipped."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: expected ImageFolder layout "
                        f"{folder}/<class id>/*.jpg")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[0] != ".")
    if not classes:
        raise DataError(f"{folder} has no class folders: expected {folder}/<class id>/*.jpg")
    return classes


def scan_folder(folder: str | os.PathLike,
                class_to_idx: dict[str, int] | None = None) -> tuple[list[Sample], dict[str, int]]:
    """(path, class index) for every image under folder/<class>/ (recursive, sorted).

    With `class_to_idx` (the training set's numbering) every class here must be one of it.
    """
    folder = Path(folder)
    classes = find_classes(folder)
    if class_to_idx is None:
        class_to_idx = {name: i for i, name in enumerate(classes)}
    unknown = [c for c in classes if c not in class_to_idx]
    if unknown:
        raise DataError(f"{folder} has classes that the training data lacks: {unknown[:10]}")
    samples: list[Sample] = []
    for name in classes:
        found = []
        for root, dirs, files in os.walk(folder / name, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d[0] != ".")
            found += [os.path.join(root, f) for f in sorted(files)
                      if f.lower().endswith(IMAGE_EXTENSIONS) and f[0] != "."]
        if not found:
            raise DataError(f"class folder {folder / name} is empty: it needs at least one "
                            f"image ({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, class_to_idx[name]) for path in found]
    return samples, class_to_idx


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,)))


def random_resized_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params -> (left, top, crop width, crop height)."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * _uniform(*CROP_SCALE)
        aspect = math.exp(_uniform(log_low, log_high))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(0, height - h + 1)  # drawn before left, as torchvision does
            return _randint(0, width - w + 1), top, w, h
    ratio = width / height  # fallback: a central crop within the allowed aspect ratios
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augment(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    """The seed's training transform: RandomRotation(30), RandomResizedCrop(crop),
    RandomHorizontalFlip, ToTensor, Normalize. Random numbers come from torch's generator."""
    image = to_rgb(image)
    image = image.rotate(_uniform(-ROTATION_DEGREES, ROTATION_DEGREES), Image.NEAREST)
    left, top, w, h = random_resized_crop_box(*image.size)
    image = image.crop((left, top, left + w, top + h)).resize((spec.crop, spec.crop),
                                                              Image.BILINEAR)
    if float(torch.rand(1)) < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return to_model_input(image, spec)


class ImageDataset(torch.utils.data.Dataset):
    """Samples -> (tensor, class index); `augmented` picks augment() over preprocess()."""

    def __init__(self, samples: list[Sample], spec: Preprocessing, augmented: bool) -> None:
        self.samples = samples
        self.spec = spec
        self.transform: Callable[[Image.Image, Preprocessing], torch.Tensor] = (
            augment if augmented else preprocess)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image, self.spec), target
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise DataError(f"cannot read image {path}: {error}") from None


def data_folders(data_dir: str | None, train_dir: str | None,
                 valid_dir: str | None) -> tuple[Path, Path]:
    """data_dir/train and data_dir/valid, unless given separately; both must exist."""
    if data_dir is None and (train_dir is None or valid_dir is None):
        raise DataError("give data_dir (holding train/ and valid/) or both --train_dir and "
                        "--valid_dir")
    train = Path(train_dir) if train_dir else Path(data_dir) / "train"
    valid = Path(valid_dir) if valid_dir else Path(data_dir) / "valid"
    for name, folder in (("training", train), ("validation", valid)):
        if not folder.is_dir():
            raise DataError(f"{name} folder {folder} not found: expected ImageFolder layout "
                            f"DATA_DIR/train/<class id>/*.jpg and DATA_DIR/valid/<class id>/*.jpg")
    return train, valid
