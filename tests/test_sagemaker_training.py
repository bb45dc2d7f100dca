"""Tests the training contract (`docker run IMAGE train`) by running container/train in a temporary
/opt/ml layout (SAGEMAKER_BASE_DIR): success writes /opt/ml/model, failure writes output/failure.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flower_classifier.model.checkpoint import load_classifier, read_checkpoint
from flower_classifier.training.sagemaker import ContractError, paths, read_hyperparameters, to_argv
from helpers.sample_data import make_color_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "container" / "train"
FAST = {"arch": "resnet18", "weights": "none", "epochs": "1", "batch_size": "8",
        "hidden_units": "0", "learning_rate": "0.01", "num_workers": "0", "no_augment": "true"}


def opt_ml(root: Path, hyperparameters: dict | None, names: bool = True) -> Path:
    """root laid out as SageMaker mounts /opt/ml for a job with train and valid channels."""
    data = make_color_dataset(root / "source", train=4, valid=2)
    channels = root / "input" / "data"
    channels.mkdir(parents=True)
    shutil.copytree(data / "train", channels / "train")
    shutil.copytree(data / "valid", channels / "valid")
    if names:
        shutil.copy(data / "cat_to_name.json", channels / "train" / "cat_to_name.json")
    if hyperparameters is not None:
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(
            json.dumps(hyperparameters))
    return root


def run_train(root: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root), "PYTHONPATH": str(ROOT / "container"),
           **env}
    return subprocess.run([sys.executable, str(TRAIN)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_train_contract_writes_the_model_dir(tmp_path) -> None:
    root = opt_ml(tmp_path, FAST)
    result = run_train(root)
    assert result.returncode == 0, result.stderr
    model = root / "model"
    assert {p.name for p in model.iterdir()} == {
        "checkpoint.pth", "cat_to_name.json", "training_curve.png"}
    saved = read_checkpoint(model / "checkpoint.pth")
    assert saved["arch"] == "resnet18" and saved["learning_rate"] == 0.01
    assert saved["augment"] is False and saved["head"]["hidden_units"] == []
    assert load_classifier(model).label("1") == "red flower"
    assert not (root / "output" / "failure").exists()


@pytest.mark.parametrize("hyperparameters, message", [
    ({**FAST, "momentum": "0.9"}, "unknown hyperparameters ['momentum']"),
    ({**FAST, "arch": "alexnet9000"}, "unknown architecture 'alexnet9000'"),
    ({**FAST, "epochs": "three"}, "invalid int value: 'three'"),
    ({**FAST, "no_augment": "maybe"}, "no_augment='maybe' must be true or false"),
])
def test_bad_hyperparameters_fail_with_a_reason(tmp_path, hyperparameters, message) -> None:
    root = opt_ml(tmp_path, hyperparameters, names=False)
    result = run_train(root)
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert message in failure and failure.startswith("Training failed")
    assert failure.count("\n") == 1  # one paragraph
    assert not (root / "model" / "checkpoint.pth").exists()


def test_missing_valid_channel_fails_with_a_reason(tmp_path) -> None:
    root = opt_ml(tmp_path, FAST)
    shutil.rmtree(root / "input" / "data" / "valid")
    result = run_train(root)
    assert result.returncode == 1
    assert "validation folder" in (root / "output" / "failure").read_text()


def test_env_overrides_and_sdk_encoded_values(tmp_path) -> None:
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_CHANNEL_TRAIN": "/data/t",
           "SM_CHANNEL_VALIDATION": "/data/v", "SM_MODEL_DIR": "/m"}
    where = paths(env)
    assert (where["train"], where["valid"], where["model"]) == (
        Path("/data/t"), Path("/data/v"), Path("/m"))
    assert where["output"] == tmp_path / "output"
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(
        {"arch": '"vgg13"', "epochs": 2, "sagemaker_job_name": '"job-1"', "no_augment": "False"}))
    hyperparameters = read_hyperparameters(config)
    assert hyperparameters["arch"] == "vgg13" and hyperparameters["epochs"] == "2"
    argv = to_argv(hyperparameters, where)
    assert argv[:6] == ["--train_dir", "/data/t", "--valid_dir", "/data/v", "--save_dir", "/m"]
    assert ["--arch", "vgg13"] == argv[6:8] and "--no_augment" not in argv
    with pytest.raises(ContractError, match="not valid JSON"):
        (config / "hyperparameters.json").write_text("{arch")
        read_hyperparameters(config)


def test_managed_spot_checkpoints_every_epoch_and_resumes_after_an_interruption(tmp_path):
    """With /opt/ml/checkpoints (CheckpointConfig), each epoch is saved there; a job restarted
    after an interruption resumes from it and runs only the epochs still to do."""
    root = opt_ml(tmp_path / "ml", {**FAST, "epochs": "2"})
    (root / "checkpoints").mkdir()
    first = run_train(root)  # "interrupted" after 2 epochs: the checkpoint holds them
    assert first.returncode == 0, first.stderr
    saved = read_checkpoint(root / "checkpoints" / "checkpoint.pth")
    assert saved["epochs"] == 2
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({**FAST, "epochs": "3"}))
    second = run_train(root)
    assert second.returncode == 0, second.stderr
    assert "after epoch 2 of 3" in second.stdout
    final = read_checkpoint(root / "model" / "checkpoint.pth")
    assert final["epochs"] == 3 and [r["epoch"] for r in final["history"]] == [1, 2, 3]
    assert final["history"][:2] == saved["history"]
    assert load_classifier(root / "model").classes == ["1", "2", "3"]
