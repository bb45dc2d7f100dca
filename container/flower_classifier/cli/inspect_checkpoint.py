"""Prints what a checkpoint holds and whether the server will serve it; --convert writes it in
this project's own format (a plain state_dict plus metadata, loadable with weights_only=True).
"""
import argparse
import sys

from ..errors import ModelLoadError
from ..model.inspection import convert, inspect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(
        "Show a checkpoint's keys, its stored and found architecture, head, class map and "
        "preprocessing, and whether the endpoint will serve it. Nothing in the file is run."))
    parser.add_argument("path", help="a checkpoint file, or a model directory holding one")
    parser.add_argument("--convert", metavar="OUT_DIR", help=(
        "write OUT_DIR/checkpoint.pth in this project's format (plus cat_to_name.json when "
        "the checkpoint embeds the names), checked to give the same answers"))
    args = parser.parse_args(argv)
    try:
        return report_and_convert(args.path, args.convert)
    except ModelLoadError as error:
        print(f"inspect_checkpoint.py: error: {error}", file=sys.stderr)
        return 2


def report_and_convert(path: str, out_dir: str | None) -> int:
    """Print the report; 1 if the checkpoint will not serve, else convert it if asked; 0."""
    report = inspect(path)
    print("\n".join(report.lines()))
    if not report.servable:
        return 1
    if out_dir:
        target = convert(report, out_dir)
        print(f"converted:       {target} (this project's format; loads with weights_only=True)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
