"""Training a head (or fine-tuning) on a frozen backbone: train.py, and SageMaker's `train`.
Imports the model layer, never serving."""
