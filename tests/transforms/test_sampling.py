"""Candidate points, FPS, k-means, random, oracle and grid prompts against loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_anything.utils.amg import build_point_grid

from transforms.sampling import (
    candidate_points,
    farthest_point_sampling,
    grid_points,
    kmeans_points,
    oracle_points,
    random_points,
)

# --------------------------------------------------------------------------- references


def reference_candidates(score, threshold, fallback, ignore=None, ignore_value=-30.0):
    """(x, y) of pixels >= threshold (compared in float32), row by row; fallback if none."""
    values = score.tolist()
    height, width = score.shape

    def f32(v: float) -> float:  # torch compares in the map's dtype
        return float(np.float32(v))

    for thr in (threshold, fallback):
        found = []
        for y in range(height):
            for x in range(width):
                v = f32(ignore_value) if ignore is not None and ignore[y][x] else values[y][x]
                if v >= f32(thr):
                    found.append([x, y])
        if found:
            return found
    return []


def reference_fps(points: list, k: int) -> list:
    """Plain greedy FPS: argmax of the min squared distance, lowest index on ties."""
    if not points or k == 0:
        return []
    chosen = [0]
    while len(chosen) < min(len(points), k):
        best, best_d = None, -1
        for i, (x, y) in enumerate(points):
            if i in chosen:
                continue
            d = min((x - points[c][0]) ** 2 + (y - points[c][1]) ** 2 for c in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def reference_oracle(ids: np.ndarray) -> list:
    """Brute-force distance transform: distance to the nearest pixel of another id."""
    height, width = ids.shape
    out = []
    for label in sorted(int(v) for v in np.unique(ids) if v > 0):
        inside = [(y, x) for y in range(height) for x in range(width) if ids[y, x] == label]
        outside = [(y, x) for y in range(height) for x in range(width) if ids[y, x] != label]
        dist = {
            p: min(((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 for q in outside), default=0)
            for p in inside
        }
        top = max(dist.values())
        best = [p for p in inside if dist[p] == top]
        mean_y = sum(p[0] for p in best) / len(best)
        mean_x = sum(p[1] for p in best) / len(best)
        out.append([math.floor(mean_x), math.floor(mean_y)])
    return out


# --------------------------------------------------------------------------- candidates


@pytest.mark.parametrize(("height", "width"), [(1, 1), (5, 7), (16, 9)])
@pytest.mark.parametrize("with_ignore", [False, True])
def test_candidate_points_match_reference(height, width, with_ignore, device) -> None:
    gen = torch.Generator().manual_seed(height * width)
    score = torch.randn(height, width, generator=gen) * 10 - 5
    ignore = torch.rand(height, width, generator=gen) < 0.3 if with_ignore else None
    for threshold, fallback in [(-0.15, -15.0), (3.0, -15.0), (100.0, -1.0), (100.0, 99.0)]:
        expected = reference_candidates(
            score, threshold, fallback, None if ignore is None else ignore.tolist()
        )
        got = candidate_points(
            score.to(device),
            threshold=threshold,
            fallback_threshold=fallback,
            ignore=None if ignore is None else ignore.to(device),
        )
        assert got.dtype == torch.int64
        assert got.device == device
        assert got.shape == (len(expected), 2)
        assert got.cpu().tolist() == expected


def test_candidate_points_fall_back_to_the_lower_threshold_and_may_be_none(device) -> None:
    score = torch.full((3, 4), -20.0, device=device)
    # nothing reaches the fallback: no candidates
    assert candidate_points(score).shape == (0, 2)
    # the fallback catches -14 when nothing reaches -0.15
    score[2, 1] = -14.0
    assert candidate_points(score).tolist() == [[1, 2]]
    # one candidate above the main threshold wins over fallback pixels; -0.15 itself counts
    score[0, 3] = -0.15
    assert candidate_points(score).tolist() == [[3, 0]]
    # ignored pixels are set to -30 first, so they fail the fallback too
    ignore = torch.zeros(3, 4, dtype=torch.bool, device=device)
    ignore[0, 3] = True
    assert candidate_points(score, ignore=ignore).tolist() == [[1, 2]]
    ignore[2, 1] = True
    assert candidate_points(score, ignore=ignore).shape == (0, 2)
    # ... unless the fallback reaches the ignore value
    assert candidate_points(score, ignore=ignore, fallback_threshold=-30.0).shape == (12, 2)


def test_candidate_points_all_equal_scores_are_row_major(device) -> None:
    got = candidate_points(torch.zeros(2, 3, device=device))
    assert got.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


# --------------------------------------------------------------------------- FPS


@pytest.mark.parametrize(("n", "k"), [(0, 5), (1, 5), (3, 5), (5, 5), (40, 10), (300, 50)])
def test_fps_matches_reference(n, k, device) -> None:
    gen = torch.Generator().manual_seed(n + k)
    points = torch.randint(0, 30, (n, 2), generator=gen)  # small range: many ties, duplicates
    got = farthest_point_sampling(points.to(device), k)
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.cpu().tolist() == reference_fps(points.tolist(), k)


def test_fps_ties_go_to_lowest_index(device) -> None:
    # From (0, 0): (0, 3), (3, 0), (-3, 0) tie at 9 -> index 2. From {0, 2}: (3, 0) and (-3, 0)
    # tie at 9 -> index 3. Then (-3, 0) (9) before (1, 0) (1).
    points = torch.tensor([[0, 0], [1, 0], [0, 3], [3, 0], [-3, 0]], device=device)
    assert reference_fps(points.tolist(), 5) == [0, 2, 3, 4, 1]
    assert farthest_point_sampling(points, 5).tolist() == [0, 2, 3, 4, 1]
    assert farthest_point_sampling(points, 2).tolist() == [0, 2]


def test_fps_ties_across_a_large_array(device) -> None:
    # Equal maxima far apart (different threads / blocks of the argmax reduction): the lowest
    # index still wins, which is what torch.argmax documents.
    points = torch.zeros(200_000, 2, dtype=torch.int64)
    points[[150_000, 60_001, 199_999, 60_000]] = torch.tensor([[-5, 0], [-4, 3], [5, 0], [0, 5]])
    # step 1: four points at d2 = 25; step 2: (-5, 0) and (5, 0) tie at 25
    got = farthest_point_sampling(points.to(device), 4).tolist()
    assert got == [0, 60_000, 150_000, 199_999] == reference_fps_sparse(points, 4)


def reference_fps_sparse(points: torch.Tensor, k: int) -> list:
    """reference_fps restricted to the distinct points plus the origin duplicates' first index."""
    nonzero = [0] + [i for i, p in enumerate(points.tolist()) if p != [0, 0]]
    sub = [points[i].tolist() for i in nonzero]
    return [nonzero[i] for i in reference_fps(sub, k)]


