"""Track linking joins one object's sightings across frames and keeps objects apart."""

from __future__ import annotations

import pytest
import torch

from transforms.tracks import link_tracks, overlap_groups, track_affinity


def _unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_an_object_growing_towards_the_camera_is_one_track() -> None:
    # The box doubles and slides down each frame, as a road object does when approached.
    frames = torch.tensor([0, 1, 2])
    boxes = torch.tensor([[100.0, 60, 8, 6], [98, 66, 16, 12], [94, 80, 32, 24]])
    assert link_tracks(frames, boxes).tolist() == [0, 0, 0]


def test_two_objects_side_by_side_keep_their_own_tracks_in_any_input_order() -> None:
    frames = torch.tensor([1, 0, 1, 0])
    boxes = torch.tensor(
        [[52.0, 52, 10, 10], [200, 50, 10, 10], [203, 51, 10, 10], [50, 50, 10, 10]]
    )
    got = link_tracks(frames, boxes)
    # Tracks are numbered as they start: frame 0 first, in input order.
    assert got.tolist() == [1, 0, 0, 1]


def test_dissimilar_embeddings_are_not_linked_however_close() -> None:
    frames = torch.tensor([0, 1])
    boxes = torch.tensor([[50.0, 50, 10, 10], [51, 50, 10, 10]])
    embeddings = _unit([1.0, 0.0], [0.0, 1.0])
    assert link_tracks(frames, boxes, embeddings, min_similarity=0.5).tolist() == [0, 1]
    assert link_tracks(frames, boxes, embeddings, min_similarity=-1.0).tolist() == [0, 0]


def test_a_track_survives_max_gap_missing_frames_and_no_more() -> None:
    boxes = torch.tensor([[50.0, 50, 10, 10], [50, 50, 10, 10]])
    assert link_tracks(torch.tensor([0, 3]), boxes, max_gap=2).tolist() == [0, 0]
    assert link_tracks(torch.tensor([0, 4]), boxes, max_gap=2).tolist() == [0, 1]


def test_a_jump_larger_than_max_shift_diagonals_per_frame_starts_a_new_track() -> None:
    boxes = torch.tensor([[0.0, 0, 3, 4], [0, 10, 3, 4]])  # diagonal 5, centres 10 apart
    assert link_tracks(torch.tensor([0, 1]), boxes, max_shift=2.0).tolist() == [0, 0]
    assert link_tracks(torch.tensor([0, 1]), boxes, max_shift=1.9).tolist() == [0, 1]
    # Two frames elapsed (one missed) allow twice the shift.
    assert link_tracks(torch.tensor([0, 2]), boxes, max_shift=1.0).tolist() == [0, 0]


def test_two_separate_instances_of_one_frame_never_share_a_track() -> None:
    frames = torch.tensor([0, 1, 1])
    boxes = torch.tensor([[50.0, 50, 10, 10], [50, 50, 10, 10], [58, 50, 10, 10]])  # 20 % overlap
    got = link_tracks(frames, boxes)
    assert got.tolist() == [0, 0, 1]  # the closer one continues the track


def test_overlapping_instances_of_one_frame_are_one_sighting_of_one_track() -> None:
    # Frame 1 outlines the object twice (alone, and with its shadow below it).
    frames = torch.tensor([0, 1, 1, 2])
    boxes = torch.tensor([[50.0, 50, 10, 10], [51, 51, 10, 10], [51, 51, 10, 16], [52, 52, 10, 10]])
    assert link_tracks(frames, boxes).tolist() == [0, 0, 0, 0]
    assert link_tracks(frames, boxes, merge_overlap=1.1).tolist() == [0, 0, 1, 0]


def test_overlap_groups_join_chains_of_overlapping_boxes_within_a_frame() -> None:
    frames = torch.tensor([3, 3, 3, 3, 4])
    boxes = torch.tensor(
        [[0.0, 0, 10, 10], [6, 0, 10, 10], [12, 0, 10, 10], [100, 0, 5, 5], [0, 0, 10, 10]]
    )
    # 0~1 and 1~2 overlap by 40 % of a box; 0 and 2 do not touch; 3 is apart; 4 is next frame.
    assert overlap_groups(frames, boxes, 0.4).tolist() == [0, 0, 0, 1, 2]
    assert overlap_groups(frames, boxes, 0.5).tolist() == [0, 1, 2, 3, 4]


def test_affinity_is_distance_over_the_larger_diagonal_and_cosine() -> None:
    distance, cosine = track_affinity(
        torch.tensor([[0.0, 0, 6, 8]]),
        torch.tensor([[10.0, 0, 6, 8], [0, 0, 3, 4]]),
        _unit([1.0, 0.0]),
        _unit([1.0, 0.0], [1.0, 1.0]),
    )
    torch.testing.assert_close(distance, torch.tensor([[1.0, 2.5 / 10]]))
    torch.testing.assert_close(cosine, torch.tensor([[1.0, 2**-0.5]]))


def test_no_instances_give_no_tracks() -> None:
    got = link_tracks(torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert got.shape == (0,)
    assert got.dtype == torch.int64


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"boxes must have shape \[2, 4\]"):
        link_tracks(torch.tensor([0, 1]), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="embeddings must have 2 rows"):
        link_tracks(torch.tensor([0, 1]), torch.zeros(2, 4), torch.zeros(3, 8))


def test_a_track_follows_its_objects_velocity_not_the_nearest_box() -> None:
    # The object moves 12 px right per frame; at frame 2 a distractor sits where it was.
    frames = torch.tensor([0, 1, 2, 2])
    boxes = torch.tensor([[0.0, 0, 8, 6], [12, 0, 8, 6], [13, 0, 8, 6], [24, 0, 8, 6]])
    assert link_tracks(frames, boxes, max_shift=2.0).tolist() == [0, 0, 1, 0]


def test_a_track_prefers_the_box_that_grew_as_it_has_been_growing() -> None:
    # The object's diagonal doubles (5 -> 10) without moving; at frame 2 two boxes are equally
    # near the predicted centre in diagonals (5 px / 10, 10 px / 20): the old size listed
    # first, the doubled size second.
    frames = torch.tensor([0, 1, 2, 2])
    boxes = torch.tensor([[50.0, 50, 3, 4], [48.5, 48, 6, 8], [48.5, 53, 6, 8], [45.5, 34, 12, 16]])
    assert link_tracks(frames, boxes, max_shift=3.0).tolist() == [0, 0, 1, 0]
