"""Training data from torchvision: ImageFolder for the folders, transforms.v2 for the starter's
augmentations. Validation uses preprocess() unchanged, so what is validated is what is served.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import datasets
from torchvision.transforms import v2

from ..errors import DataError
from ..model.images import IMAGE_TYPES, is_image_name
from ..model.preprocess import Preprocessing, preprocess, to_rgb

ROTATION_DEGREES = 30  # the starter's RandomRotation(30)



def load_rgb(path: str) -> Image.Image:
    """An image file as 8-bit RGB, EXIF orientation applied, as the server decodes it."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def is_image_file(path: str) -> bool:
    """The image files serving takes (IMAGE_TYPES), no hidden files (macOS's ._photo.jpg)."""
    return is_image_name(path)


def augmentation(spec: Preprocessing) -> v2.Compose:
    """The starter's training transform: RandomRotation(30), RandomResizedCrop(crop),
    RandomHorizontalFlip, then ToTensor + Normalize (v2's ToImage and ToDtype)."""
    return v2.Compose([
        v2.RandomRotation(ROTATION_DEGREES),
        v2.RandomResizedCrop(spec.crop, interpolation=v2.InterpolationMode(spec.interpolation)),
        v2.RandomHorizontalFlip(),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


class ClassFolders(datasets.ImageFolder):
    """ImageFolder over folder/<class id>/*, numbered by `class_to_idx` when given (validation
    uses the training set's numbering, so it may lack classes but never add one)."""

    def __init__(self, folder: str | os.PathLike, spec: Preprocessing, augmented: bool,
                 class_to_idx: dict[str, int] | None = None) -> None:
        self.given = class_to_idx
        transform = augmentation(spec) if augmented else functools.partial(preprocess, spec=spec)
        try:
            super().__init__(str(folder), transform=transform, loader=load_rgb,
                             is_valid_file=is_image_file, allow_empty=class_to_idx is not None)
        except FileNotFoundError as error:
            empty = [e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(
                ".") and not any(is_image_file(f) for _, _, files in os.walk(e.path)
                                 for f in files)]
            if empty:
                raise DataError(f"class folder {empty[0]} is empty: it needs at least one image "
                                f"({', '.join(IMAGE_TYPES)})") from None
            raise DataError(f"{folder}: {error}; expected ImageFolder layout {folder}/<class "
                            f"id>/*.jpg with at least one image per class") from None

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory)
                         if e.is_dir() and not e.name.startswith("."))  # .ipynb_checkpoints
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        if self.given is None:
            return classes, {name: i for i, name in enumerate(classes)}
        unknown = [c for c in classes if c not in self.given]
        if unknown:
            raise DataError(f"{directory} has classes that the training data lacks: {unknown[:10]}")
        return sorted(self.given, key=self.given.get), dict(self.given)


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
