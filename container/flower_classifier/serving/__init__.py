"""The HTTP server SageMaker runs (`serve`): app -> handler -> decoder -> batcher -> encoder.
Imports the model layer and settings, never training."""