def test_fps_identical_points_give_distinct_indices(device) -> None:
    points = torch.full((6, 2), 7, device=device)
    assert farthest_point_sampling(points, 4).tolist() == [0, 1, 2, 3]


def test_fps_large_coordinates_are_exact(device) -> None:
    # d2 = 2**26 + 1 (index 3) vs 2**26 (index 1): equal in float32, distinct in int64.
    big = 1 << 13
    points = torch.tensor([[0, 0], [big, 0], [0, 0], [big, 1]], device=device)
    assert farthest_point_sampling(points, 2).tolist() == [0, 3]


def test_fps_takes_int32_points(device) -> None:
    points = torch.tensor([[0, 0], [5, 5], [9, 0]], dtype=torch.int32, device=device)
    assert farthest_point_sampling(points, 3).tolist() == [0, 2, 1]


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(
    points=st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20)), min_size=0, max_size=40),
    k=st.integers(0, 45),
)
def test_fps_returns_distinct_indices_starting_at_the_first_point(points: list, k: int) -> None:
    tensor = torch.tensor(points, dtype=torch.int64).reshape(-1, 2)
    got = farthest_point_sampling(tensor, k).tolist()
    assert len(got) == min(len(points), k)
    assert len(set(got)) == len(got)
    if got:
        assert got[0] == 0
    for step in range(1, len(got)):
        chosen = got[:step]

        def min_d2(i: int, chosen=chosen) -> int:
            return min(
                (points[i][0] - points[c][0]) ** 2 + (points[i][1] - points[c][1]) ** 2
                for c in chosen
            )

        rest = [i for i in range(len(points)) if i not in chosen]
        best = max(min_d2(i) for i in rest)
        assert min_d2(got[step]) == best
        assert got[step] == min(i for i in rest if min_d2(i) == best)


# --------------------------------------------------------------------------- random


def test_random_points_are_distinct_seeded_int64_indices_on_the_input_device(device) -> None:
    points = torch.randint(0, 100, (50, 2), generator=torch.Generator().manual_seed(0))
    points = points.to(device)
    got = random_points(points, 10, seed=3)
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.shape == (10,)
    assert got.tolist() == sorted(set(got.tolist()))
    assert got.min() >= 0
    assert got.max() < 50
    assert torch.equal(got, random_points(points, 10, seed=3))
    assert not torch.equal(got, random_points(points, 10, seed=4))
    # same draw on every device (CPU generator)
    assert torch.equal(got.cpu(), random_points(points.cpu(), 10, seed=3))
    assert random_points(points, 80, seed=0).tolist() == list(range(50))
    assert random_points(points[:0], 5, seed=0).shape == (0,)
    assert random_points(points, 0, seed=0).shape == (0,)


