# Runs the one model copy of this process: device placement, precision, warm-up and forward.
# Reduced precision is kept only if it gives the same answers as fp32 (same top-1, within 0.02).
from __future__ import annotations

import contextlib
import logging
import time

import torch

from .checkpoint import Classifier
from .device import autocast_dtype

log = logging.getLogger(__name__)
TOP1_TOLERANCE = 0.02


class Predictor:
    """Batched forward of preprocessed images -> class probabilities (float32, on the CPU)."""

    def __init__(self, classifier: Classifier, device: torch.device, precision: str) -> None:
        self.classifier = classifier
        self.device = device
        self.precision = precision
        self.model = classifier.model.to(device).to(memory_format=torch.channels_last).eval()
        crop = classifier.preprocessing.crop
        self.input_shape = (3, crop, crop)

    def _autocast(self, precision: str):
        dtype = autocast_dtype(precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, batch: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast(precision or self.precision):
            output = self.model(batch)
        return torch.softmax(output.float(), dim=1).cpu()

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Run each batch size once (and check reduced precision); returns seconds taken."""
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(0)
        # at least 8 rows, so the precision check sees 8 inputs even when only batch 1 is warmed
        sample = torch.randn(max(8, *batch_sizes), *self.input_shape, generator=generator)
        if self.precision != "fp32":
            self._check_precision(sample[:8])
        for size in sorted(set(batch_sizes)):
            self.forward(sample[:size])
        return time.perf_counter() - started

    def _check_precision(self, sample: torch.Tensor) -> None:
        exact = self.forward(sample, "fp32")
        reduced = self.forward(sample)
        top1 = exact.argmax(dim=1)
        same = bool((reduced.argmax(dim=1) == top1).all())
        gap = float((exact.gather(1, top1[:, None]) - reduced.gather(1, top1[:, None])).abs().max())
        if not same or gap > TOP1_TOLERANCE:
            log.warning("%s changes answers for %s (same top-1: %s, top-1 probability gap %.4f); "
                        "using fp32", self.precision, self.classifier.arch, same, gap)
            self.precision = "fp32"
