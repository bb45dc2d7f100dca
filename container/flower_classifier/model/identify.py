"""Names the torchvision architecture a state dict was saved from, by its layer names and shapes;
the name the checkpoint stores only breaks ties. Candidates are built on the meta device.
"""
from __future__ import annotations

import functools
import logging
import re
import warnings
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from .architectures import (
    LITE0,
    HeadSlot,
    build_backbone,
    head_slot,
    list_architectures,
    skipped_init,
)

log = logging.getLogger("flower_classifier")
# auxiliary classifiers that training may have kept and serving never uses
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")
# authors' short names: the family they mean, when a name must be resolved without weights
ALIASES = {"vgg": "vgg16", "densenet": "densenet121", "resnet": "resnet50", "alexnet": "alexnet",
           "resnext": "resnext50_32x4d", "inception": "inception_v3", "squeezenet": "squeezenet1_1",
           "mobilenet": "mobilenet_v2", "efficientnet": "efficientnet_b0", "googlenet": "googlenet"}


@dataclass(frozen=True)
class Signature:
    """What identifies an architecture: its backbone tensors' shapes and its head slot."""

    arch: str
    body: dict  # key -> shape, head slot and auxiliary classifiers excluded
    slot: HeadSlot


@dataclass(frozen=True)
class Identified:
    arch: str
    slot: HeadSlot
    head_only: bool  # the state dict holds the head alone
    note: str  # stored vs found, for the log and inspect_checkpoint


def counted(key: str) -> bool:
    return not key.endswith("num_batches_tracked") and not key.startswith(AUX_PREFIXES)


def body_of(state: dict, slot: HeadSlot) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()
            if counted(k) and not k.startswith(slot.prefix)}


def canonical_name(stored: str | None) -> str | None:
    """A stored name as a registry name ('VGG-16' -> 'vgg16', 'vgg' -> 'vgg16'), or None."""
    if not stored:
        return None
    name = re.sub(r"[\s-]", "", str(stored).lower())
    if name in list_architectures():
        return name
    return ALIASES.get(name) or next((a for a in list_architectures()
                                      if a.replace("_", "") == name.replace("_", "")), None)


class MetaParameters(TorchFunctionMode):
    """Allocates what modules allocate (empty/zeros/ones/full) on the meta device and leaves
    other tensor ops on the CPU: regnets compute their widths with tensors that must be real."""

    FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _build(arch: str) -> torch.nn.Module:
    """The architecture without memory for its weights: on the meta device, or (regnets,
    which cannot be built there) with only their parameters on it."""
    with warnings.catch_warnings(), skipped_init():  # shapes only: no weights to initialise
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                return build_backbone(arch)
        except NotImplementedError:
            with MetaParameters():
                return build_backbone(arch)


@functools.cache
def signature(arch: str) -> Signature:
    model = _build(arch)
    slot = head_slot(model)
    return Signature(arch, body_of(model.state_dict(), slot), slot)


@functools.cache
def families() -> dict[str, tuple[str, ...]]:
    """Architectures grouped by the torchvision module that defines them (timm's Lite0 alone);
    families that are slow to build (regnet, Lite0) come last."""
    from torchvision.models import get_model_builder

    groups: dict[str, list[str]] = {}
    for arch in list_architectures():
        family = "timm" if arch == LITE0 else get_model_builder(arch).__module__
        groups.setdefault(family, []).append(arch)
    slow = ("timm", "torchvision.models.regnet")
    return {f: tuple(groups[f]) for f in sorted(groups, key=lambda f: (f in slow, f))}


def representative(family: str) -> str:
    return min(families()[family], key=lambda a: (len(a), a))


def top_names(keys) -> set[str]:
    return {k.split(".")[0] for k in keys}


def plausible(family: str, body: dict) -> bool:
    """Whether the family's layer names cover the state dict's top-level names."""
    rep = signature(representative(family))
    return bool(body) and top_names(body) <= top_names(rep.body) | {rep.slot.path.split(".")[0]}


def matches(state: dict) -> list[Signature]:
    """Every architecture whose backbone has exactly the state dict's tensors and shapes."""
    found = []
    for family, members in families().items():
        if found and family in ("timm", "torchvision.models.regnet"):
            break  # the slow families are tried only when nothing else fits
        if not plausible(family, body_of(state, signature(representative(family)).slot)):
            continue
        found += [s for a in members if body_of(state, (s := signature(a)).slot) == s.body]
    return found


def closest(state: dict) -> tuple[str, list[str], list[str]]:
    """(arch, missing keys, unexpected keys) of the nearest candidate, for error messages."""
    best = None
    for family in families():
        rep = signature(representative(family))
        if family in ("timm", "torchvision.models.regnet") or not (
                top_names(body_of(state, rep.slot)) & top_names(rep.body)):
            continue
        for arch in families()[family]:
            sig = signature(arch)
            given = body_of(state, sig.slot)
            missing = [k for k in sig.body if given.get(k) != sig.body[k]]
            extra = [k for k in given if k not in sig.body]
            score = len(missing) + len(extra)
            if best is None or score < best[0]:
                best = (score, arch, missing, extra)
    return best[1:] if best else ("none", [], sorted(state)[:3])


def head_keys_only(state: dict) -> bool:
    """A state dict that holds no backbone: all its tensors sit under one top-level name that
    some architecture uses for its head ('fc', 'classifier', 'heads')."""
    tops = top_names(k for k in state if counted(k))
    return len(tops) == 1 and tops <= {"fc", "classifier", "heads", "head"}


def identify(state: dict, stored: str | None) -> Identified:
    """The architecture `state` was saved from. Raises ValueError with what was closest."""
    wanted = canonical_name(stored)
    if head_keys_only(state):
        return _identify_head_only(state, stored, wanted)
    found = matches(state)
    if not found:
        arch, missing, extra = closest(state)
        raise ValueError(f"its layers do not match any torchvision architecture; closest is "
                         f"{arch}, with {len(missing)} tensors missing or of another shape "
                         f"({', '.join(missing[:3])}) and {len(extra)} unexpected "
                         f"({', '.join(extra[:3])})")
    chosen = next((s for s in found if s.arch == wanted), found[0])
    tie = f"; also fits {', '.join(s.arch for s in found if s is not chosen)}" if (
        len(found) > 1) else ""
    note = f"architecture stored: {stored!r}; found from the weights: {chosen.arch}{tie}"
    if stored is not None and wanted != chosen.arch:
        note += " (the stored name is not what the weights are)"
    return Identified(chosen.arch, chosen.slot, False, note)


def _identify_head_only(state: dict, stored: str | None, wanted: str | None) -> Identified:
    """A head alone does not show its backbone: the stored name must, and the head must fit."""
    if wanted is None:
        raise ValueError(f"it holds only a head (no backbone weights) and names no "
                         f"architecture it was trained on (stored: {stored!r})")
    slot = signature(wanted).slot
    if not any(k.startswith(slot.prefix) for k in state):
        raise ValueError(f"it holds only a head, which does not sit where {wanted} keeps its "
                         f"classifier ('{slot.path}')")
    return Identified(wanted, slot, True, f"architecture stored: {stored!r}; the weights hold "
                                          f"only the head, so the stored name is used: {wanted}")
