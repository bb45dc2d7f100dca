# Picks where and in what precision the model runs, and explains a GPU that torch cannot use.
# Reduced precision is chosen only where the hardware is fast at it (CUDA, or CPUs with AMX).
from __future__ import annotations

from pathlib import Path

import torch

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
GPU_AMI_HINT = ("on SageMaker set the production variant's InferenceAmiVersion to "
                "al2-ami-sagemaker-inference-gpu-2 or newer (driver >= 535)")


def select_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, torch CUDA {torch.version.cuda})"
    return (f"cpu ({torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}, AMX {'yes' if cpu_has_amx() else 'no'})")


def unusable_gpu() -> str | None:
    """A clear error when the host exposes an NVIDIA GPU but torch cannot use it, else None."""
    if torch.cuda.is_available():
        return None
    has_gpu = NVIDIA_DRIVER_FILE.exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    if not has_gpu:
        return None
    driver = "unknown"
    if NVIDIA_DRIVER_FILE.exists():
        driver = NVIDIA_DRIVER_FILE.read_text(errors="replace").splitlines()[0][:160]
    if torch.version.cuda is None:
        return (f"an NVIDIA GPU is present (driver: {driver}) but this image's torch "
                f"{torch.__version__} is a CPU-only build; serving on CPU. Build the gpu variant "
                f"of the image to use the GPU.")
    return (f"an NVIDIA GPU is present (driver: {driver}) but torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}) cannot use it; the driver is probably older than CUDA "
            f"{torch.version.cuda} needs ({GPU_AMI_HINT}); serving on CPU")


def cpu_has_amx() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags


def choose_precision(setting: str, device: torch.device) -> str:
    """'auto' -> fp16 on CUDA, bf16 on AMX CPUs, else fp32; explicit settings are kept."""
    if setting != "auto":
        if setting == "fp16" and device.type == "cpu":
            return "bf16"  # fp16 autocast on CPU is slow; bf16 is the CPU's reduced precision
        return setting
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_amx() else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
