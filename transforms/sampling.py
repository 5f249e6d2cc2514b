"""Point prompts for SAM (docs/method.md steps 3-5, and the dense-grid and oracle baselines).

Points are ``int64`` pixel coordinates ``(x, y)`` (column, row). Candidate point sets are
per frame and of variable length, so these functions take one frame; batching is done by the
caller (one call per frame: each call is a handful of device kernels and no host syncs for FPS).
"""

from __future__ import annotations

import numpy as np
import torch

from transforms._validate import (
    INT_DTYPES,
    check_bool,
    check_count,
    check_finite,
    check_float,
    check_no_nan,
    check_points,
    check_same_device,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "candidate_points",
    "farthest_point_sampling",
    "grid_points",
    "kmeans_points",
    "oracle_points",
    "random_points",
]


def candidate_points(
    score: torch.Tensor,
    *,
    threshold: float = -0.15,
    fallback_threshold: float = -15.0,
    ignore: torch.Tensor | None = None,
    ignore_value: float = -30.0,
) -> torch.Tensor:
    """Pixels likely to be anomalous (docs/method.md steps 3-4).

    Pixels in ``ignore`` are first set to ``ignore_value``; the candidates are the pixels with
    ``score >= threshold``, or, when there are none, those with ``score >= fallback_threshold``.

    Args:
        score: ``[H, W]`` float anomaly map, higher = more anomalous; no NaN.
        threshold: candidate threshold.
        fallback_threshold: threshold used when no pixel reaches ``threshold``.
            Thresholds are compared in ``score``'s dtype (as ``score >= threshold`` does).
        ignore: optional ``[H, W]`` bool, True = ignored pixel (car hood, borders).
        ignore_value: score given to ignored pixels.

    Returns:
        ``[N, 2]`` int64 ``(x, y)`` in row-major order (sorted by y, then x); ``N`` may be 0.
    """
    check_float("score", score, ndim=2)
    check_no_nan("score", score)
    for name, value in (
        ("threshold", threshold),
        ("fallback_threshold", fallback_threshold),
        ("ignore_value", ignore_value),
    ):
        check_finite(name, value)
    if ignore is not None:
        check_bool("ignore", ignore, ndim=2)
        check_same_shape("ignore", ignore.shape, "score", score.shape)
        check_same_device("ignore", ignore, "score", score)
        score = score.masked_fill(ignore, ignore_value)
    rows_cols = torch.nonzero(score >= threshold)
    if rows_cols.shape[0] == 0:
        rows_cols = torch.nonzero(score >= fallback_threshold)
    return rows_cols.flip(1)  # nonzero gives (y, x) in row-major order


def _squared_distances(points: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Exact int64 squared distances ``[N]`` from ``points [N, 2]`` to ``point [1, 2]``."""
    diff = points - point
    return (diff * diff).sum(dim=1)


def farthest_point_sampling(points: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy farthest point sampling (docs/method.md step 5).

    The first index is 0; each next one is the point with the largest squared Euclidean
    distance to the already chosen set, ties going to the lowest index. Distances are exact
    (int64), so ties are exact. A chosen point is never chosen again, even when ``points``
    holds duplicate coordinates.

    Vectorised: a running ``[N]`` min-distance tensor updated once per chosen point, i.e.
    ``min(N, k)`` steps of O(N) device ops and no host synchronisation. ``torch.argmax``
    returns the first maximal index (documented by PyTorch, on CPU and CUDA), which is the
    tie-break.

    Args:
        points: ``[N, 2]`` integer ``(x, y)``.
        k: number of points wanted, >= 0.

    Returns:
        ``[min(N, k)]`` int64 indices into ``points``, in selection order, all distinct.
    """
    check_points("points", points)
    check_count("k", k)
    n = points.shape[0]
    m = min(n, k)
    chosen = [torch.zeros(min(m, 1), dtype=torch.int64, device=points.device)]
    if m <= 1:
        return chosen[0]
    pts = points.to(torch.int64)
    min_d2 = _squared_distances(pts, pts[:1])
    min_d2[0] = -1  # chosen points get -1 and can never win the argmax again
    for _ in range(1, m):
        nxt = torch.argmax(min_d2).reshape(1)  # stays on the device: no host sync
        chosen.append(nxt)
        min_d2 = torch.minimum(min_d2, _squared_distances(pts, pts.index_select(0, nxt)))
        min_d2.index_fill_(0, nxt, -1)
    return torch.cat(chosen)


def random_points(points: torch.Tensor, k: int, *, seed: int) -> torch.Tensor:
    """Uniform random sampling without replacement (paper Table 4 ablation).

    The permutation is drawn from a CPU generator seeded with ``seed``, so the result is the
    same on every device.

    Args:
        points: ``[N, 2]`` integer ``(x, y)``.
        k: number of points wanted, >= 0.
        seed: random seed.

    Returns:
        ``[min(N, k)]`` int64 distinct indices into ``points``, ascending.
    """
    check_points("points", points)
    check_count("k", k)
    check_count("seed", seed, minimum=None)
    n = points.shape[0]
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=generator)[: min(n, k)]
    return chosen.sort().values.to(points.device)


