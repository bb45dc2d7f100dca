"""int8 quantization: the backbone's convolutions become int8 on real-photo activation ranges,
the head stays fp32, calibration returns fp32's outputs, and both kernel families work.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

from conftest import photo_batch
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.quantize import quantize


@pytest.fixture(scope="module")
def classifier(small_model_dir):
    return load_classifier(small_model_dir)


@pytest.fixture(scope="module")
def batch(classifier, photos):
    return photo_batch(photos, classifier.preprocessing)


@pytest.mark.parametrize("vnni", [True, False], ids=["onednn-vnni", "fbgemm-7bit"])
def test_backbone_is_int8_and_head_fp32(classifier, batch, vnni):
    model = classifier.model.eval()
    quantized, logits = quantize(model, "fc", batch, vnni)
    with torch.inference_mode():
        exact = model(batch)
        approx = quantized(batch)
    assert torch.backends.quantized.engine == ("onednn" if vnni else "x86")
    # calibration saw fp32 numbers (with BN folded into the convolutions)
    assert torch.allclose(logits, exact, atol=1e-4)
    int8_convs = [m for m in quantized.modules() if isinstance(m, QuantizedConv2d)]
    assert len(int8_convs) == 20  # resnet18's convolutions (BN folded in, ReLU fused)
    assert all(m.weight().dtype == torch.qint8 for m in int8_convs)
    assert not any(type(m) is nn.Conv2d for m in quantized.modules())  # no fp32 conv left
    assert any(type(m) is nn.Linear for m in quantized.modules())  # the head is fp32
    assert approx.dtype == torch.float32 and approx.shape == exact.shape
    # random weights, real photos: int8 lands close to fp32
    assert (approx.softmax(1).argmax(1) == exact.softmax(1).argmax(1)).float().mean() >= 0.75


def test_original_model_is_untouched(classifier, batch):
    model = classifier.model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        answers = model(batch)
    quantize(model, "fc", batch, True)
    after = model.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    with torch.inference_mode():
        assert torch.equal(model(batch), answers)  # BN not folded into it, no observers left


def test_a_dropped_int8_model_is_freed(classifier, batch):
    """Nothing in torch.ao keeps a quantized model alive once its user drops it (FX caches
    modules by identity): a precision check that tries int8 and serves another model frees it."""
    quantized, _ = quantize(classifier.model.eval(), "fc", batch, True)
    int8_conv = next(m for m in quantized.modules() if isinstance(m, QuantizedConv2d))
    gone = [weakref.ref(quantized), weakref.ref(int8_conv)]
    del quantized, int8_conv
    gc.collect()
    assert [ref() for ref in gone] == [None, None]
