"""Every layout of tests/helpers/checkpoint_corpus.py served end to end: the top-5 classes and their
probabilities equal its author's own torchvision loader's, on the sample flower photos.
"""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import photo_batch
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.predictor import Predictor
from helpers.checkpoint_corpus import FORMATS, NAMES, backbone_file, resnet_head_only_ref
from helpers.serving import ServerProcess

BY_NAME = {f.name: f for f in FORMATS}
SERVED = ["densenet_named", "mobilenet_v3_whole", "resnet_head_only"]  # through `serve`


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """$TORCH_HOME with torchvision's resnet18 weights file (random values), as an image that
    baked in the backbone weights has it."""
    root = tmp_path_factory.mktemp("torch_home")
    backbone_file(root)
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Model directories, each written once per session, on first use."""
    made = {}

    def folder(name: str):
        if name not in made:
            made[name] = tmp_path_factory.mktemp(name)
            BY_NAME[name].save(made[name])
        return made[name]
    return folder


def reference(name: str, folder, cache):
    fmt = BY_NAME[name]
    return resnet_head_only_ref(folder, cache) if fmt.reference is None else fmt.reference(folder)


def expected_top5(ref, photos) -> list[list[tuple[str, float]]]:
    with torch.no_grad():
        batch = torch.stack([ref.transform(Image.open(p).convert("RGB")) for p in photos])
        probs = ref.probabilities(ref.model(batch))
    top = torch.topk(probs, 5)
    return [[(ref.idx_to_class[i], v) for i, v in zip(idx, val, strict=True)]
            for idx, val in zip(top.indices.tolist(), top.values.tolist(), strict=True)]


def assert_same(served: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [c for c, _ in served] == [c for c, _ in expected]
    for (_, got), (_, want) in zip(served, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_the_corpus_covers_18_formats_in_real_torchvision_architectures():
    assert len(FORMATS) >= 18 and len({f.name for f in FORMATS}) == len(FORMATS)
    assert {f.arch for f in FORMATS} >= {"resnet18", "densenet121", "alexnet", "squeezenet1_1",
                                         "mobilenet_v2", "efficientnet_b0", "inception_v3"}


@pytest.mark.parametrize("name", [f.name for f in FORMATS])
def test_each_format_serves_its_authors_answers(name, corpus, hub_cache, photos, monkeypatch,
                                                caplog):
    monkeypatch.setenv("TORCH_HOME", str(hub_cache))
    folder = corpus(name)
    caplog.set_level("INFO", logger="flower_classifier")
    classifier = load_classifier(folder)
    assert classifier.arch == BY_NAME[name].arch
    assert "found from the weights" in caplog.text or "only the head" in caplog.text
    chosen = photos[:3]
    predictor = Predictor(classifier, torch.device("cpu"), "fp32")
    probs = predictor.answers(photo_batch(chosen, classifier.preprocessing))
    top = torch.topk(probs, 5)
    served = [[(classifier.classes[i], v) for i, v in zip(idx, val, strict=True)]
              for idx, val in zip(top.indices.tolist(), top.values.tolist(), strict=True)]
    for got, want in zip(served, expected_top5(reference(name, folder, hub_cache), chosen),
                         strict=True):
        assert_same(got, want)


def test_labels_embedded_or_missing(corpus, hub_cache, monkeypatch):
    classifier = load_classifier(corpus("resnet_stored_preprocessing"))
    assert classifier.label("1") == NAMES["1"]
    assert (classifier.preprocessing.resize, classifier.preprocessing.crop) == (300, 256)
    bare = load_classifier(corpus("squeezenet_bare"))
    assert bare.classes == [str(i) for i in range(102)] and not bare.labels
    assert load_classifier(corpus("inception_aux")).preprocessing.crop == 299


@pytest.mark.parametrize("name", SERVED)
def test_served_by_a_real_serve_process(name, corpus, hub_cache, photos):
    folder = corpus(name)
    expected = expected_top5(reference(name, folder, hub_cache), photos[:3])
    env = {"INFERENCE_PRECISION": "fp32", "TORCH_HOME": str(hub_cache)}
    with ServerProcess(folder, env) as server:
        server.wait_ready()
        for path, want in zip(photos[:3], expected, strict=True):
            got = server.post(path.read_bytes(), "image/jpeg").json()["predictions"]
            assert_same([(p["class"], p["probability"]) for p in got], want)
        log = server.log
    assert "Traceback" not in log
    assert "found from the weights" in log or "only the head" in log
