"""Embedding search: "more like this" and near-duplicates across drive logs.

Embeddings are unit rows (:func:`transforms.embeddings.mask_embeddings`), so the cosine
similarity of two is their dot product. :func:`near_duplicates` works in blocks of rows sized
so that a block of the similarity matrix stays under 2**26 entries.
"""

from __future__ import annotations

import torch

from transforms._validate import INT_DTYPES, check_count, check_finite, check_float, check_tensor

__all__ = ["most_similar", "near_duplicates"]

_BLOCK_ENTRIES = 1 << 26


def most_similar(
    queries: torch.Tensor, embeddings: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``embeddings`` most similar to each query, most similar first.

    Args:
        queries: ``[Q, C]`` float unit rows.
        embeddings: ``[N, C]`` float unit rows.
        k: neighbours per query (fewer when ``N < k``).

    Returns:
        ``([Q, k'] cosine similarity float32, [Q, k'] int64 row indices)``, ``k' = min(k, N)``;
        ties go to the lower index.
    """
    queries = check_float("queries", queries, ndim=2)
    embeddings = check_float("embeddings", embeddings, ndim=2)
    if queries.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"queries have {queries.shape[1]} channels but embeddings have {embeddings.shape[1]}"
        )
    k = min(check_count("k", k, minimum=1), embeddings.shape[0])
    similarity = queries.float() @ embeddings.float().T
    # topk does not promise the order of ties; a stable sort does.
    order = torch.argsort(similarity, dim=1, descending=True, stable=True)[:, :k]
    return torch.gather(similarity, 1, order), order


def near_duplicates(
    embeddings: torch.Tensor, groups: torch.Tensor, scores: torch.Tensor, threshold: float
) -> torch.Tensor:
    """For each row, the row it duplicates in another group, or -1.

    Row ``u`` is a near-duplicate candidate of row ``t`` when they are in different groups
    (drive logs), their cosine similarity is at least ``threshold``, and ``u`` ranks higher
    (higher score; ties: lower index). Each row points to its highest-ranked candidate, and
    pointers are followed to the end of their chain, so a group of near-duplicates points to
    one representative, which points to nothing; a chain that ends in the row's own group
    (A -> B of another log -> C of A's log) stops at its first step, so a row never points
    into its own group.

    Args:
        embeddings: ``[T, C]`` float unit rows.
        groups: ``[T]`` integer group of each row.
        scores: ``[T]`` float, higher ranks higher.
        threshold: smallest cosine similarity of a near-duplicate.

    Returns:
        ``[T]`` int64: the representative's row, or -1 for rows that duplicate nothing.
    """
    embeddings = check_float("embeddings", embeddings, ndim=2)
    groups = check_tensor("groups", groups, ndim=1, dtypes=INT_DTYPES)
    scores = check_float("scores", scores, ndim=1)
    threshold = check_finite("threshold", threshold)
    count = embeddings.shape[0]
    if groups.shape[0] != count or scores.shape[0] != count:
        raise ValueError(
            f"groups and scores must have {count} rows, got {groups.shape[0]} and {scores.shape[0]}"
        )
    device = embeddings.device
    rows = torch.arange(count, device=device)
    # Rank of each row: 0 is the best (highest score, then lowest index).
    order = torch.argsort(-scores.double(), stable=True)
    rank = torch.empty(count, dtype=torch.long, device=device)
    rank[order] = rows
    best = torch.full((count,), -1, dtype=torch.long, device=device)
    flat = embeddings.float()
    block = max(1, _BLOCK_ENTRIES // max(count, 1))
    for start in range(0, count, block):
        stop = min(start + block, count)
        similar = flat[start:stop] @ flat.T >= threshold
        similar &= groups[start:stop, None] != groups[None, :]
        similar &= rank[None, :] < rank[start:stop, None]
        # The candidate of lowest rank: the minimum of rank where similar, else count.
        candidate_rank = torch.where(similar, rank[None, :], count).min(dim=1).values
        found = candidate_rank < count
        best[start:stop] = torch.where(found, order[candidate_rank.clamp(max=count - 1)], -1)
    # Follow pointers: ranks strictly decrease along a chain, so this ends.
    root = torch.where(best >= 0, best, rows)
    while True:
        nxt = root[root]
        if torch.equal(nxt, root):
            break
        root = nxt
    root = torch.where(groups[root] == groups, best, root)  # best is of another group, or -1
    return torch.where(root != rows, root, -1)
