"""Reading a mining run for review: its run.json, frames and candidates, frame images."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from pipelines.elements import split_video_uri
from pipelines.mining.schema import CANDIDATES_SCHEMA
from pipelines.mining.tables import TableError, read_table
from pipelines.review.fields import ReviewError

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningRun:
    """The parts of a run directory the review dataset is built from."""

    path: Path
    info: dict[str, Any]  # run.json
    frames: dict[str, dict[str, Any]]  # frame_key -> frames row
    candidates: dict[str, list[dict[str, Any]]]  # frame_key -> candidate rows by rank


# The frame columns review uses. Only these are read, so runs written before a column was
# added (timings, say) still build, and per-run timings do not make unchanged frames "changed".
FRAME_COLUMNS = (
    "frame_key",
    "log_id",
    "frame_index",
    "timestamp",
    "frame_uri",
    "frame_width",
    "frame_height",
    "run_id",
    "max_anomaly_score",
    "max_fused_score",
    "fused_map_uri",
    "fused_map_min",
    "fused_map_max",
    "semantic_uri",
    "config_fingerprint",
    "mask2former_checkpoint",
    "sam_checkpoint",
    "ugains_version",
)


def _rows(run_dir: Path, table: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    try:
        return read_table(str(run_dir), table, list(columns)).to_pylist()
    except TableError as error:
        raise ReviewError(str(error)) from None


def run_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise ReviewError(f"{path} is not a mining run directory: run.json is missing") from None
    except ValueError as error:
        raise ReviewError(f"{path / 'run.json'} is not valid JSON: {error}") from None
    if not isinstance(info, dict):
        raise ReviewError(f"{path / 'run.json'} is not a JSON object")
    return info


def read_run(run_dir: str | Path) -> MiningRun:
    """Read ``run.json``, ``frames/*.parquet`` and ``candidates.parquet`` of a mining run."""
    path = Path(run_dir).expanduser().resolve()
    for required in ("run.json", "candidates.parquet", "frames"):
        if not (path / required).exists():
            raise ReviewError(f"{path} is not a mining run directory: {required} is missing")
    info = run_info(path)
    # The crops are re-cut from the frames by `pool`; the PNG bytes are not needed here.
    candidate_columns = [n for n in CANDIDATES_SCHEMA.names if n != "crop_png"]
    rows = _rows(path, "candidates", candidate_columns)
    frames = {row["frame_key"]: row for row in _rows(path, "frames", FRAME_COLUMNS)}
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["rank"]):
        if row["frame_key"] not in frames:
            raise ReviewError(
                f"candidate {row['instance_id']} (rank {row['rank']}) has no row in "
                f"{path / 'frames'}"
            )
        candidates[row["frame_key"]].append(row)
    return MiningRun(path=path, info=info, frames=frames, candidates=dict(candidates))


def local_path(uri: str, run_dir: Path, what: str) -> Path:
    """A URI of the run as a local path: absolute, or relative to the working dir or the run."""
    raw = uri.removeprefix("file://")
    if "://" in raw:
        raise ReviewError(f"{what} {uri!r} is not a local file; review needs local frames/maps")
    candidates = [Path(raw), run_dir / raw]
    parts = Path(raw).parts
    if run_dir.name in parts:
        # "<output root>/runs/<run id>/maps/..." written relative to another working dir
        last = len(parts) - 1 - parts[::-1].index(run_dir.name)
        candidates.append(run_dir.joinpath(*parts[last + 1 :]))
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise ReviewError(f"{what} {uri!r} does not exist (looked in the working dir and {run_dir})")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "frame"


def frame_images(run: MiningRun) -> dict[str, Path]:
    """Frame key -> image file; video frames are decoded once and written as JPEGs."""
    images: dict[str, Path] = {}
    wanted: dict[Path, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key in run.candidates:
        uri = run.frames[key]["frame_uri"]
        video_frame = split_video_uri(uri)
        if video_frame is None:
            images[key] = local_path(uri, run.path, f"frame_uri of {key}")
            continue
        jpeg = run.path / "frames_jpeg" / f"{_safe_name(key)}.jpg"
        images[key] = jpeg
        if not jpeg.exists():
            video = local_path(video_frame[0], run.path, f"video of {key}")
            wanted[video][video_frame[1]].append(key)
    for video, by_index in wanted.items():
        _decode_video_frames(video, by_index, images)
    return images


def _decode_video_frames(
    video: Path, by_index: dict[int, list[str]], images: dict[str, Path]
) -> None:
    # Sequential grab() rather than seeking: seeking is not frame-exact for every codec.
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ReviewError(f"OpenCV cannot open video {video}")
    try:
        for index in range(max(by_index) + 1):
            if not capture.grab():
                raise ReviewError(f"video {video} ends before frame {index}")
            if index not in by_index:
                continue
            ok, image = capture.retrieve()
            if not ok:
                raise ReviewError(f"OpenCV cannot decode frame {index} of video {video}")
            for key in by_index[index]:
                images[key].parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(images[key]), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    finally:
        capture.release()
