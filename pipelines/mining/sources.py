"""Frame references: which frames a mining run reads, each under a stable key.

The launcher plans the sources once (:func:`plan_sources`): it lists image files, counts the
frames of each video and reads manifests, through Beam's ``FileSystems`` so ``gs://`` and
``s3://`` paths work when the matching Beam extra is installed. Planning on the launcher lets a
rerun skip frames already in the ledger before any worker starts, and lets it say "nothing
new" without launching a job. Workers then decode the planned :class:`ReadUnit` s.

Frame keys are ``"<log_id>/<frame index:06d>"``: the frame's index in its video, or its
position among the log's images sorted by path (manifests: sorted by timestamp, then URI).
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import math
import os
import posixpath
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from pipelines.config import ImageSource, ManifestSource, Source, VideoSource
from pipelines.elements import (
    FrameFailure,
    FrameRef,
    ReadUnit,
    split_video_uri,
    video_frame_uri,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Plan",
    "SourceError",
    "frame_key",
    "local_copy",
    "plan_sources",
    "write_plan",
]

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(ValueError):
    """A source of the config cannot be planned; the message names it (``sources.1``)."""


def write_plan(units: Sequence[ReadUnit], path: str) -> None:
    """Write ``units`` as JSON lines to ``path`` (local or FileSystems URI).

    A run reads its frames from this file instead of carrying them in the job graph, which
    would outgrow a runner's job-size limit on large logs (Dataflow: 10 MB).
    """
    with FileSystems.create(path, mime_type="application/jsonl") as handle:
        for unit in units:
            handle.write(unit.to_json().encode() + b"\n")


@dataclass
class Plan:
    """The planned work of a run: units to decode and frames that already failed to read."""

    units: list[ReadUnit] = field(default_factory=list)
    failures: list[FrameFailure] = field(default_factory=list)
    skipped: int = 0  # frames left out because the ledger has them

    @property
    def num_frames(self) -> int:
        return sum(len(unit.refs) for unit in self.units) + len(self.failures)


def frame_key(log_id: str, frame_index: int) -> str:
    """The stable key of a frame."""
    return f"{log_id}/{frame_index:06d}"


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path holding ``uri``'s bytes (OpenCV reads videos from local paths only)."""
    if _is_local(uri):
        yield uri
        return
    suffix = posixpath.splitext(uri)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with FileSystems.open(uri) as remote:
            shutil.copyfileobj(remote, tmp)
        tmp.flush()
        yield tmp.name


def plan_sources(
    sources: Sequence[Source],
    *,
    skip_uris: Container[str] = frozenset(),
    video_run_length: int = 16,
) -> Plan:
    """List every frame of ``sources``, leaving out URIs in ``skip_uris`` (the ledger).

    Raises:
        SourceError: a source matches nothing or cannot be listed (no filesystem for its
            scheme, no access), or two frames would get the same key; the message names the
            source by its position in the config (``sources.1``). Unreadable videos and bad
            manifest rows are not errors here: they are :class:`FrameFailure` s of the plan.
    """
    plan = Plan()
    keys: dict[str, str] = {}
    for position, source in enumerate(sources):
        where = f"sources.{position} ({source.path})"
        try:
            refs, failures = _plan_source(source, where)
        except SourceError:
            raise
        except (OSError, ValueError) as error:  # no filesystem for the scheme, no access...
            raise SourceError(f"{where}: cannot be listed: {error}") from error
        for ref in [*refs, *(failure.ref for failure in failures)]:
            if ref.key in keys:
                raise SourceError(
                    f"{where}: frame key {ref.key!r} of {ref.uri} is also the key of "
                    f"{keys[ref.key]}; give the sources distinct log_id values"
                )
            keys[ref.key] = ref.uri
        fresh = [ref for ref in refs if ref.uri not in skip_uris]
        fresh_failures = [f for f in failures if f.ref.uri not in skip_uris]
        plan.skipped += len(refs) - len(fresh) + len(failures) - len(fresh_failures)
        plan.units.extend(_units(fresh, video_run_length))
        plan.failures.extend(fresh_failures)
    return plan


