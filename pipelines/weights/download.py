"""One checkpoint download over HTTP(S) into a ``.part`` file, resumed with Range requests.

The download goes to ``<cache>/<name>/<file>.part`` and resumes with an HTTP Range request
after a broken connection, within one call and across calls; ``<file>.part.json`` keeps the
validators (ETag, Last-Modified) the partial bytes came with, sent back as If-Range.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines import __version__
from pipelines.weights.errors import DownloadError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TIMEOUT_S", "RESUME_ATTEMPTS"]

DEFAULT_TIMEOUT_S = 10.0  # connect (and per-read stall) timeout: offline fails fast
RESUME_ATTEMPTS = 3  # automatic resumes per call, only after a connection that made progress
_CHUNK = 1 << 20


class _Unreachable(Exception):
    """No connection to the server at all (offline, DNS, refused, timeout)."""


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    return int(match.group(1)) if match else None


def _content_range_total(value: str | None) -> int | None:
    """The complete length of a 416 answer's ``Content-Range: bytes */<length>``."""
    match = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None


def _download(url: str, part: Path, *, label: str, progress: bool, timeout: float) -> None:
    """Complete ``part`` with the bytes of ``url``, resuming what is already in it.

    ``part.json`` remembers the URL and the validators (ETag, Last-Modified) the partial bytes
    came with; a resume sends them as If-Range, so a server whose file changed sends it whole.
    """
    meta_path = part.with_name(part.name + ".json")
    for attempt in range(RESUME_ATTEMPTS + 1):
        meta: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            meta = json.loads(meta_path.read_text())
        offset = part.stat().st_size if part.exists() else 0
        if offset and meta.get("url", url) != url:
            offset = 0  # partial bytes of another URL: never splice them
        headers = {"User-Agent": f"ugains/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = meta.get("etag") or ""
            # If-Range needs a strong validator: a weak ETag ("W/...") could splice versions.
            validator = (etag if not etag.startswith("W/") else "") or meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            response = urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=timeout
            )
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:
                if _content_range_total(error.headers.get("Content-Range")) == offset:
                    # Every byte is already here (a run stopped before verifying it); the
                    # checksum check that follows still applies.
                    meta_path.unlink(missing_ok=True)
                    return
                # The partial file is not a prefix of what is served now: start over.
                part.unlink()
                continue
            raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            raise _Unreachable(getattr(error, "reason", error)) from error
        with response:
            if response.status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    raise DownloadError(
                        f"{url} answered a Range request for bytes {offset}- with "
                        f"Content-Range {response.headers.get('Content-Range')!r}"
                    )
            else:  # 200: the server ignored Range (or If-Range said the file changed)
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            meta = {
                "url": url,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
            meta_path.write_text(json.dumps(meta))
            broken: BaseException | None = None
            with (
                part.open("ab" if offset else "wb") as sink,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=label,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    while block := response.read(_CHUNK):
                        sink.write(block)
                        bar.update(len(block))
                except (http.client.HTTPException, OSError) as error:
                    broken = error
        received = part.stat().st_size
        if total is not None and received > total:
            part.unlink()
            raise DownloadError(f"{url} sent {received} bytes, more than announced ({total})")
        if broken is None and (total is None or received == total):
            meta_path.unlink(missing_ok=True)
            return
        # Broken off: resume right away only if this connection made progress, so a dead
        # server is not hammered.
        where = f"{received} of {total if total is not None else '?'} bytes"
        if received > offset and attempt < RESUME_ATTEMPTS:
            log.warning("download of %s broke off at %s; resuming", url, where)
            continue
        raise DownloadError(
            f"download of {url} broke off at {where} ({broken or 'connection closed'}); "
            f"run the same command again to resume from {part}"
        )
    raise DownloadError(f"{url} keeps refusing the range requested for {part}; delete it")
