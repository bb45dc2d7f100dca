# Test-only access to the real torchvision/timm Python sources, used as the reference
# that our plain-torch architectures must match. The product never imports this.
"""Import torchvision's and timm's pure-Python code without torchvision's C extension.

Why this exists: the CPU torch build we ship (2.13.0) is paired on PyPI with a CUDA build
of torchvision (0.28.0) whose C extension cannot load, so ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist`` and timm (which imports
torchvision) fails too. The product therefore defines its models in plain torch. The tests
still need torchvision's and timm's model definitions as the reference for state_dict
compatibility, so this module registers an empty ``torchvision`` package pointing at the
installed sources, which skips the package ``__init__`` that loads the extension.
Test-only; never used by the product.
"""

import importlib
import importlib.util
import pathlib
import sys
import types


def import_reference() -> tuple[types.ModuleType, types.ModuleType]:
    """Return (torchvision, timm) with their model code importable; needs both installed."""
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or spec.origin is None:
            raise ImportError("torchvision is not installed; see tests/requirements-reference.txt")
        pkg = types.ModuleType("torchvision")
        pkg.__path__ = [str(pathlib.Path(spec.origin).parent)]
        sys.modules["torchvision"] = pkg
    torchvision = sys.modules["torchvision"]
    importlib.import_module("torchvision.models")
    importlib.import_module("torchvision.transforms")
    timm = importlib.import_module("timm")
    return torchvision, timm
