"""Labelled documents, the gold that training and evaluation read: a line's text, class, box and links.

Framework-free: no Paddle, no Beam. ``training.shards`` reads and writes them as PaddleOCR KIE label files; the
evaluation compares them with the pipeline's ``schemas.records`` results. Coordinates are pixels of the page.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KieLine", "KieDocument"]


@dataclass(frozen=True)
class KieLine:
    """One labelled text line (pixel coordinates).

    Attributes:
        text: transcription.
        label: class name, upper-case (``QUESTION``...).
        points: 4-point polygon.
        box: ``(x0, y0, x1, y1)`` = int min/max of the polygon (PaddleOCR's ``trans_poly_to_bbox``).
        line_id: the annotation ``id`` (used by ``linking``).
        linking: ``(id_a, id_b)`` pairs as written in the file (a link appears on both ends).
    """

    text: str
    label: str
    points: tuple[tuple[float, float], ...]
    box: tuple[int, int, int, int]
    line_id: int
    linking: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class KieDocument:
    """A document: its lines in tb-yx reading order, and the page size.

    Attributes:
        name: image name as in the label file.
        lines: lines sorted with ``models.reading_order.order_by_tbyx`` (as PaddleOCR's ``order_method: tb-yx``).
        width / height: page size in pixels.
    """

    name: str
    lines: tuple[KieLine, ...]
    width: int
    height: int

    def links(self) -> list[tuple[int, int]]:
        """Deduplicated gold (question line index, answer line index) pairs, as PaddleOCR's VQAReTokenRelation.

        Only links between a ``QUESTION`` and an ``ANSWER`` are kept (head = question).

        Returns:
            Sorted pairs of indices into ``lines``.
        """
        index = {ln.line_id: i for i, ln in enumerate(self.lines)}
        pairs: set[tuple[int, int]] = set()
        for ln in self.lines:
            for a, b in ln.linking:
                if a not in index or b not in index:
                    continue
                ia, ib = index[a], index[b]
                la, lb = self.lines[ia].label, self.lines[ib].label
                if (la, lb) == ("QUESTION", "ANSWER"):
                    pairs.add((ia, ib))
                elif (la, lb) == ("ANSWER", "QUESTION"):
                    pairs.add((ib, ia))
        return sorted(pairs)
