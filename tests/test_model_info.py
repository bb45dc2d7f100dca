"""Tests of model_info.is_demo: the bundled demo checkpoint is recognised, byte for byte, and
nothing else is (another file of the same size, another model, a missing directory).
"""
from __future__ import annotations

import shutil

from conftest import DEMO_MODEL
from flower_classifier.serving.model_info import DEMO_CHECKPOINT_SIZE, is_demo


def test_the_committed_demo_model_is_the_demo():
    # when train/build_demo_model.sh rebuilds it, update DEMO_CHECKPOINT_SIZE and _SHA256
    assert is_demo(DEMO_MODEL)


def test_nothing_else_is_the_demo(tmp_path, small_model_dir):
    assert not is_demo(small_model_dir)
    assert not is_demo(tmp_path / "missing")
    shutil.copytree(DEMO_MODEL, tmp_path / "model")
    checkpoint = tmp_path / "model" / "checkpoint.pth"
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 1  # same size, one bit different
    checkpoint.write_bytes(bytes(data))
    assert checkpoint.stat().st_size == DEMO_CHECKPOINT_SIZE and not is_demo(tmp_path / "model")
