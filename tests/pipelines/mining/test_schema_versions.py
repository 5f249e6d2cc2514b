"""Runs written by schema version 1 (before embeddings and tracks) stay readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.mining.schema import (
    ADDED_IN_VERSION_2,
    EMBEDDING_DIM,
    EMBEDDING_TYPE,
    INSTANCES_SCHEMA,
    embedding_matrix,
)
from pipelines.mining.tables import TableError, read_table


def _version_1_schema() -> pa.Schema:
    kept = [f for f in INSTANCES_SCHEMA if f.name not in ADDED_IN_VERSION_2["instances"]]
    return pa.schema(kept, metadata={"ugains.table": "instances", "ugains.schema_version": "1"})


def _row(schema: pa.Schema, instance_id: str) -> dict:
    values = {pa.string(): instance_id, pa.binary(): b"", pa.float32(): 0.5, pa.float64(): 0.0}
    return {f.name: values.get(f.type, 1) for f in schema}


def test_a_version_1_instances_file_reads_with_null_embedding_and_track(tmp_path: Path) -> None:
    schema = _version_1_schema()
    (tmp_path / "instances").mkdir()
    table = pa.Table.from_pylist([_row(schema, "a"), _row(schema, "b")], schema=schema)
    pq.write_table(table, tmp_path / "instances" / "part-0.parquet")

    got = read_table(str(tmp_path), "instances")

    assert got.schema.names == INSTANCES_SCHEMA.names
    assert got["track_id"].to_pylist() == [None, None]
    assert got["embedding"].null_count == 2
    assert np.array_equal(embedding_matrix(got["embedding"]), np.zeros((2, EMBEDDING_DIM)))
    assert got["instance_id"].to_pylist() == ["a", "b"]


def test_a_version_1_file_still_lacks_columns_that_version_1_had(tmp_path: Path) -> None:
    schema = _version_1_schema().remove(_version_1_schema().get_field_index("score"))
    (tmp_path / "instances").mkdir()
    pq.write_table(schema.empty_table(), tmp_path / "instances" / "part-0.parquet")
    with pytest.raises(TableError, match="lacks the column"):
        read_table(str(tmp_path), "instances")


def test_embedding_matrix_reads_float16_rows_as_float32() -> None:
    row = np.linspace(-1, 1, EMBEDDING_DIM).astype(np.float16)
    column = pa.array([row, row * 0], type=EMBEDDING_TYPE)
    got = embedding_matrix(column)
    assert got.dtype == np.float32
    assert np.array_equal(got, np.stack([row, row * 0]).astype(np.float32))
