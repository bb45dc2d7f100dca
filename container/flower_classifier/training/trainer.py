"""Trains a new feed-forward head on a frozen pretrained backbone (or, with --train_blocks, on its
fine-tuned last blocks) and writes checkpoint.pth. Behind train/train.py and the image's `train`.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import InputError
from ..model.accuracy import validation_scores
from ..model.architectures import (
    LITE0,
    attach_head,
    build_backbone,
    head_slot,
    preprocessing_for,
    with_metadata,
)
from ..model.checkpoint import (
    CATEGORY_NAMES,
    CHECKPOINT,
    FORMAT,
    build_head,
    describe_format,
    feature_adapter,
    linear_sizes,
    read_checkpoint,
    save_checkpoint,
)
from ..model.preprocess import Preprocessing
from ..model.weights import backbone_with_weights
from .arguments import (
    DEFAULT_ARCH,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    UsageError,
    choose_device,
    hidden_sizes,
    parse_args,
)
from .data import ClassFolders, data_folders
from .epoch import run_epoch
from .fine_tune import FineTuner, cache_views, split_backbone

CURVE = "training_curve.png"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingState:
    """What a run trains and saves, not an nn.Module: the backbone (its head slot holding only
    the feature adapter, so it outputs features), the new head trained on those features, its
    optimizer and the epochs' history."""

    def __init__(self, args: argparse.Namespace, class_to_idx: dict[str, int]) -> None:
        self.epochs_done, self.history, checkpoint = 0, [], None
        if args.resume:
            checkpoint = read_checkpoint(args.resume)
            if describe_format(checkpoint) != FORMAT:
                raise UsageError(f"--resume {args.resume}: not a checkpoint written by train.py")
            self.arch, self.hidden = checkpoint["arch"], list(checkpoint["head"]["hidden_units"])
            for option, given, saved in (("arch", args.arch, self.arch),
                                         ("hidden_units", args.hidden_units, self.hidden)):
                if given is not None and given != saved:
                    raise UsageError(f"--{option} {given} differs from the checkpoint's {saved}")
            if checkpoint["class_to_idx"] != class_to_idx:
                raise UsageError(f"--resume {args.resume}: its classes differ from the data's")
            self.weights = checkpoint.get("weights", checkpoint.get("backbone_weights", "none"))
            # a fine-tuned backbone is part of the model from now on: never saved head-only
            self.tuned_blocks = int(checkpoint.get("train_blocks", 0))
        else:
            self.arch = args.arch or DEFAULT_ARCH
            self.hidden = (args.hidden_units if args.hidden_units is not None
                           else hidden_sizes(DEFAULT_HIDDEN))
            self.weights = args.weights
            self.tuned_blocks = 0
        self.tuned_blocks = max(self.tuned_blocks, args.train_blocks)  # saved as train_blocks
        if checkpoint is None:
            self.backbone, self.weights_note = backbone_with_weights(self.arch, self.weights)
            self.preprocessing = preprocessing_for(self.arch)
        else:
            self.backbone = build_backbone(self.arch)
            self.preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])
        self.slot = head_slot(self.backbone)
        self.prefix = self.slot.prefix
        attach_head(self.backbone, self.slot, feature_adapter(self.slot))
        self.head = build_head([self.slot.in_features, *self.hidden, len(class_to_idx)],
                               args.dropout)
        if checkpoint is not None:
            self._load(checkpoint)
        self.backbone.requires_grad_(False).eval()
        self.optimizer = torch.optim.Adam(self.head.parameters(),
                                          lr=args.learning_rate or DEFAULT_LR)
        if checkpoint is not None and checkpoint.get("optimizer"):
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if args.learning_rate:
                for group in self.optimizer.param_groups:
                    group["lr"] = args.learning_rate

    def _load(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        head = {k[len(self.prefix):]: v for k, v in state.items() if k.startswith(self.prefix)}
        self.head.load_state_dict(head)
        self.epochs_done = int(checkpoint.get("epochs", 0))
        self.history = list(checkpoint.get("history", []))
        if checkpoint.get("state_dict_scope") == "head":
            source = checkpoint.get("backbone_weights", "default")
            pretrained, self.weights_note = backbone_with_weights(self.arch, source)
            attach_head(pretrained, head_slot(pretrained), feature_adapter(self.slot))
            self.backbone = pretrained
        else:
            body = {k: v for k, v in state.items() if not k.startswith(self.prefix)}
            self.backbone.load_state_dict(with_metadata(body, self.backbone))
            self.weights_note = f"{self.arch}: backbone and head from {checkpoint.get('weights')}"

    def head_dims(self) -> list[int]:
        return linear_sizes(self.head)

    def to(self, device: torch.device) -> TrainingState:
        self.backbone.to(device)
        self.head.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full model's state_dict, as the serving loader expects it (head under its attr)."""
        state = {k: v.detach().cpu() for k, v in self.backbone.state_dict().items()}
        state.update({self.prefix + k: v.detach().cpu() for k, v in self.head.state_dict().items()})
        return state

    def head_only(self) -> bool:
        """Store just the head when the loader can rebuild the backbone offline (lite0) and
        training left it as it came."""
        return self.weights == "default" and self.arch == LITE0 and not self.tuned_blocks


def loader(dataset: ClassFolders, args, shuffle: bool,
           generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=shuffle,
        num_workers=args.num_workers, generator=generator,
        persistent_workers=args.num_workers > 0 and shuffle)


def features_of(model: TrainingState, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Backbone features in no_grad; fp16 autocast on CUDA, float32 out."""
    with torch.no_grad(), torch.autocast(device.type, torch.float16, enabled=device.type == "cuda"):
        return model.backbone(images.to(device, non_blocking=True)).float()


def extract(model: TrainingState, batches, device: torch.device, desc: str):
    feats, targets = [], []
    for images, target in tqdm(batches, desc=desc, unit="batch", leave=False, file=sys.stderr):
        feats.append(features_of(model, images, device))
        targets.append(target.to(device))
    return torch.cat(feats), torch.cat(targets)


def validate(head: nn.Module, feats: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Validation loss (NLL), top-1 and top-5 accuracy of the head on cached features."""
    head.eval()
    with torch.no_grad():
        log_probs = torch.cat([head(chunk) for chunk in feats.split(1024)])
    return validation_scores(log_probs, targets)


def train_epoch(model: TrainingState, batches, total: int, device: torch.device,
                desc: str) -> float:
    """One pass of Adam + NLLLoss over (features or images, targets) batches; mean loss."""
    model.head.train()
    criterion = nn.NLLLoss()
    bar = tqdm(batches, total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)

    def loss_of(batch) -> tuple[torch.Tensor, int]:
        inputs, targets = batch
        feats = inputs if inputs.dim() == 2 else features_of(model, inputs, device)
        targets = targets.to(device)
        return criterion(model.head(feats), targets), len(targets)

    return run_epoch(bar, model.optimizer, loss_of)


def cached_batches(feats: torch.Tensor, targets: torch.Tensor, size: int, generator):
    order = torch.randperm(len(targets), generator=generator).to(feats.device)
    for start in range(0, len(order), size):
        index = order[start:start + size]
        yield feats[index], targets[index]


def plot_curve(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, side by side (matplotlib's OO API: no global backend)."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    loss_ax.plot(epochs, [h["valid_loss"] for h in history], "o-", label="validation loss")
    acc_ax.plot(epochs, [100 * h["top1"] for h in history], "o-", label="top-1")
    acc_ax.plot(epochs, [100 * h["top5"] for h in history], "o-", label="top-5")
    for ax, ylabel in ((loss_ax, "NLL loss"), (acc_ax, "validation accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def report(desc: str, row: dict) -> None:
    print(f"{desc}: train loss {row['train_loss']:.4f}, validation loss {row['valid_loss']:.4f}, "
          f"top-1 {100 * row['top1']:.1f}%, top-5 {100 * row['top5']:.1f}%", flush=True)


def train_head(model: TrainingState, train_set: ClassFolders, valid_set: ClassFolders,
               args: argparse.Namespace, device: torch.device, shuffle: torch.Generator) -> dict:
    """The head alone on the frozen backbone's features (cached once with --no_augment); the
    last epoch is kept, with the optimizer state for --resume."""
    valid = extract(model, loader(valid_set, args, False), device, "valid features")
    if args.no_augment:
        train = extract(model, loader(train_set, args, False), device, "train features")
    else:
        images = loader(train_set, args, True, shuffle)
    steps = -(-len(train_set) // args.batch_size)
    for epoch in range(model.epochs_done + 1, model.epochs_done + args.epochs + 1):
        desc = f"epoch {epoch}/{model.epochs_done + args.epochs}"
        batches = cached_batches(*train, args.batch_size, shuffle) if args.no_augment else images
        train_loss = train_epoch(model, batches, steps, device, desc)
        row = {"epoch": epoch, "train_loss": train_loss, **validate(model.head, *valid)}
        model.history.append(row)
        report(desc, row)
    return {"optimizer": model.optimizer.state_dict(),
            "learning_rate": model.optimizer.param_groups[0]["lr"]}


def fine_tune(model: TrainingState, train_set: ClassFolders, valid_set: ClassFolders,
              args: argparse.Namespace, shuffle: torch.Generator) -> dict:
    """--train_blocks N: the frozen blocks run once per cached view (--views augmented passes
    over the photos); then each epoch trains the last N blocks and the head on one random view
    of each photo. The epoch with the best validation top-1 is kept. On the CPU only: the cache
    lives in memory. No optimizer state is saved (it would double the file)."""
    if next(model.backbone.parameters()).device.type != "cpu":
        raise UsageError("--train_blocks trains on the CPU (its feature cache is in memory); "
                         "drop --gpu")
    model.backbone.to(memory_format=torch.channels_last)  # 2x faster depthwise convs on oneDNN
    frozen, tail = split_backbone(model.backbone, model.arch, args.train_blocks)
    views = 1 if args.no_augment else args.views
    valid = cache_views(frozen, valid_set, 1, lambda: loader(valid_set, args, False),
                        "valid features")
    cache, targets = cache_views(frozen, train_set, views, lambda: loader(train_set, args,
                                                                          False), "train view")
    print(f"cached {views} view(s) of {len(targets)} photos after {len(frozen) - 2} frozen "
          f"blocks: {cache.nbytes / 1e9:.2f} GB", flush=True)
    tuner = FineTuner(tail, model.head, args, -(-len(targets) // args.batch_size))
    if not model.epochs_done:
        probe_loss = tuner.probe(cache, targets, shuffle)
        row = tuner.validate(valid[0][0], valid[1])
        print(f"linear probe: train loss {probe_loss:.4f}, validation loss "
              f"{row['valid_loss']:.4f}, top-1 {100 * row['top1']:.1f}%, top-5 "
              f"{100 * row['top5']:.1f}%", flush=True)
        tuner.keep_if_best(0, row)  # epoch 0: the probe on the pretrained blocks
    for epoch in range(model.epochs_done + 1, model.epochs_done + args.epochs + 1):
        desc = f"epoch {epoch}/{model.epochs_done + args.epochs}"
        train_loss = tuner.epoch(cache, targets, args.batch_size, shuffle, desc)
        row = {"epoch": epoch, "train_loss": train_loss, **tuner.validate(valid[0][0], valid[1])}
        model.history.append(row)
        tuner.keep_if_best(epoch, row)
        report(desc, row)
    tuner.restore_best()
    model.backbone.to(memory_format=torch.contiguous_format)
    print(f"selected epoch {tuner.best_epoch} (best validation top-1)", flush=True)
    return {"selected_epoch": tuner.best_epoch, "views": views,
            "learning_rate": args.learning_rate or DEFAULT_LR}


def category_names(args: argparse.Namespace) -> Path | None:
    """--category_names (must exist), else DATA_DIR/cat_to_name.json if present, else None."""
    if args.category_names:
        if not Path(args.category_names).is_file():
            raise UsageError(f"--category_names {args.category_names} not found")
        return Path(args.category_names)
    found = Path(args.data_dir or ".") / CATEGORY_NAMES
    return found if args.data_dir and found.is_file() else None


def run(args: argparse.Namespace) -> Path:
    """Train as `args` say; returns the checkpoint path. Raises on bad input."""
    started = time.perf_counter()
    device = choose_device(args.gpu)
    seed_everything(args.seed)
    train_dir, valid_dir = data_folders(args.data_dir, args.train_dir, args.valid_dir)
    names = category_names(args)
    class_to_idx = ClassFolders(train_dir, Preprocessing(), False).class_to_idx
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    model = TrainingState(args, class_to_idx).to(device)
    spec = model.preprocessing
    train_set = ClassFolders(train_dir, spec, not args.no_augment, class_to_idx)
    valid_set = ClassFolders(valid_dir, spec, False, class_to_idx)
    print(f"{model.weights_note}; head {model.head_dims()}; {len(train_set)} training and "
          f"{len(valid_set)} validation images, {len(class_to_idx)} classes; {device}",
          flush=True)
    shuffle = torch.Generator().manual_seed(args.seed)
    selected = fine_tune(model, train_set, valid_set, args, shuffle) if args.train_blocks else (
        train_head(model, train_set, valid_set, args, device, shuffle))
    model.epochs_done += args.epochs
    path = save_dir / CHECKPOINT
    save_checkpoint(
        path, arch=model.arch, slot=model.slot, hidden_units=model.hidden,
        class_to_idx=class_to_idx,
        state_dict=model.state_dict(), preprocessing=spec, head_only=model.head_only(),
        backbone_weights="default", epochs=model.epochs_done, history=model.history,
        weights=model.weights, dropout=args.dropout, batch_size=args.batch_size,
        augment=not args.no_augment, seed=args.seed, train_blocks=model.tuned_blocks,
        **selected)
    plot_curve(model.history, save_dir / CURVE)
    if names is not None and names.resolve() != (save_dir / CATEGORY_NAMES).resolve():
        shutil.copyfile(names, save_dir / CATEGORY_NAMES)
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) and {save_dir / CURVE} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return path


BAD_INPUT = (InputError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BAD_INPUT as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    return 0
