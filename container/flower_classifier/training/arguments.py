"""The command line of train.py (the starter's options plus ours) and the --gpu device check.
Shared by training.py, the SageMaker `train` entrypoint and predict.py.
"""
from __future__ import annotations

import argparse
import os

import torch

from ..errors import UsageError
from ..model.architectures import UnknownArchitecture, check_architecture, list_architectures
from ..model.checkpoint import CATEGORY_NAMES
from ..model.device import unusable_gpu

DEFAULT_ARCH = "vgg16"
DEFAULT_HIDDEN = "512"
DEFAULT_LR = 0.001



class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting when `raise_errors` is set."""

    raise_errors = False

    def error(self, message: str):  # type: ignore[override]
        if self.raise_errors:
            raise UsageError(message)
        super().error(message)


def hidden_sizes(text: str) -> list[int]:
    """'512' -> [512]; '512,256' -> two hidden layers; '0' or '' -> none (a linear head)."""
    try:
        sizes = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of integers like 512,256") from None
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: hidden layer sizes must be >= 0")
    return [size for size in sizes if size > 0]


def architecture(name: str) -> str:
    """--arch: a torchvision classification model name (or efficientnet_lite0)."""
    try:
        return check_architecture(name)
    except UnknownArchitecture as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> Parser:
    p = Parser(prog="train.py", description=(
        "Train a new feed-forward classifier head on a frozen pretrained backbone (ImageFolder "
        "data: DATA_DIR/train/<class>/*.jpg and DATA_DIR/valid/<class>/*.jpg) and save "
        "SAVE_DIR/checkpoint.pth, which the serving image and predict.py load as is."))
    p.add_argument("data_dir", nargs="?", help="folder holding train/ and valid/")
    p.add_argument("--save_dir", default=".", help="where checkpoint.pth goes (default: .)")
    p.add_argument("--arch", type=architecture, metavar="NAME", help=(
        f"backbone: any of torchvision's {len(list_architectures()) - 1} classification models "
        f"(vgg16, resnet50, densenet121, convnext_tiny, vit_b_16, ...) or efficientnet_lite0 "
        f"(default {DEFAULT_ARCH}; on --resume, the checkpoint's)"))
    p.add_argument("--learning_rate", type=float, help=f"Adam learning rate (default {DEFAULT_LR})")
    p.add_argument("--hidden_units", type=hidden_sizes, help=(
        f"hidden layer sizes of the head: 512, or 512,256 for two, or 0 for a linear head "
        f"(default {DEFAULT_HIDDEN})"))
    p.add_argument("--epochs", type=int, default=3, help="epochs to run now (default 3)")
    p.add_argument("--gpu", action="store_true", help="train on CUDA (an error if unavailable)")
    p.add_argument("--batch_size", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image decoding processes (default min(4, CPUs); 0 = in-process)")
    p.add_argument("--weights", default="default", help=(
        "backbone weights: default (pretrained ImageNet), none (random init, for tests) or "
        "PATH to a local backbone state_dict file"))
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue from a checkpoint.pth written by this script")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout between head layers")
    p.add_argument("--no_augment", action="store_true", help=(
        "train on center crops (preprocess()) instead of random rotation/crop/flip; backbone "
        "features are then computed once and cached, which makes many epochs cheap"))
    p.add_argument("--train_blocks", type=int, default=0, metavar="N", help=(
        "efficientnet_lite0 only: fine-tune its last N inverted-residual blocks (of 16) and "
        "conv_head with the head, on cached outputs of the frozen blocks before them; the full "
        "state_dict is saved (default 0: the head alone, on a frozen backbone)"))
    p.add_argument("--views", type=int, default=3, help=(
        "with --train_blocks: augmented views of each training photo to cache, one pass over "
        "the photos each; every epoch draws one of them per photo (default 3)"))
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train_dir", help="training folder if not DATA_DIR/train")
    p.add_argument("--valid_dir", help="validation folder if not DATA_DIR/valid")
    p.add_argument("--category_names", help=(
        f"cat_to_name.json to copy next to the checkpoint (default: DATA_DIR/{CATEGORY_NAMES} "
        f"when present)"))
    return p


def parse_args(argv: list[str] | None = None, raise_errors: bool = False) -> argparse.Namespace:
    parser = build_parser()
    parser.raise_errors = raise_errors
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "views"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.num_workers < 0 or not 0 <= args.dropout < 1:
        parser.error("--num_workers must be >= 0 and --dropout in [0, 1)")
    if args.train_blocks < 0:
        parser.error("--train_blocks must be >= 0")
    if args.learning_rate is not None and args.learning_rate <= 0:
        parser.error("--learning_rate must be positive")
    return args


def choose_device(gpu: bool) -> torch.device:
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = unusable_gpu() or (f"no usable NVIDIA GPU is visible (torch {torch.__version__}, "
                                 f"CUDA build: {torch.version.cuda or 'none, CPU-only'})")
        raise UsageError(f"--gpu was given but CUDA is not available: {why}. Drop --gpu to "
                         f"train on the CPU.")
    return torch.device("cuda")
