"""The response encoder: top-k per image in one batched topk, names from cat_to_name.json.
Checked against a plain per-row sort, and for the single-image and JSON-instances shapes.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from flower_classifier.model.checkpoint import Classifier
from flower_classifier.model.preprocess import Preprocessing
from flower_classifier.serving.encoder import encode, error_body, top_k


@pytest.fixture
def classifier() -> Classifier:
    classes = [str(i) for i in range(1, 11)]
    return Classifier(model=nn.Identity(), arch="test", classes=classes,
                      preprocessing=Preprocessing(), source_format="test",
                      labels={"3": "canterbury bells", "7": "moon orchid"})


def probabilities(rows: int, seed: int = 0) -> torch.Tensor:
    logits = torch.randn(rows, 10, generator=torch.Generator().manual_seed(seed))
    return torch.softmax(logits, dim=1)


def test_each_row_matches_a_plain_sort(classifier):
    probs = probabilities(5)
    rows = top_k(probs, 3, classifier)
    assert len(rows) == 5
    for row, row_probs in zip(rows, probs.tolist(), strict=True):
        expected = sorted(range(10), key=lambda i: -row_probs[i])[:3]
        assert [p["class"] for p in row] == [classifier.classes[i] for i in expected]
        assert [p["probability"] for p in row] == [row_probs[i] for i in expected]
        assert all(type(p["probability"]) is float for p in row)


def test_labels_come_from_names_and_fall_back_to_class_ids(classifier):
    probs = torch.zeros(1, 10)
    probs[0, 2], probs[0, 6], probs[0, 0] = 0.5, 0.3, 0.2  # classes "3", "7", "1"
    assert top_k(probs, 3, classifier) == [[
        {"class": "3", "label": "canterbury bells", "probability": 0.5},
        {"class": "7", "label": "moon orchid", "probability": pytest.approx(0.3)},
        {"class": "1", "label": "1", "probability": pytest.approx(0.2)}]]


def test_k_is_capped_by_the_class_count(classifier):
    assert len(top_k(probabilities(1), 50, classifier)[0]) == 10


def test_single_image_is_one_list_and_instances_are_one_list_each(classifier):
    probs = probabilities(2)
    single = json.loads(encode(probs[:1], 2, classifier, batched=False))
    batched = json.loads(encode(probs, 2, classifier, batched=True))
    assert single == {"predictions": top_k(probs[:1], 2, classifier)[0]}
    assert batched == {"predictions": top_k(probs, 2, classifier)}
    assert json.loads(error_body("bad image")) == {"error": "bad image"}
