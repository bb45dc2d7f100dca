"""Every error this package raises on purpose, in one hierarchy; this module imports nothing of
the project. Messages say what was wrong and what is accepted; they never carry tracebacks.

ProjectError
├── ServingError            a request failed; `status` is the HTTP status it maps to
│   └── BadRequest, PayloadTooLarge, NotAcceptable, UnsupportedMediaType, ModelBusy, ...
├── InputError              input a person can fix: a command reports the message and exits 2
│   ├── ConfigError         an environment variable (environment.py)
│   ├── UsageError          a command-line option (training_args.py, the CLIs)
│   ├── ContractError       SageMaker's /opt/ml layout or hyperparameters (sagemaker_training.py)
│   ├── DataError           training data folders (data.py)
│   ├── WeightsError        backbone weights (weights.py) -> WeightsMismatch
│   └── ModelLoadError      a model directory that cannot be served -> UnsafeCheckpoint
├── UnknownArchitecture     a name no registry knows (architectures.py)
├── NotServable             a checkpoint part missing or not loaded (formats.py)
├── HeadError               a head this code cannot rebuild exactly (heads.py)
└── DeviceError             a GPU this torch cannot use (device.py)
"""
from __future__ import annotations


class ProjectError(Exception):
    """The root: anything this package raises on purpose, with a message for a person."""


class ServingError(ProjectError):
    """A request failed; `status` is the HTTP status the client gets, `str(e)` the message."""

    status = 500


class BadRequest(ServingError):
    status = 400


class PayloadTooLarge(ServingError):
    status = 413


class NotAcceptable(ServingError):
    status = 406


class UnsupportedMediaType(ServingError):
    status = 415


class ModelBusy(ServingError):
    status = 503


class InferenceFailed(ServingError):
    status = 500


class InputError(ProjectError):
    """Input a person can fix: settings, options, data or files. Commands exit 2 with it."""


class ConfigError(InputError, ValueError):
    """An environment variable holds a value the container cannot use."""


class UsageError(InputError, ValueError):
    """Bad command-line input (exit status 2)."""


class ContractError(InputError, ValueError):
    """The /opt/ml layout or hyperparameters are not usable."""


class DataError(InputError, ValueError):
    """The data folders are not in ImageFolder layout; the message says what to fix."""


class WeightsError(InputError, ValueError):
    """Backbone weights that cannot be had, read or used; the message says which and why."""


class WeightsMismatch(WeightsError):
    """A weights file whose tensors do not fit the backbone."""


class ModelLoadError(InputError):
    """The model directory cannot be served; the message says what was expected."""


class UnsafeCheckpoint(ModelLoadError):
    """A checkpoint that would import or call something outside the allow-list to load."""


class UnknownArchitecture(ProjectError, ValueError):
    """A name that is neither a torchvision classification model nor efficientnet_lite0."""


class NotServable(ProjectError, ValueError):
    """A part the checkpoint needs is missing or not loaded; the message says which."""


class HeadError(ProjectError, ValueError):
    """The head's weights do not make a head this code can rebuild exactly."""


class DeviceError(ProjectError):
    """A GPU is present but this torch cannot use it; the message names the fix."""
