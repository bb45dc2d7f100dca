"""Tests precision.py, the precision policy: the choice from (fake) timings, the answer check, the
decision cache and its key; then the predictor's "auto" warm-up on a real model and photos.

Precision chosen by measurement: fastest(), compare(), decision_key(), DecisionCache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

import flower_classifier
from conftest import keeps_answers, photo_batch
from flower_classifier.model.calibration import with_flips
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.device import cpu_has_bf16, precision_candidates
from flower_classifier.model.precision import (
    TOP1_TOLERANCE,
    DecisionCache,
    Verdict,
    choose,
    compare,
    decision_key,
    fastest,
)
from flower_classifier.model.predictor import Predictor
from flower_classifier.serving.gate import CpuGate

CPU = torch.device("cpu")


def test_the_fastest_precision_that_keeps_answers_wins():
    fp32, int8, bf16 = Verdict("fp32", 10.0), Verdict("int8", 55.0), Verdict("bf16", 21.0)
    assert fastest([fp32, int8, bf16]).precision == "int8"
    moved = Verdict("int8", 55.0, same_top1=True, gap=0.05)
    assert fastest([fp32, moved, bf16]).precision == "bf16"  # int8 refused: bf16 next
    flipped = Verdict("bf16", 21.0, same_top1=False, gap=0.0)
    assert fastest([fp32, moved, flipped]).precision == "fp32"  # nothing keeps: fp32
    slow = Verdict("bf16", 3.0)  # bf16 autocast without bf16 units: slower than fp32
    assert fastest([fp32, slow]).precision == "fp32"
    assert "moves a top-1 probability (gap 0.0500), 55.0 img/s" in moved.describe()


def test_compare_refuses_a_changed_top1_and_a_moved_probability():
    exact = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert compare(exact, exact) == (True, 0.0)
    same, gap = compare(exact, torch.tensor([[0.3, 0.6, 0.1], [0.1, 0.3, 0.6]]))
    assert not same and not Verdict("int8", 1.0, same, gap).keeps
    same, gap = compare(exact, exact + torch.tensor([[-0.03, 0.03, 0.0], [0.0, 0.0, 0.0]]))
    assert same and abs(gap - 0.03) < 1e-6 and gap > TOP1_TOLERANCE


def test_decision_key_changes_with_the_checkpoint_the_cpu_and_the_candidates(tmp_path):
    checkpoint = tmp_path / "checkpoint.pth"
    checkpoint.write_bytes(b"weights v1")
    key = decision_key([checkpoint], ["int8"], "cpu", cpu="AMD EPYC 9R14")
    assert key == decision_key([checkpoint], ["int8"], "cpu", cpu="AMD EPYC 9R14")
    assert key != decision_key([checkpoint], ["int8"], "cpu", cpu="Intel Xeon 8488C")
    assert key != decision_key([checkpoint], ["int8", "bf16"], "cpu", cpu="AMD EPYC 9R14")
    checkpoint.write_bytes(b"weights v2")
    assert key != decision_key([checkpoint], ["int8"], "cpu", cpu="AMD EPYC 9R14")


def test_cache_round_trip_and_bad_files(tmp_path, caplog):
    cache = DecisionCache("k1", tmp_path)
    assert cache.load() is None
    cache.save("bf16", [Verdict("fp32", 10.0), Verdict("bf16", 21.0)])
    assert DecisionCache("k1", tmp_path).load()["precision"] == "bf16"
    assert DecisionCache("k2", tmp_path).load() is None  # another key: another decision
    cache.path.write_text("{not json")
    assert cache.load() is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING):
        DecisionCache("k3", blocked).save("int8", [])  # cannot create a folder under a file
    assert "not cached" in caplog.text


# Another worker of the same model: it takes the decision lock, says so, holds it for argv[3]
# seconds (forever when negative), then caches torch int8 as its decision and exits.
HOLDER = """
import sys, time
from pathlib import Path
from flower_classifier.model.precision import DecisionCache
cache = DecisionCache(sys.argv[1], Path(sys.argv[2]))
with cache.deciding(5):
    print("held", flush=True)
    hold = float(sys.argv[3])
    time.sleep(hold if hold >= 0 else 3600)
    cache.save("int8", [], backend="torch", fp32_layers=[])
