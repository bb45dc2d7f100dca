# Runs the one model copy of this process: device placement, precision, warm-up and forward.
# Reduced precision is kept only if it gives the same answers as fp32 (precision.py's policy).
from __future__ import annotations

import contextlib
import logging
import time

import torch
from torch import nn

from .calibration import with_flips
from .checkpoint import Classifier
from .device import autocast_dtype, cpu_has_vnni, precision_candidates
from .precision import TOP1_TOLERANCE, DecisionCache, Verdict, compare, fastest
from .quantize import quantize

log = logging.getLogger(__name__)
__all__ = ["TOP1_TOLERANCE", "Predictor"]
CHUNK = 8  # the check's forwards run in chunks, so warm-up memory stays at a serving batch's


class Predictor:
    """Batched forward of preprocessed images -> class probabilities (float32, on the CPU)."""

    def __init__(self, classifier: Classifier, device: torch.device, precision: str) -> None:
        self.classifier = classifier
        self.device = device
        self.precision = precision
        self.model = classifier.model.to(device).to(memory_format=torch.channels_last).eval()
        crop = classifier.preprocessing.crop
        self.input_shape = (3, crop, crop)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self._run(self.model, batch, self.precision)

    def _run(self, model: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        dtype = autocast_dtype(precision)
        autocast = (torch.autocast(self.device.type, dtype=dtype) if dtype
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            output = model(batch)
        return torch.softmax(output.float(), dim=1).cpu()

    def answers(self, batch: torch.Tensor, model: nn.Module | None = None,
                precision: str = "fp32") -> torch.Tensor:
        """Probabilities for any number of images, in chunks of CHUNK."""
        return torch.cat([self._run(model or self.model, chunk, precision)
                          for chunk in batch.split(CHUNK)])

    def timed_answers(self, batch: torch.Tensor, model: nn.Module | None = None,
                      precision: str = "fp32") -> tuple[torch.Tensor, float]:
        """answers() and the images/s of its fastest full chunk after the first (the first
        pays one-off costs: kernels picked and primitives built for the shape)."""
        outputs, rates = [], []
        for chunk in batch.split(CHUNK):
            started = time.perf_counter()
            outputs.append(self._run(model or self.model, chunk, precision))
            rates.append((len(chunk), len(chunk) / (time.perf_counter() - started)))
        full = [rate for size, rate in rates if size == CHUNK]
        timed = full[1:] or full or [rate for _, rate in rates]
        return torch.cat(outputs), max(timed)

    def warm_up(self, batch_sizes: tuple[int, ...], photos: torch.Tensor | None = None,
                cache: DecisionCache | None = None) -> float:
        """Settle the precision on real photos (int8: calibrated on them), then run each batch
        size once. Without photos, bf16/fp16 are checked on noise and int8 falls back to fp32.
        "auto" checks and times every candidate (precision.py). Returns the seconds taken."""
        started = time.perf_counter()
        if photos is None or not len(photos):
            photos = None
            sample = torch.randn(8, *self.input_shape, generator=torch.Generator().manual_seed(0))
        else:
            sample = with_flips(photos)
        if self.precision == "auto":
            self._choose(photos, sample, cache)
        elif self.precision == "int8":
            self._try_int8(photos, sample)
        elif self.precision != "fp32":
            reduced = self.answers(sample, precision=self.precision)
            if not self._keeps_answers(self.answers(sample), reduced):
                self.precision = "fp32"
        for size in sorted(set(batch_sizes)):
            self.forward(sample.repeat((size + len(sample) - 1) // len(sample), 1, 1, 1)[:size])
        return time.perf_counter() - started

    def _choose(self, photos: torch.Tensor | None, sample: torch.Tensor,
                cache: DecisionCache | None) -> None:
        """Check and time fp32 and every candidate; serve the fastest that keeps the answers."""
        candidates = precision_candidates("auto", self.device)
        cached = cache.load() if cache else None
        if cached in (*candidates, "fp32"):
            log.info("precision %s, from the decision cached in %s", cached, cache.path)
            self.precision = cached
            if cached == "int8":  # calibrated again on the same photos; checked when decided
                quantized = self._quantized(photos)
                if quantized is None:
                    self.precision = "fp32"
                else:
                    self.model = self.classifier.model = quantized
            return
        exact, rate = self.timed_answers(sample)
        verdicts, models = [Verdict("fp32", rate)], {}
        for candidate in candidates:
            if candidate == "int8":
                models["int8"] = quantized = self._quantized(photos)
                if quantized is None:
                    continue
                reduced, rate = self.timed_answers(sample, quantized)
            else:
                reduced, rate = self.timed_answers(sample, precision=candidate)
            verdicts.append(Verdict(candidate, rate, *compare(exact, reduced)))
        chosen = fastest(verdicts)
        log.info("precision check on %d inputs: %s; serving %s", len(sample),
                 "; ".join(v.describe() for v in verdicts), chosen.precision)
        self.precision = chosen.precision
        if chosen.precision == "int8":
            self.model = self.classifier.model = models["int8"]  # drops the fp32 weights
        if cache:
            cache.save(chosen.precision, verdicts)

    def _quantized(self, photos: torch.Tensor | None) -> nn.Module | None:
        """The int8 model calibrated on `photos`, or None (logged) when it cannot be made."""
        if photos is None:
            log.warning("int8 needs photos to calibrate on and none were found")
            return None
        try:
            return quantize(self.model, self.classifier.head_path, photos, cpu_has_vnni())[0]
        except Exception as error:  # noqa: BLE001 - any tracing failure means: no int8
            reason = (str(error).splitlines() or [""])[0][:200]
            log.warning("int8 quantization is not possible for %s (%s: %s)",
                        self.classifier.arch, type(error).__name__, reason)
            return None

    def _try_int8(self, photos: torch.Tensor | None, sample: torch.Tensor) -> None:
        """Quantize on `photos`; keep int8 only if it answers `sample` (the photos and their
        mirrors) as fp32 does."""
        quantized = self._quantized(photos)
        if quantized is None:
            self.precision = "fp32"
            return
        if self._keeps_answers(self.answers(sample), self.answers(sample, quantized)):
            self.model = self.classifier.model = quantized  # drops the fp32 weights
        else:
            self.precision = "fp32"

    def _keeps_answers(self, exact: torch.Tensor, reduced: torch.Tensor) -> bool:
        same, gap = compare(exact, reduced)
        if same and gap <= TOP1_TOLERANCE:
            log.info("%s keeps fp32's answers on %d inputs (top-1 probability gap %.4f)",
                     self.precision, len(exact), gap)
            return True
        log.warning("%s changes answers for %s on %d inputs (same top-1: %s, top-1 probability "
                    "gap %.4f); using fp32", self.precision, self.classifier.arch, len(exact),
                    same, gap)
        return False
