"""The one file lock of the project: an exclusive ``flock`` on a lock file.

``flock`` locks belong to the open file, so they also exclude other threads of the same
process that open the file themselves, and the kernel drops them when the holder dies,
however it dies: a crashed process never leaves a stale lock. Lock files are never deleted
(removing one while another process waits on it would split the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from typing import IO

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike[str],
    *,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[IO[str]]:
    """Hold an exclusive lock on ``path`` (created with its folder) for the block.

    Args:
        wait: block until the lock is free; ``False`` raises :class:`BlockingIOError` at once
            when another holder has it.
        on_wait: called once before blocking (e.g. to log who is being waited for).

    Yields:
        The lock file, open for reading and writing (a holder may note itself in it).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
