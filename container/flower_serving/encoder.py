# Turns class probabilities into the JSON response: top-k {class, label, probability}, descending.
# A single image gives {"predictions": [...]}; JSON instances give one list per instance, in order.
from __future__ import annotations

import json

import torch

from .checkpoint import Classifier


def top_k(probs: torch.Tensor, k: int, classifier: Classifier) -> list[dict]:
    """One image's probabilities -> its k most likely classes, most likely first."""
    values, indices = torch.topk(probs, min(k, probs.numel()))
    pairs = zip(values.tolist(), indices.tolist(), strict=True)
    return [{"class": classifier.classes[i], "label": classifier.label(classifier.classes[i]),
             "probability": float(p)} for p, i in pairs]


def encode(probs: torch.Tensor, k: int, classifier: Classifier, batched: bool) -> bytes:
    """n x classes probabilities -> response body."""
    rows = [top_k(row, k, classifier) for row in probs]
    return json.dumps({"predictions": rows if batched else rows[0]}).encode("utf-8")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")
