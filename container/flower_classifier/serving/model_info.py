"""What GET /model-info reports: the served model, its precision and device, and whether it is
the bundled demo model (local_test/test_dir/model, recognised by its checkpoint's SHA-256).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from ..environment import Environment
from ..model.checkpoint import CHECKPOINT
from ..model.device import describe
from .handler import Handler

DEMO_CHECKPOINT_SIZE = 14_267_825
DEMO_CHECKPOINT_SHA256 = "c19189831a112edf40eb5db3033e2cca4076f42535b89afdeb2c01b86aed511c"


@functools.lru_cache(maxsize=8)
def is_demo(model_dir: str | Path) -> bool:
    """True when the model directory's checkpoint is the demo's, byte for byte (hashed only
    when the size matches, so a large checkpoint costs one stat)."""
    path = Path(model_dir) / CHECKPOINT
    try:
        if path.stat().st_size != DEMO_CHECKPOINT_SIZE:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == DEMO_CHECKPOINT_SHA256
    except OSError:
        return False


def model_info(handler: Handler, env: Environment) -> dict:
    """The few facts the page shows next to an answer, as they are now: the precision and
    backend change once the background precision check has decided."""
    classifier, predictor = handler.classifier, handler.batcher.predictor
    return {
        "arch": classifier.arch,
        "classes": len(classifier.classes),
        "names": bool(classifier.labels),
        "precision": predictor.precision,
        "backend": predictor.backend,
        "device": describe(predictor.device),
        "demo": is_demo(env.model_dir),
        "top_k": min(env.top_k, len(classifier.classes)),
    }
