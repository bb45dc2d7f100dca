"""Every environment variable the container reads, parsed once into one typed object.
Names follow SageMaker's conventions; a bad value stops start-up with an error naming it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

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
INFERENCE_BACKEND = "INFERENCE_BACKEND"
PRECISION_CHECK = "PRECISION_CHECK"
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
BACKENDS = ("auto", "torch", "openvino")
PRECISION_CHECKS = ("background", "startup")
LOG_LEVELS = ("debug", "info", "warning", "error")
GRACEFUL_TIMEOUT_S = 25  # SageMaker sends SIGKILL 30 s after SIGTERM


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


@dataclass(frozen=True)
class Setting:
    """One environment variable: how its text is read, what it may hold, and, for a default
    that depends on the machine, how that default is found."""

    variable: str
    parse: Callable[[str], Any] = str
    check: Callable[[Any], bool] = lambda value: True
    expected: str = "a value"
    machine_default: Callable[[Mapping[str, str]], Any] | None = None

    def read(self, env: Mapping[str, str], default: Any) -> Any:
        """The variable's value; blank or unset means `default`."""
        raw = env.get(self.variable, "").strip()
        if not raw:
            return default
        try:
            value = self.parse(raw)
        except ValueError:
            raise ConfigError(f"{self.variable}={raw!r} is invalid: expected {self.expected}") \
                from None
        if not self.check(value):
            raise ConfigError(f"{self.variable}={raw!r} is invalid: expected {self.expected}")
        return value


def _setting(default: Any, variable: str, parse: Callable[[str], Any] = str,
             check: Callable[[Any], bool] = lambda value: True, expected: str = "a value",
             machine_default: Callable[[Mapping[str, str]], Any] | None = None) -> Any:
    """A dataclass field that declares its variable: name, type (parse), default and range."""
    setting = Setting(variable, parse, check, expected, machine_default)
    if machine_default is not None:  # Environment() is Environment.from_env({})
        return field(default_factory=lambda: machine_default({}), metadata={"setting": setting})
    return field(default=default, metadata={"setting": setting})


def _integer(default: int | None, variable: str, low: int, high: int, expected: str | None = None,
             machine_default: Callable[[Mapping[str, str]], int] | None = None) -> Any:
    return _setting(default, variable, int, lambda v: low <= v <= high,
                    expected or f"an integer from {max(low, 1)} to {high}", machine_default)


def _choice(default: str, variable: str, choices: tuple[str, ...]) -> Any:
    return _setting(default, variable, str.lower, lambda v: v in choices,
                    "one of " + ", ".join(choices))


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value not in ("true", "false"):
        raise ValueError(raw)
    return value == "true"


@dataclass(frozen=True)
class Environment:
    """The container's settings, each declared once below: the variable, its parsing, default
    and range. `Environment.from_env()` reads them; `Environment()` is `from_env({})`."""

    port: int = _integer(8080, BIND_TO_PORT, 1, 65535, "a TCP port from 1 to 65535")
    workers: int = _integer(  # one per visible GPU, else 1
        None, MODEL_SERVER_WORKERS, 1, 64, machine_default=lambda env: max(1, visible_gpus(env)))
    request_threads: int = _integer(64, MODEL_SERVER_THREADS, 1, 1024)  # HTTP, per worker
    timeout: int = _integer(60, MODEL_SERVER_TIMEOUT, 1, 3600)
    max_payload_mb: float = _setting(6.0, MAX_PAYLOAD_IN_MB, float, lambda v: 0 < v <= 100,
                                     "a number of megabytes above 0 and at most 100")
    model_dir: str = _setting("/opt/ml/model", MODEL_DIR)
    top_k: int = _integer(5, TOP_K, 1, 1000)
    max_batch_size: int = _integer(  # 0: 8 images in flight on CPU (4 per lane), 32 on GPU
        0, MAX_BATCH_SIZE, 0, 1024,
        "an integer from 1 to 1024 (0 or unset: 8 // lanes on CPU, 32 on GPU)")
    max_batch_delay_ms: float = _setting(5.0, MAX_BATCH_DELAY_MS, float,
                                         lambda v: 0 <= v <= 1000, "milliseconds from 0 to 1000")
    max_image_pixels: int = _integer(40_000_000, MAX_IMAGE_PIXELS, 1, 500_000_000)
    precision: str = _choice("auto", INFERENCE_PRECISION, PRECISIONS)
    # torch, openvino, or auto: the faster that keeps answers (CPU, where OpenVINO is installed)
    backend: str = _choice("auto", INFERENCE_BACKEND, BACKENDS)
    # when auto's check runs: background (fp32 serves from /ping's first 200 until it is done)
    # or startup (before /ping answers)
    precision_check: str = _choice("background", PRECISION_CHECK, PRECISION_CHECKS)
    # photos for the reduced-precision check
    calibration_dir: str = _setting(DEFAULT_CALIBRATION_DIR, CALIBRATION_IMAGES_DIR)
    torch_threads: int = _integer(None, TORCH_THREADS, 1, 1024,
                                  machine_default=lambda env: cpu_count())
    lanes: int = _integer(  # 0: 2 on CPU (at most one per thread), 1 on GPU
        0, INFERENCE_LANES, 0, 64, "an integer from 1 to 64 (0 or unset: 2 on CPU, 1 on GPU)")
    log_level: str = _choice("info", LOG_LEVEL, LOG_LEVELS)
    batch: bool = _setting(  # a Batch Transform job (SAGEMAKER_BATCH=true)
        False, BATCH, _flag, expected="one of true, false")
    batch_strategy: str = _choice("single_record", BATCH_STRATEGY,
                                  ("single_record", "multi_record"))
    max_concurrent_transforms: int = _integer(  # 0: what the server's lanes and batches take
        0, MAX_CONCURRENT_TRANSFORMS, 1, 1024)

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
        values = {}
        for f in fields(cls):
            setting: Setting = f.metadata["setting"]
            default = (setting.machine_default(env) if setting.machine_default is not None
                       else f.default)
            values[f.name] = setting.read(env, default)
        return cls(**values)
