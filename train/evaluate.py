# Benchmark: top-1/top-5 accuracy of a model directory on an ImageFolder (e.g. flowers/valid),
# through the server's loader, preprocess() and forward. Usage: evaluate.py MODEL_DIR DATA_DIR.
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

# Make the repo's container/ (the flower_serving package) importable from a plain checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from flower_serving.checkpoint import load_classifier  # noqa: E402
from flower_serving.data import ClassFolders  # noqa: E402
from flower_serving.predictor import Predictor  # noqa: E402
from flower_serving.training_args import choose_device  # noqa: E402


def evaluate(model_dir: str, data_dir: str, batch_size: int = 32, num_workers: int = 2,
             gpu: bool = False, per_class: int = 0) -> dict:
    """{'top1', 'top5', 'count', 'seconds'} of the model on every image under data_dir/<class>/."""
    started = time.perf_counter()
    classifier = load_classifier(model_dir)
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
    predictor = Predictor(classifier, choose_device(gpu), "fp32")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers)
    top1 = top5 = 0
    for images, targets in loader:
        top = predictor.forward(images).topk(min(5, len(classifier.classes)), dim=1).indices
        hits = top == targets[:, None]
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(1).sum())
    count = len(samples)
    return {"top1": top1 / count, "top5": top5 / count, "count": count,
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(
        "Top-1/top-5 accuracy of MODEL_DIR on the ImageFolder DATA_DIR (e.g. flowers/valid)."))
    parser.add_argument("model_dir", help="folder with checkpoint.pth (+ cat_to_name.json)")
    parser.add_argument("data_dir", help="ImageFolder: DATA_DIR/<class id>/*.jpg")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--per_class", type=int, default=0, help="use only N images per class")
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    result = evaluate(args.model_dir, args.data_dir, args.batch_size, args.num_workers,
                      args.gpu, args.per_class)
    print(f"top-1 {100 * result['top1']:.1f}%  top-5 {100 * result['top5']:.1f}%  "
          f"images {result['count']}  seconds {result['seconds']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
