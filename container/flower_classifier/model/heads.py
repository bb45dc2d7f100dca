"""Rebuilds a checkpoint's head from its weights: a pickled head's own structure where it has
one, torchvision's classifier with its last layer replaced, or the course's MLP convention.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import HeadError

# layers a pickled head may record, rebuilt fresh from their hyperparameters (never reused)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Tanh,
               nn.Sigmoid, nn.Hardswish, nn.Identity, nn.Flatten, nn.AdaptiveAvgPool2d)



@dataclass
class Head:
    module: nn.Module  # weights loaded
    layout: str  # how it was rebuilt, for logs and inspect_checkpoint
    outputs: int


class SelectOutputs(nn.Module):
    """Keeps the outputs that have a class: a 1000-way head trained on 102 classes."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__()
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.indices)


def groups(state: dict) -> OrderedDict[str, dict[str, torch.Tensor]]:
    """{layer name: {tensor name: tensor}} in the state dict's order (the modules' order)."""
    out: OrderedDict[str, dict] = OrderedDict()
    for key, tensor in state.items():
        layer, _, name = key.rpartition(".")
        if name != "num_batches_tracked":
            out.setdefault(layer, {})[name] = tensor
    return out


def layer_for(name: str, tensors: dict) -> nn.Module:
    """The layer a group of tensors belongs to, from their names and shapes."""
    weight = tensors.get("weight")
    if weight is None:
        raise HeadError(f"layer '{name}' has no weight ({', '.join(tensors)})")
    bias = tensors.get("bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise HeadError(f"layer '{name}' has a weight for {weight.shape[0]} outputs and a bias "
                        f"for {tuple(bias.shape)}")
    if weight.dim() == 2:
        return nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in tensors)
    if weight.dim() == 4:
        return nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                         bias="bias" in tensors)
    if weight.dim() == 1 and "running_mean" in tensors:
        return nn.BatchNorm1d(weight.shape[0])
    if weight.dim() == 1 and set(tensors) == {"weight"}:
        return nn.PReLU(weight.shape[0])
    raise HeadError(f"layer '{name}' has tensors {sorted(tensors)} of shapes "
                    f"{[tuple(t.shape) for t in tensors.values()]}: not a layer of a head")


def width_after(layer: nn.Module, width: int) -> int:
    """The feature width after `layer`, checking it takes `width` features."""
    takes = getattr(layer, "in_features", None) or getattr(layer, "in_channels", None) or (
        getattr(layer, "num_features", None))
    if isinstance(layer, nn.PReLU):
        takes = width if layer.num_parameters == 1 else layer.num_parameters
    if takes != width:
        raise HeadError(f"{type(layer).__name__} takes {takes} features where {width} arrive")
    return getattr(layer, "out_features", None) or getattr(layer, "out_channels", None) or width


def chain(found: OrderedDict, width: int) -> list[tuple[str, nn.Module]]:
    """The layers in the order their widths connect: the stored order, or where that does not
    connect (a module that registered `output` first), the order the shapes dictate."""
    layers = [(name, layer_for(name, t)) for name, t in found.items()]
    try:
        _check(layers, width)
        return layers
    except HeadError:
        pass
    ordered, left = [], list(layers)
    while left:
        nxt = next((p for p in left if _fits(p[1], width)), None)
        if nxt is None:
            _check(layers, width)  # raises the stored order's mismatch
        ordered.append(nxt)
        left.remove(nxt)
        width = width_after(nxt[1], width)
    return ordered


def _fits(layer: nn.Module, width: int) -> bool:
    try:
        width_after(layer, width)
        return True
    except HeadError:
        return False


def _check(layers, width: int) -> int:
    for _, layer in layers:
        width = width_after(layer, width)
    return width


