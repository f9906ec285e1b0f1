"""What a page becomes: its OCR lines, its entities and key/value pairs, and the one outcome that carries them.

Framework-free: no Paddle, no Beam (nor numpy: pixels are typed loosely).

Coordinate convention: every box and polygon here is in **pixels of the decoded page image**
(origin top-left, x to the right, y down). Only ``models.features`` converts boxes to LayoutXLM's
0-1000 integer grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from schemas.errors import ErrorInfo
from schemas.refs import DocRef

__all__ = ["OcrLine", "PageOcr", "Entity", "KeyValuePair", "PageKie", "PageOutcome"]

Box = tuple[int, int, int, int]
Polygon = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised text line.

    Attributes:
        text: recognised text (CTC greedy decoding).
        score: recognition confidence in [0, 1] (mean of the kept CTC step probabilities, as PaddleOCR).
        polygon: 4 corner points, clockwise from top-left, pixels (float).
        box: axis-aligned ``(x0, y0, x1, y1)`` pixels, ``int(min)`` / ``int(max)`` of the polygon
            (PaddleOCR's ``trans_poly_to_bbox``).
        det_score: detection box score in [0, 1] (mean probability inside the box).
        char_x: per character of ``text``, its centre as a fraction (0..1) of the line's width, from the CTC
            step that emitted it (empty when unknown); used to cut sub-line entity boxes.
    """

    text: str
    score: float
    polygon: Polygon
    box: Box
    det_score: float = 1.0
    char_x: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class PageOcr:
    """OCR result of one page: lines in reading order (index = reading-order index)."""

    width: int
    height: int
    lines: tuple[OcrLine, ...]
    det_ms: float = 0.0
    rec_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Entity:
    """A labelled entity: one OCR line whose SER label is not ``O`` (PaddleOCR's rule).

    Attributes:
        entity_id: 0-based index among the page's entities, in reading order.
        label: entity class, e.g. ``QUESTION``, ``ANSWER``, ``HEADER``.
        text: the text of its line(s).
        box: pixel box of its text: its line(s), shrunk by the KIE model's ``entity_box_margin`` (``models.kie``).
        score: mean softmax probability of the voted class over the line's tokens.
        line_ids: reading-order indices of its OCR lines.
    """

    entity_id: int
    label: str
    text: str
    box: Box
    score: float
    line_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KeyValuePair:
    """A question -> answer link predicted by RE (ids refer to ``Entity.entity_id`` of the same page)."""

    question_id: int
    answer_id: int
    score: float


@dataclass(frozen=True, slots=True)
class PageKie:
    """SER + RE result of one page.

    Attributes:
        line_labels: SER label of every OCR line (``O`` for other), aligned with ``PageOcr.lines``.
        line_scores: softmax probability of each line's voted label.
        entities: lines whose label is not ``O``.
        pairs: RE links, at most one question per answer.
        windows: how many 512-token windows the page needed.
        ser_ms / re_ms: model time spent on the page.
    """

    line_labels: tuple[str, ...]
    line_scores: tuple[float, ...]
    entities: tuple[Entity, ...]
    pairs: tuple[KeyValuePair, ...]
    windows: int = 1
    ser_ms: float = 0.0
    re_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """The single outcome of one page, from decoding to rows: what the models found, or the error that stopped it.

    Both model handlers take and return it (``transforms.inference``): decoding sets ``image``, OCR replaces it
    with ``ocr`` (or ``error``), KIE adds ``kie`` (or ``error``); a failed outcome passes on untouched.

    Attributes:
        doc: the page's document.
        page_no: 0-based page index in the document.
        width / height: page size in pixels, from OCR (None before OCR or when it failed).
        decode_ms: time spent reading and decoding the page.
        image: decoded RGB ``uint8`` pixels ``(H, W, 3)`` between decoding and OCR, else None (OCR drops them, so
            no pixels cross a later shuffle).
        kie_image: between OCR and KIE, the page resized to the visual backbone's ``(224, 224, 3)`` uint8 RGB
            (``models.page_image.kie_thumbnail``, 147 KB) when the KIE model needs the image (the ``layoutxlm``
            family), else None.
        ocr / kie: the models' results.
        error: why the page failed (then no further model runs on it).
        ocr_model / kie_model: version strings of the models that made it.
        ocr_runtime / kie_runtime: backend/device/precision each of those models ran with
            (``models.predictors.runtime_label``, e.g. ``det=openvino/cpu/fp32;rec=openvino/cpu/fp32``).
    """

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
    ocr_runtime: str | None = None
    kie_runtime: str | None = None
    image: object = None  # np.ndarray; typed loosely so this module stays numpy-free
    kie_image: object = None  # np.ndarray (224, 224, 3) uint8, only for a KIE model with a visual backbone

    def with_(self, **changes: object) -> PageOutcome:
        """Returns a copy with the given fields replaced."""
        return replace(self, **changes)
