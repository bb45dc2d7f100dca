"""Shared pytest fixtures: sample photos, checkpoints and a real `serve` process.
Servers are real gunicorn processes on loopback ports; nothing here is mocked.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from flower_classifier.model.predictor import TOP1_TOLERANCE, Predictor
from flower_classifier.model.preprocess import Preprocessing, preprocess
from helpers.aws_emulator import aws_env_fixture, moto_server_fixture, recording_account  # noqa: F401 (registers them)
from helpers.checkpoints import make_project_checkpoint, make_starter_checkpoint
from helpers.serving import ServerProcess

# Servers, scripts and load_model() here run the torch backend unless a test asks for another:
# OpenVINO's conversion and NNCF's int8 check would add seconds to every one of the suite's
# server starts. tests/test_openvino.py and the cpu image's test run INFERENCE_BACKEND=auto.
os.environ.setdefault("INFERENCE_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ROOT / "local_test" / "payloads"
DEMO_MODEL = ROOT / "local_test" / "test_dir" / "model"
CATEGORY_NAMES = DEMO_MODEL / "cat_to_name.json"
SHARED_FLOWERS = ROOT.parent / "shared" / "flowers"


AWS_FIXTURES = {"moto_server", "aws_env", "moto_url"}


def pytest_collection_modifyitems(items):
    """Mark every test that talks to moto's server `aws`, so `-m "not aws"` leaves them out."""
    for item in items:
        if AWS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.aws)


@pytest.fixture
def account(aws_env, moto_server):
    """An AWS account after the README's setup (image pushed, role created, default bucket),
    recording the scripts' calls; a module that needs another set-up defines its own."""
    with recording_account(moto_server, aws_env, bucket=True) as emulator:
        yield emulator


def photo_batch(paths, spec: Preprocessing = Preprocessing()) -> torch.Tensor:
    """Photo files -> one preprocessed batch, as the server would see them."""
    return torch.stack([preprocess(Image.open(p), spec) for p in paths])


def keeps_answers(exact: torch.Tensor, reduced: torch.Tensor) -> bool:
    """The precision contract, computed independently of the predictor's own check: every
    top-1 class the same, every top-1 probability within TOP1_TOLERANCE."""
    top1 = exact.argmax(1)
    gap = (exact.gather(1, top1[:, None]) - reduced.gather(1, top1[:, None])).abs().max()
    return bool((reduced.argmax(1) == top1).all()) and float(gap) <= TOP1_TOLERANCE


class CountingPredictor(Predictor):
    """The real predictor, recording the size of every forward; runs once `release` is set."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sizes: list[int] = []
        self.release = threading.Event()

    def forward(self, batch):
        self.release.wait(timeout=30)
        self.sizes.append(len(batch))
        return super().forward(batch)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    found = sorted(p for p in PAYLOADS.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(found) >= 5, f"sample photos missing from {PAYLOADS}"
    return found


@pytest.fixture(scope="session")
def starter_model_dir(tmp_path_factory) -> Path:
    """A vgg16 checkpoint in exactly the Udacity starter's format (random weights), 102 classes."""
    return make_starter_checkpoint(tmp_path_factory.mktemp("seed_model"), CATEGORY_NAMES)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A small resnet18 checkpoint in this project's format, with flower names."""
    return make_project_checkpoint(tmp_path_factory.mktemp("small_model"), CATEGORY_NAMES)


@pytest.fixture(scope="session")
def small_server(small_model_dir):
    """One shared server on the small model for contract tests that don't stop it."""
    with ServerProcess(small_model_dir, {"MODEL_SERVER_TIMEOUT": "60"}) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def starter_server(starter_model_dir):
    with ServerProcess(starter_model_dir) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def demo_server():
    """The committed demo model, served in fp32: it names the sample photos correctly."""
    with ServerProcess(DEMO_MODEL, {"INFERENCE_PRECISION": "fp32"}) as server:
        server.wait_ready()
        yield server
