"""Prints what a checkpoint holds and whether the server will serve it.
Thin CLI: the logic lives in flower_classifier/cli/inspect_checkpoint.py (`pip install .` first).
"""
import sys

from flower_classifier.cli.inspect_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
