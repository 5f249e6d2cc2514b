"""The errors of ``ugains weights``: each message says what to do."""

from __future__ import annotations

__all__ = ["ChecksumError", "DownloadError", "WeightsError"]


class WeightsError(RuntimeError):
    """A checkpoint that cannot be fetched or used; the message says what to do."""


class DownloadError(WeightsError):
    """The server could not be reached, refused the file, or the transfer broke off."""


class ChecksumError(WeightsError):
    """A downloaded or hand-placed file whose SHA-256 is not the expected one."""
