"""Runs the one model copy of this process: device placement, backend, precision, warm-up and
forward. Reduced precision is kept only if it gives the same answers as fp32 (precision.py).
"""
from __future__ import annotations

import contextlib
import logging
import time

import torch
from torch import nn

from . import openvino_backend
from .calibration import with_flips
from .checkpoint import Classifier
from .device import autocast_dtype, cpu_has_bf16, cpu_has_vnni, precision_candidates
from .openvino_backend import OpenVinoModel
from .precision import TOP1_TOLERANCE, TORCH, DecisionCache, Verdict, compare, fastest
from .quantize import layer_sensitivity, quantize

log = logging.getLogger(__name__)
__all__ = ["TOP1_TOLERANCE", "Predictor"]
CHUNK = 8  # the check's forwards run in chunks, so warm-up memory stays at a serving batch's
MIXED = "int8-mixed"  # int8 with the layers most sensitive to it left in fp32
MIXED_TRIES = (1, 2, 4)  # how many of the most sensitive layers each try leaves in fp32
CHECK_BUDGET_S = 10.0  # no candidate's check starts after this many seconds of checks
OPENVINO = openvino_backend.BACKEND


class Predictor:
    """Batched forward of preprocessed images -> class probabilities (float32, on the CPU).

    `backend` is "torch", "openvino" or "auto" (the warm-up measures both, on a CPU with
    OpenVINO installed); `lanes` is how many batches the server forwards side by side."""

    def __init__(self, classifier: Classifier, device: torch.device, precision: str,
                 backend: str = TORCH, lanes: int = 1) -> None:
        self.classifier = classifier
        self.device = device
        self.precision = precision
        self.backend = backend
        if backend == "auto" and (device.type != "cpu" or not openvino_backend.available()):
            self.backend = TORCH  # OpenVINO runs on CPUs here, and only where it is installed
        self.lanes = lanes
        self.model = classifier.model.to(device).to(memory_format=torch.channels_last).eval()
        self.fp32_layers: tuple[str, ...] = ()  # int8-mixed: the layers kept in fp32
        crop = classifier.preprocessing.crop
        self.input_shape = (3, crop, crop)
        self._converted = None  # the OpenVINO model, while the warm-up checks candidates

    @property
    def measures(self) -> bool:
        """Whether the warm-up checks and times candidates (and can reuse a cached decision)."""
        return self.precision == "auto" or self.backend != TORCH

    def candidates(self) -> list[tuple[str, str]]:
        """The (backend, precision) pairs the warm-up checks against torch fp32, in the order
        the check budget spends on them: torch int8 (on VNNI the biggest win where it keeps
        answers: 2.7x bf16 for vgg16 here) and torch's float precisions, then OpenVINO fp32
        (one conversion; the same arithmetic, so it keeps answers where anything does: 8x
        torch fp32 for the demo's Lite0) and bf16 (one more compile), then NNCF's int8, the
        costliest check."""
        found = []
        if self.backend in (TORCH, "auto"):
            found += [(TORCH, p) for p in precision_candidates(self.precision, self.device)
                      if p != "fp32"]
        if self.backend in (OPENVINO, "auto"):
            wanted = ["fp32", *(["bf16"] if cpu_has_bf16() else []), "int8"]
            if self.precision != "auto":
                wanted = [p for p in wanted if p == self.precision] or ["fp32"]
            found += [(OPENVINO, p) for p in wanted]
        order = [(TORCH, "int8"), (TORCH, "fp16"), (TORCH, "bf16"), (OPENVINO, "fp32"),
                 (OPENVINO, "bf16"), (OPENVINO, "int8")]
        return sorted(found, key=order.index)

    def candidate_labels(self) -> list[str]:
        """candidates() as strings for the decision cache's key (with OpenVINO's version)."""
        return [f"{backend}{openvino_backend.version() if backend == OPENVINO else ''}:{p}"
                for backend, p in self.candidates()]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self._run(self.model, batch, self.precision)

    def _run(self, model: nn.Module | OpenVinoModel, batch: torch.Tensor,
             precision: str) -> torch.Tensor:
        if isinstance(model, OpenVinoModel):
            return torch.softmax(model(batch).float(), dim=1)
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

    def answers(self, batch: torch.Tensor, model: nn.Module | OpenVinoModel | None = None,
                precision: str = "fp32") -> torch.Tensor:
        """Probabilities for any number of images, in chunks of CHUNK."""
        return self.timed_answers(batch, model, precision)[0]

    def timed_answers(self, batch: torch.Tensor, model: nn.Module | OpenVinoModel | None = None,
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
        if self.measures:
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
        """Check and time torch fp32 and every candidate; serve the fastest that keeps the
        answers (with INFERENCE_BACKEND=openvino, the fastest of OpenVINO's)."""
        candidates = self.candidates()
        cached = cache.load() if cache else None
        if cached and (cached.get("backend", TORCH), cached["precision"]) in (
                *candidates, (TORCH, "fp32"), (TORCH, MIXED)):
            log.info("%s %s, from the decision cached in %s", cached.get("backend", TORCH),
                     cached["precision"], cache.path)
            self._apply(cached.get("backend", TORCH), cached["precision"], photos,
                        tuple(cached.get("fp32_layers", ())), cache)
            return
        started = time.perf_counter()
        deadline = started + CHECK_BUDGET_S
        exact, rate = self.timed_answers(sample)
        verdicts, models, int8_cost = [Verdict("fp32", rate)], {}, 0.0
        for backend, precision in candidates:
            if time.perf_counter() > deadline:
                log.info("%s %s not checked: the precision checks' %.0f s budget is spent",
                         backend, precision, CHECK_BUDGET_S)
                continue
            began = time.perf_counter()
            checked = self.check(backend, precision, photos, sample, exact)
            if checked is None:
                continue
            verdicts.append(checked[0])
            if checked[0].keeps:  # a model that changes answers is dropped at once
                models[backend, precision] = checked[1]
            del checked
            if (backend, precision) == (TORCH, "int8"):
                int8_cost = time.perf_counter() - began
        if any(v.precision == "int8" and v.backend == TORCH and not v.keeps for v in verdicts):
            mixed = self.mixed_int8(photos, sample, exact, deadline, int8_cost)
            if mixed:
                models[TORCH, MIXED], verdict = mixed
                verdicts.append(verdict)
        chosen = self._pick(verdicts)
        log.info("precision check on %d inputs: %s; serving %s%s", len(sample),
                 "; ".join(v.describe() for v in verdicts), chosen.label,
                 f" (fp32: {', '.join(self.fp32_layers)})" if chosen.precision == MIXED else "")
        self.precision, self.backend = chosen.precision, chosen.backend
        if chosen.backend == OPENVINO:
            self._serve_openvino(models[OPENVINO, chosen.precision], cache)
        elif (TORCH, chosen.precision) in models:
            self.model = self.classifier.model = models[TORCH, chosen.precision]  # frees fp32
        self._converted = None
        if chosen.precision != MIXED:
            self.fp32_layers = ()
        if cache:
            cache.save(chosen.precision, verdicts, backend=chosen.backend,
                       fp32_layers=list(self.fp32_layers))

    def _pick(self, verdicts: list[Verdict]) -> Verdict:
        """fastest(), among OpenVINO's verdicts when INFERENCE_BACKEND=openvino and among the
        forced precision's when INFERENCE_PRECISION names one (torch fp32 when none keeps)."""
        pool = [v for v in verdicts if (self.backend != OPENVINO or v.backend == OPENVINO)
                and (self.precision in ("auto", v.precision) or v.precision == MIXED)]
        if not any(v.keeps for v in pool):
            if self.backend == OPENVINO:
                log.warning("no OpenVINO precision keeps fp32's answers for %s: serving torch "
                            "fp32", self.classifier.arch)
            return verdicts[0]
        return fastest(pool)

    def check(self, backend: str, precision: str, photos: torch.Tensor | None,
              sample: torch.Tensor, exact: torch.Tensor
              ) -> tuple[Verdict, nn.Module | OpenVinoModel] | None:
        """One candidate built, timed on `sample` and compared with torch fp32's `exact`
        answers: (its verdict, its model), or None (logged) when it cannot be made."""
        model = self.candidate_model(backend, precision, photos)
        if model is None:
            return None
        reduced, rate = self.timed_answers(sample, model, precision)
        return Verdict(precision, rate, *compare(exact, reduced), backend=backend), model

    def candidate_model(self, backend: str, precision: str,
                        photos: torch.Tensor | None) -> nn.Module | OpenVinoModel | None:
        """The model that runs one candidate (torch bf16/fp16: the fp32 model under autocast),
        or None (logged) when it cannot be made."""
        if backend == OPENVINO:
            return self._openvino(precision, photos)
        if precision == "int8":
            return self._quantized(photos)
        return self.model

    def _openvino(self, precision: str, photos: torch.Tensor | None,
                  streams: int = 1) -> OpenVinoModel | None:
        """The model converted to OpenVINO (once) and compiled in `precision` (int8: quantized
        by NNCF on `photos`), on every torch thread; None (logged) when it cannot be made."""
        if precision == "int8" and photos is None:
            log.warning("OpenVINO int8 needs photos to calibrate on and none were found")
            return None
        try:
            if self._converted is None:
                self._converted = openvino_backend.convert(self.model, self.input_shape)
            converted = self._converted
            if precision == "int8":
                converted = openvino_backend.quantize(converted, photos)
            return openvino_backend.compile_model(converted, precision,
                                                  torch.get_num_threads(), streams)
        except Exception as error:  # noqa: BLE001 - any conversion failure means: no OpenVINO
            reason = (str(error).splitlines() or [""])[0][:200]
            log.warning("OpenVINO %s is not possible for %s (%s: %s)", precision,
                        self.classifier.arch, type(error).__name__, reason)
            return None

    def _serve_openvino(self, checked: OpenVinoModel, cache: DecisionCache | None) -> None:
        """Serve the OpenVINO model that passed the check, compiled again for the server's
        lanes (one stream each), and cache its graph (IR files) for the next worker."""
        if cache:
            openvino_backend.save(checked.graph, cache.artifact(OPENVINO))
        served = checked
        if self.lanes > 1:
            served = openvino_backend.compile_model(checked.graph, checked.precision,
                                                    torch.get_num_threads(), self.lanes)
        served.graph = checked.graph = None  # the compiled model holds what it runs
        self.model = self.classifier.model = served  # frees the torch weights

    def mixed_int8(self, photos: torch.Tensor, sample: torch.Tensor, exact: torch.Tensor,
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

    def _apply(self, backend: str, precision: str, photos: torch.Tensor | None,
               fp32_layers: tuple[str, ...], cache: DecisionCache | None = None) -> None:
        """Serve a decision made earlier: OpenVINO from the cached IR (converted again if it is
        gone), torch int8 calibrated again on the same photos."""
        self.precision, self.backend = precision, backend
        if backend == OPENVINO:
            graph = openvino_backend.load(cache.artifact(OPENVINO)) if cache else None
            if graph is not None:
                self.model = self.classifier.model = openvino_backend.compile_model(
                    graph, precision, torch.get_num_threads(), self.lanes)
                return
            checked = self._openvino(precision, photos)
            self._converted = None
            if checked is None:
                self.precision, self.backend = "fp32", TORCH
            else:
                self._serve_openvino(checked, cache)
        elif precision in ("int8", MIXED):
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
        mixed = self.mixed_int8(photos, sample, exact)
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
