"""Reading an extraction output folder back: its runs, and any table of one run or of all runs.

An output folder holds ``<output>/<table>/run_id=<run_id>/*.parquet`` (+ ``_SUCCESS``) for every table of
``schemas.parquet.TABLES``. ``run_id`` is the Hive partition key: it is taken from the folder name (files do not
store it), and every table read here carries it as its first column. Everything here reads with pyarrow through
fsspec, so local folders and ``gs://`` (gcsfs) both work. ``kiebeam extract``'s run summary, ``inspect``,
``check`` and ``visualize`` all read tables through :func:`read_table` / :func:`read_parts`.
"""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.parquet import PARTITION_FIELD, TABLES, with_partition

__all__ = ["list_runs", "read_parts", "read_table", "has_success"]


def _fs(output: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(str(output))
    return fs, root.rstrip("/")


def list_runs(output: str) -> list[str]:
    """Run ids present in any table of ``output``, sorted.

    Args:
        output: output folder (local path or ``gs://...``).

    Returns:
        The ``run_id`` partition values found.
    """
    fs, root = _fs(output)
    runs = {p.rstrip("/").rsplit("run_id=", 1)[1] for t in TABLES for p in fs.glob(f"{root}/{t}/run_id=*")}
    return sorted(runs)


def read_parts(output: str, table: str, run_id: str | None,
               columns: list[str] | None = None) -> list[tuple[str, str, pa.Table, bool]]:
    """``(partition run_id, file, rows, stores_run_id)`` of every Parquet file of one table.

    ``rows`` has ``with_partition(schema)``: ``run_id`` from the folder, then the file's schema columns (only
    ``columns`` of them, in schema order, when given).
    ``stores_run_id`` flags a file that also has a ``run_id`` column (schema 1.x layout; Hive readers reject it).
    """
    schema = _schema(table, columns)
    fs, root = _fs(output)
    parts = []
    for path in sorted(fs.glob(f"{root}/{table}/run_id={run_id or '*'}/*.parquet")):
        part_run = path.rsplit("run_id=", 1)[1].split("/", 1)[0]
        with fs.open(path, "rb") as f:  # one file, no dataset discovery: the folder's run_id is added below
            file = pq.ParquetFile(f)
            stored = file.schema_arrow.names
            missing = [n for n in schema.names if n not in stored]
            if missing:
                raise ValueError(f"{path}: columns {missing} of the '{table}' schema are missing")
            rows = file.read(columns=schema.names)
        stores_run_id = PARTITION_FIELD.name in stored
        rows = rows.select(schema.names).cast(schema)
        run_col = pa.array([part_run] * rows.num_rows, PARTITION_FIELD.type)
        parts.append((part_run, path, rows.add_column(0, PARTITION_FIELD, run_col), stores_run_id))
    return parts


def read_table(output: str, table: str, run_id: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """All rows of one table (of one run, or of every run): ``run_id`` from the partition folder, then the columns.

    Args:
        output: output folder (local path or ``gs://...``).
        table: a name in ``schemas.parquet.TABLES``.
        run_id: only this run; ``None`` for all runs.
        columns: only these schema columns (read from the files, nothing more); ``None`` for all.

    Returns:
        A ``pyarrow.Table`` with ``with_partition(TABLES[table])`` (empty when no file exists), narrowed to
        ``columns`` when given.

    Raises:
        ValueError: unknown table or column, or a file lacks schema columns.
    """
    parts = [rows for _, _, rows, _ in read_parts(output, table, run_id, columns)]
    return pa.concat_tables(parts) if parts else with_partition(_schema(table, columns)).empty_table()


def has_success(output: str, table: str, run_id: str) -> bool:
    """Whether the run's partition of ``table`` carries its ``_SUCCESS`` marker (it was published whole)."""
    fs, root = _fs(output)
    return fs.exists(f"{root}/{table}/run_id={run_id}/_SUCCESS")


def _schema(table: str, columns: list[str] | None) -> pa.Schema:
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}', expected one of {sorted(TABLES)}")
    schema = TABLES[table]
    if columns is None:
        return schema
    unknown = sorted(set(columns) - set(schema.names))
    if unknown:
        raise ValueError(f"unknown columns {unknown} of table '{table}', expected some of {schema.names}")
    return pa.schema([f for f in schema if f.name in columns])
