"""Benchmark: top-1/top-5 accuracy (and most-confused pairs) of a model directory on an ImageFolder,
through the server's loader, preprocess() and forward (--served: its warm-up's precision too).
"""
import argparse
import os
import sys
import time
from collections import Counter

import torch

from ..model.accuracy import top_hits
from ..model.checkpoint import load_classifier
from ..model.predictor import Predictor
from ..training.arguments import choose_device
from ..training.data import ClassFolders


def served_model(model_dir: str):
    """(classifier, predictor) exactly as a serving worker has them once its precision check
    is done: server.load_model with this process's environment (INFERENCE_PRECISION, default
    auto), so the check on the calibration photos picks the precision."""
    from ..environment import MODEL_DIR, Environment
    from ..serving.server import configure_logging, load_model

    configure_logging("warning")
    classifier, predictor = load_model(Environment.from_env({**os.environ, MODEL_DIR: model_dir}))
    predictor.decide()  # what a worker runs once /ping answers (PRECISION_CHECK=background)
    return classifier, predictor


def evaluate(model_dir: str, data_dir: str, batch_size: int = 32, num_workers: int = 2,
             gpu: bool = False, per_class: int = 0, served: bool = False) -> dict:
    """{'top1', 'top5', 'count', 'seconds', 'precision', 'confusions'} of the model on every
    image under data_dir/<class>/; confusions: Counter of (true class, predicted class)."""
    started = time.perf_counter()
    if served:
        classifier, predictor = served_model(model_dir)
    else:
        classifier = load_classifier(model_dir)
        predictor = Predictor(classifier, choose_device(gpu), "fp32")
    class_to_idx = {name: i for i, name in enumerate(classifier.classes)}
    dataset = ClassFolders(data_dir, classifier.preprocessing, False, class_to_idx)
    samples = dataset.samples
    if per_class:  # the first N images of each class, for a quick check
        counts: Counter[int] = Counter()
        kept = []
        for path, target in samples:
            if counts[target] < per_class:
                kept.append((path, target))
                counts[target] += 1
        dataset.samples = samples = kept
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers)
    top1 = top5 = 0
    confusions: Counter[tuple[str, str]] = Counter()
    for images, targets in loader:
        top, hits = top_hits(predictor.forward(images), targets)
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(1).sum())
        for truth, guess in zip(targets.tolist(), top[:, 0].tolist(), strict=True):
            if truth != guess:
                confusions[classifier.classes[truth], classifier.classes[guess]] += 1
    count = len(samples)
    return {"top1": top1 / count, "top5": top5 / count, "count": count,
            "seconds": time.perf_counter() - started, "precision": predictor.precision,
            "confusions": confusions, "labels": classifier.labels}


def confused_pairs(confusions: Counter, labels: dict[str, str], n: int) -> list[str]:
    """The n pairs of classes mistaken for each other most often (both directions added)."""
    pairs: Counter[tuple[str, str]] = Counter()
    for (truth, guess), times in confusions.items():
        pairs[tuple(sorted((truth, guess)))] += times
    lines = []
    for (a, b), times in pairs.most_common(n):
        name_a, name_b = labels.get(a, a), labels.get(b, b)
        lines.append(f"{times}x  {name_a} ({a}) <-> {name_b} ({b}): {confusions[a, b]} "
                     f"{name_a} taken for {name_b}, {confusions[b, a]} the other way")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(
        "Top-1/top-5 accuracy of MODEL_DIR on the ImageFolder DATA_DIR (e.g. flowers/valid)."))
    parser.add_argument("model_dir", help="folder with checkpoint.pth (+ cat_to_name.json)")
    parser.add_argument("data_dir", help="ImageFolder: DATA_DIR/<class id>/*.jpg")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--per_class", type=int, default=0, help="use only N images per class")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--served", action="store_true", help=(
        "load and warm up the model as the server does (server.load_model): the precision is "
        "INFERENCE_PRECISION's (default auto: on a CPU int8 is tried and kept only if it keeps "
        "fp32's answers on the calibration photos)"))
    parser.add_argument("--confusions", type=int, default=0, metavar="N",
                        help="also list the N pairs of classes confused most often")
    args = parser.parse_args(argv)
    result = evaluate(args.model_dir, args.data_dir, args.batch_size, args.num_workers,
                      args.gpu, args.per_class, args.served)
    print(f"top-1 {100 * result['top1']:.1f}%  top-5 {100 * result['top5']:.1f}%  "
          f"images {result['count']}  precision {result['precision']}  "
          f"seconds {result['seconds']:.1f}")
    for line in confused_pairs(result["confusions"], result["labels"], args.confusions):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
