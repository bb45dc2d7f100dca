"""Train a flower classifier head on a frozen pretrained backbone (the Udacity project's train.py).
Thin CLI: the logic lives in flower_classifier/training/trainer.py (`pip install .` first),
which the image also runs.
"""
import sys

from flower_classifier.training.trainer import main

if __name__ == "__main__":
    sys.exit(main())
