"""Input fan-out: file patterns and manifests -> :class:`transforms.refs.DocRef` (cheap; no document bytes read).

A manifest is one document per row: a text file (one URI per line, ``#`` comments), a CSV with a header holding
a ``uri`` column (optional ``doc_id``), or a Parquet file with the same columns. Relative paths in a manifest are
resolved against the manifest's folder.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from collections.abc import Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.refs import DocRef

__all__ = ["MatchPatternFn", "ReadManifestFn", "read_manifest_rows", "default_doc_id", "split_patterns"]

_LOG = logging.getLogger(__name__)
_GLOB_CHARS = ("*", "?", "[")


def split_patterns(values: list[str] | None) -> list[str]:
    """Flattens repeated and comma-separated ``--input`` values into a list of non-empty patterns.

    Args:
        values: raw flag values (each may hold several comma-separated patterns).

    Returns:
        The patterns, in order, without blanks.
    """
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def default_doc_id(uri: str) -> str:
    """The document id used when none is given: the file name without its extension."""
    name = posixpath.basename(uri.rstrip("/"))
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


class MatchPatternFn(beam.DoFn):
    """Expands one file pattern into :class:`DocRef` s (``doc_key`` = the matched URI).

    A literal path that does not exist still yields a ref, so the missing file is reported as a failed
    document rather than vanishing; a wildcard that matches nothing only logs and counts.
    """

    def __init__(self) -> None:
        self._unmatched = Metrics.counter("kiebeam", "patterns_without_match")

    def process(self, pattern: str) -> Iterator[DocRef]:
        """Yields the refs of the files that ``pattern`` matches."""
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - a GCS literal that is absent raises; treat as "no match"
            metadata = []
        uris = sorted(m.path for m in metadata if not m.path.endswith("/"))
        if not uris:
            if any(c in pattern for c in _GLOB_CHARS):
                _LOG.warning("input pattern %s matched no files", pattern)
                self._unmatched.inc()
                return
            uris = [pattern]
        for uri in uris:
            yield DocRef(doc_key=uri, doc_id=default_doc_id(uri), uri=uri)


def _resolve(uri: str, base: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return FileSystems.join(base, uri)


def read_manifest_rows(manifest: str) -> Iterator[tuple[str, str | None]]:
    """Reads ``(uri, doc_id or None)`` rows from a text, CSV or Parquet manifest.

    Args:
        manifest: path or URI of the manifest; ``.csv`` and ``.parquet`` select those formats, anything else is
            read as one URI per line.

    Returns:
        An iterator of rows in file order.

    Raises:
        ValueError: a CSV or Parquet manifest without a ``uri`` column.
    """
    lower = manifest.lower()
    with FileSystems.open(manifest) as f:
        data = f.read()
    if lower.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        if "uri" not in table.column_names:
            raise ValueError(f"manifest {manifest} has no 'uri' column (columns: {table.column_names})")
        ids = table.column("doc_id").to_pylist() if "doc_id" in table.column_names else [None] * table.num_rows
        yield from zip(table.column("uri").to_pylist(), ids)
    elif lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        if "uri" not in (reader.fieldnames or []):
            raise ValueError(f"manifest {manifest} has no 'uri' column (header: {reader.fieldnames})")
        for row in reader:
            yield row["uri"], row.get("doc_id") or None
    else:
        for line in data.decode("utf-8-sig").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                yield line, None


class ReadManifestFn(beam.DoFn):
    """Reads a manifest into :class:`DocRef` s (``doc_key`` = ``<manifest>#<row number>``, unique per row)."""

    def process(self, manifest: str) -> Iterator[DocRef]:
        """Yields one ref per manifest row."""
        base = posixpath.dirname(manifest)
        for row_no, (uri, doc_id) in enumerate(read_manifest_rows(manifest)):
            uri = _resolve(str(uri).strip(), base)
            yield DocRef(doc_key=f"{manifest}#{row_no}", doc_id=str(doc_id) if doc_id else default_doc_id(uri),
                         uri=uri)
