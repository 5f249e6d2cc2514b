"""Reading a run's tables back: where they lie, their files, their rows (any FileSystems URI).

Every reader of run tables (the ledger, review, the world's scoring, the command's summary)
goes through :func:`read_table`, which refuses files that are not the table they should be.
Beam's FileSystems is imported when a table is read, so that importing this module (``ugains
review --help``) stays light.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.mining.schema import ADDED_IN_VERSION_2, READABLE_VERSIONS, TABLES

__all__ = [
    "SINGLE_FILE_TABLES",
    "TableError",
    "count_rows",
    "read_table",
    "table_files",
    "table_path",
]


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


# Sharded tables are folders of part files; candidates is one file.
SINGLE_FILE_TABLES = ("candidates",)


def table_path(run_dir: str, table: str) -> str:
    """``<run_dir>/candidates.parquet`` or the folder ``<run_dir>/<table>/``."""
    if table in SINGLE_FILE_TABLES:
        return _filesystems().join(run_dir, f"{table}.parquet")
    return _filesystems().join(run_dir, table)


def table_files(run_dir: str, table: str) -> list[str]:
    """The Parquet files of a table of a run directory (none if it was not written)."""
    path = table_path(run_dir, table)
    pattern = path if table in SINGLE_FILE_TABLES else _filesystems().join(path, "*.parquet")
    matches = _filesystems().match([pattern])[0].metadata_list
    return sorted(meta.path for meta in matches)


class TableError(ValueError):
    """A table file of a run that cannot be read as that table (one line, naming the file)."""


def _check_table_file(path: str, schema: pa.Schema, table: str, columns: list[str]) -> list[str]:
    """The columns of ``columns`` the file lacks and that its version never had (to fill)."""
    metadata = schema.metadata or {}
    name = metadata.get(b"ugains.table", b"").decode()
    version = metadata.get(b"ugains.schema_version", b"").decode()
    readable = [str(v) for v in READABLE_VERSIONS]
    if name != table or version not in readable:
        raise TableError(
            f"{path} is table {name or '?'!r} version {version or '?'}, expected "
            f"{table!r} version {' or '.join(readable)}"
        )
    absent = [c for c in columns if c not in schema.names]
    added = ADDED_IN_VERSION_2.get(table, ()) if version == "1" else ()
    missing = [c for c in absent if c not in added]
    if missing:
        raise TableError(f"{path} lacks the column(s) {', '.join(missing)}")
    return absent


def _with_nulls(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with null columns for the fields of ``schema`` it lacks, in schema order."""
    columns = [
        table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names)


def read_table(
    run_dir: str, table: str, columns: list[str] | tuple[str, ...] | None = None
) -> pa.Table:
    """Read a table of a run directory (local or FileSystems URI) with its declared types.

    ``columns``: only these (all of the declared schema by default), so that a reader asking
    for what it uses also reads runs written before a later column was added.

    Files of an older schema version (``READABLE_VERSIONS``) are read with the columns added
    since filled with nulls: a version-1 run has no embeddings and no tracks.

    Raises:
        TableError: a file that is not this table (name or schema version in its metadata),
            lacks a column asked for, or is not Parquet.
    """
    declared = TABLES[table]
    wanted = list(columns) if columns is not None else list(declared.names)
    added = ADDED_IN_VERSION_2.get(table, ())
    # Columns a version-1 file lacks come back null, so the reader's view allows nulls there.
    schema = pa.schema(
        [declared.field(n).with_nullable(True) if n in added else declared.field(n) for n in wanted]
    )
    parts = []
    for path in table_files(run_dir, table):
        try:
            with _filesystems().open(path) as handle:
                parquet = pq.ParquetFile(handle)
                absent = _check_table_file(path, parquet.schema_arrow, table, wanted)
                present = [c for c in wanted if c not in absent]
                part = parquet.read(columns=present)
                parts.append(_with_nulls(part, schema).cast(schema))
        except (OSError, pa.ArrowException) as error:
            raise TableError(f"cannot read Parquet table {path}: {error}") from None
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)


def count_rows(run_dir: str, table: str) -> int:
    """Rows of a table, from the Parquet footers (no data read)."""
    total = 0
    for path in table_files(run_dir, table):
        with _filesystems().open(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total
