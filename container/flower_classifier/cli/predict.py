"""predict.py's logic: one image + a checkpoint -> the top-k flowers, as a table, JSON or a PNG.
Same loader, decoder, preprocess(), forward and encoder as the server, so answers match exactly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import ModelLoadError, ServingError, UsageError
from ..model.checkpoint import (
    CATEGORY_NAMES,
    Classifier,
    classifier_from_checkpoint,
    read_category_names,
    read_checkpoint,
    resolve_checkpoint,
)
from ..model.images import decode_image
from ..model.predictor import Predictor
from ..model.preprocess import preprocess, to_rgb
from ..serving.encoder import top_k
from ..training.arguments import choose_device

NO_PIXEL_LIMIT = 1 << 62


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=(
        "Predict the flower in an image with a checkpoint written by train.py (or the Udacity "
        "starter's format): prints the top-k flower names with their probabilities."))
    p.add_argument("image", help="path to a JPEG/PNG/... image")
    p.add_argument("checkpoint", help="checkpoint.pth, or a model directory holding it")
    p.add_argument("--top_k", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--category_names", help=(
        f"JSON mapping class ids to flower names (default: {CATEGORY_NAMES} next to the "
        f"checkpoint, if present)"))
    p.add_argument("--gpu", action="store_true", help="run on CUDA (an error if unavailable)")
    p.add_argument("--json", action="store_true",
                   help="print exactly the JSON the endpoint returns for this image")
    p.add_argument("--plot", metavar="PNG", help="also write the image and a top-k bar chart")
    return p


def load(checkpoint: str, category_names: str | None) -> Classifier:
    path = resolve_checkpoint(checkpoint)
    classifier = classifier_from_checkpoint(read_checkpoint(path))
    names = Path(category_names) if category_names else path.parent / CATEGORY_NAMES
    if category_names and not names.is_file():
        raise UsageError(f"--category_names {names} not found")
    classifier.labels = read_category_names(names)
    return classifier


def predict(image_path: str, classifier: Classifier, k: int, device: torch.device) -> list[dict]:
    """Top-k [{class, label, probability}] for one image file, as the server computes it."""
    path = Path(image_path)
    if not path.is_file():
        raise UsageError(f"image {path} not found")
    image = decode_image(path.read_bytes(), NO_PIXEL_LIMIT, str(path))
    batch = preprocess(image, classifier.preprocessing)[None]
    probs = Predictor(classifier, device, "fp32").forward(batch)
    return top_k(probs, k, classifier)[0]


def table(predictions: list[dict]) -> str:
    width = max([len("flower")] + [len(p["label"]) for p in predictions])
    lines = [f"{'rank':>4}  {'flower':<{width}}  {'class':>5}  {'probability':>11}"]
    lines += [f"{rank:>4}  {p['label']:<{width}}  {p['class']:>5}  {100 * p['probability']:>10.2f}%"
              for rank, p in enumerate(predictions, start=1)]
    return "\n".join(lines)


def plot(image_path: str, predictions: list[dict], out: str) -> None:
    """The starter notebook's sanity check: the photo above a horizontal bar chart of the top-k."""
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(5, 8))
    photo_ax, bar_ax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    with Image.open(image_path) as image:
        photo = to_rgb(image)
        photo.thumbnail((512, 512))
        photo_ax.imshow(photo)
    photo_ax.set_title(predictions[0]["label"])
    photo_ax.axis("off")
    labels = [p["label"] for p in predictions][::-1]
    bar_ax.barh(labels, [p["probability"] for p in predictions][::-1], color="tab:blue")
    bar_ax.set_xlabel("probability")
    bar_ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        print("predict.py: error: --top_k must be at least 1", file=sys.stderr)
        return 2
    try:
        device = choose_device(args.gpu)
        classifier = load(args.checkpoint, args.category_names)
        predictions = predict(args.image, classifier, args.top_k, device)
    except (UsageError, ModelLoadError, ServingError, OSError) as error:
        print(f"predict.py: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"predictions": predictions}))
    else:
        print(table(predictions))
    if args.plot:
        plot(args.image, predictions, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0
