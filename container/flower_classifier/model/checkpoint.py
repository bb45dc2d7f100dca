"""Reads and writes checkpoint.pth: this project's format, the Udacity starter's, the
common variant.
Loading never runs pickled code (weights_only=True), and refuses what it cannot rebuild exactly.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, UnsafeCheckpoint, WeightsError
from .architectures import (
    HeadSlot,
    attach_head,
    build_backbone,
    copy_by_name,
    preprocessing_for,
    skipped_init,
)
from .formats import Found, Layout, NotServable, is_module, migrate
from .heads import Head, HeadError, from_convention, from_kept, from_record, select_outputs
from .identify import Identified, counted, identify
from .preprocess import Preprocessing
from .safe_pickle import load_untrusted
from .weights import backbone_for_head, torchvision_weight_files

log = logging.getLogger("flower_classifier")

CHECKPOINT = "checkpoint.pth"
CATEGORY_NAMES = "cat_to_name.json"
FORMAT = Layout.PROJECT.value  # a plain str in the file
FORMAT_VERSION = 1
SUFFIXES = (".pth", ".pt", ".tar", ".pickle", ".pkl", ".ckpt")
EXPECTED = (
    "expected the weights of a torchvision model (a state_dict, alone or under 'state_dict', "
    "'model_state_dict', 'model_state', 'state', 'weights' or 'model', or a pickled model) "
    "with its class map ('class_to_idx', 'idx_to_class', 'classes'...)")


@dataclass
class Classifier:
    """A model ready for inference plus everything needed to name its outputs."""

    model: nn.Module
    arch: str
    classes: list[str]  # output index -> class folder id
    preprocessing: Preprocessing
    source_format: str
    head_path: str = "fc"  # where the head sits in `model` (quantization keeps it fp32)
    labels: dict[str, str] = field(default_factory=dict)  # class id -> flower name

    def label(self, class_id: str) -> str:
        return self.labels.get(class_id, class_id)


def build_head(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers fc1..fcN with ReLU (and dropout) between, LogSoftmax output, as the starter."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
        layers[f"fc{i}"] = nn.Linear(n_in, n_out)
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
            if dropout:
                layers[f"dropout{i}"] = nn.Dropout(dropout)
    layers["output"] = nn.LogSoftmax(dim=1)
    return nn.Sequential(layers)


def feature_adapter(slot: HeadSlot) -> nn.Module:
    """What turns the slot's input into the head's feature vector: nothing, or (squeezenet's
    feature map) a global average pool and a flatten."""
    if not slot.pooled:
        return nn.Identity()
    return nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))


def placed_head(slot: HeadSlot, head: nn.Sequential) -> nn.Sequential:
    """The head as it sits in the slot: the feature adapter's layers (if any), then the head's,
    under the head's own names (so its state_dict keys are the same either way)."""
    adapter = feature_adapter(slot)
    if isinstance(adapter, nn.Identity):
        return head
    return nn.Sequential(OrderedDict([*adapter.named_children(), *head.named_children()]))


def linear_sizes(head: nn.Module) -> list[int]:
    """[in, hidden..., out] of the Linear layers of a head."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features, *(m.out_features for m in linears)] if linears else []


def read_checkpoint(path: str | os.PathLike) -> dict | nn.Module:
    """The checkpoint's object, on the CPU, through the restricted unpickler (safe_pickle):
    torch.save zip or legacy files and plain pickle.dump files; nothing in them runs."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} not found: the model directory must hold {CHECKPOINT} "
                             f"(or one other checkpoint file: {', '.join(SUFFIXES)})")
    try:
        data = load_untrusted(path)
    except UnsafeCheckpoint as error:
        raise ModelLoadError(
            f"{path} was refused: it {error}; nothing in it was imported or run (only the "
            f"torch/torchvision data that weights_only=True loads is rebuilt). Save a plain "
            f"state_dict and metadata instead") from None
    except Exception as error:  # noqa: BLE001 - any other failure to read is a corrupt file
        raise ModelLoadError(f"{path} is corrupt or not a torch checkpoint "
                             f"({type(error).__name__}); {EXPECTED}") from None
    if not isinstance(data, dict) and not is_module(data):
        raise ModelLoadError(f"{path} holds a {type(data).__name__}, not a state_dict; "
                             f"{EXPECTED}")
    return data


def describe_format(data) -> str:
    """The family of layouts `data` came in ('flower-classifier', 'udacity-seed', ...)."""
    try:
        return migrate(data).layout
    except NotServable as error:
        raise ModelLoadError(f"unrecognised checkpoint: {error}; {EXPECTED}") from None


def fix_hint(source: str) -> str:
    return (f"to see what it holds: python train/inspect_checkpoint.py {source} (add "
            f"--convert OUT_DIR to write it in this project's format)")


