# Reads and writes checkpoint.pth: this project's format, the Udacity seed's, the common variant.
# Loading never runs pickled code (weights_only=True), and refuses what it cannot rebuild exactly.
from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .architectures import (
    HeadSlot,
    UnknownArchitecture,
    attach_head,
    build_backbone,
    check_architecture,
    head_slot,
    preprocessing_for,
    with_metadata,
)
from .errors import ModelLoadError, WeightsError
from .preprocess import Preprocessing
from .weights import backbone_with_weights

CHECKPOINT = "checkpoint.pth"
CATEGORY_NAMES = "cat_to_name.json"
FORMAT = "flower-classifier"
FORMAT_VERSION = 1
SEED_KEYS = {"class_to_idx", "input_size", "fc2_size", "output_size", "state_dict"}
VARIANT_KEYS = {"arch", "hidden_units", "state_dict", "class_to_idx"}
EXPECTED = (
    "expected a dict saved with torch.save: this project's format (keys 'format', 'arch', 'head', "
    "'class_to_idx', 'state_dict'), the Udacity seed's (keys 'class_to_idx', 'input_size', "
    "'fc2_size', 'output_size', 'state_dict'; vgg16) or the common variant (keys 'arch', "
    "'hidden_units', 'state_dict', 'class_to_idx')")


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
    """Linear layers fc1..fcN with ReLU (and dropout) between, LogSoftmax output, as the seed."""
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


def _head_from_state(state: dict, prefix: str) -> nn.Sequential:
    """Rebuild an MLP head (Linear layers, ReLU between) under its saved names."""
    linears = [(k[len(prefix):-len(".weight")], v) for k, v in state.items()
               if k.startswith(prefix) and k.endswith(".weight")]
    if not linears or any(v.dim() != 2 for _, v in linears):
        raise ModelLoadError(f"state_dict has no feed-forward head under '{prefix}'; {EXPECTED}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (name, weight) in enumerate(linears):
        layers[name] = nn.Linear(weight.shape[1], weight.shape[0])
        if i < len(linears) - 1:
            layers[f"_act{i}"] = nn.ReLU()
    layers["_output"] = nn.LogSoftmax(dim=1)
    return nn.Sequential(layers)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load with weights_only=True, onto the CPU; clear errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} not found: the model directory must hold {CHECKPOINT}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelLoadError(
            f"{path} was refused: it is not a plain-tensor checkpoint that loads with "
            f"weights_only=True ({first[:160]}); {EXPECTED}") from None
    except Exception as error:  # noqa: BLE001 - any other failure to read is a corrupt file
        raise ModelLoadError(f"{path} is corrupt or not a torch checkpoint "
                             f"({type(error).__name__}); {EXPECTED}") from None
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise ModelLoadError(f"{path} has no 'state_dict'; {EXPECTED}")
    return data


def describe_format(data: dict) -> str:
    if data.get("format") == FORMAT:
        return "flower-classifier"
    if "arch" not in data and SEED_KEYS <= data.keys():
        return "udacity-seed"
    if VARIANT_KEYS <= data.keys():
        return "udacity-variant"
    raise ModelLoadError(f"unrecognised checkpoint with keys {sorted(data)[:12]}; {EXPECTED}")


def classifier_from_checkpoint(data: dict) -> Classifier:
    """Rebuild the exact model a checkpoint dict describes, in eval mode on the CPU."""
    kind = describe_format(data)
    if kind == "flower-classifier" and data.get("format_version", 1) > FORMAT_VERSION:
        raise ModelLoadError(f"checkpoint format_version {data['format_version']} is newer "
                             f"than this server understands ({FORMAT_VERSION})")
    arch_name = "vgg16" if kind == "udacity-seed" else str(data["arch"]).lower()
    try:
        check_architecture(arch_name)
    except UnknownArchitecture as error:
        raise ModelLoadError(f"checkpoint arch {arch_name!r} is not supported: {error}") from None
    state = data["state_dict"]
    classes = _classes(data.get("class_to_idx"))
    head_only = data.get("state_dict_scope") == "head"
    if head_only:
        source = data.get("backbone_weights", "default")
        try:
            model, _ = backbone_with_weights(arch_name, source)
        except (WeightsError, OSError, RuntimeError, ImportError) as error:
            raise ModelLoadError(f"head-only checkpoint: backbone weights {source!r} "
                                 f"could not be loaded ({error})") from None
    else:
        model = build_backbone(arch_name)
    slot = head_slot(model)
    head = _head_from_state(state, slot.prefix)
    sizes = linear_sizes(head)
    if sizes[0] != slot.in_features or sizes[-1] != len(classes):
        raise ModelLoadError(
            f"head {sizes} does not fit {arch_name}: it must take {slot.in_features} features "
            f"and give {len(classes)} outputs (one per class_to_idx entry)")
    attach_head(model, slot, placed_head(slot, head))
    if head_only:
        state = {**model.state_dict(), **{k: v for k, v in state.items()
                                          if k.startswith(slot.prefix)}}
    try:
        model.load_state_dict(with_metadata(state, model), strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ModelLoadError(f"state_dict does not match {arch_name} with head {sizes}: "
                             f"{' '.join(lines[1:3])[:300]}") from None
    prep = data.get("preprocessing")
    try:
        preprocessing = Preprocessing.from_dict(prep) if prep else legacy_preprocessing(arch_name)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"checkpoint 'preprocessing' is invalid ({error})") from None
    return Classifier(model.eval(), arch_name, classes, preprocessing, kind, slot.path)


def _classes(class_to_idx) -> list[str]:
    """class_to_idx -> output index -> class id; it must number the classes 0..N-1."""
    if not isinstance(class_to_idx, dict) or not class_to_idx:
        raise ModelLoadError(f"checkpoint has no usable 'class_to_idx'; {EXPECTED}")
    classes = [""] * len(class_to_idx)
    for name, index in class_to_idx.items():
        if not isinstance(index, int) or not 0 <= index < len(classes) or classes[index]:
            raise ModelLoadError("checkpoint 'class_to_idx' is not a 0..N-1 numbering of classes")
        classes[index] = str(name)
    return classes


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


def load_classifier(model_dir: str | os.PathLike,
                    category_names: str | os.PathLike | None = None) -> Classifier:
    """Load checkpoint.pth (+ cat_to_name.json) from a SageMaker model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist (SM_MODEL_DIR); it must "
                             f"hold {CHECKPOINT} and optionally {CATEGORY_NAMES}")
    classifier = classifier_from_checkpoint(read_checkpoint(model_dir / CHECKPOINT))
    classifier.labels = read_category_names(category_names or model_dir / CATEGORY_NAMES)
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
