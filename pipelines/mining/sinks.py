"""Parquet sinks of a run directory (schemas: :mod:`pipelines.mining.schema`), top-N ranking."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.mining.schema import TABLES

__all__ = [
    "TopCandidates",
    "WriteTable",
    "count_rows",
    "rank_candidates",
    "read_table",
    "table_files",
    "table_path",
]

# Sharded tables are folders of part files; candidates is one file.
SINGLE_FILE_TABLES = ("candidates",)


def table_path(run_dir: str, table: str) -> str:
    """``<run_dir>/candidates.parquet`` or the folder ``<run_dir>/<table>/``."""
    if table in SINGLE_FILE_TABLES:
        return FileSystems.join(run_dir, f"{table}.parquet")
    return FileSystems.join(run_dir, table)


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


def table_files(run_dir: str, table: str) -> list[str]:
    """The Parquet files of a table of a run directory (none if it was not written)."""
    path = table_path(run_dir, table)
    pattern = path if table in SINGLE_FILE_TABLES else FileSystems.join(path, "*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(meta.path for meta in matches)


def read_table(run_dir: str, table: str) -> pa.Table:
    """Read a table of a run directory (local or FileSystems URI) with its declared schema."""
    parts = []
    for path in table_files(run_dir, table):
        with FileSystems.open(path) as handle:
            parts.append(pq.read_table(handle, schema=TABLES[table]))
    if not parts:
        return TABLES[table].empty_table()
    return pa.concat_tables(parts)


def count_rows(run_dir: str, table: str) -> int:
    """Rows of a table, from the Parquet footers (no data read)."""
    total = 0
    for path in table_files(run_dir, table):
        with FileSystems.open(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total
