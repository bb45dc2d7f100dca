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

from .architectures import ARCHITECTURES, attach_head, build_backbone
from .errors import ModelLoadError
from .preprocess import Preprocessing
from .weights import load_backbone_weights

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
    if arch_name not in ARCHITECTURES:
        raise ModelLoadError(f"checkpoint arch {arch_name!r} is not supported; expected one of "
                             f"{', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[arch_name]
    state = data["state_dict"]
    class_to_idx = data.get("class_to_idx")
    if not isinstance(class_to_idx, dict) or not class_to_idx:
        raise ModelLoadError(f"checkpoint has no usable 'class_to_idx'; {EXPECTED}")
    classes = [""] * len(class_to_idx)
    for name, index in class_to_idx.items():
        if not isinstance(index, int) or not 0 <= index < len(classes) or classes[index]:
            raise ModelLoadError("checkpoint 'class_to_idx' is not a 0..N-1 numbering of classes")
        classes[index] = str(name)

    prefix = arch.head_attr + "."
    head = _head_from_state(state, prefix)
    sizes = [m.in_features for m in head if isinstance(m, nn.Linear)]
    sizes.append([m.out_features for m in head if isinstance(m, nn.Linear)][-1])
    if sizes[0] != arch.in_features or sizes[-1] != len(classes):
        raise ModelLoadError(
            f"head {sizes} does not fit {arch_name}: it must take {arch.in_features} features and "
            f"give {len(classes)} outputs (one per class_to_idx entry)")

    model = attach_head(build_backbone(arch_name), arch_name, head)
    head_only = data.get("state_dict_scope") == "head"
    if head_only:
        source = data.get("backbone_weights", "default")
        try:
            load_backbone_weights(model, arch_name, source)
        except (ValueError, OSError, RuntimeError, ImportError) as error:
            raise ModelLoadError(f"head-only checkpoint: backbone weights {source!r} "
                                 f"could not be loaded ({error})") from None
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state, strict=not head_only)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ModelLoadError(f"state_dict does not match {arch_name} with head {sizes}: "
                             f"{' '.join(lines[1:3])[:300]}") from None
    prep = data.get("preprocessing")
    try:
        preprocessing = Preprocessing.from_dict(prep) if prep else Preprocessing()
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"checkpoint 'preprocessing' is invalid ({error})") from None
    if not prep and arch.mean != Preprocessing().mean:
        preprocessing = Preprocessing(mean=arch.mean, std=arch.std)
    return Classifier(model.eval(), arch_name, classes, preprocessing, kind)


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


def save_checkpoint(path: str | os.PathLike, *, arch: str, hidden_units: list[int],
                    class_to_idx: dict[str, int], state_dict: dict,
                    preprocessing: Preprocessing, head_only: bool = False,
                    backbone_weights: str = "default", **extra) -> None:
    """Write this project's format; extra keys (epochs, optimizer, history...) ride along."""
    arch_spec = ARCHITECTURES[arch]
    if head_only:
        prefix = arch_spec.head_attr + "."
        state_dict = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    data = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch,
        "head": {"input_size": arch_spec.in_features, "hidden_units": list(hidden_units),
                 "output_size": len(class_to_idx)},
        "class_to_idx": dict(class_to_idx), "state_dict": state_dict,
        "state_dict_scope": "head" if head_only else "full",
        "backbone_weights": backbone_weights, "preprocessing": preprocessing.to_dict(), **extra,
    }
    tmp = Path(f"{path}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
