"""The flower classifier, as served by the SageMaker image and trained by train.py.

Layers, lowest first (tests/test_layers.py checks them):

* errors, environment: the error hierarchy and the container's settings; no other project imports
  (environment imports only errors);
* model/: checkpoints, architectures, preprocessing and image decoding, device, precision, the
  predictor; imports neither serving nor training;
* serving/: the HTTP server (`serve`): app -> handler -> decoder -> batcher -> encoder;
  never imports training;
* training/: train.py and SageMaker's `train`; never imports serving;
* cli/: command lines (predict.py); may import any layer but harness;
* harness/: the tests' and benchmarks' local `serve` process and synthetic checkpoints; may
  import any layer, and none imports it.
"""
