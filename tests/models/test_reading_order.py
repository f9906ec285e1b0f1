"""PaddleOCR's two reading orders, quirks included (pure Python, no Paddle)."""

from __future__ import annotations

import pytest

from models.reading_order import ORDER_METHODS, order_by_tbyx, order_ppocr_det


def test_tbyx_rows_left_to_right_then_top_to_bottom():
    boxes = [
        (500, 100, 600, 120),  # 0: row 2, right
        (10, 0, 90, 20),  # 1: row 1, left
        (400, 5, 480, 25),  # 2: row 1, right (top 5 px lower)
        (20, 112, 80, 130),  # 3: row 2, left, top 12 px lower than box 0 -> same row
        (0, 300, 50, 320),  # 4: row 3
    ]
    assert order_by_tbyx(boxes) == [1, 2, 3, 0, 4]


def test_tbyx_never_swaps_the_first_two_lines():
    # Same row, the second-sorted line is further left: a real row sort would swap them, PaddleOCR's does not
    # (its inner loop runs range(i, 0, -1), so index 0 never moves).
    boxes = [(300, 10, 400, 30), (0, 12, 100, 32)]
    assert order_by_tbyx(boxes) == [0, 1]
    # With a third line in the row, the third one moves left past the second but stops at index 1.
    boxes3 = [(300, 10, 400, 30), (200, 12, 280, 32), (0, 14, 100, 34)]
    assert order_by_tbyx(boxes3) == [0, 2, 1]


def test_tbyx_threshold_is_strict_and_configurable():
    boxes = [(0, 0, 10, 10), (300, 0, 400, 10), (100, 20, 200, 30)]  # top difference exactly 20
    assert order_by_tbyx(boxes) == [0, 1, 2]
    assert order_by_tbyx(boxes, threshold=21) == [0, 2, 1]


def test_ppocr_det_order_uses_first_point_and_does_reach_index_0():
    polys = [
        [(300, 10), (400, 10), (400, 30), (300, 30)],
        [(0, 15), (100, 15), (100, 35), (0, 35)],  # 5 px lower, further left -> swapped to the front
        [(0, 100), (100, 100), (100, 120), (0, 120)],
    ]
    assert order_ppocr_det(polys) == [1, 0, 2]
    # 10 px apart is not the same row (strict <)
    polys[1] = [(0, 20), (100, 20), (100, 40), (0, 40)]
    assert order_ppocr_det(polys) == [0, 1, 2]


@pytest.mark.parametrize("func", [order_by_tbyx, order_ppocr_det])
def test_empty_and_single(func):
    assert func([]) == []
    one = [[(0, 0), (1, 0), (1, 1), (0, 1)]] if func is order_ppocr_det else [(0, 0, 1, 1)]
    assert func(one) == [0]


def test_order_methods():
    assert set(ORDER_METHODS) == {"tb-yx", "none"}


def test_cells_together_reads_a_wrapped_cells_rows_one_after_another():
    from models.reading_order import cells_together

    h = 40
    boxes = [(0, 0, 100, h),  # 0: a wrapped key's first row
             (300, 20, 400, 20 + h),  # 1: its answer, on the right between the two rows
             (0, h + 4, 90, 2 * h + 4),  # 2: the key's second row, 0.1 line heights below: read right after 0
             (0, 2 * h + 8, 60, 3 * h + 8),  # 3: a third row of the same cell: after 2
             (0, 4 * h, 100, 5 * h),  # 4: the next key, 0.8 line heights below: stays where it is
             (300, 4 * h, 400, 5 * h),  # 5: its answer
             (150, 5 * h + 2, 250, 6 * h + 2)]  # 6: right under nothing it is aligned with: stays
    assert order_by_tbyx(boxes) == [0, 1, 2, 3, 4, 5, 6]
    assert cells_together(boxes, order_by_tbyx(boxes)) == [0, 2, 3, 1, 4, 5, 6]
    assert cells_together(boxes, order_by_tbyx(boxes), gap=0.05) == [0, 1, 2, 3, 4, 5, 6]  # 0.1 heights: too far
    assert cells_together(boxes, order_by_tbyx(boxes), gap=1.0) == [0, 2, 3, 4, 1, 5, 6]  # 0.8 heights: joined too
    centred = [(0, 0, 200, h), (300, 0, 400, h), (60, h, 140, 2 * h)]  # a centred second row is a cell's row too
    assert cells_together(centred, [0, 1, 2]) == [0, 2, 1]
    assert cells_together([], []) == [] and cells_together([(0, 0, 1, 1)], [0]) == [0]
