"""Hostile checkpoints against the restricted unpickler: every one is refused (or its part left
inert) and a marker file proves that nothing in it was imported or run.
"""
from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

from conftest import CATEGORY_NAMES
from flower_classifier.errors import ModelLoadError
from flower_classifier.model.checkpoint import (
    classifier_from_checkpoint,
    load_classifier,
    read_checkpoint,
)
from flower_classifier.model.safe_pickle import Placeholder, load_untrusted
from helpers.checkpoints import class_to_idx
from helpers.serving import ServerProcess

EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).touch()  # importing this module is already the attack

def boom(*args):
    pathlib.Path({marker!r}).touch()
"""


class Reduces:
    """Pickles as `func(*args)`: how a file makes the unpickler call something."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def save_all_ways(obj, folder) -> list:
    """The object as a torch.save zip file, a legacy (pre-1.6) torch file and a plain pickle."""
    paths = [folder / "zip.pth", folder / "legacy.pth", folder / "plain.pickle"]
    torch.save(obj, paths[0])
    torch.save(obj, paths[1], _use_new_zipfile_serialization=False)
    with open(paths[2], "wb") as file:
        pickle.dump(obj, file, protocol=2)
    return paths


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code from the checkpoint ran"


@pytest.fixture
def evil_module(tmp_path, marker, monkeypatch):
    """A module whose import and whose function both create the marker; importable while the
    file is written and while it is read, so only the loader's refusal keeps it unrun."""
    (tmp_path / "evil_mod.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = type(sys)("evil_mod")  # a stand-in for pickling: the real file is never run here
    module.boom = lambda *a: None  # pickled by reference: evil_mod.boom
    module.boom.__module__, module.boom.__qualname__ = "evil_mod", "boom"
    sys.modules["evil_mod"] = module
    yield module
    sys.modules.pop("evil_mod", None)


def refused(path, words=()) -> str:
    with pytest.raises(ModelLoadError) as info:
        data = read_checkpoint(path)
        classifier_from_checkpoint(data, source=str(path))
    message = str(info.value)
    assert "Traceback" not in message and all(w in message for w in words), message
    return message


def state_dict_file_data() -> dict:
    return {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "class_to_idx": {"a": 0, "b": 1}}


@pytest.mark.parametrize("hostile", [
    Reduces(nn.Linear, 10**6, 10**6),  # an allow-listed class, called with hostile arguments
    Reduces(collections.OrderedDict, [("k", Reduces(os.system, "touch /tmp/x"))]),
    Reduces(torch._tensor._rebuild_from_type_v2, nn.Linear, torch.Tensor, (2, 2), {}),
], ids=["nn.Linear(huge)", "OrderedDict(os.system)", "rebuild_from_type(nn.Linear)"])
def test_reduce_of_an_allow_listed_name_with_hostile_arguments_is_refused(tmp_path, marker,
                                                                          hostile):
    for path in save_all_ways({**state_dict_file_data(), "extra": hostile}, tmp_path):
        refused(path, ["refused", "weights_only"])


def test_os_subprocess_and_builtins_deep_inside_an_allow_listed_module_are_refused(
        tmp_path, marker):
    for name, hostile in [("os", Reduces(os.system, f"touch {marker}")),
                          ("subprocess", Reduces(subprocess.call, ["touch", str(marker)])),
                          ("builtins", Reduces(eval, f"open({str(marker)!r}, 'w')")),
                          ("builtins", Reduces(exec, "1"))]:
        model = nn.Sequential(OrderedDict(block=nn.Sequential(nn.Linear(2, 2), nn.ReLU())))
        vars(model.block[0])["notes"] = {"deep": [(1, {"deeper": hostile})]}
        for path in save_all_ways({"model": model, "class_to_idx": {"a": 0}}, tmp_path):
            message = refused(path, ["refused", name])
            assert "which a checkpoint never needs" in message


def test_a_global_from_an_unknown_module_is_never_imported(tmp_path, marker, evil_module):
    for path in save_all_ways({**state_dict_file_data(), "hook": Reduces(evil_module.boom)},
                              tmp_path):
        sys.modules.pop("evil_mod", None)  # importable from tmp_path: only refusal stops it
        data = load_untrusted(path)
        assert isinstance(data["hook"], Placeholder) and "evil_mod.boom" in repr(data["hook"])
        assert "evil_mod" not in sys.modules
        sys.modules["evil_mod"] = evil_module


def test_a_placeholder_that_is_then_used_is_refused(tmp_path, marker, evil_module):
    # The class map comes from a call of an unknown function, the weights from a call of a bound
    # method: both are placeholders, never run, and serving needs them.
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    cases = {
        "class map": {"state_dict": {"fc.weight": torch.zeros(2, 2)},
                      "class_to_idx": Reduces(evil_module.boom, "x")},
        "weights": {"state_dict": Reduces(optimizer.state_dict), "class_to_idx": {"a": 0}},
        "a pickled model's layer": {"model": Reduces(evil_module.boom), "class_to_idx": {"a": 0}},
    }
    for what, data in cases.items():
        for path in save_all_ways(data, tmp_path):
            sys.modules.pop("evil_mod", None)
            message = refused(path, ["cannot be served", "inspect_checkpoint.py"])
            assert "not loaded" in message or "no weights" in message, (what, message)
            assert "evil_mod" not in sys.modules
            sys.modules["evil_mod"] = evil_module


def test_unneeded_optimizer_objects_and_bound_methods_become_inert(tmp_path, marker):
    model = nn.Sequential(nn.Linear(4, 3))
    optimizer = torch.optim.Adam(model.parameters())
    data = {"model": model, "optimizer": optimizer, "opt_state": optimizer.state_dict,
            "criterion": nn.NLLLoss(), "class_to_idx": {"a": 0, "b": 1, "c": 2}}
    for path in save_all_ways(data, tmp_path):
        loaded = load_untrusted(path)
        assert isinstance(loaded["optimizer"], Placeholder)
        assert isinstance(loaded["opt_state"], Placeholder)
        assert "bound method" in repr(loaded["opt_state"])
        assert torch.equal(loaded["model"][0].weight, model[0].weight)
        assert type(loaded["model"][0]) is nn.Linear


def test_hostile_model_directory_never_imports_or_runs(tmp_path, marker):
    # The same through load_classifier, with the file under another name.
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    mapping = class_to_idx(CATEGORY_NAMES)
    torch.save({"state_dict": {}, "class_to_idx": mapping,
                "x": Reduces(os.system, f"touch {marker}")}, model_dir / "my_model.pt")
    with pytest.raises(ModelLoadError, match="my_model.pt was refused: it refers to posix.system"):
        load_classifier(model_dir)


def test_serve_refuses_a_hostile_reduce_in_one_line_and_runs_nothing(tmp_path, marker):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    hostile = Reduces(collections.OrderedDict, [("k", Reduces(os.system, f"touch {marker}"))])
    with open(model_dir / "checkpoint.pth", "wb") as file:  # a plain pickle.dump file
        pickle.dump({**state_dict_file_data(), "extra": hostile}, file, protocol=2)
    with ServerProcess(model_dir) as server:
        code = server.wait_exit(timeout=120)
        log = server.log
    lines = [line for line in log.splitlines() if "cannot serve the model" in line]
    assert code != 0 and len(lines) == 1 and "posix.system" in lines[0], log
    assert "Traceback" not in log
