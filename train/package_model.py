# Turns a trained checkpoint (+ cat_to_name.json) into model.tar.gz for SageMaker, files at the
# archive root, which SageMaker unpacks into /opt/ml/model. The checkpoint is loaded first.
import argparse
import sys
import tarfile
from pathlib import Path

# Make the repo's container/ (the flower_serving package) importable from a plain checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from flower_serving.checkpoint import (  # noqa: E402
    CATEGORY_NAMES,
    CHECKPOINT,
    classifier_from_checkpoint,
    read_category_names,
    read_checkpoint,
)
from flower_serving.errors import ModelLoadError  # noqa: E402


def package(checkpoint: Path, names: Path | None, output: Path) -> list[str]:
    """Check that the server can load `checkpoint`, then write the archive; returns its members."""
    classifier = classifier_from_checkpoint(read_checkpoint(checkpoint))
    members = [(checkpoint, CHECKPOINT)]
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
    args = parser.parse_args(argv)
    checkpoint = Path(args.model)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT
    names = Path(args.category_names) if args.category_names else checkpoint.parent / CATEGORY_NAMES
    if args.category_names and not names.is_file():
        parser.error(f"--category_names {names} not found")
    try:
        members = package(checkpoint, names if names.is_file() else None, Path(args.output))
    except ModelLoadError as error:
        print(f"package_model.py: error: {error}", file=sys.stderr)
        return 2
    size = Path(args.output).stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB): {', '.join(members)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
