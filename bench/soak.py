#!/usr/bin/env python3
"""Soak test: minutes of mixed good and hostile /invocations traffic at fixed concurrency, with
/ping probed throughout and the server's resident memory (master + workers) tracked.
Fails (exit 1) on any unexpected status, a /ping slower than 2 s or failing, a replaced
worker, or RSS growth of 10% or more after warm-up.

  python bench/soak.py --minutes 5 --concurrency 16            # starts its own server
  python bench/soak.py --url http://127.0.0.1:8080 --pid 1234  # an already running one
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from measure import percentile, tree_rss

from flower_classifier.harness.checkpoints import make_project_checkpoint
from flower_classifier.harness.payloads import generated_body
from flower_classifier.harness.server import ServerProcess
from flower_classifier.model.images import IMAGE_TYPES, is_image_name

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
PHOTOS = ROOT / "local_test" / "payloads"
NAMES = ROOT / "local_test" / "test_dir" / "model" / "cat_to_name.json"
PING_LIMIT_S = 2.0


def load_requests(limit_bytes: int) -> tuple[list[dict], list[dict]]:
    """(good photo requests, corpus requests) as dicts: name, body, headers, expected, chunked."""
    good = [{"name": f"photo:{p.name}", "body": p.read_bytes(), "expected": 200, "chunked": False,
             "headers": {"Content-Type": IMAGE_TYPES[p.suffix.lower()]}}
            for p in sorted(PHOTOS.iterdir()) if is_image_name(p)]
    hostile = []
    for case in json.loads((CORPUS / "manifest.json").read_text())["cases"]:
        headers = dict(case.get("headers") or {})
        if case["content_type"] is not None:
            headers["Content-Type"] = case["content_type"]
        if "generate" in case:
            body = generated_body(case, limit_bytes)
        else:
            body = (CORPUS / "files" / case["file"]).read_bytes()
        hostile.append({"name": case["name"], "body": body, "headers": headers,
                        "expected": case["status"],
                        "chunked": case.get("generate") == "chunked_jpeg"})
    return good, hostile


class Soak:
    """One soak run's traffic and records: client threads send mixed requests, a pinger probes
    /ping, a sampler (given the server's pid) tracks its RSS; all record here, under `lock`."""

    def __init__(self, url: str, pid: int | None, minutes: float, warmup_s: float,
                 hostile_share: float, limit_bytes: int, seed: int) -> None:
        self.url, self.pid, self.hostile_share, self.seed = url, pid, hostile_share, seed
        self.warmup_s = warmup_s
        self.good, self.hostile = load_requests(limit_bytes)
        self.duration = minutes * 60
        self.started = time.monotonic()
        self.deadline = self.started + self.duration
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.unexpected: list[str] = []
        self.latencies: list[float] = []
        self.pings: list[float] = []
        self.ping_failures: list[str] = []
        self.rss: list[tuple[float, int]] = []
        self.workers_seen: list[set[int]] = []

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        session = requests.Session()
        while self.running():
            item = rng.choice(self.hostile if rng.random() < self.hostile_share else self.good)
            body = item["body"]
            if item["chunked"]:
                body = (item["body"][i:i + 65536] for i in range(0, len(item["body"]), 65536))
            sent = time.monotonic()
            try:
                response = session.post(self.url + "/invocations", data=body,
                                        headers=item["headers"], timeout=60)
                status = response.status_code
                clean = "Traceback" not in response.text and (
                    response.headers.get("Content-Type", "").startswith("application/json"))
            except requests.RequestException as error:
                status, clean = f"error:{type(error).__name__}", False
                session = requests.Session()
            self.record(item, status, clean, time.monotonic() - sent)

    def record(self, item: dict, status, clean: bool, elapsed: float) -> None:
        with self.lock:
            self.counts[(item["expected"], status)] += 1
            self.latencies.append(elapsed)
            if status != item["expected"] or not clean:
                self.unexpected.append(
                    f"{item['name']}: expected {item['expected']}, got {status}")

    def pinger(self) -> None:
        while self.running():
            sent = time.monotonic()
            try:
                status = requests.get(self.url + "/ping", timeout=PING_LIMIT_S).status_code
                if status != 200:
                    self.ping_failures.append(f"status {status}")
            except requests.RequestException as error:
                self.ping_failures.append(type(error).__name__)
            self.pings.append(time.monotonic() - sent)
            self.stop.wait(0.25)

    def sampler(self) -> None:
        while self.running():
            total, children = tree_rss(self.pid)
            self.rss.append((time.monotonic() - self.started, total))
            self.workers_seen.append(children)
            self.stop.wait(1.0)

    def run(self, concurrency: int) -> float:
        """Start the threads, print progress every 10 s until the deadline, stop them; returns
        the seconds the run took."""
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                   for i in range(concurrency)]
        threads.append(threading.Thread(target=self.pinger, daemon=True))
        if self.pid:
            threads.append(threading.Thread(target=self.sampler, daemon=True))
        for thread in threads:
            thread.start()
        try:
            while time.monotonic() < self.deadline:
                time.sleep(min(10.0, max(0.0, self.deadline - time.monotonic())))
                self.progress()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=90)
        return time.monotonic() - self.started

    def progress(self) -> None:
        with self.lock:
            done = sum(self.counts.values())
        print(f"  {time.monotonic() - self.started:6.0f} s  {done} requests  "
              f"{len(self.unexpected)} unexpected  ping max "
              f"{max(self.pings, default=0) * 1000:.0f} ms"
              + (f"  rss {self.rss[-1][1] / 2**20:.0f} MiB" if self.rss else ""), flush=True)

    def summary(self, elapsed: float, concurrency: int) -> dict:
        """Counts, latencies and /ping figures; RSS growth when sampled."""
        counts, pings = self.counts, self.pings
        summary = {
            "url": self.url, "duration_s": round(elapsed, 1), "concurrency": concurrency,
            "hostile_share": self.hostile_share, "requests": sum(counts.values()),
            "throughput_rps": round(sum(counts.values()) / elapsed, 1),
            "statuses": {f"expected {e} got {g}": n
                         for (e, g), n in sorted(counts.items(), key=str)},
            "unexpected": len(self.unexpected), "unexpected_examples": self.unexpected[:10],
            "latency_ms": {"p50": round(percentile(self.latencies, 50) * 1000),
                           "p99": round(percentile(self.latencies, 99) * 1000)},
            "ping": {"count": len(pings), "failures": len(self.ping_failures),
                     "p50_ms": round(percentile(pings, 50) * 1000, 1),
                     "p99_ms": round(percentile(pings, 99) * 1000, 1),
                     "max_ms": round(max(pings, default=float("nan")) * 1000, 1)},
        }
        if self.rss:
            summary["rss"] = self.rss_growth()
            summary["workers_replaced"] = len(
                {frozenset(w) for w in self.workers_seen if w}) > 1
        return summary

    def rss_growth(self) -> dict:
        """Medians of 30 s windows: one in-flight 6 MB body or 40 MP decode is a transient
        spike (reported as the peak), not growth; a leak moves the median."""
        rss, warmup_s = self.rss, self.warmup_s
        window = min(30.0, max(1.0, (self.duration - warmup_s) / 4))
        warm = [r for t, r in rss if warmup_s <= t < warmup_s + window] or [rss[0][1]]
        end = [r for t, r in rss if t >= rss[-1][0] - window]
        warm_mib, end_mib = statistics.median(warm) / 2**20, statistics.median(end) / 2**20
        return {"warm_mib": round(warm_mib, 1), "end_mib": round(end_mib, 1),
                "peak_mib": round(max(r for _, r in rss) / 2**20, 1),
                "growth_pct": round((end_mib - warm_mib) / warm_mib * 100, 2),
                "measured": f"median of the {window:g} s after warm-up vs median "
                            f"of the last {window:g} s, master + workers",
                "warmup_s": warmup_s,
                "series_mib": [[round(t), round(r / 2**20)] for t, r in rss[::5]]}

    def failures(self, summary: dict) -> list[str]:
        """What fails the soak: unexpected statuses, a slow or failing /ping, RSS growth of
        10% or more, a replaced worker."""
        failures = []
        if summary["unexpected"]:
            failures.append(f"{summary['unexpected']} unexpected statuses")
        if self.ping_failures or summary["ping"]["max_ms"] >= PING_LIMIT_S * 1000:
            failures.append(f"/ping: {len(self.ping_failures)} failures, "
                            f"max {summary['ping']['max_ms']} ms")
        if self.rss and summary["rss"]["growth_pct"] >= 10:
            failures.append(f"RSS grew {summary['rss']['growth_pct']}% after warm-up")
        if summary.get("workers_replaced"):
            failures.append("a worker died and was replaced")
        return failures


