"""Reading a run's tables back: where they lie, their files, their rows (any FileSystems URI).

Every reader of run tables (the ledger, review, the world's scoring, the command's summary)
goes through :func:`read_table`, which refuses files that are not the table they should be.
Beam's FileSystems is imported when a table is read, so that importing this module (``ugains
review --help``) stays light.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.mining.schema import SCHEMA_VERSION, TABLES

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


def _check_table_file(path: str, schema: pa.Schema, table: str, columns: list[str]) -> None:
    metadata = schema.metadata or {}
    name = metadata.get(b"ugains.table", b"").decode()
    version = metadata.get(b"ugains.schema_version", b"").decode()
    if name != table or version != str(SCHEMA_VERSION):
        raise TableError(
            f"{path} is table {name or '?'!r} version {version or '?'}, expected "
            f"{table!r} version {SCHEMA_VERSION}"
        )
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise TableError(f"{path} lacks the column(s) {', '.join(missing)}")


def read_table(
    run_dir: str, table: str, columns: list[str] | tuple[str, ...] | None = None
) -> pa.Table:
    """Read a table of a run directory (local or FileSystems URI) with its declared types.

    ``columns``: only these (all of the declared schema by default), so that a reader asking
    for what it uses also reads runs written before a later column was added.

    Raises:
        TableError: a file that is not this table (name or schema version in its metadata),
            lacks a column asked for, or is not Parquet.
    """
    declared = TABLES[table]
    wanted = list(columns) if columns is not None else list(declared.names)
    schema = pa.schema([declared.field(name) for name in wanted])
    parts = []
    for path in table_files(run_dir, table):
        try:
            with _filesystems().open(path) as handle:
                parquet = pq.ParquetFile(handle)
                _check_table_file(path, parquet.schema_arrow, table, wanted)
                parts.append(parquet.read(columns=wanted).cast(schema))
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
