"""Loading every accepted checkpoint format, and refusing what cannot be rebuilt exactly.
The starter format is checked end to end: served probabilities equal torchvision's own model.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from PIL import Image

from conftest import CATEGORY_NAMES
from flower_classifier.model.checkpoint import (
    Classifier,
    ModelLoadError,
    classifier_from_checkpoint,
    load_classifier,
    read_checkpoint,
)
from flower_classifier.model.predictor import TOP1_TOLERANCE
from flower_classifier.model.preprocess import preprocess
from helpers.checkpoints import make_project_checkpoint, make_variant_checkpoint
from helpers.serving import ServerProcess


def reference_starter_model(checkpoint_path):
    """The starter's own rebuild: torchvision vgg16 + its classifier, exactly as predict.py did."""
    data = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = torchvision.models.vgg16()
    model.classifier = torch.nn.Sequential(OrderedDict([
        ("fc1", torch.nn.Linear(data["input_size"], data["fc2_size"])), ("relu", torch.nn.ReLU()),
        ("fc2", torch.nn.Linear(data["fc2_size"], data["output_size"])),
        ("output", torch.nn.LogSoftmax(dim=1))]))
    model.load_state_dict(data["state_dict"])
    T = torchvision.transforms
    transform = T.Compose([T.Resize(255), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return model.eval(), transform, {v: k for k, v in data["class_to_idx"].items()}


def torchvision_answers(model_dir, photos):
    model, transform, idx_to_class = reference_starter_model(model_dir / "checkpoint.pth")
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
        return torch.exp(model(batch)), idx_to_class


def test_served_seed_probabilities_equal_torchvision_forward(starter_model_dir, photos):
    expected, idx_to_class = torchvision_answers(starter_model_dir, photos[:4])
    with ServerProcess(starter_model_dir, {"INFERENCE_PRECISION": "fp32"}) as server:
        server.wait_ready()
        for path, probs in zip(photos, expected, strict=False):
            top = torch.topk(probs, 5)
            served = server.post(path.read_bytes(), "application/x-image").json()["predictions"]
            assert [p["class"] for p in served] == [idx_to_class[i] for i in top.indices.tolist()]
            for p, value in zip(served, top.values.tolist(), strict=True):
                assert p["probability"] == pytest.approx(value, abs=1e-4)


def test_served_seed_default_precision_keeps_torchvision_answers(starter_server, starter_model_dir,
                                                                 photos):
    # The default (auto: the fastest precision that keeps answers, chosen by the background
    # check) must keep fp32's top-1 within 0.02, before the check's switch and after it.
    expected, idx_to_class = torchvision_answers(starter_model_dir, photos)
    starter_server.wait_decided()
    for path, probs in zip(photos, expected, strict=True):
        served = starter_server.post(path.read_bytes(), "image/jpeg").json()["predictions"][0]
        assert served["class"] == idx_to_class[int(probs.argmax())]
        assert served["probability"] == pytest.approx(float(probs.max()), abs=TOP1_TOLERANCE)
    checked = starter_server.log.split("precision check on")[1].splitlines()[0]
    chosen = checked.rsplit("; serving ", 1)[1].split(" (")[0]
    assert f"{chosen} keeps answers" in checked, checked  # served only because it keeps them
    assert f"serving torch {chosen} from now on" in starter_server.log


def test_seed_checkpoint_loads_as_vgg16(starter_model_dir):
    classifier = load_classifier(starter_model_dir)
    assert classifier.arch == "vgg16" and classifier.source_format == "udacity-seed"
    assert len(classifier.classes) == 102 and classifier.label("1") == "pink primrose"


def test_udacity_variant_loads(tmp_path, photos):
    make_variant_checkpoint(tmp_path, CATEGORY_NAMES, arch="resnet18", hidden_units=32)
    classifier = load_classifier(tmp_path)
    assert classifier.arch == "resnet18" and classifier.source_format == "udacity-variant"
    probs = forward(classifier, photos[0])
    assert probs.shape == (102,) and abs(float(probs.sum()) - 1) < 1e-5


def forward(classifier: Classifier, path) -> torch.Tensor:
    with torch.no_grad():
        out = classifier.model(preprocess(Image.open(path), classifier.preprocessing)[None])
    return torch.softmax(out, dim=1)[0]


def test_gpu_saved_tensors_load_on_cpu(tmp_path):
    # A CUDA-saved checkpoint stores device tags; map_location='cpu' is what makes it load here.
    make_project_checkpoint(tmp_path, CATEGORY_NAMES, arch="resnet18")
    data = read_checkpoint(tmp_path / "checkpoint.pth")
    assert all(t.device.type == "cpu" for t in data["state_dict"].values())


def test_project_format_round_trips_extras(tmp_path):
    make_project_checkpoint(tmp_path, CATEGORY_NAMES, arch="resnet18", hidden_units=(64, 32))
    data = read_checkpoint(tmp_path / "checkpoint.pth")
    assert data["head"]["hidden_units"] == [64, 32] and data["epochs"] == 1
    classifier = classifier_from_checkpoint(data)
    assert [m.out_features for m in classifier.model.fc if hasattr(m, "out_features")] == \
        [64, 32, 102]


def mutate(tmp_path, source_dir, change):
    data = torch.load(source_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    change(data)
    return data


@pytest.mark.parametrize("change,words", [
    (lambda d: d.update(class_to_idx={"a": 0, "b": 0}), "0..N-1"),
    (lambda d: [d["state_dict"].pop(k) for k in list(d["state_dict"]) if k.startswith("fc.")],
     "no feed-forward head"),
    (lambda d: d["state_dict"].pop("fc.fc1.weight"), "does not fit resnet18"),
    (lambda d: d["state_dict"].pop("layer1.0.conv1.weight"),
     "do not match any torchvision architecture; closest is resnet18"),
    (lambda d: d["state_dict"].update({"fc.fc2.weight": torch.zeros(7, 64),
                                       "fc.fc2.bias": torch.zeros(7)}), "give 102 outputs"),
    (lambda d: d["state_dict"].update({"fc.fc2.weight": torch.zeros(7, 64)}), "bias for"),
    (lambda d: d.update(preprocessing={"resize": 10, "crop": 224, "mean": [0] * 3,
                                       "std": [1] * 3}), "preprocessing"),
    (lambda d: d.update(format_version=99), "newer"),
])
def test_inconsistent_checkpoints_are_refused(tmp_path, small_model_dir, change, words):
    data = mutate(tmp_path, small_model_dir, change)
    with pytest.raises(ModelLoadError, match=words):
        classifier_from_checkpoint(data)


def test_stored_name_only_breaks_ties_and_missing_labels_serve_indices(small_model_dir):
    # The weights say resnet18 whatever the name says; without a class map, indices serve.
    data = read_checkpoint(small_model_dir / "checkpoint.pth")
    data.update(arch="alexnet9000")
    data.pop("class_to_idx")
    classifier = classifier_from_checkpoint(data)
    assert classifier.arch == "resnet18" and classifier.classes == [str(i) for i in range(102)]


def test_not_a_dict_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "checkpoint.pth")
    with pytest.raises(ModelLoadError, match="state_dict"):
        read_checkpoint(tmp_path / "checkpoint.pth")
