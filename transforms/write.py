"""Writes a run's tables as versioned Hive-style Parquet partitions and publishes them all at once.

Layout (``run_id`` and ``version`` are Hive partition keys, folder names only)::

    <output>/<table>/run_id=<run_id>/version=<launch_id>/part-*.parquet     one folder per launch of the run
    <output>/_published/run_id=<run_id>.json                                 which version readers see

Every table of a launch is written by ``WriteToParquet`` (explicit schema; temp files renamed at finalize, so
retried bundles never duplicate rows) straight into its own ``version=<launch_id>`` folder, beside the previous
version, which nobody touches. Once every table is written, :class:`PublishRunFn` (one call, after all writes)
checks that every written file is there and then flips **one pointer**: it writes
``_published/run_id=<run_id>.json`` (``{"run_id", "version", "schema_version", "files": {table: [names]}}``)
under a temporary name and renames it into place, a single atomic step locally and a single object write on
GCS. Readers (``pipelines.output_reader``, ``kiebeam check``, the README's DuckDB views) read only the version
the pointer names, so a reader sees the previous run whole or the new run whole, never a mix, whatever moment a
launch is killed at. Only after the flip are the other versions of the run (the previous one, those of killed
launches, files of the older unversioned layout) and the old ``_staging/run_id=<run_id>/`` deleted. A launch
killed before the flip leaves an unpublished version folder that no reader sees and that the next launch of the
run id deletes; killed after it, the new version is published and only leftovers wait for that cleanup.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from schemas.parquet import SCHEMA_VERSION, TABLES

__all__ = ["WriteRunTables", "PublishRunFn", "partition_dir", "version_dir", "pointer_path", "read_pointer",
           "POINTER_DIR", "VERSION_KEY"]

_LOG = logging.getLogger(__name__)
POINTER_DIR = "_published"
VERSION_KEY = "version"


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base.rstrip("/"), *parts)


def partition_dir(output: str, table: str, run_id: str) -> str:
    """``<output>/<table>/run_id=<run_id>``: where every version of a run's table lives."""
    return _join(output, table, f"run_id={run_id}")


def version_dir(output: str, table: str, run_id: str, version: str) -> str:
    """``<output>/<table>/run_id=<run_id>/version=<version>``: one launch's files of one table."""
    return _join(partition_dir(output, table, run_id), f"{VERSION_KEY}={version}")


def pointer_path(output: str, run_id: str) -> str:
    """``<output>/_published/run_id=<run_id>.json``: the published version of a run."""
    return _join(output, POINTER_DIR, f"run_id={run_id}.json")


def read_pointer(output: str, run_id: str) -> dict[str, Any] | None:
    """The published pointer of a run, or None when the run was never published."""
    path = pointer_path(output, run_id)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())


def _is_local(path: str) -> bool:
    return "://" not in path


def _step(label: str, action: Callable[[], object]) -> None:
    """One file-system change of publishing (tests inject a kill before any of them)."""
    _LOG.debug("publish: %s", label)
    action()


def _write_json(path: str, obj: dict[str, Any]) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj, indent=1).encode())


class PublishRunFn(beam.DoFn):
    """Publishes the written version (input: the list of ``(table, written path)``) and removes the others."""

    def __init__(self, output: str, run_id: str, launch_id: str) -> None:
        self._output, self._run_id, self._launch_id = output, run_id, launch_id

    def process(self, written: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Flips the run's pointer to this launch's version; yields ``{"table", "files"}`` per table."""
        output, run_id, version = self._output, self._run_id, self._launch_id
        by_table: dict[str, list[str]] = {name: [] for name in TABLES}
        for table, path in written:
            by_table[table].append(path)
        # 1. the new version is complete: every file written is in place (a concurrent launch of the same run id
        #    deletes versions other than its own once it has published; then this one must not publish)
        missing = [p for files in by_table.values() for p in files if not FileSystems.exists(p)]
        if missing:
            raise OSError(f"run {run_id} version {version}: {len(missing)} written files are gone (another launch "
                          f"of the same run id published meanwhile?), e.g. {missing[0]}")
        # 2. the flip: one pointer names the new version (temporary name first: never a half-written pointer)
        pointer = pointer_path(output, run_id)
        temp = _join(output, POINTER_DIR, f"_tmp-{version}-run_id={run_id}.json.tmp")
        if _is_local(pointer):
            os.makedirs(posixpath.dirname(pointer), exist_ok=True)
        info = {"run_id": run_id, VERSION_KEY: version, "schema_version": SCHEMA_VERSION,
                "files": {t: sorted(posixpath.basename(p) for p in files) for t, files in by_table.items()}}
        _step("write the pointer under a temporary name", lambda: _write_json(temp, info))
        _step("flip the pointer", lambda: self._replace(temp, pointer))
        # 3. only now: every other version of this run, older-layout files, and the old staging folder
        for table in TABLES:
            keep = version_dir(output, table, run_id, version) + "/"
            stale = [p for p in self._files_under(partition_dir(output, table, run_id)) if not p.startswith(keep)]
            if stale:
                _step(f"delete {len(stale)} stale files of {table}", lambda stale=stale: FileSystems.delete(stale))
            if _is_local(keep):
                self._prune_empty_dirs(partition_dir(output, table, run_id))
        staging = _join(output, "_staging", f"run_id={run_id}")
        leftovers = self._files_under(staging) + [p for p in self._files_under(_join(output, POINTER_DIR))
                                                  if posixpath.basename(p).endswith(f"-run_id={run_id}.json.tmp")]
        if leftovers:
            _step("delete leftovers of killed launches", lambda: FileSystems.delete(leftovers))
        if _is_local(staging):
            self._prune_empty_dirs(_join(output, "_staging"), remove_root=True)
        for table, files in by_table.items():
            yield {"table": table, "files": files}

    @staticmethod
    def _replace(src: str, dst: str) -> None:
        if _is_local(dst):
            os.replace(src, dst)  # atomic on POSIX: readers see the old pointer or the new one
        else:  # an object store: the copy creates the object in one step; the temp object goes afterwards
            FileSystems.rename([src], [dst])

    @staticmethod
    def _files_under(folder: str) -> list[str]:
        try:
            return [m.path for m in FileSystems.match([_join(folder, "**")])[0].metadata_list]
        except Exception:  # noqa: BLE001 - nothing there yet
            return []

    @staticmethod
    def _prune_empty_dirs(root: str, remove_root: bool = False) -> None:
        if not os.path.isdir(root):
            return
        for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
            if dirpath != root or remove_root:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


class WriteRunTables(beam.PTransform):
    """Writes ``{table: PCollection[row dict]}`` for every table in ``schemas.parquet.TABLES``, then publishes.

    Args:
        output: output folder or URI prefix.
        run_id: the run's partition value.
        launch_id: unique per launch: the ``version=`` folder of this launch's files.
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
        written = []
        for name, schema in TABLES.items():
            label = name.capitalize()
            folder = version_dir(self._output, name, self._run_id, self._launch_id)
            files = tables[name] | f"Write{label}" >> beam.io.WriteToParquet(
                _join(folder, "part"), schema=schema, codec=self._codec, file_name_suffix=".parquet")
            written.append(files | f"Tag{label}Files" >> beam.Map(lambda path, table=name: (table, path)))
        return (written
                | "FlattenWrittenFiles" >> beam.Flatten()
                | "CollectWrittenFiles" >> beam.combiners.ToList()
                | "PublishRun" >> beam.ParDo(PublishRunFn(self._output, self._run_id, self._launch_id)))
