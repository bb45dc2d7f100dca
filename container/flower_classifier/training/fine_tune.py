"""train.py --train_blocks N: a linear probe, then EfficientNet-Lite0's last N blocks fine-tuned
with the head (LP-FT), on cached outputs of its frozen early blocks for several augmented views.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys

import torch
from torch import nn
from tqdm import tqdm

from ..errors import UsageError
from ..model.accuracy import validation_scores
from ..model.architectures import LITE0
from .data import ClassFolders
from .epoch import run_epoch

TAIL_LR_SCALE = 0.1  # the unfrozen blocks learn at a tenth of the head's learning rate
PROBE_EPOCHS = 40  # linear-probe epochs on the tail's pooled features before fine-tuning
PROBE_LR = 0.001
PROBE_BATCH = 256  # the probe's steps are tiny matrix products: big batches, fewer steps
CACHE_DTYPE = torch.float16  # halves the cache (7x7x192 per view: 18.8 KB); training is fp32


def split_backbone(backbone: nn.Module, arch: str, train_blocks: int) -> tuple[nn.Module,
                                                                                nn.Module]:
    """(frozen, tail): the stem and all but the last `train_blocks` inverted-residual blocks,
    then those blocks with conv_head, bn2 and the pooling. Both hold the backbone's own modules,
    so training the tail trains the backbone, and its state_dict is the full model's."""
    if arch != LITE0:
        raise UsageError(f"--train_blocks supports {LITE0} only (not {arch}); without it the "
                         f"head trains on a frozen backbone")
    blocks = [block for stage in backbone.blocks for block in stage]
    if not 1 <= train_blocks <= len(blocks):
        raise UsageError(f"--train_blocks must be from 1 to {len(blocks)} for {arch}")
    cut = len(blocks) - train_blocks
    frozen = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:cut])
    tail = nn.Sequential(*blocks[cut:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    return frozen, tail


def cache_views(frozen: nn.Module, dataset: ClassFolders, views: int, batches,
                desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-part outputs (views, N, C, H, W) in CACHE_DTYPE and the N targets: `views`
    passes over `dataset` in file order (each pass draws new augmentations)."""
    cache, targets = None, None
    frozen.eval()
    for view in range(views):
        rows, labels = [], []
        bar = tqdm(batches(), desc=f"{desc} {view + 1}/{views}", unit="batch", leave=False,
                   file=sys.stderr)
        with torch.no_grad():
            for images, target in bar:
                rows.append(frozen(images.contiguous(memory_format=torch.channels_last))
                            .to(CACHE_DTYPE))
                labels.append(target)
        out = torch.cat(rows)
        if cache is None:
            cache = torch.empty((views, *out.shape), dtype=CACHE_DTYPE)
            targets = torch.cat(labels)
        cache[view] = out
        del rows, out
    return cache, targets


class FineTuner:
    """Adam over the head (learning_rate) and the tail (TAIL_LR_SCALE of it), one warm-up epoch
    then a cosine decay; BatchNorm statistics stay the pretrained ones (the tail runs in eval
    mode, so dropout is applied to the pooled features before the head)."""

    def __init__(self, tail: nn.Module, head: nn.Module, args: argparse.Namespace,
                 steps_per_epoch: int) -> None:
        self.tail, self.head, self.dropout = tail, head, args.dropout
        tail.requires_grad_(True)
        lr = args.learning_rate or 0.001
        self.optimizer = torch.optim.Adam([
            {"params": head.parameters(), "lr": lr},
            {"params": tail.parameters(), "lr": lr * TAIL_LR_SCALE}])
        self.base = [group["lr"] for group in self.optimizer.param_groups]
        self.total, self.warm, self.step_count = steps_per_epoch * args.epochs, steps_per_epoch, 0
        self.best: tuple[float, float] | None = None
        self.best_state: tuple[dict, dict] | None = None
        self.best_epoch = 0

    def _schedule(self) -> None:
        self.step_count += 1
        if self.step_count <= self.warm:
            scale = self.step_count / self.warm
        else:
            done = (self.step_count - self.warm) / max(1, self.total - self.warm)
            scale = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * scale

    def pooled(self, cache: torch.Tensor) -> torch.Tensor:
        """The tail's pooled features (views * N, F) of every cached view, as it is now."""
        self.tail.eval()
        rows = []
        with torch.no_grad():
            for view in cache:
                for chunk in tqdm(view.split(128), desc="probe features", unit="batch",
                                  leave=False, file=sys.stderr):
                    rows.append(self.tail(chunk.float().contiguous(
                        memory_format=torch.channels_last)))
        return torch.cat(rows)

    def probe(self, cache: torch.Tensor, targets: torch.Tensor,
              generator: torch.Generator) -> float:
        """Linear probe first (LP-FT): the head trains alone on the frozen tail's features of
        all views, so fine-tuning starts from a head that already answers; mean last loss."""
        feats = self.pooled(cache)
        labels = targets.repeat(len(cache))
        optimizer = torch.optim.Adam(self.head.parameters(), lr=PROBE_LR)
        criterion = nn.NLLLoss()
        self.head.train()
        for _ in tqdm(range(PROBE_EPOCHS), desc="linear probe", unit="epoch", leave=False,
                      file=sys.stderr):
            loss_sum = 0.0
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(order), PROBE_BATCH):
                index = order[start:start + PROBE_BATCH]
                optimizer.zero_grad()
                inputs = nn.functional.dropout(feats[index], self.dropout, training=True)
                loss = criterion(self.head(inputs), labels[index])
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(index)
        return loss_sum / len(labels)

    def logits(self, inputs: torch.Tensor, train: bool) -> torch.Tensor:
        feats = self.tail(inputs.float().contiguous(memory_format=torch.channels_last))
        return self.head(nn.functional.dropout(feats, self.dropout, training=train))

    def epoch(self, cache: torch.Tensor, targets: torch.Tensor, batch_size: int,
              generator: torch.Generator, desc: str) -> float:
        """One pass over the photos, each in a view drawn at random from the cache."""
        self.tail.eval()
        self.head.train()
        order = torch.randperm(len(targets), generator=generator)
        view = torch.randint(len(cache), (len(targets),), generator=generator)
        criterion = nn.NLLLoss()
        bar = tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False,
                   file=sys.stderr)

        def loss_of(start: int) -> tuple[torch.Tensor, int]:
            index = order[start:start + batch_size]
            self._schedule()
            loss = criterion(self.logits(cache[view[index], index], True), targets[index])
            return loss, len(index)

        return run_epoch(bar, self.optimizer, loss_of)

    def validate(self, feats: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation loss, top-1 and top-5 of the tuned tail and head on cached features."""
        self.head.eval()
        with torch.no_grad():
            log_probs = torch.cat([self.logits(chunk, False) for chunk in feats.split(64)])
        return validation_scores(log_probs, targets)

    def keep_if_best(self, epoch: int, row: dict[str, float]) -> None:
        """Select on validation: highest top-1, then lowest loss."""
        score = (row["top1"], -row["valid_loss"])
        if self.best is None or score > self.best:
            self.best, self.best_epoch = score, epoch
            self.best_state = (copy.deepcopy(self.tail.state_dict()),
                               copy.deepcopy(self.head.state_dict()))

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.tail.load_state_dict(self.best_state[0])
            self.head.load_state_dict(self.best_state[1])
        self.tail.requires_grad_(False)
