"""Reading an extraction output folder back: its runs, and any table of one run or of all runs.

An output folder holds ``<output>/<table>/run_id=<run_id>/version=<launch>/*.parquet`` for every table of
``schemas.parquet.TABLES`` and one pointer per run, ``<output>/_published/run_id=<run_id>.json``, naming the version
that was published whole (``transforms.write``). Everything here reads only published versions: a run that was
never published, a launch that was killed, an older version being replaced are invisible. ``run_id`` is the Hive
partition key: it is taken from the folder name (files do not store it), and every table read here carries it as
its first column. Everything here reads with pyarrow through
fsspec, so local folders and ``gs://`` (gcsfs) both work. ``kiebeam extract``'s run summary, ``inspect``,
``check`` and ``visualize`` all read tables through :func:`read_table` / :func:`read_parts`.
"""

from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.parquet import PARTITION_FIELD, TABLES, with_partition
from transforms.write import POINTER_DIR, VERSION_KEY

__all__ = ["list_runs", "read_parts", "read_table", "published_version", "unpublished_folders"]


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
    return sorted(p.rsplit("/run_id=", 1)[1][:-len(".json")] for p in fs.glob(f"{root}/{POINTER_DIR}/run_id=*.json"))


def published_version(output: str, run_id: str) -> dict | None:
    """The pointer of a run (``{"run_id", "version", "schema_version", "files"}``), or None if never published."""
    fs, root = _fs(output)
    path = f"{root}/{POINTER_DIR}/run_id={run_id}.json"
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode())


def unpublished_folders(output: str) -> list[str]:
    """``run_id=`` / ``version=`` folders no pointer names (killed launches, not yet cleaned up; readers skip them)."""
    fs, root = _fs(output)
    published = {r: (published_version(output, r) or {}).get(VERSION_KEY) for r in list_runs(output)}
    out = []
    for t in TABLES:
        for path in fs.glob(f"{root}/{t}/run_id=*/*"):
            run = path.split("/run_id=", 1)[1].split("/", 1)[0]
            if path.rsplit("/", 1)[1] != f"{VERSION_KEY}={published.get(run)}":
                out.append(path)
    return sorted(out)


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
    runs = [r for r in list_runs(output) if run_id is None or r == run_id]
    paths = []
    for r in runs:
        pointer = published_version(output, r)
        paths += fs.glob(f"{root}/{table}/run_id={r}/{VERSION_KEY}={pointer[VERSION_KEY]}/*.parquet")
    for path in sorted(paths):
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
