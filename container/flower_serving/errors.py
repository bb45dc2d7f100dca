"""One error hierarchy for the server: each class carries the HTTP status it maps to.
Messages say what was wrong and what is accepted; they never carry tracebacks or internals.
"""
from __future__ import annotations


class ServingError(Exception):
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


class ModelLoadError(Exception):
    """The model directory cannot be served; the message says what was expected."""


class UnsafeCheckpoint(ModelLoadError):
    """A checkpoint that would import or call something outside the allow-list to load."""


class WeightsError(ValueError):
    """Backbone weights that cannot be had, read or used; the message says which and why."""


class WeightsMismatch(WeightsError):
    """A weights file whose tensors do not fit the backbone."""


class DeviceError(Exception):
    """A GPU is present but this torch cannot use it; the message names the fix."""
