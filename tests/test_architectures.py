"""Tests architectures.py over torchvision's whole classification registry: each model is built
(on the meta device), its head slot found and a new head placed there, its preprocessing read.

Every listed architecture: build, head slot, head placement, preprocessing, unknown names.
"""

import pytest
import torch
import torchvision
from torch import nn

from flower_classifier.model.architectures import (
    LITE0,
    HeadSlot,
    UnknownArchitecture,
    attach_head,
    build_backbone,
    check_architecture,
    head_slot,
    list_architectures,
    preprocessing_for,
    skipped_init,
)
from flower_classifier.model.checkpoint import build_head, placed_head

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
# regnet's builder computes its widths with tensors, which the meta device cannot read back:
# those are built for real, the smallest of each kind (the rule is the same for the family).
REAL_BUILD = {"regnet_x_400mf", "regnet_y_400mf"}
META = [n for n in list_architectures() if not n.startswith("regnet")]
# Where each family keeps its classifier, as torchvision defines it (the expected answers).
EXPECTED_SLOT = {
    "alexnet": "classifier", "convnext_tiny": "classifier.2", "densenet121": "classifier",
    "efficientnet_b0": "classifier", "efficientnet_v2_s": "classifier", "googlenet": "fc",
    "inception_v3": "fc", "maxvit_t": "classifier.5", "mnasnet1_0": "classifier",
    "mobilenet_v2": "classifier", "mobilenet_v3_small": "classifier", "regnet_y_400mf": "fc",
    "resnet50": "fc", "resnext50_32x4d": "fc", "shufflenet_v2_x1_0": "fc",
    "squeezenet1_1": "classifier", "swin_t": "head", "swin_v2_t": "head", "vgg16": "classifier",
    "vgg16_bn": "classifier", "vit_b_16": "heads.head", "wide_resnet50_2": "fc",
    LITE0: "classifier",
}


def built(name: str) -> nn.Module:
    if name in REAL_BUILD:
        return build_backbone(name).to("meta")
    with torch.device("meta"):
        return build_backbone(name)


def test_the_list_is_torchvisions_registry_plus_lite0() -> None:
    assert set(list_architectures()) == {*TORCHVISION, LITE0}
    assert len(TORCHVISION) >= 80  # every classification model torchvision 0.29 has


@pytest.mark.parametrize("name", [*META, *sorted(REAL_BUILD)])
def test_every_architecture_takes_a_new_head(name: str) -> None:
    model = built(name)
    slot = head_slot(model)
    old = model.get_submodule(slot.path)
    assert any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in old.modules())
    spec = preprocessing_for(name)
    head = build_head([slot.in_features, 16, 102])
    with torch.device("meta"):
        attach_head(model, slot, placed_head(slot, head.to("meta")))
        out = model.eval()(torch.empty(2, 3, spec.crop, spec.crop, device="meta"))
    assert tuple(out.shape) == (2, 102)  # the head took the slot's input, the model its output
    assert model.get_submodule(slot.path + ".fc1").in_features == slot.in_features


@pytest.mark.parametrize("name", sorted(EXPECTED_SLOT))
def test_head_slots_are_where_each_family_keeps_its_classifier(name: str) -> None:
    assert head_slot(built(name)).path == EXPECTED_SLOT[name]


def test_vgg16_slot_is_the_whole_classifier_as_the_seed_replaces_it() -> None:
    assert head_slot(built("vgg16")) == HeadSlot("classifier", 25088, pooled=False)
    assert head_slot(built("squeezenet1_1")) == HeadSlot("classifier", 512, pooled=True)


@pytest.mark.parametrize("name", [n for n in list_architectures() if n != LITE0])
def test_preprocessing_is_the_weights_own(name: str) -> None:
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    spec = preprocessing_for(name)
    assert (spec.resize, spec.crop) == (preset.resize_size[0], preset.crop_size[0])
    assert spec.mean == tuple(preset.mean) and spec.std == tuple(preset.std)
    assert spec.interpolation == preset.interpolation.value


def test_inception_is_299_and_lite0_has_its_own_normalisation() -> None:
    assert preprocessing_for("inception_v3").crop == 299
    lite0 = preprocessing_for(LITE0)
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.crop == 224


def test_random_builds_have_the_pretrained_configuration() -> None:
    # vit_h_14's only weights are for 518-px inputs; without them it must still take 518 px
    assert built("vit_h_14").image_size == 518
    assert built("inception_v3").AuxLogits is None and built("googlenet").aux1 is None


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownArchitecture) as info:
        check_architecture("vgg")
    assert "unknown architecture 'vgg'" in str(info.value)
    assert all(name in str(info.value) for name in ("vgg16", "convnext_tiny", LITE0))
    with pytest.raises(UnknownArchitecture):
        build_backbone("VGG16")


def test_skipped_init_turns_torch_initialisers_off_only_inside():
    """Loading builds the backbone inside skipped_init() (every tensor is then copied from the
    checkpoint, all or nothing): no random draw, and torch.nn.init is itself again after, even
    when the block raises."""
    original = nn.init.kaiming_uniform_
    weight = torch.zeros(4, 4)
    with skipped_init():
        assert nn.init.kaiming_uniform_(weight) is weight and not weight.any()
        nn.init.normal_(weight)
        assert not weight.any()
        layer = nn.Linear(3, 2)  # reset_parameters() runs and draws nothing
    assert nn.init.kaiming_uniform_ is original
    nn.init.normal_(weight)
    assert weight.any()
    with pytest.raises(RuntimeError), skipped_init():
        raise RuntimeError("a failed build")
    assert nn.init.kaiming_uniform_ is original and layer.weight.shape == (2, 3)
