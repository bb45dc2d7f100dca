# The request path, in one sitting: decode -> preprocess -> batch -> forward -> encode.
# Decoding runs in the request's own thread, one per core, taking turns with CPU forwards.
from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout

import torch

from .batcher import Batcher
from .checkpoint import Classifier
from .content_types import request_kind
from .decoder import decode_image, decode_instances
from .encoder import encode
from .environment import Environment
from .errors import ModelBusy
from .preprocess import preprocess

MAX_INSTANCES = 256


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
            batch = torch.stack([preprocess(image, self.classifier.preprocessing)
                                 for image in images])
            future = self.batcher.submit(batch)  # queued before a waiting forward looks
        try:
            probs = future.result(timeout=self.env.timeout)
        except FutureTimeout:
            future.cancel()
            raise ModelBusy(f"no answer within MODEL_SERVER_TIMEOUT={self.env.timeout} s; "
                            "the server is overloaded, retry later") from None
        return encode(probs, k, self.classifier, batched=kind == "json")
