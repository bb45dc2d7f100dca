"""Runs the loaded classifier through OpenVINO on the CPU: converted from the torch model at
start-up, compiled in f32 or bf16, or quantized to int8 by NNCF on the calibration photos.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from .precision import OPENVINO

log = logging.getLogger(__name__)
BACKEND = OPENVINO  # INFERENCE_BACKEND's name for it
# OpenVINO's INFERENCE_PRECISION_HINT per precision; int8: NNCF's graph, its float parts in f32
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
CALIBRATION_BATCH = 8


def available() -> bool:
    """Whether this image has OpenVINO and NNCF (the cpu variant does; the gpu variant not)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def version() -> str:
    """OpenVINO's version ('' when it is not installed): part of the decision cache's key."""
    try:
        from importlib.metadata import version as installed
        return installed("openvino")
    except ImportError:
        return ""


class OpenVinoModel:
    """A compiled OpenVINO model called like the torch model: (N, 3, H, W) float32 -> logits.
    Each calling thread (a batcher lane) gets its own infer request; `streams` of them run
    side by side, each on threads // streams cores. `graph` is the model it was compiled from
    (None once the server no longer needs it)."""

    def __init__(self, compiled, precision: str, graph) -> None:
        self.compiled = compiled
        self.precision = precision
        self.graph = graph
        self._local = threading.local()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: batch.contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


def convert(model: nn.Module, input_shape: tuple[int, int, int]):
    """The torch model as an OpenVINO model (through torch.export), any batch size."""
    import openvino as ov

    example = torch.zeros(2, *input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's notices about the traced graph
        exported = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        converted = ov.convert_model(exported)
    converted.reshape([-1, *input_shape])
    return converted


def quantize(converted, photos: torch.Tensor):
    """NNCF's post-training int8 quantization of `converted`, activation ranges from `photos`."""
    # NNCF imports torch's C++ extension helper, which warns about CUDA on every CPU machine
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.WARNING)
    batches = [chunk.numpy() for chunk in photos.split(CALIBRATION_BATCH)]
    # its progress bars go to stdout (the server's log) and its batch-size notice to warnings;
    # this runs at warm-up, before any request thread exists
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return nncf.quantize(converted, nncf.Dataset(batches), subset_size=len(batches))


def compile_model(converted, precision: str, threads: int, streams: int = 1) -> OpenVinoModel:
    """Compile for the CPU in `precision`, on `threads` cores split into `streams` streams."""
    import openvino as ov

    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "ENABLE_HYPER_THREADING": False,
    })
    return OpenVinoModel(compiled, precision, converted)


def save(converted, path: Path) -> None:
    """Write the model as OpenVINO IR (path.xml + path.bin), for the next worker to read."""
    import openvino as ov

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        ov.save_model(converted, tmp, compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # a read-only /tmp only costs the next start time
        log.warning("OpenVINO model not cached (%s)", error)


def load(path: Path):
    """The IR that save() wrote, or None when there is none (or it cannot be read)."""
    import openvino as ov

    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        return None
    try:
        return ov.Core().read_model(path)
    except RuntimeError as error:
        log.warning("cached OpenVINO model %s not usable (%s)", path, error)
        return None
