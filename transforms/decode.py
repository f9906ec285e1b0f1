"""Decode untrusted document bytes into RGB pages, safely: every bad input becomes a :class:`DecodeError`.

The pipeline calls this layer once per element on bytes fetched from strangers, so nothing here may hang, crash
the process, or allocate more than the limits allow. Formats are sniffed from the bytes (never from the file
name), sizes are checked from headers *before* pixels are decoded, and PDFs are inspected before they are
rasterised. Pure Python + Pillow + pypdfium2; no Beam types (the DoFn that calls this lives elsewhere).

Supported formats: ``jpeg``, ``png``, ``bmp``, ``tiff`` (every frame is a page), ``webp``, ``gif`` (first frame only)
and ``pdf`` (every page, rasterised at :attr:`DecodeLimits.pdf_dpi`). Output pages are ``uint8`` RGB arrays
``(H, W, 3)``, C-contiguous, in the upright orientation (EXIF orientation applied; alpha composited on white).

:class:`DecodeError` reasons (stable snake_case codes; dead-letter rows and metrics key on them):

- ``empty_file``: zero bytes.
- ``too_large_file``: more bytes than :attr:`DecodeLimits.max_bytes`.
- ``unsupported_format``: not one of the formats above (text, HTML, ZIP, SVG, random bytes, ...), whatever the
  file name says.
- ``truncated``: the file ends early (JPEG without EOI marker, PNG without IEND chunk, a BMP/WebP shorter than its
  header declares, the decoder ran out of data, or a PDF that PDFium cannot load and that lacks its final
  ``%%EOF``). Raised whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says.
- ``corrupt_image``: the bytes look like a supported image format but cannot be decoded.
- ``too_many_pixels``: a page (image header or PDF page size x dpi) exceeds :attr:`DecodeLimits.max_pixels`;
  decompression bombs end here before any pixel is allocated.
- ``too_small``: a page side is below :attr:`DecodeLimits.min_side` pixels.
- ``encrypted_pdf``: the PDF needs a password (PDFs encrypted with an empty user password open normally).
- ``corrupt_pdf``: PDFium cannot load a complete PDF, a page cannot be loaded or rendered, or a page has a
  non-finite or non-positive size. (PDFium repairs much damage by itself; those files decode.)
- ``no_pages``: a PDF (or an image container) with zero pages.
- ``page_out_of_range``: ``page_index`` is negative or not below the page count.
- ``page_over_cap``: ``page_index`` exists but is at or past :attr:`DecodeLimits.max_pages`; the page was
  counted (:attr:`DocumentInfo.page_count`) and deliberately not processed.

PDFium is not thread-safe, and Beam runs several DoFn threads per process, so every PDFium call here holds one
module-level lock.
"""

from __future__ import annotations

import io
import math
import re
import struct
import threading
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DECODE_ERROR_REASONS",
    "DecodeError",
    "DecodeLimits",
    "DocumentInfo",
    "decode_document",
    "decode_page",
    "probe_document",
    "sniff_format",
]

DECODE_ERROR_REASONS: frozenset[str] = frozenset(
    {"empty_file", "too_large_file", "unsupported_format", "truncated", "corrupt_image", "too_many_pixels",
     "too_small", "encrypted_pdf", "corrupt_pdf", "no_pages", "page_out_of_range", "page_over_cap"}
)

# kiebeam format name -> the one Pillow plugin allowed to open it (never let Pillow guess among all plugins:
# several, e.g. TGA, accept almost any bytes).
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP", "gif": "GIF"}
_PDFIUM_LOCK = threading.Lock()
_POINTS_PER_INCH = 72.0
_EXIF_ORIENTATION = 0x0112
# What Pillow raises on bad data (DecompressionBombWarning is raised, not warned, under `-W error`).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning)
_PAGES_RE = re.compile(rb"/Type\s*/Pages(?![A-Za-z])")
_PAGE_RE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_COUNT0_RE = re.compile(rb"/Count\s+0(?![0-9.])")


