"""Records that travel between the extraction pipeline's steps (framework-free, picklable, small).

Only :class:`PageRef` (for single-page documents: the encoded file bytes) and :class:`PageImage` (decoded pixels,
between decoding and OCR inside one fused stage) carry image data; everything after OCR carries text and boxes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from schemas.records import PageKie, PageOcr

__all__ = ["DocRef", "ErrorInfo", "DocHeader", "PageRef", "PageImage", "PageOutcome", "error_info", "redact"]

_MAX_MESSAGE = 2000
# ``scheme://user:password@host`` -> ``scheme://***@host`` (userinfo is everything before '@' in the authority).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s?#'\"]+@")
# Query parameters that carry credentials: signed URLs (GCS X-Goog-*, S3 X-Amz-*, Azure SAS ``sig``), tokens, keys.
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.-]*?)(?:signature|credential|token|key|sig|secret|password|passwd|auth|"
    r"security|session)[A-Za-z0-9_.-]*=)[^&\s#'\"]*", re.IGNORECASE)
REDACTED = "REDACTED"


def redact(text: str | None) -> str | None:
    """Removes credentials from URIs inside ``text`` (user:password@ and signed-URL / token query values).

    Applied to every URI, key and message the pipeline writes or logs, so a manifest of signed URLs never leaks
    its signatures into the output tables.

    Args:
        text: a URI, or any text holding URIs (an error message); None passes through.

    Returns:
        The text with ``scheme://***@`` for userinfo and ``REDACTED`` for secret query values.
    """
    if not text:
        return text
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _SECRET_PARAM.sub(r"\g<name>" + REDACTED, text)


@dataclass(frozen=True, slots=True)
class DocRef:
    """One input document.

    Attributes:
        doc_key: unique per input (a matched URI, or ``<manifest>#<row>``), even when URIs or ids repeat.
        doc_id: the user-facing id (manifest column, else the file name without extension).
        uri: where the bytes are (local path or any Beam filesystem URI such as ``gs://``). May hold credentials
            (a signed URL): write it only through :func:`redact`.
        error: set when the input itself is unusable (a malformed manifest row); the document fails at ``read``.
    """

    doc_key: str
    doc_id: str
    uri: str
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a document or page failed: ``stage`` (one of ``schemas.parquet.STAGES``), a stable type, a message."""

    stage: str
    error_type: str
    message: str


def error_info(stage: str, exc: BaseException) -> ErrorInfo:
    """Builds an :class:`ErrorInfo` from an exception (``DecodeError.reason`` when present, else the class name).

    Args:
        stage: the failing stage.
        exc: the exception.

    Returns:
        The error record, message redacted (:func:`redact`) and truncated to 2,000 characters.
    """
    error_type = getattr(exc, "reason", None) or type(exc).__name__
    return ErrorInfo(stage, str(error_type), redact(str(exc))[:_MAX_MESSAGE])


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


@dataclass(frozen=True, slots=True)
class PageImage:
    """A decoded page: RGB ``uint8`` array of shape ``(H, W, 3)``."""

    doc: DocRef
    page_no: int
    image: object  # np.ndarray; typed loosely so this module stays numpy-free
    decode_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """The single outcome of one page: OCR (and KIE) results, or the error that stopped it."""

    doc: DocRef
    page_no: int
    width: int | None = None
    height: int | None = None
    decode_ms: float = 0.0
    ocr: PageOcr | None = None
    kie: PageKie | None = None
    error: ErrorInfo | None = None
    ocr_model: str | None = None
    kie_model: str | None = None

    def with_(self, **changes: object) -> PageOutcome:
        """Returns a copy with the given fields replaced."""
        return replace(self, **changes)
