"""Runs the one model copy of this process: device placement, precision, warm-up and forward.
Reduced precision is kept only if it gives the same answers as fp32 (precision.py's policy).
"""
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
from .quantize import layer_sensitivity, quantize

log = logging.getLogger(__name__)
__all__ = ["TOP1_TOLERANCE", "Predictor"]
CHUNK = 8  # the check's forwards run in chunks, so warm-up memory stays at a serving batch's
MIXED = "int8-mixed"  # int8 with the layers most sensitive to it left in fp32
MIXED_TRIES = (1, 2, 4)  # how many of the most sensitive layers each try leaves in fp32
CHECK_BUDGET_S = 10.0  # "auto": no mixed-precision try starts that would end the checks later


class Predictor:
    """Batched forward of preprocessed images -> class probabilities (float32, on the CPU)."""

    def __init__(self, classifier: Classifier, device: torch.device, precision: str) -> None:
        self.classifier = classifier
        self.device = device
        self.precision = precision
        self.model = classifier.model.to(device).to(memory_format=torch.channels_last).eval()
        self.fp32_layers: tuple[str, ...] = ()  # int8-mixed: the layers kept in fp32
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
        return self.timed_answers(batch, model, precision)[0]

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
        if cached and cached["precision"] in (*candidates, "fp32", MIXED):
            log.info("precision %s, from the decision cached in %s", cached["precision"],
                     cache.path)
            self._apply(cached["precision"], photos, tuple(cached.get("fp32_layers", ())))
            return
        started = time.perf_counter()
        exact, rate = self.timed_answers(sample)
        verdicts, models, int8_cost = [Verdict("fp32", rate)], {}, 0.0
        for candidate in candidates:
            if candidate == "int8":
                began = time.perf_counter()
                models["int8"] = quantized = self._quantized(photos)
                if quantized is None:
                    continue
                reduced, rate = self.timed_answers(sample, quantized)
                int8_cost = time.perf_counter() - began
            else:
                reduced, rate = self.timed_answers(sample, precision=candidate)
            verdicts.append(Verdict(candidate, rate, *compare(exact, reduced)))
        if any(v.precision == "int8" and not v.keeps for v in verdicts):
            deadline = started + CHECK_BUDGET_S
            mixed = self._mixed_int8(photos, sample, exact, deadline, int8_cost)
            if mixed:
                models[MIXED], verdict = mixed
                verdicts.append(verdict)
        chosen = fastest(verdicts)
        log.info("precision check on %d inputs: %s; serving %s%s", len(sample),
                 "; ".join(v.describe() for v in verdicts), chosen.precision,
                 f" (fp32: {', '.join(self.fp32_layers)})" if chosen.precision == MIXED else "")
        self.precision = chosen.precision
        if chosen.precision in models:
            self.model = self.classifier.model = models[chosen.precision]  # frees fp32 weights
        if chosen.precision != MIXED:
            self.fp32_layers = ()
        if cache:
            cache.save(chosen.precision, verdicts, fp32_layers=list(self.fp32_layers))

    def _mixed_int8(self, photos: torch.Tensor, sample: torch.Tensor, exact: torch.Tensor,
                    deadline: float = float("inf"),
                    cost: float = 0.0) -> tuple[nn.Module, Verdict] | None:
        """int8 with the layers int8 hurts most left in fp32 (1, 2, then 4 of them, ranked by
        layer_sensitivity on the photos): the first that keeps the answers, or None. No try
        starts that would end after `deadline`, each costing about `cost` seconds."""
        ranked = [name for name, _ in layer_sensitivity(self.model, self.classifier.head_path,
                                                        photos, cpu_has_vnni())]
        for count in MIXED_TRIES:
            if time.perf_counter() + cost > deadline:
                log.info("int8 with fp32 layers not tried further: the precision checks' "
                         "%.0f s budget is spent", CHECK_BUDGET_S)
                return None
            layers = tuple(ranked[:count])
            quantized = self._quantized(photos, layers)
            if quantized is None:
                return None
            reduced, rate = self.timed_answers(sample, quantized)
            verdict = Verdict(MIXED, rate, *compare(exact, reduced))
            log.info("int8 with %s in fp32: %s", ", ".join(layers), verdict.describe())
            if verdict.keeps:
                self.fp32_layers = layers
                return quantized, verdict
        return None

    def _apply(self, precision: str, photos: torch.Tensor | None,
               fp32_layers: tuple[str, ...]) -> None:
        """Serve a precision decided earlier; int8 is calibrated again on the same photos."""
        self.precision = precision
        if precision in ("int8", MIXED):
            quantized = self._quantized(photos, fp32_layers)
            if quantized is None:
                self.precision = "fp32"
            else:
                self.model = self.classifier.model = quantized
                self.fp32_layers = fp32_layers

    def _quantized(self, photos: torch.Tensor | None,
                   fp32_layers: tuple[str, ...] = ()) -> nn.Module | None:
        """The int8 model calibrated on `photos`, or None (logged) when it cannot be made."""
        if photos is None:
            log.warning("int8 needs photos to calibrate on and none were found")
            return None
        try:
            return quantize(self.model, self.classifier.head_path, photos, cpu_has_vnni(),
                            fp32_layers)[0]
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
        exact = self.answers(sample)
        if self._keeps_answers(exact, self.answers(sample, quantized)):
            self.model = self.classifier.model = quantized  # drops the fp32 weights
            return
        mixed = self._mixed_int8(photos, sample, exact)
        if mixed:
            self.precision = MIXED
            self.model = self.classifier.model = mixed[0]
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
