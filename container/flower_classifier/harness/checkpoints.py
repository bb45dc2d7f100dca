"""Synthetic model directories for the tests and the benchmarks: the Udacity starter's exact
format, its common variant and this project's. Weights are random (seeded); that is enough to
test loading, serving and numerical agreement, and to time a model.
"""
from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from flower_classifier.model.architectures import (
    attach_head,
    build_backbone,
    head_slot,
    preprocessing_for,
)
from flower_classifier.model.checkpoint import build_head, placed_head, save_checkpoint


def class_to_idx(names_file: Path) -> dict[str, int]:
    """Class folder ids numbered as torchvision's ImageFolder does: sorted as strings."""
    classes = sorted(json.loads(Path(names_file).read_text()))
    return {c: i for i, c in enumerate(classes)}


def make_starter_checkpoint(model_dir: Path, names_file: Path, fc2_size: int = 512,
                         seed: int = 0) -> Path:
    """The starter's save: vgg16 + classifier fc1/relu/fc2/output, keys as in its train.py."""
    torch.manual_seed(seed)
    mapping = class_to_idx(names_file)
    model = build_backbone("vgg16")
    model.classifier = nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(25088, fc2_size)), ("relu", nn.ReLU()),
        ("fc2", nn.Linear(fc2_size, len(mapping))), ("output", nn.LogSoftmax(dim=1))]))
    torch.save({"class_to_idx": mapping, "classes": list(mapping), "input_size": 25088,
                "fc2_size": fc2_size, "output_size": len(mapping),
                "state_dict": model.state_dict()}, model_dir / "checkpoint.pth")
    shutil.copy(names_file, model_dir / "cat_to_name.json")
    return model_dir


def make_variant_checkpoint(model_dir: Path, names_file: Path, arch: str = "resnet18",
                            hidden_units: int = 64, seed: int = 0) -> Path:
    """The common Udacity variant: arch, hidden_units, state_dict, class_to_idx (+ extras)."""
    torch.manual_seed(seed)
    mapping = class_to_idx(names_file)
    model = build_backbone(arch)
    slot = head_slot(model)
    head = nn.Sequential(OrderedDict([
        ("0", nn.Linear(slot.in_features, hidden_units)), ("1", nn.ReLU()),
        ("2", nn.Dropout(0.2)), ("3", nn.Linear(hidden_units, len(mapping))),
        ("4", nn.LogSoftmax(dim=1))]))
    attach_head(model, slot, head)
    torch.save({"arch": arch, "hidden_units": hidden_units, "state_dict": model.state_dict(),
                "class_to_idx": mapping, "epochs": 3, "learning_rate": 0.001,
                "optimizer": torch.optim.Adam(head.parameters()).state_dict()},
               model_dir / "checkpoint.pth")
    shutil.copy(names_file, model_dir / "cat_to_name.json")
    return model_dir


def make_project_checkpoint(model_dir: Path, names_file: Path | None, arch: str = "resnet18",
                            hidden_units: tuple[int, ...] = (64,), seed: int = 0) -> Path:
    """This project's own format, as train.py writes it."""
    torch.manual_seed(seed)
    mapping = class_to_idx(names_file) if names_file else {str(i): i for i in range(5)}
    model = build_backbone(arch)
    slot = head_slot(model)
    head = build_head([slot.in_features, *hidden_units, len(mapping)])
    attach_head(model, slot, placed_head(slot, head))
    save_checkpoint(model_dir / "checkpoint.pth", arch=arch, slot=slot,
                    hidden_units=list(hidden_units), class_to_idx=mapping,
                    state_dict=model.state_dict(), preprocessing=preprocessing_for(arch), epochs=1)
    if names_file:
        shutil.copy(names_file, model_dir / "cat_to_name.json")
    return model_dir
