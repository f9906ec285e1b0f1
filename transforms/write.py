"""Writes a run's tables as Hive-style Parquet partitions and publishes them atomically per run.

Each table is first written by ``WriteToParquet`` (explicit schema; temp files renamed at finalize, so retried
bundles never duplicate rows) under a per-launch staging folder ``<output>/_staging/run_id=<run_id>/<launch>/``.
Once every table is written, :class:`PublishRunFn` (one call, after all writes) replaces the run's partitions:
it removes the old ``_SUCCESS`` markers and files of ``<output>/<table>/run_id=<run_id>/``, moves the staged
files in, writes ``_SUCCESS`` into every partition and deletes the staging folder. So rerunning a run id
replaces that run (no duplicate rows), a new run id gets its own partitions, and readers that glob
``*.parquet`` never see temp files (Beam's temp files and the staging folder start with ``beam-temp`` / ``_``).

The files hold exactly the columns of ``schemas.parquet.TABLES``: ``run_id`` is not among them (it is the Hive
partition folder), so ``pq.read_table(<output>/<table>)``, DuckDB ``hive_partitioning`` and BigQuery Hive-partitioned
external tables all read the layout as it is. ``WriteToParquet`` writes only the schema's columns of each row dict.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from schemas.parquet import SCHEMA_VERSION, TABLES

__all__ = ["WriteRunTables", "PublishRunFn", "partition_dir", "staging_dir", "SUCCESS_MARKER"]

_LOG = logging.getLogger(__name__)
SUCCESS_MARKER = "_SUCCESS"


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base.rstrip("/"), *parts)


def partition_dir(output: str, table: str, run_id: str) -> str:
    """``<output>/<table>/run_id=<run_id>``: where a run's files of one table live."""
    return _join(output, table, f"run_id={run_id}")


def staging_dir(output: str, run_id: str, launch_id: str) -> str:
    """``<output>/_staging/run_id=<run_id>/<launch_id>``: one launch's staged files before publishing."""
    return _join(output, "_staging", f"run_id={run_id}", launch_id)


def _is_local(path: str) -> bool:
    return "://" not in path


def _make_dirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except OSError:  # exists already (local), or no folders at all (object stores)
        pass


class PublishRunFn(beam.DoFn):
    """Replaces the run's partitions with the staged files (input: the list of ``(table, staged path)``)."""

    def __init__(self, output: str, run_id: str, launch_id: str) -> None:
        self._output, self._run_id, self._launch_id = output, run_id, launch_id

    def process(self, staged: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Publishes the run; yields ``{"table": name, "files": [final paths]}`` per table."""
        by_table: dict[str, list[str]] = {name: [] for name in TABLES}
        for table, path in staged:
            by_table[table].append(path)
        dirs = {t: partition_dir(self._output, t, self._run_id) for t in TABLES}
        markers = [_join(d, SUCCESS_MARKER) for d in dirs.values()]
        present = [m for m in markers if FileSystems.exists(m)]
        if present:  # readers must not trust a half-replaced run
            FileSystems.delete(present)
        published = {}
        for table, files in by_table.items():
            target = dirs[table]
            if _is_local(target):
                _make_dirs(target)
            dests = [_join(target, posixpath.basename(f)) for f in files]
            try:
                old = [m.path for m in FileSystems.match([_join(target, "*")])[0].metadata_list]
            except Exception:  # noqa: BLE001 - no partition yet
                old = []
            stale = [p for p in old if p not in dests]
            if stale:
                FileSystems.delete(stale)
            # Idempotent on retry: a source already moved (missing, destination present) is skipped.
            moves = [(s, d) for s, d in zip(files, dests) if FileSystems.exists(s)]
            if moves:
                dest_present = [d for _, d in moves if FileSystems.exists(d)]
                if dest_present:
                    FileSystems.delete(dest_present)
                FileSystems.rename([s for s, _ in moves], [d for _, d in moves])
            published[table] = dests
        info = json.dumps({"run_id": self._run_id, "schema_version": SCHEMA_VERSION, "launch_id": self._launch_id,
                           "files": {t: len(f) for t, f in published.items()}}).encode()
        for marker in markers:
            with FileSystems.create(marker) as f:
                f.write(info)
        staging = staging_dir(self._output, self._run_id, self._launch_id)
        try:
            FileSystems.delete([staging + "/"] if not _is_local(staging) else [staging])
        except Exception:  # noqa: BLE001 - leftover staging is harmless (under _staging)
            _LOG.warning("could not delete staging folder %s", staging, exc_info=True)
        if _is_local(staging):  # drop now-empty parents; object stores have no folders
            for parent in (posixpath.dirname(staging), posixpath.dirname(posixpath.dirname(staging))):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
        for table, files in published.items():
            yield {"table": table, "files": files}


class WriteRunTables(beam.PTransform):
    """Writes ``{table: PCollection[row dict]}`` for every table in ``schemas.parquet.TABLES``, then publishes.

    Args:
        output: output folder or URI prefix.
        run_id: the run's partition value.
        launch_id: unique per launch (names the staging folder).
        codec: Parquet compression codec.
    """

    def __init__(self, output: str, run_id: str, launch_id: str, codec: str = "snappy") -> None:
        super().__init__()
        self._output, self._run_id, self._launch_id, self._codec = output, run_id, launch_id, codec

    def expand(self, tables: dict[str, PCollection]) -> PCollection:
        """Returns the published ``{"table", "files"}`` records."""
        missing = sorted(set(TABLES) - set(tables))
        if missing:
            raise ValueError(f"WriteRunTables needs every table; missing {missing}")
        staging = staging_dir(self._output, self._run_id, self._launch_id)
        written = []
        for name, schema in TABLES.items():
            label = name.capitalize()
            files = tables[name] | f"Write{label}" >> beam.io.WriteToParquet(
                _join(staging, name, "part"), schema=schema, codec=self._codec, file_name_suffix=".parquet")
            written.append(files | f"Tag{label}Files" >> beam.Map(lambda path, table=name: (table, path)))
        return (written
                | "FlattenWrittenFiles" >> beam.Flatten()
                | "CollectWrittenFiles" >> beam.combiners.ToList()
                | "PublishRun" >> beam.ParDo(PublishRunFn(self._output, self._run_id, self._launch_id)))
