# Proves the plain-torch backbones equal torchvision's/timm's: same state_dict, same eval output.
# Also covers the registry metadata, attach_head, freeze_features and the unknown-arch error.

import pytest
import torch
from torch import nn

from flower_serving.architectures import (
    ARCHITECTURES,
    attach_head,
    build_backbone,
    freeze_features,
    get_arch,
)
from reference import import_reference

torchvision, timm = import_reference()


def reference_model(name: str) -> nn.Module:
    if name == "efficientnet_lite0":
        return timm.create_model("efficientnet_lite0")
    return getattr(torchvision.models, name)()


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine terms, so that BN placement and eps matter."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_matches_reference(name: str) -> None:
    torch.manual_seed(0)
    ref, ours = reference_model(name), build_backbone(name)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert [(k, v.shape) for k, v in our_sd.items()] == [(k, v.shape) for k, v in ref_sd.items()]

    randomise_batch_norm(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ours.eval()
    x = torch.randn(1, 3, 128, 128)  # adaptive pooling makes any size valid; 128 saves time
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (1, 1000)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()

    # The registry's head size fits: a new head on top of the features runs.
    arch = ARCHITECTURES[name]
    attach_head(ours, name, nn.Sequential(nn.Linear(arch.in_features, 7), nn.LogSoftmax(dim=1)))
    with torch.no_grad():
        assert ours(x).shape == (1, 7)


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "efficientnet_lite0"])
def test_weights_url_and_normalisation_match_torchvision(name: str) -> None:
    # IMAGENET1K_V1 is what torchvision's legacy `pretrained=True` loads.
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    arch = ARCHITECTURES[name]
    assert arch.weights_url == weights.url
    preset = weights.transforms()
    assert (tuple(preset.mean), tuple(preset.std)) == (arch.mean, arch.std)


def test_lite0_metadata() -> None:
    arch = ARCHITECTURES["efficientnet_lite0"]
    assert (arch.weights_url, arch.mean, arch.std) == (None, (0.5,) * 3, (0.5,) * 3)
    assert (arch.head_attr, arch.in_features) == ("classifier", 1280)


def test_attach_head_replaces_whole_vgg_classifier() -> None:
    model = build_backbone("vgg11")
    head = nn.Sequential(nn.Linear(25088, 512), nn.ReLU(), nn.Linear(512, 102))
    assert attach_head(model, "vgg11", head) is model
    assert model.classifier is head
    assert not any(k.startswith("classifier.6") for k in model.state_dict())


def test_freeze_features_leaves_only_head_trainable() -> None:
    model = attach_head(build_backbone("resnet18"), "resnet18", nn.Linear(512, 102))
    freeze_features(model, "resnet18")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_unknown_architecture_lists_supported_names() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'") as info:
        build_backbone("alexnet")
    assert all(name in str(info.value) for name in ARCHITECTURES)
    with pytest.raises(ValueError):
        get_arch("VGG16")
