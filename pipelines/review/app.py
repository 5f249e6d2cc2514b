"""Serving the FiftyOne App for a review dataset (local only by default)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.review.fields import RANKED_VIEW, ReviewError

if TYPE_CHECKING:
    import fiftyone as fo

logger = logging.getLogger(__name__)

# The review buttons (one per review tag) are a FiftyOne plugin shipped in this package.
APP_PLUGINS_DIR = Path(__file__).parent / "app_plugins"


def _load_review_buttons() -> None:
    """Point the App server (started after this) at the review plugin, unless the user
    chose a plugin directory of their own, which then has to hold a copy of it."""
    own = os.environ.get("FIFTYONE_PLUGINS_DIR")
    if own and Path(own).resolve() != APP_PLUGINS_DIR.resolve():
        logger.warning(
            "FIFTYONE_PLUGINS_DIR=%s: the review buttons load only if it holds a copy of %s",
            own,
            APP_PLUGINS_DIR / "ugains-review",
        )
        return
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(APP_PLUGINS_DIR)


def serve_app(dataset: fo.Dataset, host: str = "127.0.0.1", port: int = 5151) -> None:
    """Serve the FiftyOne App on ``host:port`` until interrupted (Ctrl-C or SIGTERM)."""
    import fiftyone.core.service as fos

    # FiftyOne would silently reuse whatever App answers on this port (maybe another
    # database's), so the port must be free.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ReviewError(f"cannot listen on {host}:{port}: {error}") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the App listens on %s: anyone who can reach it sees the dataset", host)
    _load_review_buttons()
    server = None
    try:
        # Starting waits until the server listens; an interrupt may arrive meanwhile. The
        # server's supervisor stops it when this process exits, even without stop().
        server = fos.ServerService(port, address=host, do_not_track=True)
        url = f"http://{host}:{port}/datasets/{dataset.slug}"
        if dataset.has_saved_view(RANKED_VIEW):
            url += f"?view={RANKED_VIEW}"  # the App's saved-view parameter (its slug)
        views = ", ".join(dataset.list_saved_views()) or "none"
        print(
            f"FiftyOne App for dataset {dataset.name!r}: {url}  (Ctrl-C to stop)\n"
            f"saved views (the App's view selector): {views}\n"
            f"review: select detections (or frames), then click confirmed, rejected or "
            f"relabel above the grid",
            flush=True,
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