def classifier_from_checkpoint(data, model_dir: str | os.PathLike | None = None,
                               source: str = CHECKPOINT) -> Classifier:
    """Any accepted layout -> the exact model it describes, eval, on the CPU: the migration for
    its format (formats.migrate), then the one builder (build). Errors say what was found, what
    was expected and how to fix it."""
    try:
        found = migrate(data)
        return build(found, Path(model_dir) if model_dir else None)
    except (NotServable, HeadError, ValueError) as error:
        raise ModelLoadError(f"{source} cannot be served: {error}; {EXPECTED}; "
                             f"{fix_hint(source)}") from None
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - a layout no migration foresaw: one clear line
        detail = " ".join(str(error).split())[:200]
        raise ModelLoadError(f"{source} cannot be served: rebuilding it failed "
                             f"({type(error).__name__}: {detail}); {EXPECTED}; "
                             f"{fix_hint(source)}") from None


def build(found: Found, model_dir: Path | None) -> Classifier:
    """The one builder, after the migration: identify the architecture, rebuild the backbone,
    fit the head and its served classes, copy the backbone's weights."""
    check_version(found)
    ident = identified(found)
    model = backbone_for(ident, found, model_dir)
    classes = fit_head(model, ident, found)
    copy_backbone(model, ident, found)
    return Classifier(model.eval(), ident.arch, classes, preprocessing_of(found, ident.arch),
                      found.layout, ident.slot.path, dict(found.labels))


def check_version(found: Found) -> None:
    if found.layout == FORMAT and found.version > FORMAT_VERSION:
        raise ValueError(f"checkpoint format_version {found.version} is newer than this "
                         f"server understands ({FORMAT_VERSION})")


def identified(found: Found) -> Identified:
    """The architecture and head slot the weights are of (the stored name as a hint)."""
    try:
        ident = identify(found.state, found.stored_arch)
    except ValueError as error:
        raise NotServable(f"unrecognised checkpoint: {error}") from None
    log.info("%s", ident.note)
    return ident


def fit_head(model: nn.Module, ident: Identified, found: Found) -> list[str]:
    """Rebuild the head, keep the outputs that have a class, put it in the model's slot;
    returns the class ids in served order."""
    head = rebuild_head(model, ident.slot, found, ident.arch)
    classes, indices = served_classes(found, head.outputs)
    head = select_outputs(head, indices)
    attach_head(model, ident.slot, head.module)
    log.info("head: %s", head.layout)
    return classes


def copy_backbone(model: nn.Module, ident: Identified, found: Found) -> None:
    """A full checkpoint's backbone weights into the model, by name (a head-only one's came
    with the backbone)."""
    if ident.head_only:
        return
    body = {k: v for k, v in found.state.items() if counted(k)}
    try:
        copy_by_name(model, ident.slot, body)
    except WeightsError as error:
        raise NotServable(f"the backbone's {error}") from None


def backbone_for(ident: Identified, found: Found, model_dir: Path | None) -> nn.Module:
    """A full checkpoint's backbone is rebuilt from its own weights; a head-only one's comes
    from torchvision's weights (model directory, hub cache, download)."""
    if not ident.head_only and found.scope != "head":
        with skipped_init():  # build() copies every backbone tensor from the file, or refuses it
            return build_backbone(ident.arch)
    try:
        model, note = backbone_for_head(ident.arch, found.backbone_weights, model_dir)
    except WeightsError as error:
        raise NotServable(str(error)) from None
    log.info("%s", note)
    return model


def rebuild_head(model: nn.Module, slot: HeadSlot, found: Found, arch: str) -> Head:
    """A pickled head's own structure wins; then torchvision's classifier with its last layer
    replaced; then the course's convention, from the weights."""
    state = {k[len(slot.prefix):]: v for k, v in found.state.items() if k.startswith(slot.prefix)}
    if not state:
        raise NotServable(f"state_dict has no feed-forward head under '{slot.prefix}' "
                          f"(where {arch} keeps its classifier)")
    width = slot.in_features
    try:
        if isinstance(found.head_module, nn.Module):
            try:
                return from_record(found.head_module, state, width)
            except HeadError as error:
                log.info("pickled head not used (%s): rebuilding it from its weights", error)
        kept = from_kept(model.get_submodule(slot.path), state)
        if kept is not None:
            return kept
        built = from_convention(state, width)
    except HeadError as error:
        raise NotServable(f"head under '{slot.path}' does not fit {arch} "
                          f"({slot.in_features} features in): {error}") from None
    return Head(placed_head(slot, built.module), built.layout, built.outputs)


