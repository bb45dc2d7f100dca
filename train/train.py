"""Train a flower classifier head on a frozen pretrained backbone (the Udacity project's train.py).
Thin CLI: the logic lives in container/flower_serving/training.py, which the image also runs.
"""
import sys
from pathlib import Path

# Make the repo's container/ (the flower_serving package) importable from a plain checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from flower_serving.training import main

if __name__ == "__main__":
    sys.exit(main())
