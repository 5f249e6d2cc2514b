"""``ugains review similar``: "more like this" from the shell, over a run's instances.

The same question as the App's similarity sort (FiftyOne Brain index of the review dataset's
patches), asked of every instance a run found, not only its candidates: the ``k`` instances
whose embeddings (SAM features pooled in the mask, unit length) have the highest cosine
similarity to the given one. Instances of the query's own track are left out unless asked
for: they are the same object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.mining.schema import embedding_matrix
from pipelines.mining.tables import TableError, read_table
from pipelines.review.fields import ReviewError
from transforms.similarity import most_similar

__all__ = ["format_similar", "similar_instances"]

_COLUMNS = ["instance_id", "frame_key", "frame_uri", "log_id", "track_id", "score", "embedding"]


def similar_instances(
    run_dir: str | Path, instance_id: str, k: int = 50, same_track: bool = False
) -> list[dict[str, Any]]:
    """The ``k`` instances of the run most similar to ``instance_id``, most similar first;
    each row has ``similarity``. Raises :class:`ReviewError` naming what is wrong."""
    if k < 1:
        raise ReviewError(f"-k must be >= 1, got {k}")
    path = Path(run_dir).expanduser()
    if not (path / "run.json").exists():
        raise ReviewError(f"{path} is not a mining run directory: run.json is missing")
    try:
        table = read_table(str(path), "instances", _COLUMNS)
    except TableError as error:
        raise ReviewError(str(error)) from None
    rows = table.drop_columns(["embedding"]).to_pylist()
    found = [i for i, row in enumerate(rows) if row["instance_id"] == instance_id]
    if not found:
        raise ReviewError(f"run {path} has no instance {instance_id!r}")
    embeddings = embedding_matrix(table["embedding"])
    query = found[0]
    if not embeddings[query].any():
        raise ReviewError(
            f"instance {instance_id!r} has no embedding (mined without SAM, or by a version "
            "before instance embeddings)"
        )
    track = rows[query]["track_id"]
    keep = np.array(
        [
            i != query
            and embeddings[i].any()
            and (same_track or track is None or row["track_id"] != track)
            for i, row in enumerate(rows)
        ],
        dtype=bool,
    )
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        return []
    vectors = torch.from_numpy(embeddings)
    values, order = most_similar(vectors[query : query + 1], vectors[candidates], k)
    return [
        {**rows[int(candidates[j])], "similarity": float(v)}
        for v, j in zip(values[0].tolist(), order[0].tolist(), strict=True)
    ]


def format_similar(instance_id: str, rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`similar_instances`' rows."""
    lines = [
        f"instances most similar to {instance_id} (cosine of SAM mask embeddings):",
        "| # | similarity | instance | track | score | frame |",
        "| ---: | ---: | --- | --- | ---: | --- |",
    ]
    for number, row in enumerate(rows, start=1):
        lines.append(
            f"| {number} | {row['similarity']:.3f} | {row['instance_id']} | "
            f"{row['track_id'] or '-'} | {row['score']:.3f} | {row['frame_uri']} |"
        )
    return "\n".join(lines)
