# The serving benchmark: the model's raw limit, the plain per-request baseline, the served figures.
# One run, one machine: prints a table, writes results.json and a throughput/latency chart.
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "container"), str(ROOT / "tests")]

import psutil  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from checkpoints import make_project_checkpoint, make_seed_checkpoint  # noqa: E402
from flower_serving.checkpoint import load_classifier  # noqa: E402
from flower_serving.device import select_device  # noqa: E402
from flower_serving.environment import MODEL_DIR, Environment, cpu_count  # noqa: E402
from flower_serving.predictor import Predictor  # noqa: E402
from flower_serving.preprocess import preprocess  # noqa: E402
from flower_serving.server import load_model  # noqa: E402
from serving import ServerProcess  # noqa: E402

NAMES = ROOT / "local_test" / "test_dir" / "model" / "cat_to_name.json"
SHARED_VALID = ROOT.parent / "shared" / "flowers" / "valid"
BATCH_SIZES = [1, 4, 8, 16]
PROBE_S = 4.0  # raw-limit and baseline probes around each served level


def photos(limit: int) -> list[Path]:
    """Real flower photos: ../shared/flowers/valid when present, else local_test/payloads."""
    found = sorted(SHARED_VALID.glob("*/*.jpg")) or sorted(
        (ROOT / "local_test" / "payloads").glob("*.*"))
    return found[:limit]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def model_dir_for(arch: str, work: Path) -> Path:
    if arch == "seed-vgg16":
        return make_seed_checkpoint(work, NAMES)
    return make_project_checkpoint(work, NAMES, arch=arch, hidden_units=(512,))


def served_predictor(model_dir: Path, batch_sizes: tuple[int, ...]) -> Predictor:
    """The model exactly as a server worker loads and warms it, then one forward per size."""
    env = Environment.from_env({**os.environ, MODEL_DIR: str(model_dir)})
    _, predictor = load_model(env)
    for size in batch_sizes:
        predictor.forward(torch.randn(size, *predictor.input_shape))
    return predictor


def images_per_s(step, seconds: float) -> float:
    """Repeat `step()` (which returns the images it handled) for `seconds`, at least once."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count == 0:
        count += step()
    return count / (time.perf_counter() - started)


def forward_rate(predictor: Predictor, size: int, seconds: float) -> float:
    """Images/s of forwards alone (preprocessed tensors, no HTTP) at one batch size."""
    batch = torch.randn(size, *predictor.input_shape)

    def step() -> int:
        predictor.forward(batch)
        return size

    return images_per_s(step, seconds)


def raw_limit(predictor: Predictor, batch_sizes: list[int], seconds: float) -> dict:
    """Forward-only throughput at each batch size, with the server's device and precision."""
    by_batch = {size: forward_rate(predictor, size, seconds) for size in batch_sizes}
    best = max(by_batch, key=by_batch.get)
    return {"precision": predictor.precision, "device": str(predictor.device),
            "images_per_s_by_batch": by_batch, "best_batch": best, "images_per_s": by_batch[best]}


class PlainBaseline:
    """What the usual container does per request: PIL decode, preprocess, fp32 batch-1 forward."""

    def __init__(self, model_dir: Path, files: list[Path]) -> None:
        self.classifier = load_classifier(model_dir)
        self.model = self.classifier.model.eval()
        self.files = files
        self.next = 0

    def step(self) -> int:
        image = Image.open(self.files[self.next % len(self.files)])
        self.next += 1
        with torch.no_grad():
            self.model(preprocess(image, self.classifier.preprocessing)[None])
        return 1

    def rate(self, seconds: float) -> float:
        return images_per_s(self.step, seconds)


