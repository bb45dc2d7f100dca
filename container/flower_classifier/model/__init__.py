"""The model layer: checkpoints and their formats, architectures, preprocessing and image
decoding, device, precision and the predictor that runs one model copy. Imports neither serving
nor training."""
