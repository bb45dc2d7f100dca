"""inspect_checkpoint.py and --convert, package_model.py --with-backbone-weights, head-only files
without their backbone weights, and the model directory's one checkpoint under any name.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest
import torch

from conftest import ROOT, photo_batch
from flower_classifier.errors import ModelLoadError
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.predictor import Predictor
from helpers.checkpoint_corpus import backbone_file, resnet_1000_way, resnet_head_only
from helpers.serving import ServerProcess

INSPECT = ROOT / "train" / "inspect_checkpoint.py"
PACKAGE = ROOT / "train" / "package_model.py"
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's weights URL basename


def run(script, *args, torch_home):
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def wide_head(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide_head")
    resnet_1000_way(folder)
    return folder


@pytest.fixture(scope="module")
def head_only(tmp_path_factory):
    folder = tmp_path_factory.mktemp("head_only")
    resnet_head_only(folder)
    return folder


def top5(classifier, photos):
    probs = Predictor(classifier, torch.device("cpu"), "fp32").answers(
        photo_batch(photos, classifier.preprocessing))
    top = torch.topk(probs, 5)
    return [[classifier.classes[i] for i in row] for row in top.indices.tolist()], top.values


def test_inspect_reports_and_converts_to_a_plain_weights_only_file(wide_head, tmp_path, photos):
    result = run(INSPECT, wide_head, "--convert", tmp_path / "out", torch_home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for words in ("keys:            arch, state_dict, class_to_idx",
                  "architecture:    stored 'resnet18'; found resnet18",
                  "head:            rebuilt from its weights: Linear(512, 1000); serving 102",
                  "class map:       102 classes, read as class_to_idx: class -> index",
                  "preprocessing:   resize 255, crop 224", "will it serve:   yes", "converted:"):
        assert words in out, out
    data = torch.load(tmp_path / "out" / "checkpoint.pth", weights_only=True)  # no allow-list
    assert data["format"] == "flower-classifier" and data["arch"] == "resnet18"
    (classes, probs), (again, again_probs) = (top5(load_classifier(d), photos[:2])
                                              for d in (wide_head, tmp_path / "out"))
    assert classes == again and torch.allclose(probs, again_probs, atol=1e-6)


def test_head_only_without_backbone_weights_names_the_file_to_add(head_only, tmp_path):
    result = run(INSPECT, head_only, torch_home=tmp_path)  # empty cache, no network here
    assert result.returncode == 1
    assert "will it serve:   no" in result.stdout
    assert f"add {RESNET18_FILE} to model.tar.gz" in result.stdout
    assert "--with-backbone-weights" in result.stdout and "Traceback" not in result.stderr


def test_serve_refuses_a_head_only_file_without_weights_in_one_line(head_only, tmp_path):
    with ServerProcess(head_only, {"TORCH_HOME": str(tmp_path)}) as server:
        code = server.wait_exit(timeout=120)
        log = server.log
    lines = [line for line in log.splitlines() if "cannot serve the model" in line]
    assert code != 0 and len(lines) == 1, log
    assert f"add {RESNET18_FILE} to model.tar.gz" in lines[0]
    assert "inspect_checkpoint.py" in lines[0]  # how to look further
    assert "Traceback" not in log


def test_with_backbone_weights_fails_clearly_without_network(head_only, tmp_path):
    result = run(PACKAGE, head_only, "--with-backbone-weights", "-o", tmp_path / "m.tar.gz",
                 torch_home=tmp_path)
    assert result.returncode == 2
    assert f"could not download https://download.pytorch.org/models/{RESNET18_FILE}" in (
        result.stderr)
    assert "Traceback" not in result.stderr and not (tmp_path / "m.tar.gz").exists()


def test_with_backbone_weights_packs_the_file_and_the_archive_serves_offline(head_only, tmp_path,
                                                                           monkeypatch):
    cache = tmp_path / "cache"
    backbone_file(cache)  # as if downloaded: $TORCH_HOME/hub/checkpoints/<torchvision's name>
    archive = tmp_path / "model.tar.gz"
    result = run(PACKAGE, head_only, "--with-backbone-weights", "-o", archive, torch_home=cache)
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["checkpoint.pth", RESNET18_FILE]
        tar.extractall(tmp_path / "unpacked", filter="data")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # only the model dir has it now
    assert load_classifier(tmp_path / "unpacked").arch == "resnet18"


def test_package_refuses_a_file_that_will_not_serve(tmp_path):
    (tmp_path / "checkpoint.pth").write_bytes(b"\x80not a checkpoint")
    result = run(PACKAGE, tmp_path, "-o", tmp_path / "m.tar.gz", torch_home=tmp_path)
    assert result.returncode == 2 and "will not serve" in result.stderr
    assert "will it serve:   no" in result.stderr and not (tmp_path / "m.tar.gz").exists()


def test_one_checkpoint_under_any_name_two_are_refused(wide_head, tmp_path, caplog):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "flowers_checkpoint").write_bytes((wide_head / "checkpoint.pth").read_bytes())
    (model_dir / "notes.txt").write_text("not a checkpoint")
    caplog.set_level("INFO", logger="flower_classifier")
    assert load_classifier(model_dir).arch == "resnet18"
    assert "checkpoint: flowers_checkpoint (the one checkpoint file" in caplog.text
    (model_dir / "other.pt").write_bytes(b"\x80")
    with pytest.raises(ModelLoadError, match=r"2 checkpoint candidates \(flowers_checkpoint, "
                                             r"other.pt\): keep one"):
        load_classifier(model_dir)
