"""Turns class probabilities into the JSON response: top-k {class, label, probability}, descending.
A single image gives {"predictions": [...]}; JSON instances give one list per instance, in order.
"""
from __future__ import annotations

import json

import torch

from ..model.checkpoint import Classifier


def top_k(probs: torch.Tensor, k: int, classifier: Classifier) -> list[list[dict]]:
    """n x classes probabilities -> each image's k most likely classes, most likely first.
    One topk for the batch, then plain Python lists: no per-row tensor work."""
    values, indices = torch.topk(probs, min(k, probs.shape[-1]), dim=-1)
    return [[{"class": classifier.classes[i], "label": classifier.label(classifier.classes[i]),
              "probability": p} for p, i in zip(row_values, row_indices, strict=True)]
            for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)]


def encode(probs: torch.Tensor, k: int, classifier: Classifier, batched: bool) -> bytes:
    """n x classes probabilities -> response body."""
    rows = top_k(probs, k, classifier)
    return json.dumps({"predictions": rows if batched else rows[0]}).encode("utf-8")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")
