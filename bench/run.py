"""The serving benchmark: the model's raw limit, the plain per-request baseline, the served figures.
One run, one machine: prints a table, writes results.json and a throughput/latency chart.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch
from measure import percentile, server_processes, tree_rss
from PIL import Image

from flower_classifier.environment import (
    INFERENCE_BACKEND,
    INFERENCE_PRECISION,
    MODEL_DIR,
    PRECISIONS,
    Environment,
    cpu_count,
)
from flower_classifier.harness.checkpoints import make_project_checkpoint, make_starter_checkpoint
from flower_classifier.harness.server import ServerProcess
from flower_classifier.model.calibration import find_photos, load_photos, with_flips
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.device import select_device
from flower_classifier.model.images import decode_image
from flower_classifier.model.precision import TORCH, Verdict, fastest
from flower_classifier.model.predictor import MIXED, Predictor
from flower_classifier.model.preprocess import preprocess
from flower_classifier.serving.app import REQUEST_THREAD
from flower_classifier.serving.batcher import os_thread_names
from flower_classifier.serving.server import load_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = ROOT / "local_test" / "test_dir" / "model" / "cat_to_name.json"
SHARED_VALID = ROOT.parent / "shared" / "flowers" / "valid"
BATCH_SIZES = [1, 4, 8, 16]
CANDIDATE_BATCH = 8  # the batch every (backend, precision) candidate's raw forward is timed at
PROBE_S = 2.5  # each raw-limit and baseline probe, between a level's stretches of load


def photos(limit: int) -> list[Path]:
    """Real flower photos: ../shared/flowers/valid when present, else local_test/payloads."""
    found = sorted(SHARED_VALID.glob("*/*.jpg")) or sorted(
        (ROOT / "local_test" / "payloads").glob("*.*"))
    return found[:limit]


def model_dir_for(arch: str, work: Path) -> Path:
    if arch == "seed-vgg16":
        return make_starter_checkpoint(work, NAMES)
    return make_project_checkpoint(work, NAMES, arch=arch, hidden_units=(512,))


def make_confident(model_dir: Path, scale: float) -> None:
    """Multiply the head's output layer by `scale`: random weights answer near-uniformly, and
    x100 gives a starter-format vgg16 a mean top-1 probability of about 0.7 on real photos, where
    full int8 moves answers (the precision policy's hard case)."""
    path = model_dir / "checkpoint.pth"
    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data["state_dict"]
    last = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2][-1]
    state[last] = state[last] * scale
    state[last[:-len("weight")] + "bias"] = state[last[:-len("weight")] + "bias"] * scale
    torch.save(data, path)


def served_predictor(model_dir: Path, batch_sizes: tuple[int, ...]) -> Predictor:
    """The model exactly as a server worker loads and warms it, then one forward per size."""
    env = Environment.from_env({**os.environ, MODEL_DIR: str(model_dir)})
    _, predictor = load_model(env)
    predictor.decide()  # the check a server runs once /ping answers (PRECISION_CHECK=background)
    for size in batch_sizes:
        predictor.forward(torch.randn(size, *predictor.input_shape))
    return predictor