def _plan_source(source: Source, where: str) -> tuple[list[FrameRef], list[FrameFailure]]:
    if isinstance(source, ImageSource):
        return _image_refs(source, where), []
    if isinstance(source, VideoSource):
        return _video_refs(source, where)
    if isinstance(source, ManifestSource):
        return _manifest_refs(source, where)
    raise SourceError(f"{where}: unsupported source kind {source.kind!r}")  # pragma: no cover


def _units(refs: list[FrameRef], run_length: int) -> Iterator[ReadUnit]:
    """Images one per unit; video frames in runs of consecutive planned frames."""
    run: list[FrameRef] = []
    for ref in refs:
        if ref.video_uri is None:
            yield ReadUnit((ref,))
            continue
        if run and (run[-1].video_uri != ref.video_uri or len(run) >= run_length):
            yield ReadUnit(tuple(run))
            run = []
        run.append(ref)
    if run:
        yield ReadUnit(tuple(run))


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _match(pattern: str) -> list[str]:
    """Matching paths, sorted; local ones absolute so frame URIs name files unambiguously."""
    if _is_local(pattern):
        pattern = os.path.abspath(pattern)
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(meta.path for meta in results)


def _image_paths(path: str) -> list[str]:
    if _GLOB_CHARS.search(path):
        return _match(path)
    is_local = _is_local(path)
    if (is_local and os.path.isdir(path)) or (not is_local and not FileSystems.exists(path)):
        pattern = FileSystems.join(path.rstrip("/"), "*")
        return [p for p in _match(pattern) if p.lower().endswith(IMAGE_EXTENSIONS)]
    return _match(path)


def _folder_name(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path.replace(os.sep, "/"))) or "log"


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.replace(os.sep, "/")))[0]


def _image_refs(source: ImageSource, where: str) -> list[FrameRef]:
    paths = _image_paths(source.path)
    if not paths:
        raise SourceError(f"{where}: no image files match")
    by_log: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_log[source.log_id or _folder_name(path)].append(path)
    return [
        FrameRef(key=frame_key(log_id, index), uri=path, log_id=log_id, frame_index=index)
        for log_id, log_paths in sorted(by_log.items())
        for index, path in enumerate(sorted(log_paths))
    ]


def _video_refs(source: VideoSource, where: str) -> tuple[list[FrameRef], list[FrameFailure]]:
    paths = _match(source.path)
    if not paths:
        raise SourceError(f"{where}: no video files match")
    if source.log_id and len(paths) > 1:
        raise SourceError(
            f"{where}: log_id {source.log_id!r} given but {len(paths)} videos match; "
            "their frame keys would collide (leave log_id unset to use each file's name)"
        )
    refs: list[FrameRef] = []
    failures: list[FrameFailure] = []
    for path in paths:
        log_id = source.log_id or _stem(path)
        try:
            count, fps = video_frame_count(path)
        except (OSError, ValueError) as error:
            # The whole video is one unreadable input: one error row under its first key.
            ref = FrameRef(frame_key(log_id, source.start), path, log_id, source.start)
            failures.append(FrameFailure(ref, "read", type(error).__name__, str(error)))
            _LOG.warning("%s: cannot read video %s: %s", where, path, error)
            continue
        end = count if source.end is None else min(count, source.end)
        indices = range(source.start, end, source.stride)
        if source.max_frames is not None:
            indices = indices[: source.max_frames]
        for index in indices:
            refs.append(
                FrameRef(
                    key=frame_key(log_id, index),
                    uri=video_frame_uri(path, index),
                    log_id=log_id,
                    frame_index=index,
                    timestamp=index / fps if fps > 0 else None,
                    video_uri=path,
                    video_frame=index,
                )
            )
    return refs, failures


