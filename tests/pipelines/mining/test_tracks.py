"""The tracks stage: one object's sightings become one track; candidates rank objects."""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.config import OutputConfig, TracksConfig
from pipelines.mining.schema import EMBEDDING_DIM
from pipelines.mining.sinks import TopCandidates
from pipelines.mining.tracks import (
    LinkTracks,
    TopObjects,
    flag_near_duplicates,
    sampling_step,
    tracks_of_log,
)


def _direction(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=EMBEDDING_DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float16)


def instance(log: str, frame: int, index: int, score: float, x: int, kind: int) -> dict:
    """An instance row's linking fields: a 10x10 box at ``x``, the embedding of ``kind``."""
    return {
        "log_id": log,
        "frame_index": frame,
        "frame_key": f"{log}/{frame:06d}",
        "instance_id": f"{log}/{frame:06d}#{index}",
        "score": score,
        "bbox_x": x,
        "bbox_y": 50,
        "bbox_w": 10,
        "bbox_h": 10,
        "embedding": _direction(kind),
    }


# Log "a": a box (kind 1) at x~20 over frames 0-2 and a tyre (kind 2) at x~200 over frames 1-2.
LOG_A = [
    instance("a", 0, 0, -0.5, 20, 1),
    instance("a", 1, 0, -0.2, 22, 1),
    instance("a", 1, 1, -0.4, 200, 2),
    instance("a", 2, 0, -0.3, 25, 1),
    instance("a", 2, 1, -0.1, 204, 2),
]
# Log "b": the same tyre (same kind embedding) parked on another drive, and a new kind.
LOG_B = [instance("b", 5, 0, -0.6, 100, 2), instance("b", 6, 0, -0.7, 300, 3)]


def test_a_logs_instances_become_tracks_whatever_order_they_arrive_in() -> None:
    shuffled = LOG_A[:]
    random.Random(0).shuffle(shuffled)
    ids, tracks = tracks_of_log("a", shuffled, TracksConfig(), "run", "fp")
    assert sorted(ids) == sorted(
        [
            ("a/000000#0", "a/000000#0"),
            ("a/000001#0", "a/000000#0"),
            ("a/000002#0", "a/000000#0"),
            ("a/000001#1", "a/000001#1"),
            ("a/000002#1", "a/000001#1"),
        ]
    )
    box, tyre = tracks
    assert (box["track_id"], box["first_frame_index"], box["last_frame_index"]) == (
        "a/000000#0",
        0,
        2,
    )
    assert (box["frames_seen"], box["instances"]) == (3, 3)
    assert (box["best_instance_id"], box["best_score"]) == ("a/000001#0", -0.2)
    assert np.isclose(box["mean_score"], -1.0 / 3)
    assert box["min_score"] == -0.5
    assert np.allclose(box["embedding"], _direction(1), atol=1e-3)
    assert (tyre["frames_seen"], tyre["best_instance_id"]) == (2, "a/000002#1")
    again_ids, again = tracks_of_log("a", LOG_A, TracksConfig(), "run", "fp")
    assert again_ids == ids
    assert [t["track_id"] for t in again] == [t["track_id"] for t in tracks]


def test_a_video_mined_with_a_stride_links_its_sampled_frames_as_consecutive() -> None:
    # Frames 0, 5, 10, 20 of a video mined with stride 5 (frame 15 had no instance).
    strided = [{**row, "frame_index": 5 * row["frame_index"]} for row in LOG_A]
    late = instance("a", 4, 0, -0.3, 31, 1)
    assert sampling_step(np.array([0, 5, 10, 20])) == 5
    assert sampling_step(np.array([7])) == 1
    _, tracks = tracks_of_log(
        "a", [*strided, {**late, "frame_index": 20}], TracksConfig(), "r", "f"
    )
    assert [t["frames_seen"] for t in tracks] == [4, 2]  # frame 20 continues the box (gap 1)
    _, no_gap = tracks_of_log(
        "a", [*strided, {**late, "frame_index": 20}], TracksConfig(max_gap=0), "r", "f"
    )
    assert [t["frames_seen"] for t in no_gap] == [3, 2, 1]