def images_per_s(step, seconds: float) -> float:
    """Repeat `step()` (which returns the images it handled) for `seconds`, at least once."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count == 0:
        count += step()
    return count / (time.perf_counter() - started)


def forward_rate(predictor: Predictor, size: int, seconds: float, lanes: int = 1,
                 cpu: list[float] | None = None) -> float:
    """Images/s of forwards alone (preprocessed tensors, no HTTP) at one batch size, from
    `lanes` threads side by side, each on its share of the torch threads, as the server's
    batcher lanes run them. Appends the CPU ms they took per image to `cpu` if given (this
    process does nothing else meanwhile)."""
    batch = torch.randn(size, *predictor.input_shape)
    threads = Environment.from_env().threads_per_lane(lanes)
    rates, counts = [0.0] * lanes, [0] * lanes
    started = time.process_time()

    def lane(index: int) -> None:
        torch.set_num_threads(threads)

        def step() -> int:
            predictor.forward(batch)
            counts[index] += size
            return size

        rates[index] = images_per_s(step, seconds)

    workers = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if cpu is not None:
        cpu.append(1000 * (time.process_time() - started) / sum(counts))
    return sum(rates)


def raw_limit(predictor: Predictor, batch_sizes: list[int], seconds: float,
              rounds: int = 3) -> dict:
    """Forward-only throughput at each batch size (`seconds` each), with the server's device
    and precision, in one lane with every torch thread and in the server's own lanes; the best
    of all counts.
    The settings take turns, `rounds` times, so a drift in the machine's speed cannot crown
    the wrong one."""
    kind = predictor.device.type
    settings = [(lanes, size) for lanes in sorted({1, Environment.from_env().lanes_for(kind)})
                for size in batch_sizes]
    rates: dict[tuple[int, int], list[float]] = {setting: [] for setting in settings}
    for _ in range(rounds):
        for lanes, size in settings:
            rates[lanes, size].append(
                forward_rate(predictor, size, seconds / rounds, lanes))
    means = {setting: statistics.mean(values) for setting, values in rates.items()}
    best_lanes, best = max(means, key=means.get)
    by_lanes: dict[int, dict[int, float]] = {}
    for (lanes, size), rate in means.items():
        by_lanes.setdefault(lanes, {})[size] = rate
    return {"precision": predictor.precision, "device": str(predictor.device),
            "images_per_s_by_lanes_and_batch": by_lanes, "best_lanes": best_lanes,
            "best_batch": best, "images_per_s": means[best_lanes, best]}


def candidate_models(model_dir: Path) -> tuple[Predictor, list[tuple[Verdict, object]]]:
    """Every (backend, precision) the server's "auto" can serve, built and checked against
    torch fp32 as its warm-up does (Predictor.check, same calibration photos), each with its
    verdict (raw_forwards() then times them properly). torch int8-mixed is built when torch
    int8 fails the check, with no time budget."""
    env = Environment.from_env({**os.environ, MODEL_DIR: str(model_dir)})
    classifier = load_classifier(model_dir)
    device = select_device()
    predictor = Predictor(classifier, device, "auto", "auto", env.lanes_for(device.type))
    photos = load_photos(find_photos(model_dir, env.calibration_dir), classifier.preprocessing,
                         env.max_image_pixels)
    sample = with_flips(photos)
    exact = predictor.answers(sample)
    built = [(Verdict("fp32", 0.0), predictor.model)]
    for backend, precision in predictor.candidates():
        checked = predictor.check(backend, precision, photos, sample, exact)
        if checked is not None:
            built.append(checked)
    if any(v.backend == TORCH and v.precision == "int8" and not v.keeps for v, _ in built):
        mixed = predictor.mixed_int8(photos, sample, exact)
        if mixed:
            built.append((mixed[1], mixed[0]))
    return predictor, built


def raw_forwards(predictor: Predictor, built: list[tuple[Verdict, object]], size: int,
                 seconds: float, rounds: int = 3) -> list[Verdict]:
    """Each candidate's forward-only images/s at batch `size`, one lane on every thread (the
    rate the warm-up compares), the candidates taking turns `rounds` times, so a drift in the
    machine's speed weighs on all alike. Returns the verdicts with their mean speeds."""
    batch = torch.randn(size, *predictor.input_shape)
    rates: list[list[float]] = [[] for _ in built]
    for _ in range(rounds):
        for index, (verdict, model) in enumerate(built):
            precision = verdict.precision if verdict.precision != MIXED else "fp32"

            def step(model=model, precision=precision) -> int:
                predictor.answers(batch, model, precision)
                return size

            rates[index].append(images_per_s(step, seconds / rounds))
    return [Verdict(v.precision, statistics.mean(r), v.same_top1, v.gap, v.backend)
            for (v, _), r in zip(built, rates, strict=True)]


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


