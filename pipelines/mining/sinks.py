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
    """Rows by descending ``(score, instance_id)`` with ``rank`` 1..N (and the candidates
    table's track columns, null unless the rows have them)."""
    ordered = sorted(rows, key=_rank_key, reverse=True)
    no_track = {"track_frames": None, "duplicate_of": None}
    return [{"rank": rank, **no_track, **row} for rank, row in enumerate(ordered, start=1)]


class TopCandidates(beam.PTransform):
    """The global top-``n`` instance rows by score, ranked 1..N (ties: higher instance_id);
    with ``max_per_log``, at most that many of each drive log."""

    def __init__(self, n: int, max_per_log: int | None = None) -> None:
        super().__init__()
        self.n = n
        self.max_per_log = max_per_log

    def expand(self, instances: beam.PCollection) -> beam.PCollection:
        if self.max_per_log is not None:
            instances = (
                instances
                | "KeyByLog" >> beam.Map(lambda row: (row["log_id"], row))
                | "TopPerLog" >> beam.combiners.Top.PerKey(self.max_per_log, key=_rank_key)
                | "PerLogRows" >> beam.FlatMap(lambda keyed: keyed[1])
            )
        return (
            instances
            | "Top" >> beam.combiners.Top.Of(self.n, key=_rank_key)
            | "Rank" >> beam.FlatMap(rank_candidates)
        )