def test_random_points_are_uniform() -> None:
    points = torch.zeros(10, 2, dtype=torch.int64)
    counts = torch.zeros(10)
    trials = 2000
    for seed in range(trials):
        counts[random_points(points, 3, seed=seed)] += 1
    # each index is drawn with probability 3/10: 600 +- 5 standard deviations (~102)
    assert ((counts - 600).abs() < 102).all(), counts


# --------------------------------------------------------------------------- k-means


def blob_points(seed: int) -> tuple[torch.Tensor, list]:
    """Five well separated blobs of random pixels; returns points and the blob slices."""
    gen = torch.Generator().manual_seed(seed)
    centres = [(10, 10), (200, 15), (30, 180), (220, 220), (120, 110)]
    parts, slices, start = [], [], 0
    for cx, cy in centres:
        n = int(torch.randint(5, 40, (1,), generator=gen))
        offsets = torch.randint(-6, 7, (n, 2), generator=gen)
        blob = torch.unique(offsets + torch.tensor([cx, cy]), dim=0)
        parts.append(blob)
        slices.append(slice(start, start + len(blob)))
        start += len(blob)
    return torch.cat(parts), slices


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_finds_separated_blobs(seed, device) -> None:
    points, slices = blob_points(seed)
    got = kmeans_points(points.to(device), 5, seed=seed)
    assert got.dtype == torch.int64
    assert got.device == device
    # each prompt is the blob pixel nearest the blob mean (loop reference), one per blob
    expected = []
    plist = points.tolist()
    for part in slices:
        blob = plist[part]
        mx = sum(p[0] for p in blob) / len(blob)
        my = sum(p[1] for p in blob) / len(blob)
        best = min(
            range(len(blob)), key=lambda i: ((blob[i][0] - mx) ** 2 + (blob[i][1] - my) ** 2, i)
        )
        expected.append(blob[best])
    assert sorted(got.tolist()) == sorted(expected)


def test_kmeans_is_deterministic_and_on_candidates(device) -> None:
    gen = torch.Generator().manual_seed(5)
    points = torch.unique(torch.randint(0, 64, (400, 2), generator=gen), dim=0).to(device)
    got = kmeans_points(points, 12, seed=9)
    assert got.shape == (12, 2)
    assert torch.equal(got, kmeans_points(points, 12, seed=9))
    assert torch.equal(got.cpu(), kmeans_points(points.cpu(), 12, seed=9))
    candidates = {tuple(p) for p in points.tolist()}
    assert all(tuple(p) in candidates for p in got.tolist())


def test_kmeans_returns_every_point_when_k_is_not_smaller_and_nothing_for_k_0(device) -> None:
    points = torch.tensor([[3, 4], [5, 6], [7, 8]], device=device)
    assert kmeans_points(points, 5, seed=0).tolist() == [[3, 4], [5, 6], [7, 8]]
    assert kmeans_points(points, 3, seed=0).tolist() == [[3, 4], [5, 6], [7, 8]]
    assert kmeans_points(points, 0, seed=0).shape == (0, 2)
    assert kmeans_points(points[:0], 4, seed=0).shape == (0, 2)
    assert kmeans_points(points[:1], 1, seed=0).tolist() == [[3, 4]]
    # one cluster: the point nearest the mean (5, 6)
    assert kmeans_points(points, 1, seed=0).tolist() == [[5, 6]]
    # all-identical candidates: every centre snaps to the first one
    same = torch.full((4, 2), 2, device=device)
    assert kmeans_points(same, 2, seed=0).tolist() == [[2, 2], [2, 2]]


# --------------------------------------------------------------------------- oracle


def random_instances(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), dtype=np.int64)
    for label in (3, 1000, 26001, 7):
        y, x = rng.integers(0, height), rng.integers(0, width)
        ids[y : y + rng.integers(1, 6), x : x + rng.integers(1, 7)] = label
    ids[rng.random((height, width)) < 0.05] = -1  # negative ids are background too
    return ids


@pytest.mark.parametrize(("height", "width", "seed"), [(8, 9, 0), (12, 15, 1), (10, 6, 2)])
def test_oracle_points_match_reference(height, width, seed, device) -> None:
    ids = random_instances(height, width, seed)
    got = oracle_points(torch.from_numpy(ids).to(device))
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.cpu().tolist() == reference_oracle(ids)


