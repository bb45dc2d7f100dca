"""Turns a trained checkpoint (+ cat_to_name.json) into model.tar.gz for SageMaker, files at the
archive root, which SageMaker unpacks into /opt/ml/model. The checkpoint is inspected first.
"""
import argparse
import sys
import tarfile
from pathlib import Path

from ..errors import ModelLoadError, WeightsError
from ..model.checkpoint import (
    CATEGORY_NAMES,
    CHECKPOINT,
    read_category_names,
    resolve_checkpoint,
)
from ..model.inspection import inspect
from ..model.weights import fetch_weights_file


def inspected(checkpoint: Path, with_backbone_weights: bool):
    """inspect_checkpoint.py's report, and the backbone weights file to pack with a head-only
    checkpoint (fetched into the hub cache first if asked); refuses what will not serve."""
    report = inspect(checkpoint)
    weights = checkpoint.parent / report.backbone_file if report.backbone_file else None
    if weights is not None and not weights.is_file():
        weights = None
        if with_backbone_weights:
            try:
                weights = fetch_weights_file(report.found_arch)
            except WeightsError as error:
                raise ModelLoadError(str(error)) from None
            report = inspect(checkpoint)
    if report.backbone_file and weights is None and report.servable:
        print(f"package_model.py: note: the checkpoint holds only the head; an endpoint without "
              f"internet access needs {report.backbone_file}: pass --with-backbone-weights",
              file=sys.stderr)
    if not report.servable:
        print("\n".join(report.lines()), file=sys.stderr)
        raise ModelLoadError(f"{checkpoint} will not serve: {report.problem}")
    return report, weights


def package(checkpoint: Path, names: Path | None, output: Path,
            with_backbone_weights: bool = False) -> list[str]:
    """Check that the server can load `checkpoint`, then write the archive; returns its members."""
    report, weights = inspected(checkpoint, with_backbone_weights)
    classifier = report.classifier
    members = [(checkpoint, CHECKPOINT)]
    if weights is not None:
        members.append((weights, weights.name))
    if names is not None:
        labels = read_category_names(names)
        missing = [c for c in classifier.classes if c not in labels]
        if missing:
            raise ModelLoadError(f"{names} has no name for classes {missing[:10]}")
        members.append((names, CATEGORY_NAMES))
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(output, "w:gz") as archive:
        for path, arcname in members:
            archive.add(path, arcname=arcname)
    return [arcname for _, arcname in members]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(
        "Package checkpoint.pth (+ cat_to_name.json) as model.tar.gz for a SageMaker model "
        "(ModelDataUrl); upload it with: aws s3 cp model.tar.gz s3://BUCKET/PREFIX/"))
    parser.add_argument("model", help="checkpoint.pth, or a model directory holding it")
    parser.add_argument("--category_names", help=(
        f"cat_to_name.json to include (default: {CATEGORY_NAMES} next to the checkpoint)"))
    parser.add_argument("--output", "-o", default="model.tar.gz", help="archive to write")
    parser.add_argument("--with-backbone-weights", action="store_true", help=(
        "for a checkpoint that holds only the head: add torchvision's backbone weights file "
        "to the archive (downloaded, or from the torch hub cache)"))
    args = parser.parse_args(argv)
    try:
        checkpoint = resolve_checkpoint(args.model)
        names = (Path(args.category_names) if args.category_names
                 else checkpoint.parent / CATEGORY_NAMES)
        if args.category_names and not names.is_file():
            parser.error(f"--category_names {names} not found")
        members = package(checkpoint, names if names.is_file() else None, Path(args.output),
                          args.with_backbone_weights)
    except ModelLoadError as error:
        print(f"package_model.py: error: {error}", file=sys.stderr)
        return 2
    size = Path(args.output).stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB): {', '.join(members)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
