"""Similarity search and near-duplicate grouping over unit embeddings."""

from __future__ import annotations

import pytest
import torch

from transforms.similarity import most_similar, near_duplicates


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_most_similar_orders_by_cosine_with_ties_to_the_lower_index(device) -> None:
    embeddings = _unit([[1, 0], [0, 1], [1, 1], [1, 0], [-1, 0]]).to(device)
    values, indices = most_similar(embeddings[:1], embeddings, k=4)
    assert indices.tolist() == [[0, 3, 2, 1]]
    torch.testing.assert_close(values.cpu(), torch.tensor([[1.0, 1.0, 2**-0.5, 0.0]]))


def test_most_similar_returns_at_most_the_rows_there_are() -> None:
    values, indices = most_similar(_unit([[1, 0]]), _unit([[1, 0], [0, 1]]), k=50)
    assert values.shape == indices.shape == (1, 2)


def test_near_duplicates_point_to_the_best_similar_row_of_another_group(device) -> None:
    embeddings = _unit([[1, 0], [1, 0.01], [1, 0.02], [0, 1], [0, 1]]).to(device)
    groups = torch.tensor([0, 1, 2, 0, 0], device=device)
    scores = torch.tensor([0.5, 0.9, 0.1, 0.3, 0.2], device=device)
    got = near_duplicates(embeddings, groups, scores, threshold=0.99)
    # Rows 0 and 2 duplicate row 1 (the best of the three logs); rows 3 and 4 share a log.
    assert got.tolist() == [1, -1, 1, -1, -1]


def test_chains_of_near_duplicates_end_at_one_representative() -> None:
    # a ~ b ~ c but a !~ c at this threshold: c -> b -> a becomes c -> a.
    embeddings = _unit([[1, 0], [1, 0.5], [1, 1.2]])
    groups = torch.tensor([0, 1, 2])
    scores = torch.tensor([3.0, 2.0, 1.0])
    cos = embeddings @ embeddings.T
    threshold = float(min(cos[0, 1], cos[1, 2])) - 1e-6
    assert float(cos[0, 2]) < threshold
    assert near_duplicates(embeddings, groups, scores, threshold).tolist() == [-1, 0, 0]


def test_near_duplicates_refuse_rows_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="groups and scores must have 2 rows"):
        near_duplicates(_unit([[1, 0], [0, 1]]), torch.tensor([0]), torch.ones(2), 0.9)


def test_a_chain_back_into_the_rows_own_log_stops_at_its_first_step() -> None:
    # a (log 0) ~ b (log 1) ~ c (log 0), c ranks best: the chain a -> b -> c would end in a's
    # own log, so a points to b; b points to c.
    embeddings = _unit([[1, 0], [1, 0.5], [1, 1.2]])
    groups = torch.tensor([0, 1, 0])
    scores = torch.tensor([1.0, 2.0, 3.0])
    cos = embeddings @ embeddings.T
    threshold = float(min(cos[0, 1], cos[1, 2])) - 1e-6
    assert near_duplicates(embeddings, groups, scores, threshold).tolist() == [1, 2, -1]
