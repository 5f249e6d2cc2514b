"""Review decisions: the fixed tags land on exactly the chosen items and replace earlier ones."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import cli
from pipelines.review import ANOMALIES, PATCHES_VIEW, ReviewError, tagged_view
from pipelines.review.decisions import apply_review_tag
from tests.pipelines.review.helpers import detections_by_instance
from tests.pipelines.review.synthetic_run import SyntheticRun


@pytest.fixture
def built(run_a: SyntheticRun, dataset_name: str) -> Any:
    import fiftyone as fo

    argv = ["review", "build", "--run", str(run_a.path), "--dataset", dataset_name]
    assert cli.main(argv) == 0
    return fo.load_dataset(dataset_name)


def _selected(dataset: Any, instance_ids: list[str]) -> list[dict[str, str]]:
    """The App's ``selected_labels`` for the detections of these mined instances."""
    chosen = []
    for sample, detection in detections_by_instance(dataset).values():
        if detection.mined_instance_id in instance_ids:
            chosen.append({"label_id": detection.id, "sample_id": sample.id, "field": ANOMALIES})
    return chosen


def _mined_ids(view: Any) -> list[str]:
    return sorted(
        i for frame in view.values(f"{ANOMALIES}.detections.mined_instance_id") for i in frame
    )


def test_selected_detections_get_the_tag_and_export_reads_exactly_them(built: Any) -> None:
    decision = apply_review_tag(
        built, "confirmed", labels=_selected(built, ["drive_a/0#1", "drive_b/3#0"])
    )

    assert (decision.tag, decision.count, decision.kind) == ("confirmed", 2, "detections")
    assert str(decision) == "2 detections tagged confirmed"
    assert _mined_ids(tagged_view(built, "confirmed")) == ["drive_a/0#1", "drive_b/3#0"]
    assert built.count_label_tags(ANOMALIES) == {"confirmed": 2}


def test_a_new_decision_replaces_the_earlier_one_on_the_same_detection(built: Any) -> None:
    apply_review_tag(built, "confirmed", labels=_selected(built, ["drive_a/0#1", "drive_b/3#0"]))
    apply_review_tag(built, "rejected", labels=_selected(built, ["drive_a/0#1"]))

    assert _mined_ids(tagged_view(built, "confirmed")) == ["drive_b/3#0"]
    assert _mined_ids(tagged_view(built, "rejected")) == ["drive_a/0#1"]
    assert built.count_label_tags(ANOMALIES) == {"confirmed": 1, "rejected": 1}


def test_selected_frames_are_tagged_as_frames_and_their_detections_inherit(built: Any) -> None:
    frame = built.match({"frame_key": "drive_a/0"}).first()
    decision = apply_review_tag(built, "relabel", sample_ids=[frame.id])

    assert (decision.count, decision.kind) == (1, "frames")
    assert built.count_sample_tags() == {"relabel": 1}
    assert _mined_ids(tagged_view(built, "relabel")) == ["drive_a/0#0", "drive_a/0#1"]


def test_selected_patches_tag_their_one_detection_in_the_dataset(built: Any) -> None:
    patches = built.load_saved_view(PATCHES_VIEW)
    best = patches.first()  # the highest-scoring detection
    decision = apply_review_tag(patches, "confirmed", sample_ids=[best.id])

    assert (decision.count, decision.kind) == (1, "detections")
    assert built.count_sample_tags() == {}
    assert _mined_ids(tagged_view(built, "confirmed")) == [best[ANOMALIES].mined_instance_id]


def test_only_the_fixed_vocabulary_and_a_selection_are_accepted(built: Any) -> None:
    with pytest.raises(
        ReviewError, match="review tag must be one of confirmed, rejected, relabel; got 'ok'"
    ):
        apply_review_tag(built, "ok", labels=_selected(built, ["drive_a/0#1"]))
    with pytest.raises(ReviewError, match="select detections or frames first"):
        apply_review_tag(built, "confirmed")
    other_field = [{"label_id": "x", "sample_id": "y", "field": "semantic"}]
    with pytest.raises(ReviewError, match="none of the 1 selected labels is in 'anomalies'"):
        apply_review_tag(built, "confirmed", labels=other_field)
    assert built.count_label_tags() == {}


def test_the_app_shows_detections_and_the_best_score_on_the_tiles(built: Any) -> None:
    assert built.app_config.active_fields.paths == [ANOMALIES, "max_score"]
