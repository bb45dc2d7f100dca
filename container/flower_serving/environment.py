"""Every environment variable the container reads, parsed once into one typed object.
Names follow SageMaker's conventions; a bad value stops start-up with an error naming it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS = "MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT = "MODEL_SERVER_TIMEOUT"
MODEL_SERVER_THREADS = "MODEL_SERVER_THREADS"
MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
MODEL_DIR = "SM_MODEL_DIR"
TOP_K = "TOP_K"
MAX_BATCH_SIZE = "MAX_BATCH_SIZE"
MAX_BATCH_DELAY_MS = "MAX_BATCH_DELAY_MS"
MAX_IMAGE_PIXELS = "MAX_IMAGE_PIXELS"
INFERENCE_PRECISION = "INFERENCE_PRECISION"
INFERENCE_LANES = "INFERENCE_LANES"
CALIBRATION_IMAGES_DIR = "CALIBRATION_IMAGES_DIR"
TORCH_THREADS = "TORCH_NUM_THREADS"
LOG_LEVEL = "LOG_LEVEL"
# Set by SageMaker in a Batch Transform job's container (with the values the job chose).
BATCH = "SAGEMAKER_BATCH"
BATCH_STRATEGY = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"

# /opt/program/calibration in the image; in a checkout, a link to local_test/payloads
DEFAULT_CALIBRATION_DIR = str(Path(__file__).resolve().parents[1] / "calibration")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
LOG_LEVELS = ("debug", "info", "warning", "error")
GRACEFUL_TIMEOUT_S = 25  # SageMaker sends SIGKILL 30 s after SIGTERM

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable holds a value the container cannot use."""


def cpu_count() -> int:
    """Cores this process may use (respects cgroup/affinity limits where the OS reports them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


DEVICES = Path("/dev")  # where a container sees the GPUs it was given: /dev/nvidia0, ...


def visible_gpus(env: Mapping[str, str]) -> int:
    """NVIDIA GPUs this container may use, without starting CUDA in the master process:
    CUDA_VISIBLE_DEVICES when set, else the /dev/nvidiaN device files."""
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip() and d.strip() != "-1"])
    return sum(1 for d in DEVICES.glob("nvidia[0-9]*") if d.name[6:].isdigit())


def _read(env: Mapping[str, str], key: str, default: T, parse: Callable[[str], T],
          check: Callable[[T], bool], expected: str) -> T:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is invalid: expected {expected}") from None
    if not check(value):
        raise ConfigError(f"{key}={raw!r} is invalid: expected {expected}")
    return value


def _positive_int(env: Mapping[str, str], key: str, default: int, upper: int = 1 << 20) -> int:
    return _read(env, key, default, int, lambda v: 1 <= v <= upper,
                 f"an integer from 1 to {upper}")


def _choice(env: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    return _read(env, key, default, str.lower, lambda v: v in choices,
                 "one of " + ", ".join(choices))


@dataclass(frozen=True)
class Environment:
    """The container's settings. Build it with `Environment.from_env()`."""

    port: int = 8080
    workers: int = 1  # from_env: one per visible GPU, else 1
    threads: int = 64
    timeout: int = 60
    max_payload_mb: float = 6.0
    model_dir: str = "/opt/ml/model"
    top_k: int = 5
    max_batch_size: int = 0  # 0: 8 images in flight on CPU (4 per lane), 32 on GPU
    max_batch_delay_ms: float = 5.0
    max_image_pixels: int = 40_000_000
    precision: str = "auto"
    calibration_dir: str = DEFAULT_CALIBRATION_DIR  # photos for the reduced-precision check
    torch_threads: int = 1
    lanes: int = 0  # 0: 2 on CPU (at most one per thread), 1 on GPU
    log_level: str = "info"
    batch: bool = False  # a Batch Transform job (SAGEMAKER_BATCH=true)
    batch_strategy: str = "single_record"
    max_concurrent_transforms: int = 0  # 0: what the server's lanes and batches take

    def lanes_for(self, device_type: str) -> int:
        """Batches forwarded side by side, each on its own share of the torch threads."""
        if device_type == "cuda":
            return 1
        return min(self.lanes or 2, self.torch_threads)

    def threads_per_lane(self, lanes: int) -> int:
        return max(1, self.torch_threads // lanes)

    def batch_size_for(self, device_type: str) -> int:
        """The largest batch one forward takes."""
        if self.max_batch_size:
            return self.max_batch_size
        return 32 if device_type == "cuda" else max(1, 8 // self.lanes_for(device_type))

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Environment:
        env = os.environ if env is None else env
        cores = cpu_count()
        return cls(
            port=_read(env, BIND_TO_PORT, 8080, int, lambda v: 1 <= v <= 65535,
                       "a TCP port from 1 to 65535"),
            workers=_positive_int(env, MODEL_SERVER_WORKERS, max(1, visible_gpus(env)), 64),
            threads=_positive_int(env, MODEL_SERVER_THREADS, 64, 1024),
            timeout=_positive_int(env, MODEL_SERVER_TIMEOUT, 60, 3600),
            max_payload_mb=_read(env, MAX_PAYLOAD_IN_MB, 6.0, float, lambda v: 0 < v <= 100,
                                 "a number of megabytes above 0 and at most 100"),
            model_dir=env.get(MODEL_DIR, "").strip() or "/opt/ml/model",
            top_k=_positive_int(env, TOP_K, 5, 1000),
            max_batch_size=_read(
                env, MAX_BATCH_SIZE, 0, int, lambda v: 0 <= v <= 1024,
                "an integer from 1 to 1024 (0 or unset: 8 // lanes on CPU, 32 on GPU)"),
            max_batch_delay_ms=_read(env, MAX_BATCH_DELAY_MS, 5.0, float,
                                     lambda v: 0 <= v <= 1000, "milliseconds from 0 to 1000"),
            max_image_pixels=_positive_int(env, MAX_IMAGE_PIXELS, 40_000_000, 500_000_000),
            precision=_choice(env, INFERENCE_PRECISION, "auto", PRECISIONS),
            calibration_dir=env.get(CALIBRATION_IMAGES_DIR, "").strip() or DEFAULT_CALIBRATION_DIR,
            torch_threads=_positive_int(env, TORCH_THREADS, cores, 1024),
            lanes=_read(env, INFERENCE_LANES, 0, int, lambda v: 0 <= v <= 64,
                        "an integer from 1 to 64 (0 or unset: 2 on CPU, 1 on GPU)"),
            log_level=_choice(env, LOG_LEVEL, "info", LOG_LEVELS),
            batch=_choice(env, BATCH, "false", ("true", "false")) == "true",
            batch_strategy=_choice(env, BATCH_STRATEGY, "single_record",
                                   ("single_record", "multi_record")),
            max_concurrent_transforms=_read(env, MAX_CONCURRENT_TRANSFORMS, 0, int,
                                            lambda v: 1 <= v <= 1024, "an integer from 1 to 1024"),
        )
