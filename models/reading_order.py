"""Reading order of text lines, as PaddleOCR computes it. Python and numpy: no Paddle, no Beam.

Two orders exist in PaddleOCR and both are reproduced exactly, quirks included:

* :func:`order_by_tbyx` is the "tb-yx" sort that every VI-LayoutXLM config uses for SER/RE
  (``ppocr/data/imaug/vqa/augment.py``): a stable sort by the top-left corner ``(y0, x0)`` of the
  axis-aligned box, then one insertion pass that swaps neighbours whose tops differ by less than 20 px
  when the later one is further left. The inner loop stops at index 1, so the first two lines are never
  swapped (``range(i, 0, -1)``): the first pass does nothing. The SER/RE models were trained on this.
* :func:`order_ppocr_det` is the order the OCR system itself returns (``sorted_boxes`` in
  ``tools/infer/predict_system.py``), used when no sort is asked for: the same idea on the first polygon
  point with a 10 px threshold, and there the inner loop does reach index 0.

:func:`order_lines` is the one entry point of both KIE paths, the training/evaluation shard reader
(``training.shards``) and OCR inference (``models.ocr``): it sorts **every** line and only then leaves lines
out, as PaddleOCR's ``VQATokenLabelEncode`` (``order_by_tbyx`` on all lines, empty transcriptions skipped while
encoding). Leaving a line out before the sort can change the order of the others, because the neighbour-swap
pass compares adjacent lines.

:func:`cells_together` is kiebeam's own step on top, for the models trained here: tb-yx reads a table row by row,
so the second row of a wrapped cell ("何时、何校" / "获何种学位") comes after the other cells of the first row, and
a SER model that reads it there starts a new entity; read right after the row above it, it goes on with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["order_by_tbyx", "order_ppocr_det", "order_lines", "cells_together", "ORDER_METHODS"]

ORDER_METHODS = ("tb-yx", "none")


def _threshold_sort(keys: Sequence[tuple[float, float]], threshold: float, stop: int) -> list[int]:
    """Stable sort by (y, x), then the neighbour-swap pass; ``stop`` is the lowest j the pass reaches."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i][0], keys[i][1]))
    for i in range(len(order) - 1):
        for j in range(i, stop - 1, -1):
            below, above = keys[order[j + 1]], keys[order[j]]
            if abs(below[0] - above[0]) < threshold and below[1] < above[1]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order


def order_by_tbyx(boxes: Sequence[Sequence[float]], threshold: float = 20) -> list[int]:
    """PaddleOCR's tb-yx reading order.

    Args:
        boxes: axis-aligned ``(x0, y0, x1, y1)`` pixel boxes.
        threshold: lines whose tops differ by less than this many pixels count as one row.

    Returns:
        The permutation: ``order[k]`` is the index (into ``boxes``) of the k-th line to read.

    >>> order_by_tbyx([(100, 0, 150, 10), (0, 5, 50, 15), (0, 100, 50, 110)])
    [0, 1, 2]
    """
    return _threshold_sort([(b[1], b[0]) for b in boxes], threshold, stop=1)


def order_ppocr_det(polygons: Sequence[Sequence[Sequence[float]]], threshold: float = 10) -> list[int]:
    """The order PaddleOCR's text system gives detected boxes (keyed on each polygon's first point).

    Args:
        polygons: 4-point polygons, first point top-left, pixels.
        threshold: row threshold in pixels.

    Returns:
        The permutation into ``polygons``.
    """
    return _threshold_sort([(p[0][1], p[0][0]) for p in polygons], threshold, stop=0)


def order_lines(boxes: Sequence[Sequence[float]], keep: Sequence[bool] | None = None,
                method: str = "tb-yx") -> list[int]:
    """The KIE line order: sort all lines with ``method``, then drop those whose ``keep`` is False.

    Args:
        boxes: axis-aligned ``(x0, y0, x1, y1)`` pixel boxes of all lines, empty ones included.
        keep: per line, whether it stays (e.g. ``bool(text.strip())``); None keeps every line.
        method: ``tb-yx`` (:func:`order_by_tbyx`) or ``none`` (input order).

    Returns:
        Indices into ``boxes`` of the kept lines, in reading order.

    Raises:
        ValueError: an unknown method, or ``keep`` of another length than ``boxes``.

    >>> boxes = [(0, 0, 50, 10), (100, 10, 150, 20), (0, 15, 50, 25)]
    >>> order_lines(boxes, keep=[False, True, True]), [1 + i for i in order_by_tbyx(boxes[1:])]
    ([2, 1], [1, 2])
    """
    if method not in ORDER_METHODS:
        raise ValueError(f"unknown order method {method!r}, expected one of {list(ORDER_METHODS)}")
    if keep is not None and len(keep) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(keep)} keep flags")
    order = order_by_tbyx(boxes) if method == "tb-yx" else list(range(len(boxes)))
    return order if keep is None else [i for i in order if keep[i]]


def cells_together(boxes: Sequence[Sequence[float]], order: Sequence[int], gap: float = 0.3) -> list[int]:
    """``order`` with the rows of each wrapped cell read one after another: a line right under the line just read
    (columns overlapping by half the narrower box, left edges or centres within half a line height of each other,
    its top at most ``gap`` line heights below that line's bottom, 0.3 above allowed) is read next, the nearest
    first; every other line keeps its place in ``order``.

    Args:
        boxes: axis-aligned ``(x0, y0, x1, y1)`` boxes.
        order: a reading order of them (e.g. :func:`order_by_tbyx`), a permutation of ``range(len(boxes))``.
        gap: the largest gap between two rows of one cell, in line heights (the lower of the two).

    Returns:
        The new permutation.

    >>> boxes = [(0, 0, 100, 20), (200, 10, 300, 30), (0, 22, 80, 42), (0, 100, 100, 120)]
    >>> cells_together(boxes, [0, 1, 2, 3])  # the wrapped first cell's second row, before the cell to its right
    [0, 2, 1, 3]
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    if n < 2:
        return list(order)
    x0, y0, x1, y1 = (b[:, i] for i in range(4))
    height, width, mid2 = y1 - y0, x1 - x0, x0 + x1

    def under(k: int) -> np.ndarray:  # the lines right under line k (one row of comparisons: memory stays O(n))
        h, w, below = np.minimum(height[k], height), np.minimum(width[k], width), y0 - y1[k]
        aligned = (np.abs(x0 - x0[k]) <= 0.5 * h) | (np.abs(mid2 - mid2[k]) <= h)
        return ((np.minimum(x1[k], x1) - np.maximum(x0[k], x0) >= 0.5 * w) & aligned & (h > 0)
                & (below >= -0.3 * h) & (below <= gap * h))

    out: list[int] = []
    done = np.zeros(n, dtype=bool)
    for k in order:
        while not done[k]:
            out.append(k)
            done[k] = True
            nxt = np.flatnonzero(under(k) & ~done)
            if len(nxt):
                k = int(nxt[np.argmin(y0[nxt])])
    return out
