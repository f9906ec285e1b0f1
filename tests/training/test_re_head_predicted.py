"""RE training windows over the entities the bundled SER model decodes (``training.re_head.predicted_entity_items``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.features import PAIR_FEATURES
from schemas.annotations import KieDocument, KieLine

pytest.importorskip("paddle")

SER = Path(__file__).resolve().parents[2] / "models" / "assets" / "default_kie" / "ser"


def _line(text: str, label: str, box: tuple[int, int, int, int], i: int, links=()) -> KieLine:  # noqa: ANN001
    x0, y0, x1, y1 = box
    return KieLine(text, label, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), box, i, tuple(links))


def test_pairs_of_decoded_entities_are_labelled_by_the_end_to_end_criterion():
    from training.re_head import predicted_entity_items

    doc = KieDocument("form.jpg", (
        _line("个人信息登记表", "HEADER", (300, 40, 700, 90), 0),
        _line("姓名：", "QUESTION", (100, 150, 220, 190), 1, [(1, 2)]),
        _line("张三", "ANSWER", (240, 150, 340, 190), 2, [(1, 2)]),
        _line("性别：", "QUESTION", (500, 150, 620, 190), 3, [(3, 4)]),
        _line("男", "ANSWER", (640, 150, 680, 190), 4, [(3, 4)]),
        _line("联系电话：", "QUESTION", (100, 250, 300, 290), 5, [(5, 6)]),
        _line("13800138000", "ANSWER", (320, 250, 560, 290), 6, [(5, 6)]),
    ), 1000, 1400)
    (item,) = predicted_entity_items(SER, [doc])
    n_e, n_p = len(item.entities), len(item.pairs)
    assert item.hidden.shape[1] == 384 and item.features.shape == (n_p, len(PAIR_FEATURES))
    assert item.pairs.min() >= 0 and item.pairs.max() < n_e and set(np.unique(item.labels)) <= {0, 1}
    # Entities are (start, end, label) token spans in reading order; the model reads this simple form right, so the
    # positives are exactly the three gold links (entity spans of the questions and answers, by label).
    questions = [k for k, e in enumerate(item.entities) if e[2] == 1]
    answers = [k for k, e in enumerate(item.entities) if e[2] == 2]
    assert len(questions) == 3 and len(answers) == 3
    linked = {(int(q), int(a)) for (q, a), y in zip(item.pairs, item.labels) if y == 1}
    assert linked == set(zip(questions, answers))
    assert int(item.labels.sum()) == 3 < n_p
