"""Runs the one model copy of this process: device placement, backend, precision, warm-up and
forward. Reduced precision is kept only if it gives the same answers as fp32 (precision.py).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import torch
from torch import nn

from . import openvino_backend
from .calibration import with_flips
from .checkpoint import Classifier
from .device import autocast_dtype, cpu_has_bf16, cpu_has_vnni, precision_candidates
from .openvino_backend import OpenVinoModel
from .precision import (
    CANDIDATE_ORDER,
    MIXED,
    OPENVINO,
    TOP1_TOLERANCE,
    TORCH,
    DecisionCache,
    Verdict,
    choose,
    compare,
)
from .quantize import layer_sensitivity, quantize

log = logging.getLogger(__name__)
__all__ = ["MIXED", "TOP1_TOLERANCE", "Predictor"]
CHUNK = 8  # the check's forwards run in chunks, so warm-up memory stays at a serving batch's
MIXED_TRIES = (1, 2, 4)  # how many of the most sensitive layers each try leaves in fp32
CHECK_BUDGET_S = 10.0  # no candidate's check starts after this many seconds of checks
BACKGROUND_BUDGET_S = 120.0  # the same, for decide(): fp32 serves meanwhile, /ping answers
# how long past its budget a check may hold its model's decision lock before the workers
# waiting for it decide for themselves: the last candidate started within the budget (vgg16's
# OpenVINO int8, 30-60 s on two cores) and the chosen model's build
DECIDING_SLACK_S = 180.0


class Predictor:
    """Batched forward of preprocessed images -> class probabilities (float32, on the CPU).

    `backend` is "torch", "openvino" or "auto" (the warm-up measures both, on a CPU with
    OpenVINO installed); `lanes` is how many batches the server forwards side by side."""

    def __init__(self, classifier: Classifier, device: torch.device, precision: str,
                 backend: str = TORCH, lanes: int = 1) -> None:
        self.classifier = classifier
        self.device = device
        if backend == "auto" and (device.type != "cpu" or not openvino_backend.available()):
            backend = TORCH  # OpenVINO runs on CPUs here, and only where it is installed
        # the settings asked for; `precision` and `backend` are what serves now
        self.requested_precision, self.requested_backend = precision, backend
        self.backend = backend
        self.lanes = lanes
        model = classifier.model.to(device).to(memory_format=torch.channels_last).eval()
        self._serving = (model, precision)  # what forward() runs: replaced in one assignment
        self.fp32_layers: tuple[str, ...] = ()  # int8-mixed: the layers kept in fp32
        crop = classifier.preprocessing.crop
        self.input_shape = (3, crop, crop)
        self._converted = None  # the OpenVINO model, while the warm-up checks candidates
        self.deferred: tuple | None = None  # warm_up(defer=True): the check decide() runs
        # in decide(): a context in which no lane forwards (timing, and tracing for int8)
        self._alone: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self._decider: int | None = None  # the thread running decide(), while it runs

    @property
    def model(self) -> nn.Module | OpenVinoModel:
        return self._serving[0]

    @model.setter
    def model(self, model: nn.Module | OpenVinoModel) -> None:
        self._serving = (model, self._serving[1])

    @property
    def precision(self) -> str:
        return self._serving[1]

    @precision.setter
    def precision(self, precision: str) -> None:
        self._serving = (self._serving[0], precision)

    def _switch(self, model: nn.Module | OpenVinoModel, precision: str, backend: str) -> None:
        """Serve `model` in `precision` from the next forward on: a lane forwarding now keeps
        the pair it took (never the new model with the old precision)."""
        self.backend = backend
        self._serving = (model, precision)
        self.classifier.model = model  # the old model's last reference goes with its forwards

    @property
    def measures(self) -> bool:
        """Whether the warm-up checks and times candidates (and can reuse a cached decision)."""
        return self.requested_precision == "auto" or self.requested_backend != TORCH

    def candidates(self) -> list[tuple[str, str]]:
        """The (backend, precision) pairs the check times against torch fp32, in the order its
        budget spends on them (precision.CANDIDATE_ORDER)."""
        found, precision, backend = [], self.requested_precision, self.requested_backend
        if backend in (TORCH, "auto"):
            found += [(TORCH, p) for p in precision_candidates(precision, self.device)
                      if p != "fp32"]
        if backend in (OPENVINO, "auto"):
            wanted = ["fp32", *(["bf16"] if cpu_has_bf16() else []), "int8"]
            if precision != "auto":
                wanted = [p for p in wanted if p == precision] or ["fp32"]
            found += [(OPENVINO, p) for p in wanted]
        return sorted(found, key=CANDIDATE_ORDER.index)

    def decision_terms(self) -> list[str]:
        """What the choice depends on among this predictor's settings, for the decision cache's
        key: the requested backend and precision (choose() picks among theirs: INFERENCE_BACKEND
        =auto and =openvino can time the same candidates and still choose differently) and the
        candidates (OpenVINO's with its version)."""
        return [f"backend={self.requested_backend}", f"precision={self.requested_precision}",
                *(f"{backend}{openvino_backend.version() if backend == OPENVINO else ''}:{p}"
                  for backend, p in self.candidates())]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        model, precision = self._serving
        return self._run(model, batch, precision)

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
        pays one-off costs: kernels picked and primitives built for the shape). In decide(),
        the timed chunks run holding `_alone()`: the cores to themselves."""
        chunks = batch.split(CHUNK)
        full = [index for index, chunk in enumerate(chunks) if len(chunk) == CHUNK]
        timed = full[1:] or full or list(range(len(chunks)))
        outputs, rates = [], {}
        for index, chunk in enumerate(chunks):
            with self._alone() if index in timed else contextlib.nullcontext():
                started = time.perf_counter()
                outputs.append(self._run(model or self.model, chunk, precision))
                rates[index] = len(chunk) / (time.perf_counter() - started)
        return torch.cat(outputs), max(rates[index] for index in timed)

    def warm_up(self, batch_sizes: tuple[int, ...], photos: torch.Tensor | None = None,
                cache: DecisionCache | None = None, defer: bool = False) -> float:
        """Settle the precision on real photos (int8: calibrated on them), then run each batch
        size once. Without photos, bf16/fp16 are checked on noise and int8 falls back to fp32.
        "auto" checks and times every candidate (precision.py); with `defer`, torch fp32 serves
        until decide() has done so (the server runs it after /ping answers). Returns the
        seconds taken."""
        started = time.perf_counter()
        if photos is None or not len(photos):
            photos = None
            sample = torch.randn(8, *self.input_shape, generator=torch.Generator().manual_seed(0))
        else:
            sample = with_flips(photos)
        if self.measures and defer:
            self.deferred = (photos, sample, cache)
            self._switch(self.model, "fp32", TORCH)
        elif self.measures:
            self._settle(photos, sample, cache)
        elif self.precision == "int8":
            self._try_int8(photos, sample)
        elif self.precision != "fp32":
            reduced = self.answers(sample, precision=self.precision)
            if not self._keeps_answers(self.answers(sample), reduced):
                self.precision = "fp32"
        for size in sorted(set(batch_sizes)):
            self.forward(sample.repeat((size + len(sample) - 1) // len(sample), 1, 1, 1)[:size])
        return time.perf_counter() - started

    def decide(self, alone: Callable[[], contextlib.AbstractContextManager] | None = None,
               elsewhere: Callable[[], dict] | None = None) -> bool:
        """The check warm_up(defer=True) left, run while torch fp32 serves (a server's
        background thread): the chosen model replaces fp32 in one step. `alone()` must hold
        every other forward back (the server's CPU gate): it is held around each timed forward,
        so the timings do not share the cores, and around FX's and torch.export's tracing,
        which patches torch.nn.Module for the whole process. Without it, nothing else may
        forward meanwhile. `elsewhere()`, if given, runs the check in another process and
        returns its decision (as check_here() does): only the chosen model is built here, so
        the candidates' memory never stays in this process; if it fails, the check runs here.
        An error is logged and fp32 kept. Returns whether a check was pending."""
        if self.deferred is None:
            return False
        photos, sample, cache = self.deferred
        self._alone, self._decider = alone or contextlib.nullcontext, threading.get_ident()
        started = time.perf_counter()
        try:
            self._settle(photos, sample, cache, BACKGROUND_BUDGET_S, elsewhere)
        except Exception:  # a failed check costs speed, never the answers: fp32 keeps serving
            log.exception("the precision check failed; serving torch fp32")
        finally:
            self.deferred, self._converted = None, None
            self._alone, self._decider = contextlib.nullcontext, None
        log.info("serving %s %s from now on (decided in %.1f s, while fp32 served)",
                 self.backend, self.precision, time.perf_counter() - started)
        return True

    def check_here(self, alone: Callable[[], contextlib.AbstractContextManager]) -> dict:
        """The deferred check, run in this process for another (serving/checker.py), each
        timed forward and tracing holding `alone()`; returns the choice as the decision cache
        stores it: {"backend", "precision", "fp32_layers"}. OpenVINO's graph is cached for
        the other process, not compiled again for lanes that will never run here."""
        photos, sample, cache = self.deferred
        self._alone = alone
        try:
            self._choose(photos, sample, cache, BACKGROUND_BUDGET_S, serve=False)
        finally:
            self.deferred, self._converted, self._alone = None, None, contextlib.nullcontext
        return {"backend": self.backend, "precision": self.precision,
                "fp32_layers": list(self.fp32_layers)}

    def _cached(self, cache: DecisionCache | None) -> dict | None:
        """The decision cached for this model and these candidates, logged; or None."""
        cached = cache.load() if cache else None
        if not cached or (cached.setdefault("backend", TORCH), cached["precision"]) not in (
                *self.candidates(), (TORCH, "fp32"), (TORCH, MIXED)):
            return None
        log.info("%s %s, from the decision cached in %s", cached["backend"],
                 cached["precision"], cache.path)
        return cached

    def _settle(self, photos: torch.Tensor | None, sample: torch.Tensor,
                cache: DecisionCache | None, budget: float = CHECK_BUDGET_S,
                elsewhere: Callable[[], dict] | None = None) -> None:
        """Serve the cached decision, else the one `elsewhere()` makes, else check every
        candidate here within `budget`. One worker of a model decides at a time: the others
        wait for its decision and serve it from the cache."""
        with cache.deciding(budget + DECIDING_SLACK_S) if cache else contextlib.nullcontext():
            decision = self._cached(cache)
            if decision is None and elsewhere is not None:
                try:
                    decision = elsewhere()
                    log.info("%s %s, chosen by the check in a process of its own",
                             decision["backend"], decision["precision"])
                except Exception as error:  # noqa: BLE001 - the check can still run here
                    log.warning("the precision check's own process failed (%s): checking in "
                                "this one", error)
            if decision is None:
                self._choose(photos, sample, cache, budget)
            else:
                self._apply(decision["backend"], decision["precision"], photos,
                            tuple(decision.get("fp32_layers", ())), cache)

    def _choose(self, photos: torch.Tensor | None, sample: torch.Tensor,
                cache: DecisionCache | None, budget: float = CHECK_BUDGET_S,
                serve: bool = True) -> None:
        """Check and time torch fp32 and every candidate; serve the fastest that keeps the
        answers (with INFERENCE_BACKEND=openvino, the fastest of OpenVINO's). Without `serve`,
        the chosen model is kept as it was checked (OpenVINO: one stream, its graph cached),
        not compiled for the lanes."""
        candidates = self.candidates()
        started = time.perf_counter()
        deadline = started + budget
        exact, rate = self.timed_answers(sample)
        verdicts, models, int8_cost = [Verdict("fp32", rate)], {}, 0.0
        for backend, precision in candidates:
            if time.perf_counter() > deadline:
                log.info("%s %s not checked: the precision checks' %.0f s budget is spent",
                         backend, precision, budget)
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
        if chosen.precision != MIXED:
            self.fp32_layers = ()
        model = models.get((chosen.backend, chosen.precision), self.model)  # bf16: fp32's
        if chosen.backend == OPENVINO:
            model = self._for_lanes(model, cache, compile_for_lanes=serve)
        del models
        self._converted = None
        self._switch(model, chosen.precision, chosen.backend)  # frees fp32's weights (int8)
        if cache:
            cache.save(chosen.precision, verdicts, backend=chosen.backend,
                       fp32_layers=list(self.fp32_layers))

    def _pick(self, verdicts: list[Verdict]) -> Verdict:
        """precision.choose() for this predictor's settings, with a warning where a forced
        OpenVINO has nothing that keeps the answers."""
        chosen = choose(verdicts, self.requested_precision, self.requested_backend)
        if chosen.reference and self.requested_backend == OPENVINO:
            log.warning("no OpenVINO precision keeps fp32's answers for %s: serving torch fp32",
                        self.classifier.arch)
        return chosen

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
                with self._alone():  # torch.export traces: no lane may forward meanwhile
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

    def _for_lanes(self, checked: OpenVinoModel, cache: DecisionCache | None,
                   compile_for_lanes: bool = True) -> OpenVinoModel:
        """The OpenVINO model that passed the check, compiled again for the server's lanes
        (one stream each) unless `compile_for_lanes` is false; its graph (IR files) cached for
        the next worker."""
        if cache:
            openvino_backend.save(checked.graph, cache.artifact(OPENVINO))
        served = checked
        if self.lanes > 1 and compile_for_lanes:
            served = openvino_backend.compile_model(checked.graph, checked.precision,
                                                    torch.get_num_threads(), self.lanes)
        served.graph = checked.graph = None  # the compiled model holds what it runs
        return served

    def mixed_int8(self, photos: torch.Tensor, sample: torch.Tensor, exact: torch.Tensor,
                   deadline: float = float("inf"),
                   cost: float = 0.0) -> tuple[nn.Module, Verdict] | None:
        """int8 with the layers int8 hurts most left in fp32 (1, 2, then 4 of them, ranked by
        layer_sensitivity on the photos): the first that keeps the answers, or None. No try
        starts that would end after `deadline`, each costing about `cost` seconds."""
        ranked = [name for name, _ in layer_sensitivity(self.model, self.classifier.head_path,
                                                        photos, cpu_has_vnni(), self._decider)]
        for count in MIXED_TRIES:
            if time.perf_counter() + cost > deadline:
                log.info("int8 with fp32 layers not tried further: the precision checks' "
                         "budget is spent")
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
        gone), torch int8 calibrated again on the same photos; torch fp32 if it cannot be."""
        model = self.model if backend == TORCH and precision not in ("int8", MIXED) else None
        if backend == OPENVINO:
            graph = openvino_backend.load(cache.artifact(OPENVINO)) if cache else None
            if graph is not None:
                model = openvino_backend.compile_model(graph, precision,
                                                       torch.get_num_threads(), self.lanes)
            else:
                checked = self._openvino(precision, photos)
                self._converted = None
                model = self._for_lanes(checked, cache) if checked is not None else None
        elif precision in ("int8", MIXED):
            model = self._quantized(photos, fp32_layers)
            self.fp32_layers = fp32_layers if model is not None else ()
        if model is None:
            self._switch(self.model, "fp32", TORCH)
        else:
            self._switch(model, precision, backend)

    def _quantized(self, photos: torch.Tensor | None,
                   fp32_layers: tuple[str, ...] = ()) -> nn.Module | None:
        """The int8 model calibrated on `photos`, or None (logged) when it cannot be made."""
        if photos is None:
            log.warning("int8 needs photos to calibrate on and none were found")
            return None
        try:
            return quantize(self.model, self.classifier.head_path, photos, cpu_has_vnni(),
                            fp32_layers, self._alone)[0]
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