def served_classes(found: Found, outputs: int) -> tuple[list[str], list[int]]:
    """(class ids in served order, the head outputs they are): every class in the map; a head
    with more outputs than classes serves only those; no map: output indices, with a warning."""
    if found.classes is None:
        log.warning("the checkpoint stores no class map: serving output indices 0..%d as "
                    "classes", outputs - 1)
        return [str(i) for i in range(outputs)], list(range(outputs))
    indices = sorted(found.classes)
    if indices[-1] >= outputs:
        raise NotServable(
            f"the head gives {outputs} outputs but the class map numbers {len(indices)} classes "
            f"up to {indices[-1]}: it must give {indices[-1] + 1} outputs")
    if len(indices) < outputs:
        log.warning("the head gives %d outputs, %d of which have a class: serving those",
                    outputs, len(indices))
    return [found.classes[i] for i in indices], indices


def preprocessing_of(found: Found, arch: str) -> Preprocessing:
    return found.preprocessing or legacy_preprocessing(arch)


def legacy_preprocessing(arch: str) -> Preprocessing:
    """For a checkpoint that stores none: the course's Resize(255) + CenterCrop(224) with the
    architecture's mean and std, or the architecture's own sizes where its input is not 224."""
    own = preprocessing_for(arch)
    if own.crop != Preprocessing().crop:
        return own
    return Preprocessing(mean=own.mean, std=own.std)


def read_category_names(path: str | os.PathLike) -> dict[str, str]:
    """cat_to_name.json -> {class id: flower name}; missing file -> {}."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise ModelLoadError(f'{path} must map class ids to names, like {{"1": "pink primrose"}}')
    return {str(k): v for k, v in names.items()}


def checkpoint_candidates(model_dir: Path) -> list[Path]:
    """Files that may be the checkpoint: checkpoint.pth if present, else every *.pth, *.pt,
    *.tar, *.pickle, *.pkl or extension-less torch/pickle file that is not a backbone's
    torchvision weights file."""
    named = model_dir / CHECKPOINT
    if named.is_file():
        return [named]
    return sorted(p for p in model_dir.iterdir() if p.is_file() and looks_like_checkpoint(p)
                  and p.name not in torchvision_weight_files())


def looks_like_checkpoint(path: Path) -> bool:
    if path.suffix.lower() in SUFFIXES:
        return True
    if path.suffix:
        return False
    with open(path, "rb") as file:
        head = file.read(4)
    return head.startswith((b"PK\x03\x04", b"\x80"))  # a zip (torch.save) or a pickle


def find_checkpoint(model_dir: Path) -> Path:
    found = checkpoint_candidates(model_dir)
    if not found:
        raise ModelLoadError(f"{model_dir / CHECKPOINT} not found, nor any other checkpoint "
                             f"file ({', '.join(SUFFIXES)} or no extension) in {model_dir}")
    if len(found) > 1:
        raise ModelLoadError(
            f"{model_dir} holds {len(found)} checkpoint candidates "
            f"({', '.join(p.name for p in found[:6])}): keep one, or name it {CHECKPOINT}")
    if found[0].name != CHECKPOINT:
        log.info("checkpoint: %s (the one checkpoint file in %s)", found[0].name, model_dir)
    return found[0]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as it is, or the one checkpoint in a model directory: the one place
    "a model directory or a checkpoint file" is decided (inspect, package and predict)."""
    path = Path(path)
    return find_checkpoint(path) if path.is_dir() else path


def load_classifier(model_dir: str | os.PathLike,
                    category_names: str | os.PathLike | None = None) -> Classifier:
    """Load the checkpoint (+ cat_to_name.json) from a SageMaker model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist (SM_MODEL_DIR); it must "
                             f"hold {CHECKPOINT} and optionally {CATEGORY_NAMES}")
    path = find_checkpoint(model_dir)
    classifier = classifier_from_checkpoint(read_checkpoint(path), model_dir, str(path))
    names = read_category_names(category_names or model_dir / CATEGORY_NAMES)
    classifier.labels = {**classifier.labels, **names}
    return classifier


def save_checkpoint(path: str | os.PathLike, *, arch: str, slot: HeadSlot,
                    hidden_units: list[int], class_to_idx: dict[str, int], state_dict: dict,
                    preprocessing: Preprocessing, head_only: bool = False,
                    backbone_weights: str = "default", **extra) -> None:
    """Write this project's format; extra keys (epochs, optimizer, history...) ride along."""
    if head_only:
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(slot.prefix)}
    data = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch,
        "head": {"path": slot.path, "input_size": slot.in_features,
                 "hidden_units": list(hidden_units), "output_size": len(class_to_idx)},
        "class_to_idx": dict(class_to_idx), "state_dict": state_dict,
        "state_dict_scope": "head" if head_only else "full",
        "backbone_weights": backbone_weights, "preprocessing": preprocessing.to_dict(), **extra,
    }
    tmp = Path(f"{path}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
