"""Input fan-out: file patterns and manifests -> :class:`schemas.refs.DocRef` (cheap; no document bytes read).

A manifest is one document per row: a text file (one URI per line), a CSV with a header holding a ``uri`` column
(optional ``doc_id``), or a Parquet file with the same columns. Relative paths in a manifest are resolved against
the manifest's folder. Every row that is not blank is accounted for: it becomes a document, or a failed
document with a ``malformed_manifest_row`` error naming its line. There is no comment syntax (``#a.jpg`` is a file
name), paths are kept exactly as written (leading and trailing spaces included), and a CSV record is one
physical line, so a broken row (an unclosed quote) reports itself and never swallows the rows after it.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.errors import ErrorInfo, redact
from schemas.refs import DocRef

__all__ = ["MatchPatternFn", "ReadManifestFn", "ManifestRow", "read_manifest_rows", "default_doc_id",
           "split_patterns", "is_glob", "list_pattern"]

_LOG = logging.getLogger(__name__)
_GLOB_CHARS = ("*", "?", "[")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_patterns(values: list[str] | None) -> list[str]:
    """Flattens repeated and comma-separated ``--input`` values into a list of non-empty patterns.

    Args:
        values: raw flag values (each may hold several comma-separated patterns).

    Returns:
        The patterns, in order, without blanks.
    """
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def default_doc_id(uri: str) -> str:
    """The document id used when none is given: the file name without its extension (and without a URL query).

    Ids are only ever column values, never parts of output paths, so any id (``../x``, ``/etc/passwd``) is harmless.
    """
    if "://" in uri:
        uri = uri.split("#", 1)[0].split("?", 1)[0]  # a signed URL's query must not become the id
    name = posixpath.basename(uri.rstrip("/"))
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` has wildcards (``*``, ``?``, ``[``), as opposed to naming one file."""
    return any(c in pattern for c in _GLOB_CHARS)


def list_pattern(pattern: str) -> list[str]:
    """The files ``pattern`` matches, sorted (folders left out).

    Args:
        pattern: a local or ``gs://`` path or wildcard.

    Returns:
        The matched URIs; empty when the listing worked and found nothing.

    Raises:
        Exception: the listing itself failed (missing bucket, no permission, no network): not "no match".
    """
    metadata = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in metadata if not m.path.endswith("/"))


class MatchPatternFn(beam.DoFn):
    """Expands one file pattern into :class:`DocRef` s (``doc_key`` = the matched URI).

    A literal path that does not exist still yields a ref, so the missing file is reported as a failed
    document rather than vanishing; a wildcard that matches nothing only logs and counts (the launcher refuses
    such a pattern unless ``--allow_empty_inputs``); a wildcard that cannot be listed fails the step, so a listing
    error never passes for an empty input.
    """

    def __init__(self) -> None:
        self._unmatched = Metrics.counter("kiebeam", "patterns_without_match")

    def process(self, pattern: str) -> Iterator[DocRef]:
        """Yields the refs of the files that ``pattern`` matches."""
        try:
            uris = list_pattern(pattern)
        except Exception as e:
            if is_glob(pattern):
                raise OSError(f"could not list input pattern {redact(pattern)}: {e}") from e
            uris = []  # a literal whose lookup fails is read, and reported, like any missing file
        if not uris:
            if is_glob(pattern):
                _LOG.warning("input pattern %s matched no files", redact(pattern))
                self._unmatched.inc()
                return
            uris = [pattern]
        for uri in uris:
            yield DocRef(doc_key=uri, doc_id=default_doc_id(uri), uri=uri)