class DecodeError(ValueError):
    """A document or page that cannot be decoded.

    Attributes:
        reason: a stable snake_case code from :data:`DECODE_ERROR_REASONS` (see the module docstring).
        message: a human-readable explanation.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in DECODE_ERROR_REASONS:
            raise ValueError(f"unknown decode error reason '{reason}', expected one of {sorted(DECODE_ERROR_REASONS)}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple:
        # Keeps the exception picklable (Beam ships exceptions between processes in dead-letter outputs).
        return (self.__class__, (self.reason, self.message))


@dataclass(frozen=True)
class DecodeLimits:
    """Resource limits applied to every document.

    Attributes:
        max_bytes: largest accepted input, in bytes.
        max_pixels: largest accepted page, width x height after decoding (PDF: page size in points x dpi / 72).
        min_side: smallest accepted page side, in pixels (smaller pages cannot hold readable text).
        max_pages: pages processed per document; later pages are counted, not decoded (``page_over_cap``).
        pdf_dpi: PDF rasterisation resolution, dots per inch.
    """

    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 80_000_000
    min_side: int = 16
    max_pages: int = 50
    pdf_dpi: int = 200

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "min_side", "max_pages", "pdf_dpi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodeLimits.{name} must be a positive int, got {value!r}")
        if self.min_side * self.min_side > self.max_pixels:
            raise ValueError(
                f"DecodeLimits.min_side={self.min_side} is incompatible with max_pixels={self.max_pixels}: "
                "no page could pass both"
            )
        if self.pdf_dpi > 1200:
            raise ValueError(f"DecodeLimits.pdf_dpi must be at most 1200, got {self.pdf_dpi}")


_DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class DocumentInfo:
    """What :func:`probe_document` found.

    Attributes:
        format: one of ``jpeg png bmp tiff webp gif pdf``.
        page_count: pages in the document (TIFF frames, PDF pages; 1 for the other formats).
        pages_to_process: ``min(page_count, limits.max_pages)``; pages at or past it are skipped on purpose.
    """

    format: str
    page_count: int
    pages_to_process: int

    @property
    def pages_over_cap(self) -> int:
        """Pages counted but not processed because of ``max_pages``."""
        return self.page_count - self.pages_to_process


def sniff_format(data: bytes) -> str | None:
    """Returns the format of ``data`` from its magic bytes, or None when it is not a supported format.

    Args:
        data: the file's bytes (only the first 1 KiB is read).

    Returns:
        One of ``jpeg png bmp tiff webp gif pdf``, or None.
    """
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    # The PDF spec lets the header start anywhere in the first 1024 bytes.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    return None


def _describe_unknown(data: bytes) -> str:
    """A short guess at what an unsupported input is, for the error message."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "looks like HTML"
    if head.startswith(b"<?xml") or b"<svg" in head:
        return "looks like XML/SVG"
    if data.startswith(b"PK\x03\x04"):
        return "looks like a ZIP archive"
    try:
        data[:512].decode("utf-8")
        return "looks like text"
    except UnicodeDecodeError:
        return f"unknown magic bytes {data[:8].hex()}"


def _check_bytes(data: bytes, limits: DecodeLimits) -> str:
    """Checks size and format; returns the sniffed format."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError("empty_file", "the file has zero bytes")
    if len(data) > limits.max_bytes:
        raise DecodeError("too_large_file", f"{len(data)} bytes is more than max_bytes={limits.max_bytes}")
    fmt = sniff_format(bytes(data[:1024]))
    if fmt is None:
        raise DecodeError("unsupported_format", f"not a supported image or PDF ({_describe_unknown(bytes(data))})")
    return fmt


def _structurally_truncated(fmt: str, data: bytes) -> str | None:
    """Returns why the bytes end early, or None. Independent of Pillow's LOAD_TRUNCATED_IMAGES switch."""
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") < 2:
        return "JPEG has no end-of-image marker"
    if fmt == "png" and data.rfind(b"IEND") < 8:
        return "PNG has no IEND chunk"
    if fmt == "bmp":
        declared = int.from_bytes(data[2:6], "little")
        if declared > len(data):
            return f"BMP header declares {declared} bytes, file has {len(data)}"
    if fmt == "webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        if declared > len(data):
            return f"WebP header declares {declared} bytes, file has {len(data)}"
    return None


def _image_error(fmt: str, err: Exception) -> DecodeError:
    """Maps a Pillow exception to a DecodeError."""
    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return DecodeError("too_many_pixels", f"{fmt}: {err}")
    text = str(err)
    if isinstance(err, EOFError) or "truncat" in text.lower():
        return DecodeError("truncated", f"{fmt}: {type(err).__name__}: {text}")
    return DecodeError("corrupt_image", f"{fmt}: {type(err).__name__}: {text}")


