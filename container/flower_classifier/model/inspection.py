"""What a checkpoint holds and whether it will serve (inspect_checkpoint.py, package_model.py),
and --convert: the same model written in this project's own plain-tensor format.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .checkpoint import (
    CATEGORY_NAMES,
    CHECKPOINT,
    FORMAT,
    FORMAT_VERSION,
    Classifier,
    classifier_from_checkpoint,
    read_checkpoint,
    resolve_checkpoint,
)
from .formats import NotServable, migrate
from .heads import SelectOutputs
from .identify import identify
from .weights import weights_file_name

log = logging.getLogger("flower_classifier")


@dataclass
class Report:
    path: Path
    keys: list[str] = field(default_factory=list)
    tensors: int = 0
    layout: str = "?"
    stored_arch: str | None = None
    found_arch: str = "?"
    head: str = "?"
    classes: str = "?"
    preprocessing: str = "?"
    notes: list[str] = field(default_factory=list)
    problem: str | None = None  # why it will not serve; None: it will
    backbone_file: str | None = None  # torchvision's weights file a head-only file needs
    classifier: Classifier | None = None

    @property
    def servable(self) -> bool:
        return self.problem is None

    def lines(self) -> list[str]:
        verdict = "yes" if self.servable else f"no: {self.problem}"
        return [f"file:            {self.path}",
                f"keys:            {', '.join(self.keys) or '(a pickled model)'}",
                f"layout:          {self.layout} ({self.tensors} tensors)",
                f"architecture:    stored {self.stored_arch!r}; found {self.found_arch}",
                f"head:            {self.head}",
                f"class map:       {self.classes}",
                f"preprocessing:   {self.preprocessing}",
                *(f"note:            {n}" for n in self.notes),
                f"will it serve:   {verdict}"]


class _Notes(logging.Handler):
    """Collects what the loader logs (stored vs found, head layout, warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured():
    """The loader's log lines collected here (not printed) while the block runs."""
    notes = _Notes()
    level, propagate = log.level, log.propagate
    log.addHandler(notes)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield notes.messages
    finally:
        log.removeHandler(notes)
        log.setLevel(level)
        log.propagate = propagate


def inspect(path: str | os.PathLike) -> Report:
    """Everything the loader finds in `path`, and the reason it would refuse it, if any."""
    path = resolve_checkpoint(path)
    report = Report(path)
    try:
        data = read_checkpoint(path)
    except ModelLoadError as error:
        report.problem = str(error)
        return report
    report.keys = [str(k) for k in data] if isinstance(data, dict) else []
    describe_found(report, data)
    with captured() as messages:
        try:
            report.classifier = classifier_from_checkpoint(data, path.parent, str(path))
        except ModelLoadError as error:
            report.problem = str(error)
    for message in messages:
        if message.startswith("head: "):
            report.head = message[len("head: "):]
        elif message.startswith("architecture stored"):
            report.notes.insert(0, message)
        else:
            report.notes.append(message)
    if report.classifier is not None:
        c = report.classifier
        report.found_arch = c.arch
        p = c.preprocessing
        report.preprocessing = (f"resize {p.resize}, crop {p.crop}, mean {list(p.mean)}, "
                                f"std {list(p.std)}, {p.interpolation}")
    return report


def describe_found(report: Report, data) -> None:
    """The migration's view: layout, stored name, class map and its direction."""
    try:
        found = migrate(data)
    except NotServable as error:
        report.problem = str(error)
        return
    report.layout, report.stored_arch, report.tensors = (found.layout, found.stored_arch,
                                                         len(found.state))
    report.classes = (f"{len(found.classes)} classes, read as {found.direction}" if found.classes
                      else "none stored: output indices will be served as classes")
    if found.labels:
        report.classes += f"; {len(found.labels)} flower names embedded"
    try:
        ident = identify(found.state, found.stored_arch)
        report.found_arch = ident.arch
        if ident.head_only or found.scope == "head" and found.backbone_weights != "none":
            report.backbone_file = weights_file_name(ident.arch)
    except ValueError as error:
        report.found_arch = f"none ({error})"


def plain_state(classifier: Classifier) -> tuple[dict, dict[str, int]]:
    """(state_dict, class_to_idx) in this project's names: a head that serves a subset of its
    outputs is saved whole, with the classes numbered by the outputs they are."""
    state = classifier.model.state_dict()
    head = classifier.model.get_submodule(classifier.head_path)
    indices = list(range(len(classifier.classes)))
    select = getattr(head, "select", None)
    if isinstance(select, SelectOutputs):
        indices = select.indices.tolist()
        inner, dropped = f"{classifier.head_path}.head.", f"{classifier.head_path}.select."
        state = {(classifier.head_path + "." + k[len(inner):] if k.startswith(inner) else k): v
                 for k, v in state.items() if not k.startswith(dropped)}
    return dict(state), {c: i for c, i in zip(classifier.classes, indices, strict=True)}


def convert(report: Report, out_dir: str | os.PathLike) -> Path:
    """Write the served model as this project's format (plain tensors and plain data, loads
    with weights_only=True and no allow-list), then check that it gives the same answers."""
    classifier = report.classifier
    if classifier is None:
        raise ModelLoadError(f"cannot convert {report.path}: {report.problem}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state, class_to_idx = plain_state(classifier)
    target = out_dir / CHECKPOINT
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "arch": classifier.arch,
                "head": {"path": classifier.head_path, "layout": report.head},
                "class_to_idx": class_to_idx, "state_dict": state, "state_dict_scope": "full",
                "preprocessing": classifier.preprocessing.to_dict(),
                "converted_from": str(report.path.name)}, target)
    if classifier.labels:
        (out_dir / CATEGORY_NAMES).write_text(json.dumps(classifier.labels, indent=1))
    verify(classifier, target)
    return target


def verify(original: Classifier, target: Path) -> None:
    """The converted file loads with plain weights_only=True and answers as the original."""
    data = torch.load(target, map_location="cpu", weights_only=True)
    with captured():
        again = classifier_from_checkpoint(data, target.parent, str(target))
    torch.manual_seed(0)
    crop = original.preprocessing.crop
    batch = torch.randn(2, 3, crop, crop)
    with torch.no_grad():
        before = torch.softmax(original.model(batch), 1)
        after = torch.softmax(again.model(batch), 1)
    if again.classes != original.classes or not torch.allclose(before, after, atol=1e-5):
        target.unlink()
        raise ModelLoadError(f"the converted {target} does not answer as {original.arch} from "
                             f"the original does; nothing was written")
