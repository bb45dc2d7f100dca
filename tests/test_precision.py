"""Tests precision.py, the precision policy: the choice from (fake) timings, the answer check, the
decision cache and its key; then the predictor's "auto" warm-up on a real model and photos.

Precision chosen by measurement: fastest(), compare(), decision_key(), DecisionCache.
"""

from __future__ import annotations

import logging

import torch

from conftest import keeps_answers, photo_batch
from flower_classifier.model.calibration import with_flips
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.device import cpu_has_bf16, precision_candidates
from flower_classifier.model.precision import (
    TOP1_TOLERANCE,
    DecisionCache,
    Verdict,
    compare,
    decision_key,
    fastest,
)
from flower_classifier.model.predictor import Predictor

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


def test_mixed_int8_leaves_the_named_layers_in_fp32(small_model_dir, photos):
    from flower_classifier.model.device import cpu_has_vnni
    from flower_classifier.model.quantize import quantize

    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    model, _ = quantize(classifier.model, "fc", batch, cpu_has_vnni(), ("layer3.0.conv2",))
    kinds = {name: type(module) for name, module in model.named_modules()}
    assert kinds["layer3.0.conv2"] is torch.nn.Conv2d  # float, as before
    assert kinds["layer3.0.conv1"] is not torch.nn.Conv2d  # quantized (a fused int8 conv)
