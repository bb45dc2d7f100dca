"""serving/checker.py: the precision check's child process, as the worker starts it."""
from __future__ import annotations

import contextlib

import pytest

from flower_classifier.serving.checker import CheckFailed, check_elsewhere


def test_a_child_that_cannot_load_the_model_is_a_clear_failure(tmp_path, monkeypatch):
    """The child loads the model from the worker's environment; a model dir it cannot serve
    ends it non-zero, and the worker gets CheckFailed (decide() then checks in-process)."""
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path))  # no checkpoint.pth
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    turns = []

    @contextlib.contextmanager
    def alone():
        turns.append(1)
        yield

    with pytest.raises(CheckFailed, match="exited with 1 and no decision"):
        check_elsewhere(alone)
    assert turns == []  # it never reached a timed forward
