"""Calibration photos: the model's own calibration/ folder wins, the image's photos are the
fallback, unreadable files are skipped by name, and mirrors give inputs never calibrated on.
"""
from __future__ import annotations

import logging
import shutil

import torch

from flower_classifier.environment import Environment
from flower_classifier.model.calibration import MAX_PHOTOS, find_photos, load_photos, with_flips
from flower_classifier.model.preprocess import Preprocessing


def test_default_dir_holds_the_sample_photos(photos):
    # In a checkout container/calibration links to local_test/payloads; the image copies them.
    found = find_photos("/nonexistent-model-dir", Environment().calibration_dir)
    assert [p.name for p in found] == [p.name for p in photos]


def test_model_calibration_folder_wins(tmp_path, photos):
    own = tmp_path / "calibration"
    own.mkdir()
    shutil.copy(photos[0], own / "mine.JPG")
    (own / "notes.txt").write_text("not an image")
    assert find_photos(tmp_path, photos[0].parent) == [own / "mine.JPG"]


def test_at_most_max_photos(tmp_path, photos):
    for i in range(MAX_PHOTOS + 3):
        shutil.copy(photos[0], tmp_path / f"{i:02d}.jpg")
    assert len(find_photos("/nonexistent", tmp_path)) == MAX_PHOTOS
    assert find_photos("/nonexistent", tmp_path / "missing") == []


def test_unreadable_files_are_skipped_and_named(tmp_path, photos, caplog):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with caplog.at_level(logging.WARNING):
        batch = load_photos([photos[0], broken], Preprocessing(), 40_000_000)
    assert batch is not None and batch.shape == (1, 3, 224, 224)
    assert "broken.jpg" in caplog.text
    assert load_photos([broken], Preprocessing(), 40_000_000) is None


def test_with_flips_appends_mirror_images():
    photos = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    both = with_flips(photos)
    assert both.shape == (4, 3, 2, 2)
    assert torch.equal(both[:2], photos) and torch.equal(both[2:, :, :, 0], photos[:, :, :, 1])