def _resolve(uri: str, base: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return FileSystems.join(base, uri)


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One row of a manifest.

    Attributes:
        line: where the row is: the line number (1-based) of a text or CSV manifest, the row number (1-based) of a
            Parquet one.
        uri: the document URI exactly as written, or None when the row has none.
        doc_id: the ``doc_id`` column, or None.
        problem: why the row is malformed (the document then fails with ``malformed_manifest_row``), else None.
    """

    line: int
    uri: str | None
    doc_id: str | None = None
    problem: str | None = None


def _check_uri(uri: object) -> tuple[str | None, str | None]:
    """``(uri, problem)``: the URI as written, or why it is unusable."""
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        return None, "empty uri"
    if not isinstance(uri, str):
        return None, f"uri is a {type(uri).__name__}, not text"
    if _CONTROL.search(uri):
        return uri, "uri contains control characters"
    return uri, None


def read_manifest_rows(manifest: str) -> Iterator[ManifestRow]:
    """Reads the rows of a text, CSV or Parquet manifest; malformed rows are returned, never skipped.

    Args:
        manifest: path or URI of the manifest; ``.csv`` and ``.parquet`` select those formats, anything else is
            read as one URI per line (only blank lines are skipped; there are no comments).

    Returns:
        An iterator of :class:`ManifestRow` in file order; a row with ``problem`` set names what is wrong.

    Raises:
        ValueError: a CSV or Parquet manifest without a ``uri`` column, or a text/CSV manifest that is not UTF-8.
    """
    lower = manifest.lower()
    with FileSystems.open(manifest) as f:
        data = f.read()
    if lower.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        if "uri" not in table.column_names:
            raise ValueError(f"manifest {manifest} has no 'uri' column (columns: {table.column_names})")
        ids = table.column("doc_id").to_pylist() if "doc_id" in table.column_names else [None] * table.num_rows
        for n, (uri, doc_id) in enumerate(zip(table.column("uri").to_pylist(), ids), start=1):
            uri, problem = _check_uri(uri)
            yield ManifestRow(n, uri, None if doc_id is None else str(doc_id), problem)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"manifest {manifest} is not UTF-8 text: {e}") from e
    if lower.endswith(".csv"):
        yield from _csv_rows(manifest, text)
        return
    for n, line in _lines(text):
        if line.strip():
            uri, problem = _check_uri(line)
            yield ManifestRow(n, uri, None, problem)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` split at ``\n`` only (``\r\n`` too): other separators may be part of a name."""
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, line[:-1] if line.endswith("\r") else line


def _stray_quote(line: str) -> bool:
    """Whether a quote stands inside an unquoted CSV value (RFC 4180: such a value must be quoted)."""
    at_start, quoted, i = True, False, 0
    while i < len(line):
        ch = line[i]
        if quoted:
            if ch == '"':
                if line[i + 1:i + 2] == '"':  # a doubled quote inside a quoted value
                    i += 1
                else:
                    quoted = False
        elif ch == '"':
            if not at_start:
                return True
            quoted = True
        at_start = not quoted and ch == ","
        i += 1
    return False


def _csv_fields(line: str) -> tuple[list[str] | None, str | None]:
    """``(fields, problem)`` of one CSV line."""
    try:
        fields = next(csv.reader([line], strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            return None, "unclosed quote (a quoted value must end on its own line)"
        return None, f"unreadable CSV: {e}"
    if _stray_quote(line):
        return None, 'a quote inside an unquoted value (quote the whole value and double the quote: "a""b")'
    return fields, None


def _csv_rows(manifest: str, text: str) -> Iterator[ManifestRow]:
    lines = _lines(text)
    header, problem = _csv_fields(next(lines, (1, ""))[1])
    if header is None or not header:
        raise ValueError(f"manifest {manifest} has no readable CSV header ({problem or 'empty'})")
    header = [h.strip() for h in header]
    if "uri" not in header:
        raise ValueError(f"manifest {manifest} has no 'uri' column (header: {header})")
    uri_at, id_at = header.index("uri"), header.index("doc_id") if "doc_id" in header else None
    for line_no, line in lines:
        if not line.strip():
            continue
        fields, problem = _csv_fields(line)
        if fields is None:
            yield ManifestRow(line_no, None, None, problem)
            continue
        if len(fields) > len(header):
            yield ManifestRow(line_no, None, None,
                              f"{len(fields)} fields for a {len(header)}-column header (quote values holding commas)")
            continue
        uri, problem = _check_uri(fields[uri_at] if uri_at < len(fields) else None)
        doc_id = fields[id_at].strip() if id_at is not None and id_at < len(fields) else ""
        yield ManifestRow(line_no, uri, doc_id or None, problem)


class ReadManifestFn(beam.DoFn):
    """Reads a manifest into :class:`DocRef` s (``doc_key`` = ``<manifest>#<row number>``, unique per row).

    A malformed row still becomes a ref (with ``error`` set, naming the manifest line), so it is a failed document
    in the output rather than a silently dropped input.
    """

    def __init__(self) -> None:
        self._malformed = Metrics.counter("kiebeam", "malformed_manifest_rows")

    def process(self, manifest: str) -> Iterator[DocRef]:
        """Yields one ref per manifest row."""
        base = posixpath.dirname(manifest)
        for row_no, row in enumerate(read_manifest_rows(manifest)):
            key = f"{manifest}#{row_no}"
            if row.problem is not None:
                message = f"manifest {manifest} line {row.line}: {row.problem}"
                _LOG.warning("%s", redact(message))
                self._malformed.inc()
                yield DocRef(doc_key=key, doc_id=row.doc_id or f"line-{row.line}", uri=row.uri or "",
                             error=ErrorInfo("read", "malformed_manifest_row", message))
                continue
            uri = _resolve(row.uri, base)
            yield DocRef(doc_key=key, doc_id=row.doc_id or default_doc_id(uri), uri=uri)
