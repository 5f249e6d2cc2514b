"""The elements that flow between the pipeline's stages, and the dead-letter plumbing.

sources -> :class:`ReadUnit` (of :class:`FrameRef` s) -> decode -> :class:`DecodedFrame` ->
RunInference -> :class:`FrameInference` -> rows; a frame that fails at any stage becomes a
:class:`FrameFailure` (one row of ``errors/``). Stages import these types from here, not from
each other.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "DecodedFrame",
    "FrameFailure",
    "FrameInference",
    "FrameRef",
    "ReadUnit",
    "dead_letter_failures",
    "split_video_uri",
    "video_frame_uri",
]

_LOG = logging.getLogger(__name__)
_VIDEO_FRAME = re.compile(r"^(?P<video>.+)#frame=(?P<index>\d+)$")


def video_frame_uri(video: str, index: int) -> str:
    """The URI of frame ``index`` of ``video``: ``"clip.mp4#frame=12"``."""
    return f"{video}#frame={index}"


def split_video_uri(uri: str) -> tuple[str, int] | None:
    """``"clip.mp4#frame=12"`` -> ``("clip.mp4", 12)``; None for a plain URI."""
    match = _VIDEO_FRAME.match(uri)
    return (match["video"], int(match["index"])) if match else None


@dataclass(frozen=True)
class FrameRef:
    """One input frame: where it is and what it is called.

    ``video_uri`` is set for a frame of a video; ``frame_index`` is then its index in the
    video and ``uri`` is ``"<video_uri>#frame=<frame_index>"``.
    """

    key: str
    uri: str
    log_id: str
    frame_index: int
    timestamp: float | None = None
    video_uri: str | None = None
    video_frame: int | None = None


@dataclass(frozen=True)
class ReadUnit:
    """What one decode call reads: one image, or a run of frames of one video.

    Video frames travel in runs so a worker seeks once and then reads sequentially.
    """

    refs: tuple[FrameRef, ...]

    @property
    def uri(self) -> str:
        first = self.refs[0]
        return first.video_uri or first.uri

    def to_json(self) -> str:
        """One line of a plan file (see :func:`write_plan`)."""
        return json.dumps([asdict(ref) for ref in self.refs], separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> ReadUnit:
        return cls(tuple(FrameRef(**ref) for ref in json.loads(line)))


@dataclass(frozen=True)
class DecodedFrame:
    """A frame ready for the models.

    Attributes:
        ref: where the frame came from.
        image: ``[H, W, 3]`` uint8 RGB, original pixels.
        model_image: ``[h, w, 3]`` uint8 RGB at the models' input size.
        decode_ms: time spent reading and decoding this frame.
    """

    ref: FrameRef
    image: np.ndarray
    model_image: np.ndarray
    decode_ms: float

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(frozen=True)
class FrameInference:
    """One frame's UGainS outputs at the model size, compact enough to pickle per frame.

    Attributes:
        size: ``(h, w)`` the model ran at.
        mask_rles: COCO compressed RLE counts of the ``M`` kept masks, at ``size``.
        scores: ``[M]`` float32 mask scores, descending.
        sam_iou: ``[M]`` float32 SAM predicted IoU.
        points: ``[M, 2]`` int64 ``(x, y)`` prompt of each mask, model pixels.
        max_anomaly_score / max_fused_score: maxima of ``U`` and ``I + U``.
        fused_png: 8-bit PNG of the fused map (value = min + png / 255 * (max - min)); None
            when it is not written (no instance, or maps not stored): encoding it costs ~18 ms
            of CPU at 1024x2048.
        semantic_png: 8-bit PNG of the in-distribution classes, or None.
        gated: frame gating skipped SAM.
        timings: model milliseconds per stage for this frame.
        compact_ms: host milliseconds spent making this record (RLE, PNGs).
        embeddings: ``[M, C]`` float16 unit rows, each mask's pooled SAM features; None when
            the step has no SAM.
    """

    size: tuple[int, int]
    mask_rles: tuple[str, ...]
    scores: np.ndarray
    sam_iou: np.ndarray
    points: np.ndarray
    max_anomaly_score: float
    max_fused_score: float
    fused_png: bytes | None
    fused_min: float
    fused_max: float
    semantic_png: bytes | None = None
    gated: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    compact_ms: float = 0.0
    embeddings: np.ndarray | None = None

    @property
    def num_instances(self) -> int:
        return len(self.mask_rles)


@dataclass(frozen=True)
class FrameFailure:
    """An input frame that could not be processed; becomes one row of ``errors/``."""

    ref: FrameRef
    stage: str  # "read" | "decode" | "inference" | "rows"
    error_type: str
    reason: str


def dead_letter_failures(stage: str, refs: list[FrameRef], exc_info: tuple) -> list[FrameFailure]:
    """Failures for every frame of a dead-lettered element (``(type, repr, traceback)``)."""
    exc_type, exc_repr, _ = exc_info
    reason = _reason(exc_type, exc_repr)
    for ref in refs:
        _LOG.warning("frame %s failed at %s: %s", ref.key, stage, reason)
    return [FrameFailure(ref, stage, exc_type.__name__, reason) for ref in refs]


def _reason(exc_type: type, exc_repr: str) -> str:
    # repr(exc) is "FrameDecodeError('x.png: ...')": keep the message, drop the wrapper.
    prefix = f"{exc_type.__name__}("
    if exc_repr.startswith(prefix) and exc_repr.endswith(")"):
        inner = exc_repr[len(prefix) : -1]
        if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
            return inner[1:-1]
    return exc_repr