def _check_page_size(width: float, height: float, limits: DecodeLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise DecodeError(
            "too_many_pixels",
            f"{what} is {width}x{height} = {width * height:.0f} pixels, max_pixels={limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        raise DecodeError("too_small", f"{what} is {width}x{height}, min_side={limits.min_side}")


def _open_image(fmt: str, data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[fmt]])
    except (UnidentifiedImageError, *_PIL_ERRORS) as e:
        if isinstance(e, UnidentifiedImageError) and _structurally_truncated(fmt, data):
            raise DecodeError("truncated", f"{fmt}: {_structurally_truncated(fmt, data)}") from e
        raise _image_error(fmt, e) from e


def _image_frame_count(fmt: str, im: Image.Image) -> int:
    if fmt != "tiff":
        return 1  # animated GIF/WebP: the first frame is the document
    try:
        return int(getattr(im, "n_frames", 1))
    except _PIL_ERRORS as e:
        raise _image_error(fmt, e) from e


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Converts any Pillow mode to upright-agnostic RGB uint8 (alpha composited on white, 16-bit scaled)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            gray = arr.astype(np.uint8)  # an 8-bit image stored in 32-bit ints
        else:
            wide = np.clip(arr, 0, 65535).astype(np.uint32)  # 4 bytes a pixel, not 8: pages can be 80 MP
            gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257): 65535 -> 255
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    rgb = im if im.mode == "RGB" else im.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _decode_image_page(fmt: str, data: bytes, page_index: int, limits: DecodeLimits) -> np.ndarray:
    why = _structurally_truncated(fmt, data)
    if why:
        raise DecodeError("truncated", f"{fmt}: {why}")
    with _open_image(fmt, data) as im:
        count = _image_frame_count(fmt, im)
        _check_index(page_index, count, limits)
        try:
            if page_index:
                im.seek(page_index)
            width, height = im.size
            _check_page_size(width, height, limits, f"{fmt} page {page_index}")
            im.load()
            # exif_transpose copies the page even when there is nothing to do: only call it when needed
            orientation = _exif_orientation(im)
            upright = ImageOps.exif_transpose(im) if orientation not in (1, None) else im
            return _to_rgb(upright)
        except DecodeError:
            raise
        except _PIL_ERRORS as e:
            raise _image_error(fmt, e) from e


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); a damaged EXIF block counts as upright rather than failing the page."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return 1
    return value if isinstance(value, int) else 1


def _check_index(page_index: int, page_count: int, limits: DecodeLimits) -> None:
    if isinstance(page_index, bool) or not isinstance(page_index, int | np.integer):
        raise TypeError(f"page_index must be an int, got {type(page_index).__name__}")
    if page_count == 0:
        raise DecodeError("no_pages", "the document has zero pages")
    if page_index < 0 or page_index >= page_count:
        raise DecodeError("page_out_of_range", f"page_index={page_index}, the document has {page_count} pages")
    if page_index >= limits.max_pages:
        raise DecodeError(
            "page_over_cap", f"page_index={page_index} is past max_pages={limits.max_pages} ({page_count} pages)"
        )


def _looks_pageless(data: bytes) -> bool:
    """True when the PDF has an empty page tree (/Count 0) and no page object (/Type /Page)."""
    return bool(_PAGES_RE.search(data)) and bool(_COUNT0_RE.search(data)) and not _PAGE_RE.search(data)


def _open_pdf(data: bytes) -> pdfium.PdfDocument:
    """Opens a PDF; the caller holds _PDFIUM_LOCK and closes the document."""
    try:
        return pdfium.PdfDocument(bytes(data))
    except pdfium.PdfiumError as e:
        # PDFium leaves its last-error code untouched on some failures (a document without pages), so the code
        # read after a failed load can be stale: check the cheap textual evidence first.
        if _looks_pageless(data):
            raise DecodeError("no_pages", "the PDF's page tree has no pages") from e
        code = getattr(e, "err_code", None)
        if code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY) and b"/Encrypt" in data:
            what = "needs a password" if code == pdfium.raw.FPDF_ERR_PASSWORD else "has an unsupported security handler"
            raise DecodeError("encrypted_pdf", f"the PDF {what}") from e
        if b"%%EOF" not in data[-2048:]:
            raise DecodeError("truncated", f"the PDF has no %%EOF marker at its end ({e})") from e
        raise DecodeError("corrupt_pdf", str(e)) from e


def _pdf_page_pixels(pdf: pdfium.PdfDocument, page_index: int, limits: DecodeLimits) -> tuple[int, int]:
    """Returns the rendered (width, height) of a page from its size in points, before anything is rendered."""
    size = pdfium.raw.FS_SIZEF()
    if not pdfium.raw.FPDF_GetPageSizeByIndexF(pdf.raw, page_index, size):
        raise DecodeError("corrupt_pdf", f"cannot read the size of page {page_index}")
    w_pt, h_pt = float(size.width), float(size.height)
    if not (math.isfinite(w_pt) and math.isfinite(h_pt)) or w_pt <= 0 or h_pt <= 0:
        raise DecodeError("corrupt_pdf", f"page {page_index} has an invalid size {w_pt}x{h_pt} points")
    scale = limits.pdf_dpi / _POINTS_PER_INCH
    width, height = math.ceil(w_pt * scale), math.ceil(h_pt * scale)  # what pypdfium2's render allocates
    _check_page_size(width, height, limits, f"pdf page {page_index} ({w_pt:.0f}x{h_pt:.0f} pt at {limits.pdf_dpi} dpi)")
    return width, height