def kmeans_points(points: torch.Tensor, k: int, *, seed: int, iters: int = 100) -> torch.Tensor:
    """K-means prompts (paper Table 4 ablation), snapped to candidate pixels.

    k-means++ initialisation, then Lloyd iterations until the assignment stops changing or
    ``iters`` iterations ran; an emptied cluster keeps its centre. Each final centre is
    replaced by the candidate point nearest to it (ties: lowest index), so every prompt lies
    on a candidate pixel; two centres can snap to the same pixel, giving a repeated point.

    Deterministic for a seed on every device: the k-means++ draws come from a CPU generator
    and are resolved with exact int64 sums; centres and distances are float64 with no
    reductions whose order could vary; cluster sums are one-hot float64 matmuls, exact for
    integer coordinates.

    Args:
        points: ``[N, 2]`` integer ``(x, y)``.
        k: number of clusters, >= 0.
        seed: random seed of the k-means++ initialisation.
        iters: maximum number of Lloyd iterations, >= 1.

    Returns:
        ``[min(N, k), 2]`` int64 ``(x, y)``, one per cluster. When ``N <= k`` every point is its
        own cluster and ``points`` is returned in order.
    """
    check_points("points", points)
    check_count("k", k)
    check_count("iters", iters, minimum=1)
    check_count("seed", seed, minimum=None)
    n = points.shape[0]
    pts = points.to(torch.int64)
    if n <= k:
        return pts.clone()
    if k == 0:
        return pts[:0].clone()
    device = points.device

    # k-means++: the next centre is drawn with probability D^2 / sum(D^2). With integer D^2
    # the draw "first index whose cumulative D^2 exceeds floor(u * total)" is exact.
    generator = torch.Generator().manual_seed(seed)
    uniforms = torch.rand(k, generator=generator, dtype=torch.float64).to(device)
    first = (uniforms[:1] * n).floor().long().clamp_(max=n - 1)
    centre_idx = [first]
    d2 = _squared_distances(pts, pts.index_select(0, first))
    for i in range(1, k):
        cumulative = d2.cumsum(0)
        target = (uniforms[i : i + 1] * cumulative[-1:].double()).floor().long()
        nxt = torch.searchsorted(cumulative, target, right=True).clamp_(max=n - 1)
        centre_idx.append(nxt)
        d2 = torch.minimum(d2, _squared_distances(pts, pts.index_select(0, nxt)))
    centres = pts.index_select(0, torch.cat(centre_idx)).double()  # [k, 2]

    pts_f = pts.double()
    x = pts_f[:, 0:1]  # [N, 1]
    y = pts_f[:, 1:2]
    cluster_ids = torch.arange(k, device=device)

    def distances(c: torch.Tensor) -> torch.Tensor:  # [N, k], no reduction over N
        return (x - c[:, 0]).square() + (y - c[:, 1]).square()

    assign = distances(centres).argmin(dim=1)
    for _ in range(iters):
        one_hot = (assign.unsqueeze(0) == cluster_ids.unsqueeze(1)).double()  # [k, N]
        counts = one_hot.sum(dim=1, keepdim=True)
        sums = one_hot @ pts_f
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        new_assign = distances(centres).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    nearest = distances(centres).argmin(dim=0)  # [k]: first minimum = lowest index
    return pts.index_select(0, nearest)


def oracle_points(instance_ids: torch.Tensor) -> torch.Tensor:
    """One prompt per ground-truth instance at its "centre" (docs/method.md step 5 oracle).

    The centre is the mean of the instance's pixels of maximal Euclidean distance transform
    value (distance to the nearest pixel outside the instance; the frame border is not
    "outside"), floored to a pixel.

    Evaluation-only upper bound, computed on the CPU with ``scipy.ndimage.distance_transform_edt``
    and one EDT per instance on its bounding box grown by one pixel (exact: the nearest outside
    pixel is always 4-adjacent to the instance). The loop is over instances, not pixels.

    Args:
        instance_ids: ``[H, W]`` integer instance ids; ids <= 0 are background.

    Returns:
        ``[I, 2]`` int64 ``(x, y)``, one row per instance id > 0 in ascending id order, on the
        device of ``instance_ids``.
    """
    from scipy import ndimage

    check_tensor("instance_ids", instance_ids, ndim=2, dtypes=INT_DTYPES, kind="integer")
    ids = instance_ids.cpu().numpy()
    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    labels = np.flatnonzero(unique > 0)  # positions in ``unique`` of the instances
    height, width = ids.shape
    out = np.zeros((len(labels), 2), dtype=np.int64)
    slices = ndimage.find_objects(inverse + 1)  # slices[j] = bbox of unique[j]
    for row, label in enumerate(labels):
        ys, xs = slices[label]
        y0, y1 = max(ys.start - 1, 0), min(ys.stop + 1, height)
        x0, x1 = max(xs.start - 1, 0), min(xs.stop + 1, width)
        inside = inverse[y0:y1, x0:x1] == label
        if inside.all():  # the instance fills the frame: no outside pixel, all are maximal
            best = inside
        else:
            dist = ndimage.distance_transform_edt(inside)
            best = dist == dist.max()
        rc = np.argwhere(best).mean(axis=0)
        out[row] = (x0 + int(np.floor(rc[1])), y0 + int(np.floor(rc[0])))
    return torch.from_numpy(out).to(instance_ids.device)


def grid_points(
    height: int, width: int, n_per_side: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """SAM's dense point grid (the "dense SAM grid 32x32" baseline).

    Cell centres ``((i + 0.5) * width / n, (j + 0.5) * height / n)`` as in
    ``segment_anything``'s ``build_point_grid`` scaled to the frame, taken to the pixel that
    contains them (floor; exact for sizes divisible by ``2 * n``, e.g. 1024x2048 and n = 32).

    Returns:
        ``[n * n, 2]`` int64 ``(x, y)``, row-major (y outer, x inner) like SAM.
    """
    check_count("height", height, minimum=1)
    check_count("width", width, minimum=1)
    check_count("n_per_side", n_per_side, minimum=1)
    odd = 2 * torch.arange(n_per_side, dtype=torch.int64, device=device) + 1
    xs = odd * width // (2 * n_per_side)
    ys = odd * height // (2 * n_per_side)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
