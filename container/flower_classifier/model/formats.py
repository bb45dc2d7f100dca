"""Migrations: each family of checkpoint layouts seen in Udacity projects, normalised into one
record (weights, class map, stored name, preprocessing, pickled head) for the one builder.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from ..errors import NotServable
from .architectures import legacy_key_names
from .preprocess import Preprocessing
from .safe_pickle import Placeholder

WEIGHT_KEYS = ("state_dict", "model_state_dict", "model_state", "state", "weights", "model")
CLASS_MAP_KEYS = ("class_to_idx", "class_to_index", "class_to_idx_map", "idx_to_class",
                  "idx_to_cat", "classes")
ARCH_KEYS = ("arch", "architecture", "model_name", "model_architecture", "mtype")
NAMES_KEYS = ("cat_to_name", "category_names", "cat_to_names")
HEAD_KEYS = ("classifier", "fc")  # a pickled head saved beside the weights
STARTER_KEYS = {"class_to_idx", "input_size", "fc2_size", "output_size", "state_dict"}
VARIANT_KEYS = {"arch", "hidden_units", "state_dict", "class_to_idx"}


class Layout(StrEnum):
    """The checkpoint formats the migrations know by name. The values are what the log,
    /model-info and inspect_checkpoint.py print; a checkpoint stores `PROJECT.value`, a plain
    string (an enum would not load with weights_only=True). Other dicts are described by the
    key their weights are under."""

    PROJECT = "flower-classifier"  # train.py's own format
    UDACITY_STARTER = "udacity-seed"  # the Udacity starter project's save
    UDACITY_VARIANT = "udacity-variant"  # the common variant of it, with "arch"
    WHOLE_MODEL = "whole pickled model"  # torch.save(model)
    STATE_DICT = "bare state_dict"  # torch.save(model.state_dict())


@dataclass
class Found:
    """A checkpoint, whatever its layout, as the builder needs it."""

    state: dict[str, torch.Tensor]
    layout: str  # which family of layouts it came in, for logs
    stored_arch: str | None = None
    classes: dict[int, str] | None = None  # output index -> class id; None: not stored
    direction: str = "none stored"  # how the class map was read
    labels: dict[str, str] = field(default_factory=dict)  # embedded cat_to_name
    preprocessing: Preprocessing | None = None
    head_module: nn.Module | None = None  # a pickled head, which records its own structure
    scope: str = "full"  # "head": this project's head-only files
    backbone_weights: str = "default"
    version: int = 1  # this project's format_version
    notes: list[str] = field(default_factory=list)


def is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def is_module(obj) -> bool:
    """A pickled nn.Module: a real (allow-listed) one, or the author's own class restored as a
    placeholder that still holds its submodules and parameters."""
    return isinstance(obj, nn.Module) or (
        isinstance(obj, Placeholder) and isinstance(obj.state, dict)
        and "_modules" in obj.state and "_parameters" in obj.state)


def module_dict(obj) -> dict:
    return vars(obj) if isinstance(obj, nn.Module) else obj.state


def module_state(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """A pickled module's tensors by state_dict name, read from its saved __dict__: no method
    of the module (state_dict, hooks) runs."""
    saved = module_dict(obj)
    skip = saved.get("_non_persistent_buffers_set") or set()
    out = {}
    for group in ("_parameters", "_buffers"):
        for name, tensor in (saved.get(group) or {}).items():
            if tensor is not None and name not in skip:
                out[prefix + name] = _tensor(tensor, prefix + name)
    for name, child in (saved.get("_modules") or {}).items():
        if child is not None:
            if not is_module(child):
                raise NotServable(f"submodule {prefix + name} is {child!r}")
            out.update(module_state(child, f"{prefix}{name}."))
    return out


def _tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise NotServable(f"weight {name} is {value!r}, not a tensor")
    return value.detach()


def clean_state(state: dict) -> dict[str, torch.Tensor]:
    """Tensors only, DataParallel's 'module.' prefix dropped, legacy DenseNet names updated."""
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise NotServable(f"the weights hold non-tensors ({bad[0]}: {state[bad[0]]!r})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return legacy_key_names(state)


def lower_keys(data: dict) -> dict:
    return {k.lower(): v for k, v in data.items() if isinstance(k, str)}


# ---- migrations: one per family of layouts ------------------------------------------------

def from_project(data: dict) -> Found:
    """This project's own format (train.py): its keys are exact, its head layout recorded."""
    found = from_dict(data, Layout.PROJECT)
    found.scope = data.get("state_dict_scope", "full")
    found.backbone_weights = data.get("backbone_weights", "default")
    found.version = data.get("format_version", 1)
    return found


def from_module(model) -> Found:
    """torch.save(model): a whole pickled model, weights read from its saved tensors, labels
    from the attributes authors set on it (model.class_to_idx)."""
    found = Found(clean_state(module_state(model)), Layout.WHOLE_MODEL,
                  head_module=pickled_head(model))
    return add_metadata(found, module_dict(model))


def from_state_dict(data: dict) -> Found:
    """torch.save(model.state_dict()): weights alone, no labels."""
    return Found(clean_state(data), Layout.STATE_DICT)


def from_dict(data: dict, layout: str = "") -> Found:
    """A dict of weights plus metadata under any of the names authors use."""
    key, weights = weights_entry(data)
    found = Found({}, layout or f"dict with weights under {key!r}")
    add_metadata(found, data)
    found.head_module = next((data[k] for k in HEAD_KEYS if k in data and is_module(data[k])),
                             None)
    if is_module(weights):
        inner = from_module(weights)
        found.state, found.head_module = inner.state, found.head_module or inner.head_module
        found.layout = layout or f"dict with a pickled model under {key!r}"
        add_metadata(found, module_dict(weights))
    else:
        found.state = clean_state(weights)
    return found


def add_metadata(found: Found, data: dict) -> Found:
    """Fill what `found` lacks (name, class map, names, preprocessing) from `data`."""
    found.stored_arch = found.stored_arch or stored_arch(data)
    if found.classes is None:
        found.classes, found.direction = class_map(data)
    found.labels = found.labels or embedded_names(data)
    found.preprocessing = found.preprocessing or stored_preprocessing(data)
    return found


def from_starter(data: dict) -> Found:
    """The Udacity starter project's save: vgg16 (no stored name) with a classifier of
    fc1/relu/fc2/output, its input, hidden and output sizes, class_to_idx."""
    return from_dict(data, Layout.UDACITY_STARTER)


def from_variant(data: dict) -> Found:
    """The common Udacity variant: arch, hidden_units, state_dict, class_to_idx (+ extras)."""
    return from_dict(data, Layout.UDACITY_VARIANT)


def is_starter(data: dict) -> bool:
    return "arch" not in data and STARTER_KEYS <= data.keys()


def is_variant(data: dict) -> bool:
    return VARIANT_KEYS <= data.keys()


def migration_for(obj) -> Callable[[Any], Found]:
    """The migration that reads `obj`: by its format key, its shape or its keys; any other dict
    is read by the names authors use (from_dict)."""
    if is_module(obj):
        return from_module
    if not isinstance(obj, dict):
        raise NotServable(f"it holds a {type(obj).__name__}, not a dict or a model")
    if obj.get("format") == Layout.PROJECT:
        return from_project
    if is_state_dict(obj):
        return from_state_dict
    if is_starter(obj):
        return from_starter
    if is_variant(obj):
        return from_variant
    return from_dict


def migrate(obj) -> Found:
    """The one entry point: a loaded checkpoint object -> Found."""
    return migration_for(obj)(obj)


# ---- the parts ------------------------------------------------------------------------------

def weights_entry(data: dict) -> tuple[str, object]:
    for key in WEIGHT_KEYS:
        value = data.get(key)
        if is_state_dict(value) or is_module(value):
            return key, value
    present = ", ".join(repr(k) for k in list(data)[:12])
    placeholder = next((f"{k!r} is {v!r}" for k, v in data.items()
                        if k in WEIGHT_KEYS and isinstance(v, Placeholder)), None)
    raise NotServable(placeholder or f"unrecognised checkpoint: no weights under any of "
                                     f"{', '.join(WEIGHT_KEYS)} (keys: {present})")


def stored_arch(data: dict) -> str | None:
    keys = lower_keys(data)
    for key in ARCH_KEYS:
        if isinstance(keys.get(key), str):
            return keys[key]
    hp = data.get("hp")
    if isinstance(hp, dict) and isinstance(hp.get("architecture"), str):
        return hp["architecture"]
    return None


def class_map(data: dict) -> tuple[dict[int, str] | None, str]:
    """(output index -> class id, how it was read) from whichever map the checkpoint has."""
    for key in CLASS_MAP_KEYS:
        value = data.get(key)
        if isinstance(value, (list, tuple)) and key == "classes" and value:
            return {i: str(c) for i, c in enumerate(value)}, "classes: a list, index -> class"
        if isinstance(value, dict) and value:
            return read_map(key, value)
        if isinstance(value, Placeholder):
            raise NotServable(f"its class map {key!r} is {value!r}")
    return None, "none stored"


def as_index(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\d+", value):
        return int(value)
    return None


def numbering(items) -> bool:
    """Distinct non-negative indices (a subset of 0..N-1 where a head has more outputs)."""
    indices = [as_index(v) for v in items]
    return None not in indices and len(set(indices)) == len(indices)


def ambiguous_is_inverse(key: str, keys: list, values: list) -> bool:
    """Both sides are numbers: the side that is exactly 0..N-1 is the index; then the side of
    Python ints (ImageFolder's indices are ints); then the key's name."""
    def exact(items) -> bool:
        return sorted(as_index(i) for i in items) == list(range(len(items)))

    if exact(keys) != exact(values):
        return exact(keys)
    value_ints = all(isinstance(v, int) for v in values)
    key_ints = all(isinstance(k, int) for k in keys)
    if value_ints != key_ints:
        return key_ints
    return key.startswith("idx")


def read_map(key: str, mapping: dict) -> tuple[dict[int, str], str]:
    """Detect the direction from the values: the side that numbers 0..N-1 is the index side;
    where both could be, ints beat digit strings, then the key's name decides."""
    keys, values = list(mapping), list(mapping.values())
    by_values, by_keys = numbering(values), numbering(keys)
    if by_values and by_keys:
        inverse = ambiguous_is_inverse(key, keys, values)
    elif by_values or by_keys:
        inverse = by_keys
    else:
        raise NotServable(f"its class map {key!r} is not a 0..N-1 numbering of outputs (e.g. "
                          f"{keys[0]!r}: {values[0]!r})")
    if inverse:
        return {as_index(k): str(v) for k, v in mapping.items()}, f"{key}: index -> class"
    return {as_index(v): str(k) for k, v in mapping.items()}, f"{key}: class -> index"


def embedded_names(data: dict) -> dict[str, str]:
    for key in NAMES_KEYS:
        value = data.get(key)
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return {str(k): v for k, v in value.items()}
    return {}


def stored_preprocessing(data: dict) -> Preprocessing | None:
    """This project's 'preprocessing' dict, or the shortest side / crop some authors store."""
    prep = data.get("preprocessing")
    if isinstance(prep, dict):
        return Preprocessing.from_dict(prep)
    keys = lower_keys(data)
    resize = next((keys[k] for k in ("resize", "shortest_side", "resize_size") if k in keys), None)
    crop = next((keys[k] for k in ("crop", "crop_size", "image_size") if k in keys), None)
    if isinstance(resize, int) and isinstance(crop, int):
        mean, std = keys.get("mean"), keys.get("std")
        extra = {"mean": tuple(mean), "std": tuple(std)} if mean and std else {}
        return Preprocessing(resize=resize, crop=crop, **extra)
    return None


def pickled_head(model) -> nn.Module | None:
    """The head of a whole pickled model, where its class records its structure."""
    modules = module_dict(model).get("_modules") or {}
    return next((modules[k] for k in HEAD_KEYS if isinstance(modules.get(k), nn.Module)), None)