def reference_rss(model_dir: Path) -> float:
    """Resident memory of one bare process holding the model as a server worker does (same
    loading, precision, layout and allocator settings), after one forward at the server's
    largest batch (MiB). The server's extra memory over this is what its request handlers and
    HTTP cost."""
    batch = Environment.from_env().batch_size_for(select_device().type)
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'container')!r}, {str(ROOT / 'bench')!r}];"
            "import psutil, run; from pathlib import Path;"
            f"run.served_predictor(Path({str(model_dir)!r}), (1, {batch}));"
            "print(psutil.Process().memory_info().rss / 2**20)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def tree_rss(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def load_level(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """`concurrency` clients in a closed loop for `seconds`, while /ping is polled every 100 ms."""
    latencies: list[float] = []
    pings: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        session = requests.Session()
        i = offset
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = session.post(url + "/invocations", data=bodies[i % len(bodies)],
                                    headers={"Content-Type": "image/jpeg"}, timeout=120)
            with lock:
                latencies.append(time.monotonic() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            i += concurrency

    def pinger() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            started = time.monotonic()
            session.get(url + "/ping", timeout=10)
            pings.append(time.monotonic() - started)
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    threads.append(threading.Thread(target=pinger))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"concurrency": concurrency, "requests": len(latencies), "statuses": statuses,
            "images_per_s": statuses.get(200, 0) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 99),
            "ping_p50_ms": 1000 * statistics.median(pings),
            "ping_p99_ms": 1000 * percentile(pings, 99), "ping_max_ms": 1000 * max(pings)}


def served(model_dir: Path, files: list[Path], levels: list[int], seconds: float,
           probe) -> dict:
    """Each level is bracketed by `probe()` (raw limit and baseline, measured with the server
    idle), so its ratios compare figures taken within a minute of each other."""
    bodies = [path.read_bytes() for path in files]
    with ServerProcess(model_dir) as server:
        cold_start = server.wait_ready(timeout=300)
        idle_rss = tree_rss(server.process.pid)
        results = []
        for level in levels:
            before = probe()
            result = load_level(server.url, bodies, level, seconds)
            after = probe()
            result["raw_images_per_s"] = (before["raw"] + after["raw"]) / 2
            result["baseline_images_per_s"] = (before["baseline"] + after["baseline"]) / 2
            results.append(result)
        loaded_rss = tree_rss(server.process.pid)
    return {"cold_start_s": cold_start, "rss_idle_mib": idle_rss, "rss_loaded_mib": loaded_rss,
            "levels": results}


def chart(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["served"]["levels"]
    xs = [r["concurrency"] for r in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(xs, [r["images_per_s"] for r in levels], "o-", label="served (/invocations)")
    left.plot(xs, [r["raw_images_per_s"] for r in levels], "g--",
              label="model raw limit (around each level)")
    left.plot(xs, [r["baseline_images_per_s"] for r in levels], "r:",
              label="plain fp32 batch-1 (around each level)")
    left.set(xlabel="concurrency", ylabel="images/s", title="Throughput")
    left.legend()
    right.plot(xs, [r["p50_ms"] for r in levels], "o-", label="p50")
    right.plot(xs, [r["p99_ms"] for r in levels], "o-", label="p99")
    right.plot(xs, [r["ping_p99_ms"] for r in levels], "x--", label="/ping p99")
    right.set(xlabel="concurrency", ylabel="ms", title="Latency", yscale="log")
    right.legend()
    fig.suptitle(f"{results['arch']} on {results['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    raw, base, srv = results["raw_limit"], results["baseline"], results["served"]
    lines = [
        f"model {results['arch']} | device {raw['device']} | precision {raw['precision']} | "
        f"{results['machine']}",
        f"raw limit (no HTTP) at start: best batch {raw['best_batch']}, "
        f"{raw['images_per_s']:.2f} img/s; by batch: "
        + ", ".join(f"{b}: {v:.2f}" for b, v in raw["images_per_s_by_batch"].items()),
        f"plain baseline (PIL decode + fp32 batch-1) at start: {base['images_per_s']:.2f} img/s",
        "each level's ratios use the raw limit (best batch) and baseline measured just before "
        "and after it (columns 'raw' and 'base'), because the machine's speed drifts",
        f"cold start {srv['cold_start_s']:.1f} s | server RSS idle {srv['rss_idle_mib']:.0f} MiB, "
        f"after load {srv['rss_loaded_mib']:.0f} MiB | one bare model "
        f"{results['one_model_rss_mib']:.0f} MiB "
        f"(ratio {srv['rss_loaded_mib'] / results['one_model_rss_mib']:.2f})",
        "",
        "| concurrency | img/s | base | x baseline | raw | x raw limit | p50 ms | p99 ms | "
        "ping p99 ms | ping max ms | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in srv["levels"]:
        lines.append(
            f"| {r['concurrency']} | {r['images_per_s']:.2f} | "
            f"{r['baseline_images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['baseline_images_per_s']:.2f} | "
            f"{r['raw_images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['raw_images_per_s']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['ping_p99_ms']:.1f} | {r['ping_max_ms']:.1f} | "
            f"{r['statuses']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ or "serving benchmark")
    parser.add_argument("--arch", default="seed-vgg16",
                        help="seed-vgg16 (the Udacity seed's checkpoint) or an architecture name")
    parser.add_argument("--model-dir", type=Path, help="serve this model dir instead")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = photos(args.photos)
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or model_dir_for(args.arch, Path(work))
        torch.set_num_threads(cpu_count())
        results = {"arch": args.arch if not args.model_dir else str(args.model_dir),
                   "machine": f"{cpu_count()} cores, torch {torch.__version__}",
                   "photos": len(files)}
        predictor = served_predictor(model_dir, tuple(BATCH_SIZES))
        results["raw_limit"] = raw = raw_limit(predictor, BATCH_SIZES, args.seconds / 2)
        baseline = PlainBaseline(model_dir, files)
        results["baseline"] = {"images_per_s": baseline.rate(args.seconds)}
        results["one_model_rss_mib"] = reference_rss(model_dir)
        levels = [int(x) for x in args.concurrency.split(",")]

        def probe() -> dict:
            return {"raw": forward_rate(predictor, raw["best_batch"], PROBE_S),
                    "baseline": baseline.rate(PROBE_S)}

        results["served"] = served(model_dir, files, levels, args.seconds, probe)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    chart(results, args.out / "chart.png")
    print(table(results))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
