"""Predict the flower in a photo with a trained checkpoint (the Udacity project's predict.py).
Thin CLI: the logic lives in container/flower_serving/prediction.py, shared with the server.
"""
import sys
from pathlib import Path

# Make the repo's container/ (the flower_serving package) importable from a plain checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))

from flower_serving.prediction import main

if __name__ == "__main__":
    sys.exit(main())
