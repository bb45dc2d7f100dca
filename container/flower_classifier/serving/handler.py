"""The request path, in one sitting: decode -> preprocess -> batch -> forward -> encode.
Decoding runs in the request's own thread, at most one per core at a time.
"""
from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import torch

from ..environment import Environment
from ..errors import ModelBusy
from ..model.checkpoint import Classifier
from ..model.images import decode_image
from ..model.preprocess import preprocess
from .batcher import Batcher
from .content_types import request_kind
from .decoder import decode_instances
from .encoder import encode

MAX_INSTANCES = 256


def stack(images: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack in numpy: torch's copy would start an OpenMP team in every request thread."""
    if len(images) == 1:
        return images[0][None]
    return torch.from_numpy(np.stack([image.numpy() for image in images]))


class Handler:
    """Holds the loaded model and answers /invocations bodies."""

    def __init__(self, classifier: Classifier, batcher: Batcher, env: Environment) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.env = env

    @property
    def num_classes(self) -> int:
        return len(self.classifier.classes)

    def invoke(self, body: bytes, content_type: str | None, k: int) -> bytes:
        kind = request_kind(content_type)
        limit = self.env.max_image_pixels
        with self.batcher.gate.decoding():
            if kind == "json":
                images = decode_instances(body, limit, MAX_INSTANCES)
            else:
                images = [decode_image(body, limit)]
            batch = stack([preprocess(image, self.classifier.preprocessing)
                           for image in images])
            future = self.batcher.submit(batch)  # queued before a waiting forward looks
        try:
            probs = future.result(timeout=self.env.timeout)
        except FutureTimeout:
            future.cancel()
            raise ModelBusy(f"no answer within MODEL_SERVER_TIMEOUT={self.env.timeout} s; "
                            "the server is overloaded, retry later") from None
        return encode(probs, k, self.classifier, batched=kind == "json")
