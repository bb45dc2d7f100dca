"""Picks where and in what precision the model runs, and explains a GPU that torch cannot use.
Reduced precision is chosen only where the hardware is fast at it (CUDA, AMX, VNNI).
"""
from __future__ import annotations

from pathlib import Path

import torch

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
GPU_AMI_HINT = ("on SageMaker set the production variant's InferenceAmiVersion to "
                "al2023-ami-sagemaker-inference-gpu-4-1 (driver 580, CUDA 13.0; endpoint/deploy.sh "
                "does this for GPU instance types); V100 (p3) GPUs need an image built with "
                "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126")


def select_device(index: int = 0) -> torch.device:
    """This worker's device: CUDA GPU `index` when there is one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", index % torch.cuda.device_count())


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version line, as a container sees it, or None."""
    if not NVIDIA_DRIVER_FILE.exists():
        return None
    return NVIDIA_DRIVER_FILE.read_text(errors="replace").splitlines()[0][:160]


def runtime_summary() -> str:
    """torch/torchvision builds and the driver found, for the start-up log."""
    import torchvision

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return (f"torch {torch.__version__} ({build}), torchvision {torchvision.__version__}, "
            f"NVIDIA driver: {driver_version() or 'none found'}")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, torch CUDA {torch.version.cuda})"
    return (f"cpu ({torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}, AMX {'yes' if cpu_has_amx() else 'no'}, "
            f"VNNI {'yes' if cpu_has_vnni() else 'no'})")


def unusable_gpu() -> str | None:
    """A clear error when the host exposes an NVIDIA GPU but torch cannot use it, else None."""
    if torch.cuda.is_available():
        return None
    has_gpu = NVIDIA_DRIVER_FILE.exists() or any(Path("/dev").glob("nvidia[0-9]*"))
    if not has_gpu:
        return None
    driver = driver_version() or "unknown"
    if torch.version.cuda is None:
        return (f"an NVIDIA GPU is present (driver: {driver}) but this image's torch "
                f"{torch.__version__} is a CPU-only build. Build the gpu variant of the image "
                f"to use the GPU.")
    return (f"an NVIDIA GPU is present (driver: {driver}) but torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}) cannot use it; the driver is probably older than CUDA "
            f"{torch.version.cuda} needs ({GPU_AMI_HINT})")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags")
            for flag in line.partition(":")[2].split()}


def cpu_has_amx() -> bool:
    """Advanced Matrix Extensions (Sapphire Rapids and later: ml.c7i, ml.m7i): fast bf16."""
    return "amx_bf16" in cpu_flags()


def cpu_has_vnni() -> bool:
    """int8 dot-product instructions (Cascade Lake, Ice Lake: ml.c5, ml.c6i, ml.m6i)."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def cpu_has_bf16() -> bool:
    """bf16 instructions (AVX512_BF16: Cooper Lake, Zen 4; AMX: Sapphire Rapids and later)."""
    return "avx512_bf16" in cpu_flags() or cpu_has_amx()


def choose_precision(setting: str, device: torch.device) -> str:
    """'auto' stays 'auto': the warm-up measures the candidates (precision_candidates).

    Explicit settings are kept, mapped to what the device runs fast: fp16 on a CPU is bf16,
    int8 on a GPU is fp16."""
    if device.type == "cpu" and setting == "fp16":
        return "bf16"  # fp16 autocast on CPU is slow; bf16 is the CPU's reduced precision
    if device.type == "cuda" and setting == "int8":
        return "fp16"  # the int8 kernels used here are CPU-only
    return setting


def precision_candidates(setting: str, device: torch.device) -> list[str]:
    """The reduced precisions worth checking against fp32 on this device: fp16 and bf16 on a
    GPU; int8 on any x86 CPU, and bf16 where the CPU has bf16 instructions."""
    if setting != "auto":
        return [choose_precision(setting, device)]
    if device.type == "cuda":
        return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    return ["int8", "bf16"] if cpu_has_bf16() else ["int8"]


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
