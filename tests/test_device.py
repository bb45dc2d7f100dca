"""Device and precision choice: CPU fallback, AMX detection and the reduced-precision guard.
The reduced-precision check runs real photos through fp32 and bf16 and compares answers.
"""
from __future__ import annotations

import torch

from conftest import keeps_answers, photo_batch
from flower_classifier.model.calibration import with_flips
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.device import (
    autocast_dtype,
    choose_precision,
    cpu_flags,
    cpu_has_amx,
    cpu_has_vnni,
    describe,
    unusable_gpu,
)
from flower_classifier.model.predictor import Predictor


def test_auto_precision_follows_hardware():
    cpu = torch.device("cpu")
    assert choose_precision("fp32", cpu) == "fp32"
    assert choose_precision("fp16", cpu) == "bf16"
    assert choose_precision("auto", torch.device("cuda")) == "auto"
    assert choose_precision("int8", torch.device("cuda")) == "fp16"
    assert choose_precision("int8", cpu) == "int8"
    assert choose_precision("auto", cpu) == "auto"  # measured at warm-up: tests/test_precision.py
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") == torch.bfloat16


def test_cpu_flags_read_from_proc_cpuinfo():
    flags = cpu_flags()
    assert {"fpu", "sse2"} <= flags  # every x86-64 CPU
    assert cpu_has_vnni() == bool({"avx512_vnni", "avx_vnni"} & flags)
    assert cpu_has_amx() == ("amx_bf16" in flags)
    assert ("VNNI yes" in describe(torch.device("cpu"))) == cpu_has_vnni()


def test_no_gpu_means_no_gpu_error_here():
    # This machine has no NVIDIA device: the start-up check must stay quiet.
    assert unusable_gpu() is None
    assert describe(torch.device("cpu")).startswith("cpu (")


def test_bf16_keeps_answers_on_real_photos_or_is_refused(small_model_dir, photos):
    classifier = load_classifier(small_model_dir)
    predictor = Predictor(classifier, torch.device("cpu"), "bf16")
    batch = with_flips(photo_batch(photos, classifier.preprocessing))
    keeps = keeps_answers(predictor.answers(batch), predictor.answers(batch, precision="bf16"))
    predictor.warm_up((1, 2), batch[:len(photos)])
    # The warm-up guard checks the same photos and mirrors, so it reaches the same verdict.
    assert predictor.precision == ("bf16" if keeps else "fp32")


def test_gpu_present_but_unusable_is_a_clear_error(tmp_path, monkeypatch):
    # The driver's /proc file is how a container sees an NVIDIA GPU; torch here cannot use one.
    import flower_classifier.model.device as device

    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER_FILE", driver)
    message = device.unusable_gpu()
    assert message is not None and "470.256.02" in message
    if torch.version.cuda is None:
        assert "CPU-only build" in message and "gpu variant" in message
    else:
        assert "InferenceAmiVersion" in message
