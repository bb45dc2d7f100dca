"""The synthetic model directories the tests write (flower_classifier.harness.checkpoints,
re-exported here, the same functions the benchmarks use)."""
from flower_classifier.harness.checkpoints import (
    class_to_idx,
    make_project_checkpoint,
    make_starter_checkpoint,
    make_variant_checkpoint,
)

__all__ = ["class_to_idx", "make_project_checkpoint", "make_starter_checkpoint",
           "make_variant_checkpoint"]
