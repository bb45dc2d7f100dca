"""Tests predict.py against the real server: for a checkpoint from train.py, `predict.py --json`
and POST /invocations give identical classes and probabilities; plus the table, plot and errors.
"""
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from flower_classifier.training.trainer import main as train
from helpers.sample_data import make_color_dataset
from helpers.serving import ServerProcess, served_answer

ROOT = Path(__file__).resolve().parents[1]
PREDICT_PY = ROOT / "train" / "predict.py"
PACKAGE_PY = ROOT / "train" / "package_model.py"


def predict_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PREDICT_PY), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A head-only efficientnet_lite0 checkpoint written by train.py (the demo model's kind)."""
    data = make_color_dataset(tmp_path_factory.mktemp("data"), train=4, valid=2)
    out = tmp_path_factory.mktemp("model")
    assert train([str(data), "--save_dir", str(out), "--arch", "efficientnet_lite0",
                  "--hidden_units", "32", "--epochs", "2", "--no_augment", "--num_workers", "0",
                  "--batch_size", "4"]) == 0
    return out


def test_predict_json_equals_the_endpoint(model_dir, photos) -> None:
    env = {"INFERENCE_PRECISION": "fp32", "MAX_BATCH_SIZE": "1", "MODEL_SERVER_WORKERS": "1"}
    with ServerProcess(model_dir, env) as server:
        server.wait_ready()
        for photo in photos[:3]:
            served = served_answer(server, photo)
            result = predict_cli(str(photo), str(model_dir / "checkpoint.pth"), "--json")
            assert result.returncode == 0, result.stderr
            local = json.loads(result.stdout)
            assert [p["class"] for p in local["predictions"]] == [
                p["class"] for p in served["predictions"]]
            assert local == served  # labels and probabilities too, bit for bit


def test_table_top_k_and_plot(model_dir, photos, tmp_path) -> None:
    plot = tmp_path / "sanity.png"
    result = predict_cli(str(photos[0]), str(model_dir), "--top_k", "2", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["rank", "flower", "class", "probability"]
    assert len(lines) == 2 + 1 + 1  # header, 2 rows, "wrote ..."
    assert lines[1].split()[0] == "1" and lines[1].endswith("%")
    assert "flower" in lines[1]  # names come from cat_to_name.json next to the checkpoint
    assert plot.stat().st_size > 5000


def test_category_names_option_relabels(model_dir, photos, tmp_path) -> None:
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "rot", "2": "gruen", "3": "blau"}))
    result = predict_cli(str(photos[0]), str(model_dir), "--category_names", str(names),
                         "--json", "--top_k", "3")
    labels = {p["label"] for p in json.loads(result.stdout)["predictions"]}
    assert labels == {"rot", "gruen", "blau"}


@pytest.mark.parametrize("args, message", [
    (["missing.jpg", "{model}"], "image missing.jpg not found"),
    (["{photo}", "/nonexistent"], "not found: the model directory must hold"),
    (["{bad}", "{model}"], "could not be decoded|not a readable image"),
])
def test_bad_input_is_a_clear_error(model_dir, photos, tmp_path, args, message) -> None:
    import re

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    args = [a.format(model=model_dir, photo=photos[0], bad=bad) for a in args]
    result = predict_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_package_model_puts_files_at_the_archive_root(model_dir, tmp_path) -> None:
    archive = tmp_path / "model.tar.gz"
    result = subprocess.run([sys.executable, str(PACKAGE_PY), str(model_dir), "-o", str(archive)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["cat_to_name.json", "checkpoint.pth"]
        tar.extractall(tmp_path / "unpacked", filter="data")
    from flower_classifier.model.checkpoint import load_classifier
    assert load_classifier(tmp_path / "unpacked").label("1") == "red flower"