def video_frame_count(uri: str) -> tuple[int, float]:
    """``(frames, fps)`` of a video. Counts by reading when the container does not say.

    Raises:
        ValueError: OpenCV cannot open the file or it has no frames.
    """
    import cv2

    with local_copy(uri) as path:
        if os.path.getsize(path) == 0:
            raise ValueError(f"video {uri} is empty (0 bytes)")
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise ValueError(f"video {uri} cannot be opened (corrupt, truncated or no codec)")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if count <= 0:
                count = 0
                while capture.grab():
                    count += 1
        finally:
            capture.release()
    if count == 0:
        raise ValueError(f"video {uri} has no decodable frames")
    return count, fps


def _manifest_refs(source: ManifestSource, where: str) -> tuple[list[FrameRef], list[FrameFailure]]:
    """Refs of a manifest's rows; a row that names no frame or has a bad timestamp fails.

    A bad row is one frame of the run that ends in ``errors`` (stage "read"), not a reason to
    stop the run. It takes the next index of its log after the good rows; a row without
    ``log_id`` goes to the log named after the manifest's file, a row without ``frame_uri`` is
    named ``<manifest>#row=<line>``.
    """
    rows = _read_manifest(source.path, where)
    folder = posixpath.dirname(source.path)
    good: dict[str, list[tuple[float | None, str]]] = defaultdict(list)
    bad: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line, row in enumerate(rows, start=2):
        log_id = str(row.get("log_id") or "") or _stem(source.path)
        uri = str(row.get("frame_uri") or "")
        if not uri:
            bad[log_id].append((f"{source.path}#row={line}", f"row {line} has no frame_uri"))
            continue
        if _is_local(uri) and not os.path.isabs(uri) and _is_local(source.path):
            uri = os.path.abspath(os.path.join(folder, uri))  # relative to the manifest
        if not row.get("log_id"):
            bad[log_id].append((uri, f"row {line} has no log_id"))
            continue
        try:
            good[log_id].append((_timestamp(row.get("timestamp")), uri))
        except ValueError:  # not a number
            reason = f"row {line} has a timestamp that is not a number: {row['timestamp']!r}"
            bad[log_id].append((uri, reason))
    refs, failures = [], []
    for log_id in sorted({*good, *bad}):
        entries = good.get(log_id, [])
        # Missing timestamps sort last, then by URI, so the order does not depend on row order.
        entries.sort(key=lambda e: (e[0] is None, e[0] or 0.0, e[1]))
        for index, (timestamp, uri) in enumerate(entries):
            video = split_video_uri(uri)
            refs.append(
                FrameRef(
                    key=frame_key(log_id, index),
                    uri=uri,
                    log_id=log_id,
                    frame_index=index,
                    timestamp=timestamp,
                    video_uri=video[0] if video else None,
                    video_frame=video[1] if video else None,
                )
            )
        for index, (uri, reason) in enumerate(bad.get(log_id, []), start=len(entries)):
            ref = FrameRef(frame_key(log_id, index), uri, log_id, index)
            _LOG.warning("%s: %s", where, reason)
            failures.append(FrameFailure(ref, "read", SourceError.__name__, f"{where}: {reason}"))
    return refs, failures


def _timestamp(value: object) -> float | None:
    """Seconds; None when absent. Raises ValueError for a value that is not a number."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):  # a Parquet timestamp column
        return value.timestamp()
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(value) from None
    return None if math.isnan(seconds) else seconds


def _read_manifest(path: str, where: str) -> list[dict[str, object]]:
    if not FileSystems.exists(path):
        raise SourceError(f"{where}: manifest does not exist")
    with FileSystems.open(path) as handle:
        data = handle.read()
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        missing = {"log_id", "frame_uri"} - set(table.column_names)
        if missing:
            raise SourceError(f"{where}: manifest lacks column(s) {sorted(missing)}")
        return table.to_pylist()
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    missing = {"log_id", "frame_uri"} - set(reader.fieldnames or ())
    if missing:
        raise SourceError(f"{where}: manifest lacks column(s) {sorted(missing)}")
    return list(reader)
