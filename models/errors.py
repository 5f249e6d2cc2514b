"""Errors shared by the model builders and the checkpoint converters."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint does not fit the model it is loaded into, or cannot be read safely.

    The message names the offending keys (missing, unexpected, wrong shape) or the file.
    """
