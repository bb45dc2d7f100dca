"""One real train -> save -> load -> forward round trip for a small model of every torchvision
family (and Lite0): train.py on tiny photos, the server's loader, the predictor in fp32.

Every family trains with train.py and loads and answers as the server serves it.
"""

import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from flower_classifier.model.architectures import list_architectures
from flower_classifier.model.checkpoint import load_classifier, read_checkpoint
from flower_classifier.model.predictor import Predictor
from flower_classifier.model.preprocess import preprocess
from flower_classifier.training.trainer import main

# The smallest of each family in torchvision's registry, plus timm's Lite0.
FAMILIES = ["alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s",
            "efficientnet_lite0", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5",
            "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf",
            "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_1", "swin_t",
            "swin_v2_t", "vgg11", "vgg11_bn", "vit_b_32", "wide_resnet50_2"]
COLOURS = {"1": (220, 40, 40), "2": (40, 200, 60), "3": (40, 60, 220)}


def family(name: str) -> str:
    return re.match(r"[a-z]+", name).group()


def test_every_family_is_covered() -> None:
    assert {family(n) for n in list_architectures()} == {family(n) for n in FAMILIES}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flowers")
    for split, count in (("train", 2), ("valid", 1)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (96 + 8 * i, 80), rgb).save(root / split / name / f"{i}.jpg")
    return root


@pytest.mark.parametrize("arch", FAMILIES)
def test_train_save_load_and_answer(arch: str, data: Path, tmp_path: Path) -> None:
    assert main([str(data), "--save_dir", str(tmp_path), "--arch", arch, "--weights", "none",
                 "--epochs", "1", "--hidden_units", "16", "--batch_size", "6",
                 "--num_workers", "0", "--no_augment"]) == 0
    saved = read_checkpoint(tmp_path / "checkpoint.pth")
    classifier = load_classifier(tmp_path)
    assert classifier.arch == arch and classifier.classes == ["1", "2", "3"]
    assert saved["head"]["path"] == classifier.head_path
    spec = classifier.preprocessing
    batch = torch.stack([preprocess(Image.open(p), spec)
                         for p in sorted((data / "valid").glob("*/*.jpg"))])
    probs = Predictor(classifier, torch.device("cpu"), "fp32").answers(batch)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-4)

