"""The one file lock: exclusive between holders (threads included), released however they end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipelines.locks import file_lock


def test_a_second_holder_is_refused_at_once_or_waits_and_is_told(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    waited: list[str] = []
    order: list[str] = []
    with file_lock(path) as handle:
        handle.write("me")
        with pytest.raises(BlockingIOError), file_lock(path, wait=False):
            pass

        def second() -> None:
            with file_lock(path, on_wait=lambda: waited.append("waiting")):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive()  # blocked behind the first holder
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]
    assert waited == ["waiting"]
    with file_lock(path, wait=False):  # free again
        pass
    assert path.read_text() == "me"  # lock files stay
