"""The benchmark's documented command, end to end on a small model: a real server under real load.
It checks what the run reports and writes, never how fast anything was.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def test_benchmark_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--arch", "resnet18",
         "--concurrency", "1,2", "--seconds", "2", "--rounds", "1", "--photos", "4",
         "--confident", "100", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "INFERENCE_BACKEND"})  # as users run it
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["confident"] == 100

    raw = results["raw_limit"]
    assert raw["images_per_s"] == max(rate for rates in raw["images_per_s_by_lanes_and_batch"]
                                      .values() for rate in rates.values())
    assert results["baseline"]["images_per_s"] > 0 and results["one_model_rss_mib"] > 0
    served = results["served"]
    assert 0 < served["cold_start_s"] < 300 and served["rss_loaded_mib"] > 0
    # /ping answers first; every level is measured once the background check has switched
    assert served["cold_start_s"] < served["decided_s"] < 600
    assert "the precision check's choice serving from" in result.stdout
    assert [level["concurrency"] for level in served["levels"]] == [1, 2]
    for level in served["levels"]:
        assert set(level["statuses"]) == {"200"} and level["images_per_s"] > 0
        assert level["p50_ms"] <= level["p99_ms"] and level["ping_p99_ms"] > 0
        cpu = level["cpu_ms_per_image"]
        # the lanes are told apart by their OS thread names; both roles did work
        assert cpu["forward"] > 0 and cpu["other"] > 0 and cpu["load_generator"] > 0
        assert cpu["forward_in_probe"] > 0 and 0 < level["raw_ratio_ceiling"] < 1
        assert cpu["decode_preprocess_alone"] > 0
        # each ceiling is its formula of the costs reported beside it (their order is a timing,
        # which a short run on a busy host can swap)
        forward = cpu["forward_in_probe"]
        assert level["raw_ratio_ceiling"] == pytest.approx(
            forward / (forward + cpu["other"] + cpu["load_generator"]))
        assert level["decode_only_ceiling"] == pytest.approx(
            forward / (forward + cpu["decode_preprocess_alone"]))
    # every candidate of both backends, checked and timed; the best one also around each level
    candidates = {(c["backend"], c["precision"]): c for c in results["candidates"]}
    assert {("torch", "fp32"), ("torch", "int8"), ("openvino", "fp32"),
            ("openvino", "int8")} <= set(candidates)
    assert all(c["images_per_s"] > 0 for c in candidates.values())
    assert candidates["torch", "fp32"]["keeps"] and candidates["openvino", "fp32"]["keeps"]
    assert all(level["best_keeping_images_per_s"] > 0 for level in served["levels"])
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| openvino | int8 |" in result.stdout
    for target in ("4x the plain fp32", "0.9x the fastest", "/ping p99", "memory", "cold start"):
        assert target in result.stdout
    assert "| 2 |" in result.stdout and "x raw limit ceiling" in result.stdout
    assert "ceiling with free HTTP" in result.stdout
    # the one-model reference holds what the server served, whatever its own check would pick
    served_as = served["served_as"]
    assert served_as["backend"] in ("torch", "openvino") and served_as["precision"]
    assert f"serving as the server did: {served_as['backend']} {served_as['precision']}" \
        in result.stdout


def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "no CUDA GPU is usable here" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_gpu_check_runs_end_to_end_on_the_cpu_when_allowed(tmp_path):
    """The same code path as on a GPU (raw forwards, a served run, table, chart), small."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--allow-cpu", "--archs", "resnet18",
         "--batches", "1,2", "--concurrency", "1,2", "--seconds", "0.5", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    entry = results["archs"]["resnet18"]
    assert set(entry["raw"]) == {"fp16", "bf16"}
    assert all(rate > 0 for raw in entry["raw"].values() for rate in raw["images_per_s"].values())
    assert [x["concurrency"] for x in entry["served"]] == [1, 2]
    assert all(set(x["statuses"]) == {"200"} and x["x_raw"] > 0 for x in entry["served"])
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| resnet18 | 2 |" in result.stdout