def soak(url: str, pid: int | None, minutes: float, concurrency: int, warmup_s: float,
         hostile_share: float, limit_bytes: int, seed: int) -> dict:
    """Run the soak and return its summary, with `failures` and `passed`."""
    run = Soak(url, pid, minutes, warmup_s, hostile_share, limit_bytes, seed)
    elapsed = run.run(concurrency)
    summary = run.summary(elapsed, concurrency)
    summary["failures"] = run.failures(summary)
    summary["passed"] = not summary["failures"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description="soak test")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before RSS baseline")
    parser.add_argument("--hostile-share", type=float, default=0.5)
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the server's master PID, for RSS")
    parser.add_argument("--model-dir", help="model directory for the started server "
                        "(default: a resnet18 checkpoint with random weights)")
    parser.add_argument("--payload-mb", type=float, default=6.0,
                        help="the server's SAGEMAKER_MAX_PAYLOAD_IN_MB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the started server, e.g. "
                        "INFERENCE_LANES=1 (repeatable)")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args()
    limit = int(args.payload_mb * 1024 * 1024)
    if not 0 < args.minutes <= 120 or not 1 <= args.concurrency <= 256:
        parser.error("--minutes must be in (0, 120] and --concurrency in [1, 256]")

    def run(url: str, pid: int | None) -> dict:
        print(f"soak: {args.minutes:g} min at concurrency {args.concurrency} against {url}",
              flush=True)
        return soak(url, pid, args.minutes, args.concurrency, args.warmup, args.hostile_share,
                    limit, args.seed)

    if args.url:
        summary = run(args.url.rstrip("/"), args.pid)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            model_dir = Path(args.model_dir) if args.model_dir else None
            if model_dir is None:
                model_dir = make_project_checkpoint(Path(tmp), NAMES)
            env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": f"{args.payload_mb:g}"}
            for item in args.env:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    parser.error(f"--env expects KEY=VALUE, got {item!r}")
                env[key] = value
            print(f"server environment: {env}")
            with ServerProcess(model_dir, env, log_path=Path(tmp) / "serve.log") as server:
                print(f"server ready in {server.wait_ready():.1f} s (pid {server.process.pid})")
                summary = run(server.url, server.process.pid)
                log = server.log
                exit_code = server.stop()
            summary["server_exit_code"] = exit_code
            summary["server_log_tracebacks"] = log.count("Traceback")
            if summary["server_log_tracebacks"]:
                summary["failures"].append("tracebacks in the server log")
                summary["passed"] = False
    shown = {k: v for k, v in summary.items() if k != "rss"}
    if "rss" in summary:
        shown["rss"] = {k: v for k, v in summary["rss"].items() if k != "series_mib"}
    print(json.dumps(shown, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print("SOAK PASSED" if summary["passed"] else "SOAK FAILED: " + "; ".join(summary["failures"]))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
