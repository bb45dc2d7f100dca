"""Predict the flower in a photo with a trained checkpoint (the Udacity project's predict.py).
Thin CLI: the logic lives in flower_classifier/cli/predict.py (`pip install .` first).
"""
import sys

from flower_classifier.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
