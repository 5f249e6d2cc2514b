"""Parquet sinks of a run directory (schemas: :mod:`pipelines.mining.schema`), top-N ranking."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.mining.schema import TABLES
from pipelines.mining.tables import SINGLE_FILE_TABLES, table_path

__all__ = ["TopCandidates", "WriteTable", "rank_candidates"]


class WriteTable(beam.PTransform):
    """Write dict rows as the named table of ``pipelines.mining.schema.TABLES`` into ``run_dir``."""

    def __init__(self, table: str, run_dir: str, compression: str = "zstd") -> None:
        super().__init__()
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; known: {sorted(TABLES)}")
        self.table = table
        self.run_dir = run_dir
        self.compression = compression

    def expand(self, rows: beam.PCollection) -> beam.pvalue.PDone:
        path = table_path(self.run_dir, self.table)
        single = self.table in SINGLE_FILE_TABLES
        return rows | beam.io.WriteToParquet(
            path if single else FileSystems.join(path, "part"),
            schema=TABLES[self.table],
            codec=self.compression,
            file_name_suffix="" if single else ".parquet",
            num_shards=1 if single else 0,
            shard_name_template="" if single else None,
        )


def _rank_key(row: dict[str, Any]) -> tuple[float, str]:
    return (row["score"], row["instance_id"])


def rank_candidates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by descending ``(score, instance_id)`` with ``rank`` 1..N."""
    ordered = sorted(rows, key=_rank_key, reverse=True)
    return [{"rank": rank, **row} for rank, row in enumerate(ordered, start=1)]


class TopCandidates(beam.PTransform):
    """The global top-``n`` instance rows by score, ranked 1..N (ties: higher instance_id)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def expand(self, instances: beam.PCollection) -> beam.PCollection:
        return (
            instances
            | "Top" >> beam.combiners.Top.Of(self.n, key=_rank_key)
            | "Rank" >> beam.FlatMap(rank_candidates)
        )