"""


def hold_decision(key: str, folder: Path, seconds: float) -> subprocess.Popen:
    """A real second process holding `key`'s decision lock, started and holding it."""
    env = {**os.environ, "PYTHONPATH": str(Path(flower_classifier.__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, key, str(folder), str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_worker_waits_for_the_decision_another_worker_is_making_and_serves_it(
        small_model_dir, photos, tmp_path, caplog):
    """MODEL_SERVER_WORKERS > 1: while another process decides for the same model (it holds
    the decision lock), decide() waits for it, then serves its cached decision without
    checking a candidate here or in a process of its own."""
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(with_flips(batch))
    predictor = Predictor(classifier, CPU, "auto")
    predictor.warm_up((1,), batch, DecisionCache("shared", tmp_path), defer=True)
    holder = hold_decision("shared", tmp_path, 1.5)
    made = []
    try:
        with caplog.at_level(logging.INFO):
            assert predictor.decide(elsewhere=lambda: made.append(1) or {}) is True
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert made == [] and "precision check on" not in caplog.text
    assert "another worker is deciding this model's precision" in caplog.text
    assert "torch int8, from the decision cached in" in caplog.text
    assert (predictor.backend, predictor.precision) == ("torch", "int8")
    assert keeps_answers(exact, predictor.answers(with_flips(batch)))


def test_the_decision_lock_is_given_up_after_its_wait_and_freed_by_a_dead_holder(
        tmp_path, caplog):
    """A holder that never lets go costs a waiting worker `wait_s`, then it decides for
    itself; a holder that dies (SIGKILL) frees the lock at once; where no lock file can be
    made, the decision is made unlocked."""
    holder = hold_decision("stuck", tmp_path, -1)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.INFO), DecisionCache("stuck", tmp_path).deciding(0.6):
            waited = time.monotonic() - started
        assert waited >= 0.6
        assert "another worker held" in caplog.text and "deciding without it" in caplog.text
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        caplog.clear()
        with caplog.at_level(logging.INFO), DecisionCache("stuck", tmp_path).deciding(30):
            pass
        assert "another worker" not in caplog.text  # taken at once: the kernel released it
    finally:
        holder.kill()
        holder.wait(timeout=30)
    blocked = tmp_path / "file"
    blocked.write_text("")
    caplog.clear()
    with caplog.at_level(logging.WARNING), DecisionCache("k", blocked).deciding(30):
        pass
    assert "precision decisions not shared between workers" in caplog.text


def test_auto_checks_every_candidate_serves_one_that_keeps_answers_and_caches_it(
        small_model_dir, photos, tmp_path, caplog):
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(with_flips(batch))
    cache = DecisionCache("auto-test", tmp_path)
    predictor = Predictor(classifier, CPU, "auto")
    with caplog.at_level(logging.INFO):
        predictor.warm_up((1,), batch, cache)
    log = caplog.text
    assert precision_candidates("auto", CPU) == (["int8", "bf16"] if cpu_has_bf16() else ["int8"])
    for candidate in ("fp32", *precision_candidates("auto", CPU)):
        assert f"{candidate} " in log.split("precision check on 18 inputs:")[1]
    assert f"serving {predictor.precision}" in log
    assert keeps_answers(exact, predictor.answers(with_flips(batch)))
    assert cache.load()["precision"] == predictor.precision

    caplog.clear()
    again = Predictor(load_classifier(small_model_dir), CPU, "auto")
    with caplog.at_level(logging.INFO):
        again.warm_up((1,), batch, cache)
    assert again.precision == predictor.precision
    assert "from the decision cached" in caplog.text and "precision check on" not in caplog.text


def test_layer_sensitivity_ranks_the_layer_int8_hurts_most_first(small_model_dir, photos):
    from flower_classifier.model.device import cpu_has_vnni
    from flower_classifier.model.quantize import layer_sensitivity

    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    with torch.no_grad():  # one huge weight: per-channel int8 then rounds the rest to zero
        classifier.model.layer3[0].conv2.weight[:, :, 1, 1] = 0.0
        classifier.model.layer3[0].conv2.weight[:, 0, 1, 1] = 50.0
    ranked = layer_sensitivity(classifier.model, classifier.head_path, batch, cpu_has_vnni())
    assert ranked[0][0] == "layer3.0.conv2"
    assert not any(name.startswith("fc.") or name == "fc" for name, _ in ranked)  # the head
    assert len(ranked) == 20  # resnet18's 17 convolutions and 3 downsample convolutions
    # measured in one thread only: a lane forwarding the same model meanwhile adds nothing
    assert layer_sensitivity(classifier.model, classifier.head_path, batch, cpu_has_vnni(),
                             threading.get_ident()) == ranked
    other = threading.Thread(target=lambda: None)
    other.start()
    other.join()
    assert layer_sensitivity(classifier.model, classifier.head_path, batch, cpu_has_vnni(),
                             other.ident) == []


def test_mixed_int8_leaves_the_named_layers_in_fp32(small_model_dir, photos):
    from flower_classifier.model.device import cpu_has_vnni
    from flower_classifier.model.quantize import quantize

    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    model, _ = quantize(classifier.model, "fc", batch, cpu_has_vnni(), ("layer3.0.conv2",))
    kinds = {name: type(module) for name, module in model.named_modules()}
    assert kinds["layer3.0.conv2"] is torch.nn.Conv2d  # float, as before
    assert kinds["layer3.0.conv1"] is not torch.nn.Conv2d  # quantized (a fused int8 conv)


def test_a_deferred_check_serves_fp32_until_decide_then_switches_in_one_step(
        small_model_dir, photos, tmp_path, caplog):
    """warm_up(defer=True) leaves torch fp32 serving (the server's /ping answers then);
    decide() checks every candidate while a lane keeps forwarding through the server's CPU
    gate, and each of those forwards gets fp32's answers or the chosen precision's, never a
    mixture; int8's tracing and every timed forward have the cores alone."""
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    sample = with_flips(batch)
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(sample)
    cache = DecisionCache("deferred", tmp_path)
    predictor = Predictor(classifier, CPU, "auto")
    predictor.warm_up((1,), batch, cache, defer=True)
    assert (predictor.backend, predictor.precision) == ("torch", "fp32")
    assert predictor.deferred is not None and cache.load() is None  # nothing checked yet
    assert torch.allclose(predictor.forward(sample), exact, atol=1e-5)

    gate, served, done = CpuGate(2, exclusive=False), [], threading.Event()
    turns = []

    @contextlib.contextmanager
    def alone():
        with gate.alone():
            turns.append(1)
            yield

    def lane() -> None:
        while not done.is_set():
            with gate.forward():
                served.append(predictor.forward(sample))

    thread = threading.Thread(target=lane)
    thread.start()
    with caplog.at_level(logging.INFO):
        try:
            assert predictor.decide(alone) is True
        finally:
            done.set()
            thread.join(timeout=60)
    assert "check failed" not in caplog.text and "not possible" not in caplog.text
    assert served and all(keeps_answers(exact, answers) for answers in served)
    # one timed chunk per candidate (18 inputs), and int8's tracing and converting
    assert len(turns) >= 1 + len(predictor.candidates()) + 2
    assert predictor.deferred is None and predictor.decide() is False  # once
    assert f"serving torch {predictor.precision} from now on" in caplog.text
    assert cache.load()["precision"] == predictor.precision
    assert predictor.classifier.model is predictor.model
    assert keeps_answers(exact, predictor.forward(sample))


def test_a_failing_deferred_check_keeps_fp32_serving(small_model_dir, photos, caplog):
    class Failing(Predictor):
        def check(self, *args):
            raise RuntimeError("a candidate blew up")

    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    predictor = Failing(classifier, CPU, "auto")
    predictor.warm_up((1,), batch, defer=True)
    with caplog.at_level(logging.INFO):
        assert predictor.decide() is True
    assert "the precision check failed; serving torch fp32" in caplog.text
    assert (predictor.backend, predictor.precision) == ("torch", "fp32")
    assert predictor.forward(batch[:2]).shape == (2, len(classifier.classes))


def test_a_check_made_elsewhere_is_served_and_one_that_fails_runs_here(
        small_model_dir, photos, tmp_path, caplog):
    """decide(elsewhere=...): the decision another process made (serving/checker.py) is built
    here without checking a candidate; if that process fails, the check runs here."""
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(with_flips(batch))
    predictor = Predictor(classifier, CPU, "auto")
    predictor.warm_up((1,), batch, DecisionCache("elsewhere", tmp_path), defer=True)
    made = []

    def elsewhere() -> dict:
        made.append(1)
        return {"backend": "torch", "precision": "int8", "fp32_layers": []}

    with caplog.at_level(logging.INFO):
        assert predictor.decide(elsewhere=elsewhere) is True
    assert made == [1] and "precision check on" not in caplog.text
    assert "torch int8, chosen by the check in a process of its own" in caplog.text
    assert (predictor.backend, predictor.precision) == ("torch", "int8")
    assert keeps_answers(exact, predictor.answers(with_flips(batch)))

    def failing() -> dict:
        raise RuntimeError("the check's process exited with -9")

    again = Predictor(load_classifier(small_model_dir), CPU, "auto")
    again.warm_up((1,), batch, DecisionCache("failing", tmp_path), defer=True)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert again.decide(elsewhere=failing) is True
    assert "own process failed (the check's process exited with -9): checking in this one" \
        in caplog.text
    assert "precision check on 18 inputs" in caplog.text
    assert keeps_answers(exact, again.answers(with_flips(batch)))


def test_choose_honours_the_forced_backend_and_precision():
    """The policy with fake timings: auto takes the fastest that keeps answers; a forced
    precision or backend narrows the pool (int8-mixed counts as int8); nothing keeping in the
    pool means torch fp32."""
    fp32, bf16 = Verdict("fp32", 10.0), Verdict("bf16", 20.0, True, 0.01)
    int8 = Verdict("int8", 60.0, True, 0.05)  # moves a probability
    mixed = Verdict("int8-mixed", 30.0, True, 0.01)
    ov_bf16 = Verdict("bf16", 25.0, True, 0.01, backend="openvino")
    verdicts = [fp32, bf16, int8, mixed, ov_bf16]
    assert choose(verdicts) is mixed
    assert choose(verdicts, precision="bf16") is ov_bf16
    assert choose(verdicts, precision="bf16", backend="torch") is ov_bf16  # torch: any backend
    assert choose(verdicts, backend="openvino") is ov_bf16
    assert choose([fp32, int8], backend="openvino") is fp32
    assert choose([fp32, int8], precision="int8") is fp32
    assert choose([fp32, int8, mixed], precision="int8") is mixed
