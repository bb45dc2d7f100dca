"""Tests train.py / training.py on a tiny synthetic ImageFolder dataset (no downloads or shared/):
the loss falls, resume continues, runs are deterministic, bad input gets clear errors (exit 2).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flower_classifier.model.architectures import build_backbone
from flower_classifier.model.checkpoint import load_classifier, read_checkpoint
from flower_classifier.training.trainer import main
from helpers.sample_data import make_color_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "train" / "train.py"
FAST = ["--arch", "resnet18", "--weights", "none", "--num_workers", "0", "--batch_size", "8"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN_PY), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_color_dataset(tmp_path_factory.mktemp("flowers"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """Six cached-feature epochs of a linear head on a random resnet18."""
    out = tmp_path_factory.mktemp("trained")
    assert main([str(data), "--save_dir", str(out), *FAST, "--hidden_units", "0",
                 "--no_augment", "--epochs", "6", "--learning_rate", "0.01"]) == 0
    return out


def test_loss_falls_and_checkpoint_records_everything(trained) -> None:
    data = read_checkpoint(trained / "checkpoint.pth")
    losses = [row["train_loss"] for row in data["history"]]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    assert data["history"][-1]["top1"] == 1.0 and data["history"][-1]["top5"] == 1.0
    assert data["arch"] == "resnet18" and data["epochs"] == 6
    assert data["head"] == {"path": "fc", "input_size": 512, "hidden_units": [], "output_size": 3}
    assert data["class_to_idx"] == {"1": 0, "2": 1, "3": 2}
    assert data["optimizer"]["state"] and data["state_dict_scope"] == "full"
    assert data["preprocessing"] == {  # resnet18's own, from its torchvision weights
        "resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear"}
    assert (trained / "training_curve.png").stat().st_size > 5000
    assert json.loads((trained / "cat_to_name.json").read_text())["1"] == "red flower"
    classifier = load_classifier(trained)  # the server's loader, no extra flags
    assert classifier.classes == ["1", "2", "3"] and classifier.label("2") == "green flower"


def test_resume_continues_epochs_history_and_optimizer(trained, data, tmp_path) -> None:
    assert main([str(data), "--save_dir", str(tmp_path), "--resume",
                 str(trained / "checkpoint.pth"), "--epochs", "2", "--no_augment",
                 "--num_workers", "0", "--batch_size", "8"]) == 0
    before, after = (read_checkpoint(p / "checkpoint.pth") for p in (trained, tmp_path))
    assert after["epochs"] == 8 and [r["epoch"] for r in after["history"]] == list(range(1, 9))
    assert after["history"][:6] == before["history"]
    assert after["learning_rate"] == 0.01  # the checkpoint's optimizer settings carry on
    assert after["history"][-1]["train_loss"] < before["history"][-1]["train_loss"]
    steps = [s["step"] for s in after["optimizer"]["state"].values()]
    assert all(float(s) == 8 * 3 for s in steps)  # 3 batches per epoch, 8 epochs
    body = [k for k in before["state_dict"] if not k.startswith("fc.")]
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in body)


def test_resume_refuses_a_different_arch(trained, data, tmp_path, capsys) -> None:
    assert main([str(data), "--save_dir", str(tmp_path), "--resume",
                 str(trained / "checkpoint.pth"), "--arch", "vgg16"]) == 2
    assert "--arch vgg16 differs from the checkpoint's resnet18" in capsys.readouterr().err


def test_augmented_epoch_is_deterministic_with_a_hidden_layer(data, tmp_path) -> None:
    states = []
    for run in ("a", "b"):
        args = [str(data), "--save_dir", str(tmp_path / run), *FAST, "--hidden_units", "16,8",
                "--epochs", "1", "--seed", "3"]
        assert main(args) == 0
        states.append(read_checkpoint(tmp_path / run / "checkpoint.pth"))
    a, b = states
    assert a["head"]["hidden_units"] == [16, 8] and a["augment"] is True
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["history"] == b["history"]
    assert load_classifier(tmp_path / "a").model.fc.fc3.out_features == 3


def test_lite0_default_weights_store_only_the_head(data, tmp_path) -> None:
    assert main([str(data), "--save_dir", str(tmp_path), "--arch", "efficientnet_lite0",
                 "--hidden_units", "0", "--no_augment", "--epochs", "3", "--num_workers", "0",
                 "--learning_rate", "0.01"]) == 0
    saved = read_checkpoint(tmp_path / "checkpoint.pth")
    assert saved["state_dict_scope"] == "head" and set(saved["state_dict"]) == {
        "classifier.fc1.weight", "classifier.fc1.bias"}
    assert saved["preprocessing"]["mean"] == [0.5, 0.5, 0.5] == saved["preprocessing"]["std"]
    assert (tmp_path / "checkpoint.pth").stat().st_size < 100_000
    assert saved["history"][-1]["top1"] == 1.0  # pretrained features separate colours at once
    assert load_classifier(tmp_path).arch == "efficientnet_lite0"


def test_train_blocks_fine_tunes_only_the_last_blocks(data, tmp_path) -> None:
    """--train_blocks 2: the stem and first 14 blocks keep the pretrained weights, the last two
    and conv_head change; the full state_dict is saved (loadable with weights_only=True) and
    the served model answers as the epoch that validation selected."""
    assert main([str(data), "--save_dir", str(tmp_path), "--arch", "efficientnet_lite0",
                 "--hidden_units", "0", "--train_blocks", "2", "--views", "2", "--epochs", "2",
                 "--num_workers", "0", "--batch_size", "8", "--learning_rate", "0.01"]) == 0
    saved = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert saved["state_dict_scope"] == "full" and saved["train_blocks"] == 2
    assert saved["views"] == 2 and 0 <= saved["selected_epoch"] <= 2
    assert [row["epoch"] for row in saved["history"]] == [1, 2]
    pretrained = build_backbone("efficientnet_lite0", pretrained=True).state_dict()
    state = saved["state_dict"]
    assert torch.equal(state["blocks.0.0.conv_dw.weight"], pretrained["blocks.0.0.conv_dw.weight"])
    assert torch.equal(state["blocks.5.2.conv_pw.weight"], pretrained["blocks.5.2.conv_pw.weight"])
    if saved["selected_epoch"]:
        assert not torch.equal(state["conv_head.weight"], pretrained["conv_head.weight"])
        assert not torch.equal(state["blocks.6.0.conv_pwl.weight"],
                               pretrained["blocks.6.0.conv_pwl.weight"])
    classifier = load_classifier(tmp_path)
    assert classifier.arch == "efficientnet_lite0" and classifier.labels["1"] == "red flower"
    assert (tmp_path / "training_curve.png").stat().st_size > 1000


def test_train_blocks_is_refused_for_other_architectures(data, tmp_path, capsys) -> None:
    assert main([str(data), "--save_dir", str(tmp_path), *FAST, "--train_blocks", "1"]) == 2
    assert "--train_blocks supports efficientnet_lite0 only" in capsys.readouterr().err


@pytest.mark.parametrize("layout, args, message", [
    ("no_valid", [], "validation folder .*valid not found"),
    ("no_train", [], "training folder .*train not found"),
    ("empty_class", [], "class folder .*2 is empty"),
    ("ok", ["--arch", "alexnet9000"], "unknown architecture 'alexnet9000'.*vgg16"),
    ("ok", ["--hidden_units", "big"], "not a list of integers"),
    ("ok", ["--epochs", "0"], "--epochs must be at least 1"),
    ("ok", ["--weights", "/nonexistent/weights.pth"], "weights file not found"),
    ("ok", ["--category_names", "/nonexistent/names.json"], "--category_names .* not found"),
])
def test_bad_input_is_a_clear_error(tmp_path, layout, args, message) -> None:
    data = make_color_dataset(tmp_path / "data", train=1, valid=1)
    if layout == "no_valid":
        (data / "valid").rename(data / "validation")
    elif layout == "no_train":
        (data / "train").rename(data / "training")
    elif layout == "empty_class":
        (data / "train" / "2" / "0.jpg").unlink()
    result = run_cli(str(data), "--save_dir", str(tmp_path / "out"), *FAST, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


def test_weights_file_for_another_architecture_is_refused(data, tmp_path) -> None:
    bad = tmp_path / "resnet18.pth"
    torch.save(build_backbone("resnet18").state_dict(), bad)
    result = run_cli(str(data), "--save_dir", str(tmp_path / "out"), "--arch",
                     "efficientnet_lite0", "--weights", str(bad), "--num_workers", "0")
    assert result.returncode == 2
    assert "weights do not fit the backbone" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_without_cuda_exits_2(data, tmp_path) -> None:
    result = run_cli(str(data), "--save_dir", str(tmp_path), *FAST, "--gpu")
    assert result.returncode == 2
    assert "--gpu was given but CUDA is not available" in result.stderr
