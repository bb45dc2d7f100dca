"""SageMaker's training contract (`docker run IMAGE train`): hyperparameters.json + channels in,
/opt/ml/model out, and on any failure a one-paragraph reason in /opt/ml/output/failure, exit 1.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path

import torch

from ..errors import ContractError
from ..model.checkpoint import CATEGORY_NAMES, CHECKPOINT, read_checkpoint
from .arguments import parse_args
from .trainer import CURVE, run

# Hyperparameters are the CLI's long options; these are set by the contract itself.
ALLOWED = ("arch", "learning_rate", "hidden_units", "epochs", "batch_size", "weights",
           "num_workers", "dropout", "seed")
FLAGS = ("no_augment",)
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")



def paths(env=os.environ) -> dict[str, Path]:
    """SageMaker's locations, each overridable by its SM_* variable (SAGEMAKER_BASE_DIR: root)."""
    base = Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    data = base / "input" / "data"
    valid = env.get("SM_CHANNEL_VALID") or env.get("SM_CHANNEL_VALIDATION")
    if not valid:
        valid = data / ("validation" if (data / "validation").is_dir() and not
                        (data / "valid").is_dir() else "valid")
    return {
        "config": Path(env.get("SM_INPUT_CONFIG_DIR", base / "input" / "config")),
        "train": Path(env.get("SM_CHANNEL_TRAIN", data / "train")),
        "valid": Path(valid),
        "model": Path(env.get("SM_MODEL_DIR", base / "model")),
        "output": Path(env.get("SM_OUTPUT_DIR", base / "output")),
        # CheckpointConfig's LocalPath: present on managed spot jobs, synced with S3
        "checkpoints": Path(env.get("SM_CHECKPOINT_DIR", base / "checkpoints")),
    }


def read_hyperparameters(config_dir: Path) -> dict[str, str]:
    """hyperparameters.json -> {key: string}; absent file -> {} (all defaults)."""
    path = config_dir / "hyperparameters.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ContractError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path} must hold a JSON object of hyperparameters")
    values = {}
    for key, value in raw.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) >= 2 and text[0] == text[-1] == '"':  # SDKs may JSON-encode strings
            text = json.loads(text)
        values[str(key)] = text.strip()
    return values


def to_argv(hyperparameters: dict[str, str], where: dict[str, Path]) -> list[str]:
    """The trainer's command line for these hyperparameters and channels."""
    argv = ["--train_dir", str(where["train"]), "--valid_dir", str(where["valid"]),
            "--save_dir", str(where["model"])]
    unknown = []
    for key, value in sorted(hyperparameters.items()):
        if key.startswith("sagemaker_"):  # the SDK's own bookkeeping (job name, region...)
            continue
        if key in ALLOWED:
            argv += [f"--{key}", value]
        elif key in FLAGS and value.lower() in TRUE + FALSE:
            argv += [f"--{key}"] if value.lower() in TRUE else []
        elif key in FLAGS:
            raise ContractError(f"hyperparameter {key}={value!r} must be true or false")
        else:
            unknown.append(key)
    if unknown:
        raise ContractError(f"unknown hyperparameters {unknown}; accepted: "
                            f"{', '.join(ALLOWED + FLAGS)}")
    names = where["train"] / CATEGORY_NAMES
    if names.is_file():
        argv += ["--category_names", str(names)]
    if torch.cuda.is_available():
        argv.append("--gpu")
    return argv


def train_resumably(argv: list[str], checkpoints: Path, model_dir: Path) -> None:
    """Managed spot training: one epoch at a time, each saved to `checkpoints` (which SageMaker
    syncs with S3), resuming from what is there after an interruption; the result then goes to
    the model directory."""
    total = parse_args(argv, raise_errors=True).epochs
    saved = checkpoints / CHECKPOINT
    done = int(read_checkpoint(saved).get("epochs", 0)) if saved.is_file() else 0
    if done:
        print(f"resuming from {saved} after epoch {done} of {total}", flush=True)
    while done < total:
        resume = ["--resume", str(saved)] if saved.is_file() else []
        run(parse_args([*argv, "--save_dir", str(checkpoints), "--epochs", "1", *resume],
                       raise_errors=True))
        done += 1
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT, CATEGORY_NAMES, CURVE):
        if (checkpoints / name).is_file():
            shutil.copyfile(checkpoints / name, model_dir / name)


def write_failure(output_dir: Path, error: BaseException) -> None:
    """One paragraph (one line) saying what failed, for DescribeTrainingJob's FailureReason."""
    message = " ".join(str(error).split()) or type(error).__name__
    reason = f"Training failed: {message}"
    if not isinstance(error, ValueError | FileNotFoundError):
        reason = f"Training failed ({type(error).__name__}): {message}"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "failure").write_text(reason[:4000] + "\n", encoding="utf-8")


def main(env=os.environ) -> int:
    where = paths(env)
    try:
        argv = to_argv(read_hyperparameters(where["config"]), where)
        print("training with:", " ".join(argv), flush=True)
        if where["checkpoints"].is_dir():
            train_resumably(argv, where["checkpoints"], where["model"])
        else:
            run(parse_args(argv, raise_errors=True))
    except BaseException as error:  # noqa: BLE001 - every failure must reach the failure file
        if isinstance(error, SystemExit) and not error.code:
            return 0
        traceback.print_exc()
        write_failure(where["output"], error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
