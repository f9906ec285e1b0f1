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
