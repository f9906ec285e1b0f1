"""Why something failed, as the pipeline records it: :class:`ErrorInfo`, and :func:`redact` for what it writes.

Framework-free: no Paddle, no Beam. Every URI, key and message the pipeline writes or logs goes through
:func:`redact`, so a manifest of signed URLs never leaks its signatures into the output tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ErrorInfo", "error_info", "redact", "REDACTED"]

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
