"""The GPU check: raw fp16/bf16 forwards of resnet50 and vgg16 at batch 1-64, the served path
end to end at concurrency 1-64, and GPU memory; a table, results.json and a chart.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from measure import percentile
from run import ROOT, Load, load_level, model_dir_for, photos

from flower_classifier.harness.server import ServerProcess
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.predictor import Predictor

GOAL = 0.70  # served resnet50 >= 70% of its best raw batched fp16 forward


def raw_rates(model_dir: Path, device: torch.device, precision: str, batches: list[int],
              seconds: float) -> tuple[dict[int, float], float]:
    """Images/s of the bare forward at each batch size (CPU tensor in, probabilities out, as the
    server does it), and the peak GPU memory in MiB."""
    predictor = Predictor(load_classifier(model_dir), device, precision)
    rates = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for size in batches:
        batch = torch.randn(size, *predictor.input_shape)
        predictor.forward(batch)  # kernels for this shape
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predictor.forward(batch)  # ends in .cpu(): synchronised
            count += size
        rates[size] = count / (time.perf_counter() - started)
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return rates, memory


def served_rates(model_dir: Path, levels: list[int], seconds: float, precision: str) -> list:
    bodies = [path.read_bytes() for path in photos(64)]
    with ServerProcess(model_dir, {"INFERENCE_PRECISION": precision}) as server:
        cold = server.wait_ready(timeout=600)
        out = []
        for level in levels:
            load = Load()
            load_level(server.url, bodies, level, seconds, load, server.process.pid)
            out.append({"concurrency": level, "images_per_s": load.statuses.get(200, 0)
                        / load.elapsed, "statuses": load.statuses,
                        "p50_ms": 1000 * statistics.median(load.latencies),
                        "p99_ms": 1000 * percentile(load.latencies, 99),
                        "ping_p99_ms": 1000 * percentile(load.pings, 99), "cold_start_s": cold})
    return out


def chart(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    raw_ax, served_ax = fig.subplots(1, 2)
    for arch, entry in results["archs"].items():
        for precision, raw in entry["raw"].items():
            sizes = sorted(int(s) for s in raw["images_per_s"])
            raw_ax.plot(sizes, [raw["images_per_s"][str(s)] for s in sizes], "o-",
                        label=f"{arch} {precision}")
        levels = entry["served"]
        served_ax.plot([x["concurrency"] for x in levels], [x["images_per_s"] for x in levels],
                       "o-", label=f"{arch} served ({entry['served_precision']})")
    for ax, xlabel in ((raw_ax, "batch size (raw forward)"), (served_ax, "concurrency (served)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images/s")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def table(results: dict) -> str:
    lines = [f"device: {results['device']}", "",
             "| arch | precision | batch | raw img/s | peak GPU MiB |", "|---|---|---|---|---|"]
    for arch, entry in results["archs"].items():
        for precision, raw in entry["raw"].items():
            lines += [f"| {arch} | {precision} | {size} | {rate:.1f} | {raw['gpu_mib']:.0f} |"
                      for size, rate in raw["images_per_s"].items()]
    lines += ["", "| arch | concurrency | served img/s | x best raw fp16 | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|"]
    for arch, entry in results["archs"].items():
        lines += [f"| {arch} | {x['concurrency']} | {x['images_per_s']:.1f} | "
                  f"{x['x_raw']:.2f} | {x['p50_ms']:.0f} | {x['p99_ms']:.0f} |"
                  for x in entry["served"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=(
        "Measure the GPU path on a machine with an NVIDIA GPU: raw fp16 and bf16 forwards at "
        "each batch size, the served path end to end at each concurrency, GPU memory."))
    parser.add_argument("--archs", default="resnet50,vgg16")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-gpu")
    parser.add_argument("--allow-cpu", action="store_true", help=(
        "run on the CPU when there is no GPU (only to test this script)"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"bench/gpu.py: error: no CUDA GPU is usable here (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run it on a GPU instance, or use "
              f"bench/run.py for the CPU", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = [int(x) for x in args.batches.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    results = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "cuda": torch.version.cuda, "archs": {}}
    with tempfile.TemporaryDirectory() as work:
        for arch in args.archs.split(","):
            (Path(work) / arch).mkdir()
            model_dir = model_dir_for(arch, Path(work) / arch)
            entry = results["archs"][arch] = {"raw": {}, "served_precision": "fp16"}
            for precision in ("fp16", "bf16"):
                rates, memory = raw_rates(model_dir, device, precision, batches, args.seconds)
                entry["raw"][precision] = {"images_per_s": {str(k): v for k, v in rates.items()},
                                           "gpu_mib": memory}
            best = max(entry["raw"]["fp16"]["images_per_s"].values())
            entry["served"] = served_rates(model_dir, levels, args.seconds, "fp16")
            for level in entry["served"]:
                level["x_raw"] = level["images_per_s"] / best
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    chart(results, args.out / "chart.png")
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    if "resnet50" in results["archs"]:
        best_served = max(x["x_raw"] for x in results["archs"]["resnet50"]["served"])
        print(f"\nresnet50 served / raw fp16: {best_served:.2f} (goal {GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
