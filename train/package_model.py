"""Turns a trained checkpoint (+ cat_to_name.json) into model.tar.gz for SageMaker.
Thin CLI: the logic lives in flower_classifier/cli/package_model.py (`pip install .` first).
"""
import sys

from flower_classifier.cli.package_model import main

if __name__ == "__main__":
    sys.exit(main())
