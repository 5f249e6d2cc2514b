"""Recording a review decision: one of the fixed review tags on detections or whole frames.

The App's buttons (the ``ugains-review`` plugin beside this file) and scripts call
:func:`apply_review_tag`; ``export`` and ``pool`` read exactly these tags. A decision replaces
an earlier one on the same items: a detection is confirmed, rejected or to be relabelled,
never two of them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.review.fields import ANOMALIES, REVIEW_TAGS, ReviewError

if TYPE_CHECKING:
    import fiftyone as fo


@dataclass(frozen=True)
class ReviewDecision:
    """What :func:`apply_review_tag` tagged."""

    tag: str
    count: int
    kind: str  # "detections" or "frames"

    def __str__(self) -> str:
        return f"{self.count} {self.kind} tagged {self.tag}"


def apply_review_tag(
    view: fo.DatasetView | fo.Dataset,
    tag: str,
    sample_ids: Sequence[str] = (),
    labels: Sequence[dict[str, Any]] = (),
) -> ReviewDecision:
    """Tag the chosen detections (or frames) of ``view`` with ``tag``, replacing other review tags.

    ``labels`` are the App's selected labels (dicts with ``label_id``, ``sample_id``,
    ``field``); when given, exactly those detections are tagged. Otherwise ``sample_ids``
    are tagged: frames in a frame view, the patch's one detection in a patches view.
    """
    if tag not in REVIEW_TAGS:
        raise ReviewError(f"review tag must be one of {', '.join(REVIEW_TAGS)}; got {tag!r}")
    if labels:
        chosen = [label for label in labels if label.get("field") == ANOMALIES]
        if not chosen:
            raise ReviewError(f"none of the {len(labels)} selected labels is in {ANOMALIES!r}")
        target = view.select_labels(labels=chosen)
        return _tag_detections(target, tag)
    if not sample_ids:
        raise ReviewError("select detections or frames first")
    target = view.select(list(sample_ids))
    if target._is_patches:
        return _tag_detections(target, tag)
    target.untag_samples(list(REVIEW_TAGS))
    target.tag_samples(tag)
    return ReviewDecision(tag=tag, count=len(target), kind="frames")


def _tag_detections(target: fo.DatasetView, tag: str) -> ReviewDecision:
    target.untag_labels(list(REVIEW_TAGS), label_fields=ANOMALIES)
    target.tag_labels(tag, label_fields=ANOMALIES)
    counts = target.count_label_tags(label_fields=ANOMALIES)
    return ReviewDecision(tag=tag, count=int(counts.get(tag, 0)), kind="detections")
