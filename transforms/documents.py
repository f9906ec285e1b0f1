"""Per-document reading, probing and per-page decoding; every failure is per element and becomes an outcome.

``ReadProbeFn`` reads a document once, hashes it and probes its header (cheap). Single-page documents carry
their encoded bytes on to decoding; multi-page documents fan out byte-less page refs that are re-read after a
``Reshuffle``, so neither decoded pixels nor whole PDFs per page cross a shuffle.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace as _replace
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.errors import ErrorInfo, error_info
from schemas.records import PageOutcome
from schemas.refs import DocHeader, DocRef, PageRef
from transforms.decode import DecodeLimits, decode_page, probe_document

__all__ = ["ReadProbeFn", "DecodePageFn", "read_bytes", "HEADERS_TAG", "FAILED_TAG", "has_bytes", "lacks_bytes",
           "key_ref", "key_header", "first"]

HEADERS_TAG = "headers"
FAILED_TAG = "failed"


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Reads a file through Beam's filesystems (local, ``gs://``, ...).

    Args:
        uri: what to read.
        max_bytes: read at most ``max_bytes + 1`` bytes, so an oversized file is detected without reading it all.

    Returns:
        The bytes.
    """
    with FileSystems.open(uri) as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class ReadProbeFn(beam.DoFn):
    """DocRef -> page refs (main output) + one :class:`DocHeader` per document (``HEADERS_TAG`` output)."""

    def __init__(self, limits: DecodeLimits) -> None:
        self._limits = limits
        self._read_ms = Metrics.distribution("kiebeam", "read_ms")

    def process(self, doc: DocRef) -> Iterator[PageRef | beam.pvalue.TaggedOutput]:
        """Reads, hashes and probes one document."""
        start = time.perf_counter()
        if doc.error is not None:  # a malformed manifest row: nothing to read
            yield beam.pvalue.TaggedOutput(HEADERS_TAG, DocHeader(doc, error=doc.error))
            return
        try:
            data = read_bytes(doc.uri, getattr(self._limits, "max_bytes", None))
        except Exception as e:  # noqa: BLE001 - any read failure fails this document alone
            yield beam.pvalue.TaggedOutput(HEADERS_TAG, DocHeader(doc, read_ms=_ms(start), error=error_info("read", e)))
            return
        sha = hashlib.sha256(data).hexdigest()
        header = DocHeader(doc, sha256=sha, size_bytes=len(data))
        try:
            info = probe_document(data, limits=self._limits)
        except Exception as e:  # noqa: BLE001
            yield beam.pvalue.TaggedOutput(HEADERS_TAG, _replace(header, read_ms=_ms(start),
                                                                   error=error_info("probe", e)))
            return
        read_ms = _ms(start)
        self._read_ms.update(int(read_ms))
        yield beam.pvalue.TaggedOutput(HEADERS_TAG, _replace(
            header, format=info.format, pages_found=info.page_count, pages_to_process=info.pages_to_process,
            read_ms=read_ms))
        single = info.pages_to_process == 1
        for page_no in range(info.pages_to_process):
            yield PageRef(doc, page_no, sha, data if single else None)


class DecodePageFn(beam.DoFn):
    """PageRef -> a :class:`PageOutcome` with its ``image`` (main output), or a failed one (``FAILED_TAG`` output).

    A re-read whose sha256 differs from the probed one fails the page (``changed_during_run``) instead of
    mixing two versions of a document.
    """

    def __init__(self, limits: DecodeLimits) -> None:
        self._limits = limits
        self._decode_ms = Metrics.distribution("kiebeam", "decode_ms")

    def process(self, ref: PageRef) -> Iterator[PageOutcome | beam.pvalue.TaggedOutput]:
        """Decodes one page."""
        start = time.perf_counter()
        stage = "read"
        try:
            data = ref.data
            if data is None:
                data = read_bytes(ref.doc.uri, getattr(self._limits, "max_bytes", None))
                if hashlib.sha256(data).hexdigest() != ref.sha256:
                    yield beam.pvalue.TaggedOutput(FAILED_TAG, PageOutcome(ref.doc, ref.page_no, error=ErrorInfo(
                        "read", "changed_during_run", f"{ref.doc.uri} changed between probing and decoding")))
                    return
            stage = "decode"
            image = decode_page(data, ref.page_no, limits=self._limits)
        except Exception as e:  # noqa: BLE001 - one bad page fails alone
            yield beam.pvalue.TaggedOutput(FAILED_TAG, PageOutcome(ref.doc, ref.page_no, decode_ms=_ms(start),
                                                                   error=error_info(stage, e)))
            return
        decode_ms = _ms(start)
        self._decode_ms.update(int(decode_ms))
        yield PageOutcome(ref.doc, ref.page_no, decode_ms=decode_ms, image=image)


def has_bytes(ref: PageRef) -> bool:
    """True for a single-page document's page ref (it carries the file bytes; no re-read, no shuffle)."""
    return ref.data is not None


def lacks_bytes(ref: PageRef) -> bool:
    """True for a multi-page document's page ref (re-read after a Reshuffle)."""
    return ref.data is None


def key_ref(ref: DocRef) -> tuple[str, DocRef]:
    """``(doc_key, ref)``."""
    return ref.doc_key, ref


def key_header(header: DocHeader) -> tuple[str, DocHeader]:
    """``(doc_key, header)``."""
    return header.doc.doc_key, header


def first(values: Iterable[Any]) -> Any:  # noqa: ANN401
    """The first of equal values (a combiner that drops duplicates)."""
    return next(iter(values))
