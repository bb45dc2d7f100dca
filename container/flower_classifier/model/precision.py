"""The precision policy: each candidate is checked against fp32 on real photos and their mirrors and
timed; the fastest that keeps the answers serves. The decision is cached per model and CPU.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
TOP1_TOLERANCE = 0.02  # a reduced precision keeps answers: same top-1, probability within this
CACHE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "flower-serving"
POLICY = 3  # part of every cache key: a changed policy decides afresh
TORCH = "torch"  # the backend the reference fp32 answers come from
OPENVINO = "openvino"
MIXED = "int8-mixed"  # torch int8 with the layers most sensitive to it left in fp32
# the order the check's budget spends on the candidates: torch int8 (on VNNI the biggest win
# where it keeps answers: 2.7x bf16 for vgg16) and torch's float precisions, then OpenVINO
# fp32 (one conversion; the same arithmetic, so it keeps answers where anything does: 8x torch
# fp32 for the demo's Lite0) and bf16 (one more compile), then NNCF's int8, the costliest check
CANDIDATE_ORDER = [(TORCH, "int8"), (TORCH, "fp16"), (TORCH, "bf16"), (OPENVINO, "fp32"),
                   (OPENVINO, "bf16"), (OPENVINO, "int8")]


@dataclass(frozen=True)
class Verdict:
    """One candidate's result: its speed on the check's forwards and how its answers compare
    with torch fp32's."""

    precision: str
    images_per_s: float
    same_top1: bool = True
    gap: float = 0.0  # largest top-1 probability difference from torch fp32
    backend: str = TORCH

    @property
    def keeps(self) -> bool:
        return self.same_top1 and self.gap <= TOP1_TOLERANCE

    @property
    def reference(self) -> bool:
        """torch fp32: the answers every other candidate is checked against."""
        return self.backend == TORCH and self.precision == "fp32"

    @property
    def label(self) -> str:
        """"int8" for torch's, "openvino int8" for OpenVINO's."""
        return self.precision if self.backend == TORCH else f"{self.backend} {self.precision}"

    def describe(self) -> str:
        answers = "keeps answers" if self.keeps else (
            "changes a top-1" if not self.same_top1 else "moves a top-1 probability")
        return f"{self.label} {answers} (gap {self.gap:.4f}), {self.images_per_s:.1f} img/s"


def compare(exact: torch.Tensor, reduced: torch.Tensor) -> tuple[bool, float]:
    """(every top-1 the same, largest top-1 probability gap) of two probability batches."""
    top1 = exact.argmax(dim=1)
    same = bool((reduced.argmax(dim=1) == top1).all())
    gap = float((exact.gather(1, top1[:, None]) - reduced.gather(1, top1[:, None])).abs().max())
    return same, gap


def fastest(verdicts: list[Verdict]) -> Verdict:
    """The fastest verdict that keeps the answers; torch fp32, the reference, always does."""
    keeping = [v for v in verdicts if v.keeps or v.reference]
    return max(keeping, key=lambda v: v.images_per_s)


def choose(verdicts: list[Verdict], precision: str = "auto", backend: str = "auto") -> Verdict:
    """fastest(), among OpenVINO's verdicts when INFERENCE_BACKEND=openvino and among the
    forced precision's when INFERENCE_PRECISION names one (int8-mixed counts as int8's);
    `verdicts[0]`, torch fp32, when none of those keeps the answers."""
    pool = [v for v in verdicts if (backend != OPENVINO or v.backend == OPENVINO)
            and (precision in ("auto", v.precision)
                 or (precision, v.precision) == ("int8", MIXED))]
    if not any(v.keeps for v in pool):
        return verdicts[0]
    return fastest(pool)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it ('' when unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in text.splitlines()
                 if line.startswith("model name")), "")


def decision_key(files: list[Path], terms: list[str], device: str,
                 cpu: str | None = None) -> str:
    """A digest of everything the decision depends on: the model's files and calibration photos
    (their bytes), the settings' terms (the candidates and the rule choosing among them), the
    device, the CPU model and the torch version."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.name}\0".encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    digest.update(json.dumps([POLICY, terms, device, cpu_model() if cpu is None else cpu,
                              torch.__version__]).encode())
    return digest.hexdigest()[:32]


def _take(lock: FileLock, wait_s: float) -> bool:
    """Acquire `lock` within `wait_s`, saying so when another worker holds it; False (logged)
    when it cannot be had."""
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another worker is deciding this model's precision (%s holds it): "
                     "waiting for its decision", lock.lock_file)
            lock.acquire(timeout=wait_s)
        return True
    except Timeout:  # filelock's Timeout is an OSError too: caught before it
        log.warning("another worker held %s for %.0f s: deciding without it", lock.lock_file,
                    wait_s)
    except OSError as error:
        log.warning("precision decisions not shared between workers (%s)", error)
    return False


class DecisionCache:
    """The chosen precision for one key, in CACHE_DIR: a replaced worker, or the next worker of
    the same endpoint, starts without checking every candidate again."""

    def __init__(self, key: str, folder: Path = CACHE_DIR) -> None:
        self.path = folder / f"precision-{key}.json"

    def artifact(self, name: str) -> Path:
        """Where a file the decision needs lives (the OpenVINO model's IR: NAME.xml/.bin)."""
        return self.path.with_name(f"{self.path.stem}.{name}.xml")

    @contextlib.contextmanager
    def deciding(self, wait_s: float) -> Iterator[None]:
        """Held while this process decides for the key, so that the other workers of the same
        model (MODEL_SERVER_WORKERS > 1) wait for its decision and read it, rather than all
        checking the same candidates on the same cores at once, each slowing the others'
        timings. A file lock (flock) beside the decision: the kernel releases it if its holder
        dies. After `wait_s`, or where the lock cannot be taken (no writable CACHE_DIR, a file
        system without flock), the decision is made unlocked."""
        lock = FileLock(self.path.with_suffix(".lock"))
        if not _take(lock, wait_s):
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def load(self) -> dict | None:
        """{"precision": ..., "backend": ..., "fp32_layers": [...], "verdicts": [...]}, or
        None."""
        try:
            entry = json.loads(self.path.read_text())
            return entry if isinstance(entry, dict) and isinstance(entry["precision"], str) \
                else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, chosen: str, verdicts: list[Verdict], **extra) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"precision": chosen, **extra,
                                       "verdicts": [asdict(v) for v in verdicts]}))
            os.replace(tmp, self.path)
        except OSError as error:  # a read-only /tmp only costs the next start its checks
            log.warning("precision decision not cached (%s)", error)