def _render_pdf_page(pdf: pdfium.PdfDocument, page_index: int, limits: DecodeLimits) -> np.ndarray:
    """Renders one page (size already checked); the caller holds _PDFIUM_LOCK."""
    _pdf_page_pixels(pdf, page_index, limits)
    try:
        page = pdf[page_index]
    except (pdfium.PdfiumError, IndexError) as e:
        raise DecodeError("corrupt_pdf", f"cannot load page {page_index}: {e}") from e
    try:
        bitmap = page.render(
            scale=limits.pdf_dpi / _POINTS_PER_INCH, fill_color=(255, 255, 255, 255), rev_byteorder=True
        )
        try:
            arr = bitmap.to_numpy()  # a view on PDFium's buffer: copy before the bitmap is closed
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            return np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8).copy()
        finally:
            bitmap.close()
    except (pdfium.PdfiumError, ValueError) as e:
        raise DecodeError("corrupt_pdf", f"cannot render page {page_index}: {e}") from e
    finally:
        page.close()


def probe_document(data: bytes, *, limits: DecodeLimits = _DEFAULT_LIMITS) -> DocumentInfo:
    """Inspects a document cheaply (headers only; PDFs are opened, not rendered).

    Single-image formats are also checked against ``max_pixels`` and ``min_side`` here, from the header, so a
    decompression bomb is rejected before any page is fanned out. TIFF frames and PDF pages are size-checked
    per page by :func:`decode_page`.

    Args:
        data: the file's bytes.
        limits: resource limits.

    Returns:
        The format, page count and pages to process.

    Raises:
        DecodeError: the document cannot be decoded (``.reason`` says why).

    >>> try:
    ...     probe_document(b"<html><body>not an image</body></html>")
    ... except DecodeError as e:
    ...     print(e.reason)
    unsupported_format
    """
    fmt = _check_bytes(data, limits)
    data = bytes(data)
    if fmt == "pdf":
        with _PDFIUM_LOCK:
            pdf = _open_pdf(data)
            try:
                count = len(pdf)
            finally:
                pdf.close()
    else:
        why = _structurally_truncated(fmt, data)
        if why:
            raise DecodeError("truncated", f"{fmt}: {why}")
        with _open_image(fmt, data) as im:
            count = _image_frame_count(fmt, im)
            if fmt != "tiff":
                _check_page_size(im.size[0], im.size[1], limits, fmt)
    if count == 0:
        raise DecodeError("no_pages", f"the {fmt} has zero pages")
    return DocumentInfo(format=fmt, page_count=count, pages_to_process=min(count, limits.max_pages))


def decode_page(data: bytes, page_index: int, *, limits: DecodeLimits = _DEFAULT_LIMITS) -> np.ndarray:
    """Decodes one page of a document to an upright RGB array.

    Args:
        data: the file's bytes.
        page_index: zero-based page (TIFF frame, PDF page); must be below ``min(page_count, limits.max_pages)``.
        limits: resource limits.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(H, W, 3)``, RGB.

    Raises:
        DecodeError: the page cannot be decoded (``.reason`` says why).
    """
    fmt = _check_bytes(data, limits)
    data = bytes(data)
    if fmt != "pdf":
        return _decode_image_page(fmt, data, page_index, limits)
    with _PDFIUM_LOCK:
        pdf = _open_pdf(data)
        try:
            _check_index(page_index, len(pdf), limits)
            return _render_pdf_page(pdf, int(page_index), limits)
        finally:
            pdf.close()


def decode_document(data: bytes, *, limits: DecodeLimits = _DEFAULT_LIMITS) -> list[np.ndarray]:
    """Decodes every page up to ``limits.max_pages`` (a convenience for single calls and tests).

    The first bad page raises; a pipeline that wants per-page dead letters calls :func:`probe_document` and then
    :func:`decode_page` per page instead.

    Args:
        data: the file's bytes.
        limits: resource limits.

    Returns:
        One RGB ``uint8`` ``(H, W, 3)`` array per processed page, in page order.

    Raises:
        DecodeError: the document or one of its pages cannot be decoded.
    """
    info = probe_document(data, limits=limits)
    if info.format != "pdf":
        return [decode_page(data, i, limits=limits) for i in range(info.pages_to_process)]
    data = bytes(data)
    with _PDFIUM_LOCK:
        pdf = _open_pdf(data)  # opened once for all pages
        try:
            return [_render_pdf_page(pdf, i, limits) for i in range(info.pages_to_process)]
        finally:
            pdf.close()