def test_the_same_object_in_another_log_is_flagged_as_a_near_duplicate_of_the_best() -> None:
    _, tracks_a = tracks_of_log("a", LOG_A, TracksConfig(), "run", "fp")
    _, tracks_b = tracks_of_log("b", LOG_B, TracksConfig(), "run", "fp")
    flagged = {
        t["track_id"]: t["duplicate_of"] for t in flag_near_duplicates(tracks_a + tracks_b, 0.95)
    }
    assert flagged == {
        "a/000000#0": None,
        "a/000001#1": None,  # the tyre's best view (score -0.1) represents it
        "b/000005#0": "a/000001#1",
        "b/000006#0": None,
    }


def test_tracks_without_embeddings_link_on_position_and_are_never_duplicates() -> None:
    blind = [{**row, "embedding": np.zeros(EMBEDDING_DIM, np.float16)} for row in LOG_A + LOG_B]
    _, tracks_a = tracks_of_log("a", blind[:5], TracksConfig(), "run", "fp")
    _, tracks_b = tracks_of_log("b", blind[5:], TracksConfig(), "run", "fp")
    assert [t["frames_seen"] for t in tracks_a] == [3, 2]
    assert all(t["duplicate_of"] is None for t in flag_near_duplicates(tracks_a + tracks_b, 0.5))


def _rows(candidates: beam.PCollection, label: str) -> beam.PCollection:
    return candidates | f"fields of {label}" >> beam.Map(
        lambda r: (r["rank"], r["instance_id"], r["track_frames"], r["duplicate_of"])
    )


def test_candidates_are_objects_each_its_best_sighting_in_a_beam_pipeline() -> None:
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        rows = p | beam.Create(LOG_A + LOG_B)
        instances, tracks = rows | LinkTracks(TracksConfig(), "run", "fp")
        top = {"instances": instances, "tracks": tracks} | TopObjects(OutputConfig(top_n=3))
        assert_that(
            _rows(top, "top"),
            equal_to(
                [
                    (1, "a/000002#1", 2, None),
                    (2, "a/000001#0", 3, None),
                    (3, "b/000005#0", 1, "a/000001#1"),
                ]
            ),
            label="top objects",
        )
        assert_that(
            instances | beam.Map(lambda r: (r["instance_id"], r["track_id"])),
            equal_to(
                [
                    ("a/000000#0", "a/000000#0"),
                    ("a/000001#0", "a/000000#0"),
                    ("a/000002#0", "a/000000#0"),
                    ("a/000001#1", "a/000001#1"),
                    ("a/000002#1", "a/000001#1"),
                    ("b/000005#0", "b/000005#0"),
                    ("b/000006#0", "b/000006#0"),
                ]
            ),
            label="track ids",
        )


def test_max_per_log_caps_each_logs_share_of_the_candidates() -> None:
    output = OutputConfig(top_n=3, max_per_log=1)
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        rows = p | beam.Create(LOG_A + LOG_B)
        instances, tracks = rows | LinkTracks(TracksConfig(), "run", "fp")
        objects = {"instances": instances, "tracks": tracks} | "objects" >> TopObjects(output)
        assert_that(
            _rows(objects, "objects"),
            equal_to([(1, "a/000002#1", 2, None), (2, "b/000005#0", 1, "a/000001#1")]),
            label="objects",
        )
        # With the box scored above log a's tyre, one per log leaves that tyre out: log b's
        # copy of it is then the only view of the object, and is not flagged.
        boxed = [{**r, "score": 0.5} if r["instance_id"] == "a/000001#0" else r for r in LOG_A]
        rows_2 = p | "boxed" >> beam.Create(boxed + LOG_B)
        instances_2, tracks_2 = rows_2 | "link 2" >> LinkTracks(TracksConfig(), "run", "fp")
        lone = {"instances": instances_2, "tracks": tracks_2} | "lone" >> TopObjects(output)
        assert_that(
            _rows(lone, "lone"),
            equal_to([(1, "a/000001#0", 3, None), (2, "b/000005#0", 1, None)]),
            label="lone",
        )
        sightings = rows | "sightings" >> TopCandidates(3, max_per_log=1)
        assert_that(
            _rows(sightings, "sightings"),
            equal_to([(1, "a/000002#1", None, None), (2, "b/000005#0", None, None)]),
            label="sightings",
        )
