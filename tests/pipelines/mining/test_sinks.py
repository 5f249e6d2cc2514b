"""Sinks: tables written with their schema and metadata; the global top-N ranking."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.mining.schema import ERRORS_SCHEMA
from pipelines.mining.sinks import TopCandidates, WriteTable, rank_candidates
from pipelines.mining.tables import TableError, count_rows, read_table


def instance(score: float, instance_id: str) -> dict:
    return {"score": score, "instance_id": instance_id}


def test_rank_candidates_orders_by_descending_score_then_instance_id() -> None:
    rows = [instance(0.1, "a#0"), instance(0.9, "b#0"), instance(0.1, "c#0"), instance(0.5, "a#1")]
    ranked = rank_candidates(rows)
    assert [(r["rank"], r["instance_id"]) for r in ranked] == [
        (1, "b#0"),
        (2, "a#1"),
        (3, "c#0"),
        (4, "a#0"),
    ]


def test_top_candidates_keeps_the_global_top_n_ranked() -> None:
    scores = [0.3, -1.0, 0.8, 0.1, 0.5, 0.8]
    rows = [instance(s, f"f/{i:06d}#0") for i, s in enumerate(scores)]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        top = p | beam.Create(rows) | TopCandidates(3)
        ranked = top | beam.Map(lambda r: (r["rank"], r["score"], r["instance_id"]))
        assert_that(
            ranked,
            equal_to([(1, 0.8, "f/000005#0"), (2, 0.8, "f/000002#0"), (3, 0.5, "f/000004#0")]),
        )


def error(key: str) -> dict:
    return {
        "run_id": "r",
        "frame_key": key,
        "frame_uri": f"/x/{key}.png",
        "log_id": "x",
        "frame_index": 0,
        "timestamp": None,
        "stage": "decode",
        "error_type": "FrameDecodeError",
        "reason": "empty",
        "config_fingerprint": "fp",
    }


def test_write_table_writes_the_declared_schema_with_its_metadata(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create([error("a"), error("b")]) | WriteTable("errors", run_dir, "zstd")

    files = sorted((tmp_path / "run" / "errors").glob("*.parquet"))
    assert files
    schema = pq.read_schema(files[0])
    assert schema.equals(ERRORS_SCHEMA, check_metadata=True)
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert count_rows(run_dir, "errors") == 2
    assert sorted(read_table(run_dir, "errors").column("frame_key").to_pylist()) == ["a", "b"]


def test_reading_a_table_that_was_not_written_gives_an_empty_table(tmp_path: Path) -> None:
    assert read_table(str(tmp_path), "frames").num_rows == 0
    assert count_rows(str(tmp_path), "frames") == 0


def test_a_reader_asks_for_its_columns_and_foreign_files_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.mining.schema import FRAMES_SCHEMA

    folder = tmp_path / "run" / "errors"
    folder.mkdir(parents=True)
    row = {field.name: "x" if pa.types.is_string(field.type) else 0 for field in ERRORS_SCHEMA}
    row.update(frame_uri="a.png", frame_key="log/000000", stage="decode", reason="bad")
    table = pa.Table.from_pylist([row], schema=ERRORS_SCHEMA)
    pq.write_table(table.drop_columns(["reason"]), folder / "part-0.parquet")
    run = str(tmp_path / "run")

    assert read_table(run, "errors", ["frame_uri", "stage"]).to_pylist() == [
        {"frame_uri": "a.png", "stage": "decode"}
    ]
    with pytest.raises(TableError, match=r"part-0\.parquet lacks the column\(s\) reason"):
        read_table(run, "errors")
    pq.write_table(FRAMES_SCHEMA.empty_table(), folder / "part-1.parquet")
    with pytest.raises(TableError, match=r"part-1\.parquet is table 'frames' version"):
        read_table(run, "errors", ["frame_uri"])