def convention(state: dict, width: int) -> tuple[nn.Sequential, dict[str, str]]:
    """The course's head from its weights alone: the layers in order, ReLU after every
    weighted layer but the last unless a PReLU or BatchNorm follows (then ReLU after that),
    dropout left out (inactive in eval), no final activation (softmax is applied once, when
    serving: the same probabilities as LogSoftmax or raw logits). Returns the head and
    {stored layer name: its name in the head}."""
    layers = chain(groups(state), width)
    out: OrderedDict[str, nn.Module] = OrderedDict()
    names = {}
    weighted = [n for n, m in layers if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, (name, layer) in enumerate(layers):
        new = name.replace(".", "_") or "linear"
        out[new] = layer
        names[name] = new
        follows = layers[i + 1][1] if i + 1 < len(layers) else None
        needs_relu = name in weighted[:-1] and not isinstance(follows, (nn.PReLU, nn.BatchNorm1d))
        after_norm = isinstance(layer, nn.BatchNorm1d) and not isinstance(follows, nn.PReLU) and (
            follows is not None)
        if needs_relu or after_norm:
            out[f"{new}_relu"] = nn.ReLU()
    return nn.Sequential(out), names


def load_renamed(module: nn.Module, state: dict, names: dict[str, str]) -> None:
    """Load `state` (stored names) into `module` (new names), every tensor accounted for."""
    renamed = {}
    for key, tensor in state.items():
        layer, _, leaf = key.rpartition(".")
        renamed[f"{names[layer]}.{leaf}" if names[layer] else leaf] = tensor
    try:
        module.load_state_dict(renamed, strict=True)
    except RuntimeError as error:
        raise HeadError(" ".join(str(error).split())[:300]) from None


def from_convention(state: dict, width: int) -> Head:
    head, names = convention(state, width)
    load_renamed(head, state, names)
    return Head(head, "rebuilt from its weights: " + describe(head), _check(
        [(n, m) for n, m in head.named_children() if not isinstance(m, nn.ReLU)], width))


def fresh(layer: nn.Module) -> nn.Module:
    """A new layer like a pickled one, from its hyperparameters only."""
    if isinstance(layer, nn.Sequential):
        return nn.Sequential(OrderedDict((n, fresh(m)) for n, m in layer.named_children()))
    if isinstance(layer, (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.PReLU)):
        return layer_for("", dict(layer.named_parameters(recurse=False)) | dict(
            layer.named_buffers(recurse=False)))
    if isinstance(layer, (nn.Softmax, nn.LogSoftmax)):
        return nn.LogSoftmax(dim=layer.dim)  # a final Softmax: serving applies softmax once
    if isinstance(layer, nn.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, ACTIVATIONS):
        return type(layer)()
    raise HeadError(f"the pickled head holds a {type(layer).__name__}")


def from_record(module: nn.Module, state: dict, width: int) -> Head:
    """A pickled head (nn.Sequential of known layers): its own structure, these weights."""
    head = fresh(module)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise HeadError(" ".join(str(error).split())[:300]) from None
    weighted = [(n, m) for n, m in head.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm1d))]
    return Head(head, "its pickled structure: " + describe(head), _check(weighted, width))


def last_weighted(module: nn.Module) -> str | None:
    names = [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return names[-1] if names else None


def from_kept(slot_module: nn.Module, state: dict) -> Head | None:
    """torchvision's own classifier with only its last layer replaced (vgg16's classifier.6 as
    a Sequential: 'classifier.6.0.weight'; squeezenet's classifier.1 with 102 outputs)."""
    last = last_weighted(slot_module)
    own = groups(slot_module.state_dict())
    if not last or "." in last or not isinstance(slot_module, nn.Sequential):
        return None
    found = groups(state)
    kept = {n: t for n, t in found.items() if n != last and not n.startswith(last + ".")}
    if set(kept) != set(own) - {last} or any(
            {k: v.shape for k, v in t.items()} != {k: v.shape for k, v in own[n].items()}
            for n, t in kept.items()):
        return None
    layer = slot_module.get_submodule(last)
    width = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    inner = {k[len(last) + 1:]: v for k, v in state.items() if k.partition(".")[0] == last}
    if set(inner) <= {"weight", "bias"}:
        new = layer_for(last, inner)
        _check([(last, new)], width)
        new.load_state_dict(inner)
        outputs = new.out_features if isinstance(new, nn.Linear) else new.out_channels
    else:
        built = from_convention(inner, width)
        new, outputs = built.module, built.outputs
    slot_module._modules[last] = new
    slot_module.load_state_dict(
        {**{k: v for k, v in state.items() if k.partition(".")[0] != last},
         **{f"{last}.{k}": v for k, v in new.state_dict().items()}}, strict=True)
    return Head(slot_module, f"torchvision's classifier, layer {last} replaced: "
                             + describe(slot_module), outputs)


def describe(module: nn.Module) -> str:
    """'Linear(25088, 512) -> ReLU -> Linear(512, 102) -> LogSoftmax'"""
    parts = []
    for _, m in module.named_modules():
        if next(m.children(), None) is not None:
            continue
        if isinstance(m, nn.Linear):
            parts.append(f"Linear({m.in_features}, {m.out_features})")
        elif isinstance(m, nn.Conv2d):
            parts.append(f"Conv2d({m.in_channels}, {m.out_channels})")
        else:
            parts.append(type(m).__name__)
    return " -> ".join(parts)


def select_outputs(head: Head, indices: list[int]) -> Head:
    """Append SelectOutputs where the head has outputs no class uses."""
    if indices == list(range(head.outputs)):
        return head
    module = nn.Sequential(OrderedDict(head=head.module, select=SelectOutputs(indices)))
    return Head(module, f"{head.layout}; serving {len(indices)} of its {head.outputs} outputs "
                        f"(those with a class)", len(indices))