def test_oracle_points_are_each_instances_most_interior_pixel(device) -> None:
    ids = torch.zeros(7, 9, dtype=torch.int32, device=device)
    assert oracle_points(ids).shape == (0, 2)
    ids[1:6, 2:7] = 4  # 5x5 square: centre (4, 3)
    ids[0, 8] = 2  # single pixel
    assert oracle_points(ids).tolist() == [[8, 0], [4, 3]]
    # a 2x4 bar: all 8 pixels are at distance 1; mean (x=2.5, y=1.5), floored
    bar = torch.zeros(4, 6, dtype=torch.int64, device=device)
    bar[1:3, 1:5] = 1
    assert oracle_points(bar).tolist() == [[2, 1]]
    assert reference_oracle(bar.cpu().numpy()) == [[2, 1]]
    # an instance covering the whole frame: all pixels tie, mean of the frame
    assert oracle_points(torch.ones(3, 5, dtype=torch.int64, device=device)).tolist() == [[2, 1]]


# --------------------------------------------------------------------------- grid


@pytest.mark.parametrize(("height", "width", "n"), [(1024, 2048, 32), (64, 64, 4), (10, 6, 3)])
def test_grid_points_are_sams_grid(height, width, n, device) -> None:
    sam = build_point_grid(n) * np.array([[width, height]])  # SAM's own grid, (x, y)
    got = grid_points(height, width, n, device=device)
    assert got.dtype == torch.int64
    assert got.device == device
    assert got.cpu().numpy().tolist() == np.floor(sam + 1e-9).astype(np.int64).tolist()


def test_grid_points_reference_1024x2048() -> None:
    got = grid_points(1024, 2048, 32)
    assert got.shape == (1024, 2)
    assert got[:2].tolist() == [[32, 16], [96, 16]]
    assert got[-1].tolist() == [2016, 1008]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: candidate_points(torch.zeros(2, 2, 2)), "score must have 2 dimensions"),
        (lambda: candidate_points(torch.zeros(2, 2, dtype=torch.int64)), "score must have dtype"),
        (lambda: candidate_points(torch.tensor([[0.0, float("nan")]])), "score contains NaN"),
        (
            lambda: candidate_points(torch.zeros(2, 2), ignore=torch.zeros(2, 3, dtype=bool)),
            r"ignore shape \(2, 3\) does not match score shape \(2, 2\)",
        ),
        (
            lambda: candidate_points(torch.zeros(2, 2), ignore=torch.zeros(2, 2)),
            "ignore must have dtype torch.bool",
        ),
        (lambda: farthest_point_sampling(torch.zeros(3, 2), 2), "points must have dtype integer"),
        (
            lambda: farthest_point_sampling(torch.zeros(3, 3, dtype=torch.int64), 2),
            r"points must have shape \[N, 2\]",
        ),
        (
            lambda: farthest_point_sampling(torch.zeros(3, dtype=torch.int64), 2),
            "points must have 2 dimensions",
        ),
        (lambda: farthest_point_sampling(torch.zeros(3, 2, dtype=int), -1), "k must be >= 0"),
        (lambda: random_points(torch.zeros(3, 2, dtype=int), 2.0, seed=0), "k must be an int"),
        (lambda: kmeans_points(torch.zeros(3, 2), 2, seed=0), "points must have dtype integer"),
        (
            lambda: kmeans_points(torch.zeros(3, 2, dtype=int), 2, seed=0, iters=0),
            "iters must be >= 1",
        ),
        (lambda: oracle_points(torch.zeros(3, 3)), "instance_ids must have dtype integer"),
        (
            lambda: oracle_points(torch.zeros(3, dtype=torch.int64)),
            "instance_ids must have 2 dimensions",
        ),
        (lambda: grid_points(0, 4, 2), "height must be >= 1"),
        (
            lambda: candidate_points(torch.zeros(2, 2), threshold=float("nan")),
            "threshold must be a finite number",
        ),
        (
            lambda: candidate_points(torch.zeros(2, 2), fallback_threshold=None),
            "fallback_threshold must be a finite number",
        ),
        (
            lambda: candidate_points(torch.zeros(2, 2), ignore_value=float("-inf")),
            "ignore_value must be a finite number",
        ),
        (lambda: random_points(torch.zeros(3, 2, dtype=int), 2, seed=1.5), "seed must be an int"),
        (lambda: kmeans_points(torch.zeros(3, 2, dtype=int), 2, seed=None), "seed must be an int"),
    ],
)
def test_sampler_inputs_of_wrong_shape_or_dtype_are_refused_naming_the_argument(
    call, message
) -> None:
    with pytest.raises(ValueError, match=message):
        call()
