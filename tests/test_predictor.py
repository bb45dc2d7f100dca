"""The predictor's precision guard: reduced precision (int8 here; bf16 in test_device) is kept
only when it gives fp32's answers on real photos and their mirrors, else the model stays fp32.
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from conftest import ROOT, SHARED_FLOWERS, CountingPredictor, keeps_answers, photo_batch
from flower_classifier.model.calibration import with_flips
from flower_classifier.model.checkpoint import Classifier, load_classifier
from flower_classifier.model.device import cpu_has_vnni
from flower_classifier.model.predictor import Predictor
from flower_classifier.model.preprocess import Preprocessing
from flower_classifier.model.quantize import quantize

DEMO_MODEL = ROOT / "local_test" / "test_dir" / "model"
CPU = torch.device("cpu")


def test_int8_on_the_seed_vgg16_keeps_fp32_answers_on_real_photos(starter_model_dir, photos):
    # The benchmark's model. Held-out photos: ../shared/flowers/valid when present.
    classifier = load_classifier(starter_model_dir)
    reference = Predictor(load_classifier(starter_model_dir), CPU, "fp32")
    calibration = photo_batch(photos)
    predictor = Predictor(classifier, CPU, "int8")
    predictor.warm_up((1,), calibration)
    assert predictor.precision == "int8"
    assert predictor.model is classifier.model  # the fp32 copy is gone
    assert not any(type(m) is nn.Conv2d for m in predictor.model.modules())
    held_out = sorted(SHARED_FLOWERS.glob("valid/*/*.jpg"))[::40]
    checked = [with_flips(calibration), *([photo_batch(held_out)] if held_out else [])]
    batch = torch.cat(checked)  # held-out photos when ../shared/flowers is beside the checkout
    assert keeps_answers(reference.answers(batch), predictor.answers(batch))


def test_int8_guard_on_a_confident_vgg16(starter_model_dir, photos):
    # Random weights give near-uniform answers; scaling the output layer makes them confident
    # (mean top-1 probability about 0.7 on real photos), so the 0.02 tolerance really binds.
    # (x100 for torchvision's vgg16 initialisation; x3000 saturated every answer at 1.0.)
    def confident():
        classifier = load_classifier(starter_model_dir)
        with torch.no_grad():
            classifier.model.classifier.fc2.weight.mul_(100)
            classifier.model.classifier.fc2.bias.mul_(100)
        return classifier

    reference = Predictor(confident(), CPU, "fp32")
    calibration = photo_batch(photos)
    checked = with_flips(calibration)
    exact = reference.answers(checked)
    assert float(exact.max(1).values.mean()) > 0.3
    predictor = Predictor(confident(), CPU, "int8")
    predictor.warm_up((1,), calibration)
    if predictor.precision == "int8":  # kept: it must also hold on photos it never saw
        held_out = photo_batch(sorted(SHARED_FLOWERS.glob("valid/*/*.jpg"))[::40] or photos)
        assert keeps_answers(exact, predictor.answers(checked))
        assert keeps_answers(reference.answers(held_out), predictor.answers(held_out))
    else:  # refused: then int8 really does move an answer on the checked photos
        quantized, _ = quantize(reference.model, "classifier", calibration, cpu_has_vnni())
        assert not keeps_answers(exact, reference.answers(checked, quantized))


def test_int8_is_refused_where_it_changes_real_answers(photos, caplog):
    # The demo model has real pretrained weights; int8 moves its answers, so it stays fp32.
    classifier = load_classifier(DEMO_MODEL)
    batch = photo_batch(photos, classifier.preprocessing)
    predictor = Predictor(classifier, CPU, "int8")
    exact = predictor.answers(with_flips(batch))
    with caplog.at_level(logging.WARNING):
        predictor.warm_up((1,), batch)
    assert predictor.precision == "fp32" and "int8 changes answers" in caplog.text
    assert torch.equal(predictor.answers(with_flips(batch)), exact)  # still the fp32 model


class Branchy(nn.Module):
    """A model FX cannot trace: its control flow depends on the data."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        if x.sum() > 0:
            x = -x
        return self.fc(x)


def test_int8_falls_back_when_the_model_cannot_be_quantized(photos, caplog):
    classifier = Classifier(Branchy().eval(), "resnet18", [str(i) for i in range(5)],
                            Preprocessing(), "test")
    predictor = Predictor(classifier, CPU, "int8")
    with caplog.at_level(logging.WARNING):
        predictor.warm_up((1, 3), photo_batch(photos[:2]))
    assert predictor.precision == "fp32"
    assert "int8 quantization is not possible for resnet18" in caplog.text


def test_int8_without_photos_stays_fp32(small_model_dir, caplog):
    predictor = Predictor(load_classifier(small_model_dir), CPU, "int8")
    with caplog.at_level(logging.WARNING):
        predictor.warm_up((1,), None)
    assert predictor.precision == "fp32" and "none were found" in caplog.text


@pytest.mark.parametrize("sizes", [(1,), (1, 4), (3, 20)])
def test_warm_up_runs_each_batch_size(small_model_dir, photos, sizes):
    predictor = CountingPredictor(load_classifier(small_model_dir), CPU, "fp32")
    predictor.release.set()
    predictor.warm_up(sizes, photo_batch(photos[:2]))
    assert predictor.sizes == sorted(sizes)


def test_answers_chunks_any_count(small_model_dir, photos):
    predictor = Predictor(load_classifier(small_model_dir), CPU, "fp32")
    batch = photo_batch(photos)
    together = predictor.answers(batch)
    assert together.shape == (len(photos), 102)
    assert torch.allclose(together.sum(1), torch.ones(len(photos)), atol=1e-5)
    assert torch.allclose(together[:1], predictor.forward(batch[:1]), atol=1e-5)
