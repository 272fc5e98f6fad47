"""Errors of the ImageNet evaluator: every message names the file and the fix."""
from __future__ import annotations


class ImageNetEvalError(ValueError):
    """Bad input to the ImageNet evaluator (samples, reference, weights); the message says how to fix it."""


class InputError(ImageNetEvalError):
    """A sample or reference image set cannot be read as uint8 RGB images."""


class ReferenceMismatchError(ImageNetEvalError):
    """Samples and reference (or a reference and this extractor) follow different protocols."""
