"""The inputs as the pipeline's steps pass them on: a document, what probing it found, a page to decode.

Framework-free, picklable and small. Only :class:`PageRef` carries image data (the encoded file bytes, for
single-page documents); decoded pixels travel in ``schemas.records.PageOutcome.image`` from decoding to OCR.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import ErrorInfo

__all__ = ["DocRef", "DocHeader", "PageRef"]


@dataclass(frozen=True, slots=True)
class DocRef:
    """One input document.

    Attributes:
        doc_key: unique per input (a matched URI, or ``<manifest>#<row>``), even when URIs or ids repeat.
        doc_id: the user-facing id (manifest column, else the file name without extension).
        uri: where the bytes are (local path or any Beam filesystem URI such as ``gs://``). May hold credentials
            (a signed URL): write it only through ``schemas.errors.redact``.
        error: set when the input itself is unusable (a malformed manifest row); the document fails at ``read``.
    """

    doc_key: str
    doc_id: str
    uri: str
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class DocHeader:
    """What reading and probing a document found (one per input, failed or not)."""

    doc: DocRef
    sha256: str | None = None
    size_bytes: int | None = None
    format: str | None = None
    pages_found: int = 0
    pages_to_process: int = 0
    read_ms: float = 0.0
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class PageRef:
    """A page to decode: ``data`` holds the file bytes for single-page documents, else ``None`` (re-read)."""

    doc: DocRef
    page_no: int
    sha256: str
    data: bytes | None = None
