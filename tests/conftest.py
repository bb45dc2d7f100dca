# Shared pytest fixtures: import paths, sample photos, checkpoints and a real `serve` process.
# Servers are real gunicorn processes on loopback ports; nothing here is mocked.
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "container"))
sys.path.insert(0, str(ROOT / "tests"))

from checkpoints import make_project_checkpoint, make_seed_checkpoint  # noqa: E402
from flower_serving.predictor import Predictor  # noqa: E402
from serving import ServerProcess  # noqa: E402

PAYLOADS = ROOT / "local_test" / "payloads"
CATEGORY_NAMES = ROOT / "local_test" / "test_dir" / "model" / "cat_to_name.json"
SHARED_FLOWERS = ROOT.parent / "shared" / "flowers"


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
def seed_model_dir(tmp_path_factory) -> Path:
    """A vgg16 checkpoint in exactly the Udacity seed's format (random weights), 102 classes."""
    return make_seed_checkpoint(tmp_path_factory.mktemp("seed_model"), CATEGORY_NAMES)


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
def seed_server(seed_model_dir):
    with ServerProcess(seed_model_dir) as server:
        server.wait_ready()
        yield server