def reference_rss(model_dir: Path, served_as: dict[str, str]) -> float:
    """Resident memory of one bare process holding the model as a server worker does (same
    loading, layout and allocator settings, and the backend and precision the server served,
    `served_as`: its own check could choose another, and OpenVINO's int8 holds more than
    torch's), after every lane has run its largest batch, side by side on threads of its own
    as the server's lanes do (MiB): OpenVINO holds activations per stream (vgg16 bf16: two
    lanes of batch 4 held 126 MiB more than one forward of batch 16). The server's extra
    memory over this is what its request handlers and HTTP cost. Like the server's, its
    TMPDIR is fresh: no decision cached by this process is reused."""
    env, kind = Environment.from_env(), select_device().type
    batch, lanes = env.batch_size_for(kind), env.lanes_for(kind)
    code = ("import psutil, run; from pathlib import Path;"  # held while measured: freed,
            # OpenVINO's buffers would go back to the OS before the RSS is read
            f"predictor = run.served_predictor(Path({str(model_dir)!r}), (1,));"
            f"run.forward_rate(predictor, {batch}, 0, {lanes});"  # one forward per lane
            "print(psutil.Process().memory_info().rss / 2**20, predictor.backend)")
    forced = {INFERENCE_BACKEND: served_as["backend"]}
    if served_as["precision"] in PRECISIONS:  # int8-mixed has no setting: the check finds it
        forced[INFERENCE_PRECISION] = served_as["precision"]
    import subprocess
    with tempfile.TemporaryDirectory(prefix="reference-") as fresh:
        env = {**os.environ, **forced, "TMPDIR": fresh, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])}  # for `import run`
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env)
    rss, backend = out.stdout.strip().splitlines()[-1].split()
    if backend != served_as["backend"]:
        raise RuntimeError(f"the one-model reference served {backend}, the server "
                           f"{served_as['backend']}")
    return float(rss)


