"""Benchmark: top-1/top-5 accuracy of a model directory on an ImageFolder.
Thin CLI: the logic lives in flower_classifier/cli/evaluate.py (`pip install .` first).
"""
import sys

from flower_classifier.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