def decode_ms(bodies: list[bytes], spec) -> float:
    """CPU ms per image of decoding and preprocessing `bodies` as a request thread does, in
    this process's one thread: the part of a served image's cost no HTTP change can remove."""
    limit = Environment.from_env().max_image_pixels  # the server's own bound
    started = time.process_time()
    for body in bodies:
        preprocess(decode_image(body, limit), spec)
    return 1000 * (time.process_time() - started) / len(bodies)


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds the server's threads have used, by role: "other" for gunicorn's request
    threads (named REQUEST_THREAD in the OS: decoding, preprocessing, HTTP, JSON) and each
    process's main thread (accepting and polling connections); "forward" for the rest: the
    batcher lanes and the OpenMP or OpenVINO threads that they or the precision check start."""
    roles = {"forward": 0.0, "other": 0.0}
    for proc in server_processes(pid):
        names = os_thread_names(proc.pid)
        for thread in proc.threads():
            if thread.id not in names:
                continue  # the thread has ended, or started after the names were read
            other = names[thread.id].startswith(REQUEST_THREAD) or thread.id == proc.pid
            roles["other" if other else "forward"] += thread.user_time + thread.system_time
    return roles


def server_rss_mib(pid: int) -> float:
    """Resident memory of the server, master and workers (MiB)."""
    return tree_rss(pid)[0] / 2**20


class Client:
    """One keep-alive connection. The load generator shares the server's cores here, so it is
    plain http.client: requests costs about 4 ms of CPU per call, which the server would lose."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def fetch(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, response.read()

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> int:
        return self.fetch(method, path, body, headers)[0]

    def get(self, path: str) -> bytes:
        status, body = self.fetch("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        return body


@dataclass
class Load:
    """What one stretch of closed-loop load saw."""

    latencies: list[float] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    cpu_s: dict[str, float] = field(  # server forward, server other, load generator
        default_factory=lambda: {"forward": 0.0, "other": 0.0, "load_generator": 0.0})


def load_level(url: str, bodies: list[bytes], concurrency: int, seconds: float,
               load: Load, server_pid: int) -> None:
    """`concurrency` clients in a closed loop for `seconds`, while /ping is polled every 100 ms;
    adds what they saw, and the CPU the server (`server_pid`) and this process used, to
    `load`."""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        session = Client(url, timeout=120)
        i = offset
        while time.monotonic() < deadline:
            started = time.monotonic()
            status = session.call("POST", "/invocations", bodies[i % len(bodies)],
                                  {"Content-Type": "image/jpeg"})
            with lock:
                load.latencies.append(time.monotonic() - started)
                load.statuses[status] = load.statuses.get(status, 0) + 1
            i += concurrency

    def pinger() -> None:
        session = Client(url, timeout=10)
        while time.monotonic() < deadline:
            started = time.monotonic()
            session.call("GET", "/ping")
            load.pings.append(time.monotonic() - started)
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    threads.append(threading.Thread(target=pinger))
    before = server_cpu(server_pid)
    started, cpu_started = time.monotonic(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.elapsed += time.monotonic() - started
    load.cpu_s["load_generator"] += time.process_time() - cpu_started
    for role, seconds_used in server_cpu(server_pid).items():
        load.cpu_s[role] += seconds_used - before[role]


def served(model_dir: Path, files: list[Path], levels: list[int], seconds: float, rounds: int,
           probe) -> dict:
    """Each level alternates `rounds` times between `probe()` (raw limit and baseline, with
    the server idle) and seconds/rounds of load, and ends with a probe: the machine's speed
    drifts, and this way a drift weighs on both sides of the level's ratios alike."""
    bodies = [path.read_bytes() for path in files]
    with ServerProcess(model_dir) as server:
        cold_start = server.wait_ready(timeout=300)
        # every level measures what the server settles on: the background check's choice
        waited = server.wait_decided()
        decided = None if waited is None else cold_start + waited
        idle_rss = server_rss_mib(server.process.pid)
        results = []
        for level in levels:
            load, probes = Load(), [probe()]
            for _ in range(rounds):
                load_level(server.url, bodies, level, seconds / rounds, load,
                           server.process.pid)
                probes.append(probe())
            results.append({
                "concurrency": level, "requests": len(load.latencies), "statuses": load.statuses,
                "images_per_s": load.statuses.get(200, 0) / load.elapsed,
                "p50_ms": 1000 * statistics.median(load.latencies),
                "p99_ms": 1000 * percentile(load.latencies, 99),
                "ping_p50_ms": 1000 * statistics.median(load.pings),
                "ping_p99_ms": 1000 * percentile(load.pings, 99),
                "ping_max_ms": 1000 * max(load.pings),
                "raw_images_per_s": statistics.mean(p["raw"] for p in probes),
                "baseline_images_per_s": statistics.mean(p["baseline"] for p in probes),
                "best_keeping_images_per_s": statistics.mean(p["best_keeping"]
                                                             for p in probes),
                **cpu_accounting(load, statistics.mean(p["raw_cpu_ms"] for p in probes),
                                 statistics.mean(p["decode_ms"] for p in probes))})
        loaded_rss = server_rss_mib(server.process.pid)
        info = json.loads(Client(server.url, timeout=10).get("/model-info"))
    return {"cold_start_s": cold_start, "decided_s": decided, "rss_idle_mib": idle_rss,
            "rss_loaded_mib": loaded_rss, "levels": results,
            "served_as": {"backend": info["backend"], "precision": info["precision"]}}





def cpu_accounting(load: Load, probe_forward_ms: float, decode_only_ms: float) -> dict:
    """Where the CPU went, in ms per served image, and the ceilings it sets on "x raw limit":
    with every core busy and forwards as cheap as in the probe, an image costs the probe's
    forward plus the server's other work plus the load generator's; and with HTTP, JSON and
    the load generator free, the probe's forward plus decoding and preprocessing alone."""
    images = load.statuses.get(200, 0)
    if not images:
        return {}
    per_image = {role: 1000 * used / images for role, used in load.cpu_s.items()}
    overhead = per_image["other"] + per_image["load_generator"]
    return {"cpu_ms_per_image": {**per_image, "forward_in_probe": probe_forward_ms,
                                 "decode_preprocess_alone": decode_only_ms},
            "raw_ratio_ceiling": probe_forward_ms / (probe_forward_ms + overhead),
            "decode_only_ceiling": probe_forward_ms / (probe_forward_ms + decode_only_ms)}


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
    decided = (f" (/ping answering, torch fp32 serving), the precision check's choice serving "
               f"from {srv['decided_s']:.1f} s" if srv.get("decided_s") else "")
    lines = [
        f"model {results['arch']} | device {raw['device']} | precision {raw['precision']} | "
        f"{results['machine']}",
        f"raw limit (no HTTP) at start: best {raw['best_lanes']} lane(s) x batch "
        f"{raw['best_batch']}, {raw['images_per_s']:.2f} img/s; by lanes and batch: "
        + "; ".join(f"{lanes} lane(s): " + ", ".join(f"{b}: {v:.2f}" for b, v in rates.items())
                    for lanes, rates in raw["images_per_s_by_lanes_and_batch"].items()),
        f"plain baseline (PIL decode + fp32 batch-1) at start: {base['images_per_s']:.2f} img/s",
        "each level's ratios use the means of the raw limit (best batch) and baseline probes "
        "taken between its stretches of load (columns 'raw' and 'base'): the machine's speed "
        "drifts",
        f"cold start {srv['cold_start_s']:.1f} s{decided} | server RSS idle "
        f"{srv['rss_idle_mib']:.0f} MiB, "
        f"after load {srv['rss_loaded_mib']:.0f} MiB | one bare model "
        f"{results['one_model_rss_mib']:.0f} MiB, serving as the server did: "
        f"{srv['served_as']['backend']} {srv['served_as']['precision']} "
        f"(ratio {srv['rss_loaded_mib'] / results['one_model_rss_mib']:.2f})",
        "",
        f"every candidate, raw forward at batch {CANDIDATE_BATCH} on every thread (rounds "
        "interleaved), checked against torch fp32 on the calibration photos and their mirrors "
        "(same top-1, top-1 probability within 0.02), as the server's warm-up checks them:",
        "",
        "| backend | precision | answers | gap | img/s |",
        "|---|---|---|---|---|",
        *(f"| {c['backend']} | {c['precision']} | "
          f"{'keeps' if c['keeps'] else 'changed'} | {c['gap']:.4f} | "
          f"{c['images_per_s']:.2f} |" for c in results["candidates"]),
        "",
        "'best' is the fastest answer-keeping candidate above, timed between the stretches of "
        "load like 'raw' (the served model's own best lanes and batch)",
        "",
        "| concurrency | img/s | base | x baseline | raw | x raw limit | best | x best | "
        "p50 ms | p99 ms | ping p99 ms | ping max ms | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in srv["levels"]:
        lines.append(
            f"| {r['concurrency']} | {r['images_per_s']:.2f} | "
            f"{r['baseline_images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['baseline_images_per_s']:.2f} | "
            f"{r['raw_images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['raw_images_per_s']:.2f} | "
            f"{r['best_keeping_images_per_s']:.2f} | "
            f"{r['images_per_s'] / r['best_keeping_images_per_s']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['ping_p99_ms']:.1f} | {r['ping_max_ms']:.1f} | "
            f"{r['statuses']} |")
    lines += [
        "",
        "CPU ms per served image: the server's lanes (forward), the rest of the server "
        "(decode, preprocess, HTTP, JSON), the load generator; the raw-limit probe's forward; "
        "and the most 'x raw limit' could be with every core busy and forwards as cheap as in "
        "the probe; then the photos' decode and preprocess alone (one thread, between the "
        "stretches of load) and the ceiling they leave if HTTP, JSON and the load generator "
        "cost nothing",
        "",
        "| concurrency | forward | other server | load generator | forward in probe | "
        "x raw limit ceiling | decode + preprocess alone | ceiling with free HTTP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in srv["levels"]:
        if "cpu_ms_per_image" in r:
            cpu = r["cpu_ms_per_image"]
            lines.append(
                f"| {r['concurrency']} | {cpu['forward']:.1f} | {cpu['other']:.1f} | "
                f"{cpu['load_generator']:.1f} | {cpu['forward_in_probe']:.1f} | "
                f"{r['raw_ratio_ceiling']:.2f} | {cpu['decode_preprocess_alone']:.1f} | "
                f"{r['decode_only_ceiling']:.2f} |")
    lines += ["", "targets (issue 19):", *(f"- {t}" for t in targets(results))]
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """The performance targets, each with its figure and PASS or MISS."""
    srv = results["served"]
    at8 = next((r for r in srv["levels"] if r["concurrency"] == 8), srv["levels"][-1])
    ratio = srv["rss_loaded_mib"] / results["one_model_rss_mib"]
    ping = max(r["ping_p99_ms"] for r in srv["levels"])
    level = f"served at concurrency {at8['concurrency']}"
    checks = [
        (f"{level} >= 4x the plain fp32 batch-1 baseline",
         at8["images_per_s"] / at8["baseline_images_per_s"], 4.0, "x"),
        (f"{level} >= 0.9x the fastest answer-keeping raw forward",
         at8["images_per_s"] / max(at8["best_keeping_images_per_s"],
                                   at8["raw_images_per_s"]), 0.9, "x")]
    rows = [f"{'PASS' if value >= goal else 'MISS'} {name}: {value:.2f}{unit}"
            for name, value, goal, unit in checks]
    for name, value, limit, unit in [
            ("/ping p99 < 100 ms while saturated", ping, 100.0, " ms"),
            ("memory <= 1.2x one model", ratio, 1.2, "x"),
            ("cold start <= 15 s", srv["cold_start_s"], 15.0, " s")]:
        rows.append(f"{'PASS' if value <= limit else 'MISS'} {name}: {value:.2f}{unit}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serving benchmark")
    parser.add_argument("--arch", default="seed-vgg16",
                        help="seed-vgg16 (the Udacity starter's checkpoint) or an "
                        "architecture name")
    parser.add_argument("--model-dir", type=Path, help="serve this model dir instead")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="load per concurrency level, in --rounds stretches")
    parser.add_argument("--rounds", type=int, default=4,
                        help="stretches of load per level, each followed by a probe")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--confident", type=float, metavar="SCALE", help=(
        "multiply the generated model's output layer by SCALE (100: a confident head, where "
        "full int8 moves answers)"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = photos(args.photos)
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or model_dir_for(args.arch, Path(work))
        if args.confident and not args.model_dir:
            make_confident(model_dir, args.confident)
        torch.set_num_threads(cpu_count())
        results = {"arch": args.arch if not args.model_dir else str(args.model_dir),
                   "confident": args.confident,
                   "machine": f"{cpu_count()} cores, torch {torch.__version__}",
                   "photos": len(files)}
        checker, built = candidate_models(model_dir)
        verdicts = raw_forwards(checker, built, CANDIDATE_BATCH, args.seconds)
        results["candidates"] = [{**asdict(v), "keeps": v.keeps} for v in verdicts]
        best = fastest(verdicts)
        best_model = built[verdicts.index(best)][1]
        del built, checker
        predictor = served_predictor(model_dir, tuple(BATCH_SIZES))
        results["raw_limit"] = raw = raw_limit(predictor, BATCH_SIZES, args.seconds / 4)
        baseline = PlainBaseline(model_dir, files)
        results["baseline"] = {"images_per_s": baseline.rate(args.seconds)}
        levels = [int(x) for x in args.concurrency.split(",")]
        best_batch = torch.randn(CANDIDATE_BATCH, *predictor.input_shape)
        bodies = [path.read_bytes() for path in files]

        def best_step() -> int:
            predictor.answers(best_batch, best_model,
                              best.precision if best.precision != MIXED else "fp32")
            return CANDIDATE_BATCH

        def probe() -> dict:
            cpu: list[float] = []
            rate = forward_rate(predictor, raw["best_batch"], PROBE_S, raw["best_lanes"], cpu)
            return {"raw": rate, "raw_cpu_ms": cpu[0], "baseline": baseline.rate(PROBE_S),
                    "best_keeping": images_per_s(best_step, PROBE_S),
                    "decode_ms": decode_ms(bodies, predictor.classifier.preprocessing)}

        results["served"] = served(model_dir, files, levels, args.seconds, args.rounds,
                                   probe)
        results["one_model_rss_mib"] = reference_rss(model_dir, results["served"]["served_as"])
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    chart(results, args.out / "chart.png")
    print(table(results))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
