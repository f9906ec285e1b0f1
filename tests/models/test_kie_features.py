"""models.features against hand-computed examples (a fake tokenizer keeps the expected ids obvious)."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import XFUND_CLASSES, bio_labels, build_re_inputs, build_windows, normalize_box


class CharTokenizer:
    """One token per character, id = ord(c) % 1000 + 4 (the feature builder only needs these two methods)."""

    def tokenize(self, text):
        return [c for c in text if not c.isspace()]

    def convert_tokens_to_ids(self, tokens):
        return [ord(c) % 1000 + 4 for c in tokens]


TOK = CharTokenizer()
L2I = {n: i for i, n in enumerate(bio_labels(XFUND_CLASSES))}


def test_bio_labels_like_paddleocr():
    assert bio_labels(XFUND_CLASSES) == ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER",
                                         "I-HEADER"]
    assert bio_labels(["others", "key", "Value", "ignore"]) == ["O", "B-KEY", "I-KEY", "B-VALUE", "I-VALUE"]
    with pytest.raises(ValueError, match="twice"):
        bio_labels(["key", "KEY"])


def test_normalize_box_truncates_and_range_checks():
    assert normalize_box((0, 0, 2480, 3508), 2480, 3508) == (0, 0, 1000, 1000)
    # 333 * 1000 / 1000 = 333; 1 * 1000 / 3 = 333.33 -> 333; 2 * 1000 / 3 = 666.67 -> 666 (truncation)
    assert normalize_box((1, 2, 2, 3), 3, 3) == (333, 666, 666, 1000)
    with pytest.raises(ValueError, match="outside 0..1000"):
        normalize_box((0, 0, 101, 10), 100, 100)
    assert normalize_box((-5, 0, 101, 10), 100, 100, clip=True) == (0, 0, 1000, 100)
    with pytest.raises(ValueError, match="inverted"):
        normalize_box((10, 0, 5, 10), 100, 100)


def test_single_window_layout_labels_and_padding():
    texts = ["ab", "", "cde", "f"]
    boxes = [(0, 0, 50, 10), (0, 10, 10, 20), (10, 20, 100, 40), (30, 50, 60, 60)]
    wins = build_windows(texts, boxes, 100, 200, TOK, line_labels=["question", "answer", "ANSWER", "other"],
                         label2id=L2I, max_len=8)
    assert len(wins) == 1
    w = wins[0]
    assert w.line_ids == (0, 2, 3)  # the empty line is skipped and gets no span
    assert w.line_spans == ((0, 2), (2, 5), (5, 6))
    ids = [ord(c) + 4 for c in "abcdef"]
    assert w.input_ids.tolist() == ids + [1, 1]
    assert w.attention_mask.tolist() == [1] * 6 + [0, 0]
    assert w.token_type_ids.tolist() == [0] * 8
    assert w.bbox.tolist() == [[0, 0, 500, 50]] * 2 + [[100, 100, 1000, 200]] * 3 + [[300, 250, 600, 300]] + [
        [0, 0, 0, 0]] * 2
    # B-QUESTION I-QUESTION | B-ANSWER I-ANSWER I-ANSWER | O | padding -100
    assert w.labels.tolist() == [1, 2, 3, 4, 4, 0, -100, -100]
    assert all(a.dtype == np.int64 for a in (w.input_ids, w.bbox, w.attention_mask, w.labels))
    assert w.num_tokens == 6
    assert build_windows(texts, boxes, 100, 200, TOK, max_len=8)[0].labels is None


def test_long_documents_split_at_line_boundaries_and_long_lines_in_chunks():
    texts = ["aaa", "bbbb", "cc", "dddddddddd", "e"]
    boxes = [(0, i * 10, 10, i * 10 + 5) for i in range(5)]
    wins = build_windows(texts, boxes, 100, 100, TOK, line_labels=["QUESTION"] * 5, label2id=L2I, max_len=4)
    # "aaa"(3) | "bbbb"(4) | "cc"(2) | "dddddddddd" cut into 4+4+2, the last chunk shares with "e"
    assert [w.line_ids for w in wins] == [(0,), (1,), (2,), (3,), (3,), (3, 4)]
    assert [w.line_spans for w in wins] == [((0, 3),), ((0, 4),), ((0, 2),), ((0, 4),), ((0, 4),), ((0, 2), (2, 3))]
    assert wins[3].labels.tolist() == [1, 2, 2, 2]
    assert wins[4].labels.tolist() == [2, 2, 2, 2]  # a continuation chunk has no B- token
    assert wins[5].labels.tolist() == [2, 2, 1, -100]
    total = sum(w.num_tokens for w in wins)
    assert total == sum(len(t) for t in texts)  # nothing is dropped


def test_empty_page_gives_one_padding_window():
    wins = build_windows([], [], 100, 100, TOK, max_len=4)
    assert len(wins) == 1 and wins[0].line_ids == () and wins[0].num_tokens == 0


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="2 texts but 1 boxes"):
        build_windows(["a", "b"], [(0, 0, 1, 1)], 10, 10, TOK)
    with pytest.raises(ValueError, match="'price'"):
        build_windows(["a"], [(0, 0, 1, 1)], 10, 10, TOK, line_labels=["price"], label2id=L2I)


def test_re_inputs_entities_candidates_and_gold():
    texts = ["Name", "Bob", "Date", "today", "Form", "x"]
    boxes = [(0, 0, 10, 10)] * 6
    labels = ["QUESTION", "ANSWER", "question", "answer", "HEADER", "O"]
    (w,) = build_windows(texts, boxes, 100, 100, TOK, max_len=32)
    re = build_re_inputs(w, labels, links=[(1, 0), (2, 3), (4, 0)])
    assert re.entities.tolist() == [[0, 4, 1], [4, 7, 2], [7, 11, 1], [11, 16, 2], [16, 20, 0]]
    assert re.entity_line_ids == (0, 1, 2, 3, 4)
    # question-major: q0 x (a1, a3), q2 x (a1, a3)
    assert re.pairs.tolist() == [[0, 1], [0, 3], [2, 1], [2, 3]]
    assert re.pair_labels.tolist() == [1, 0, 0, 1]  # the header link is not a candidate
    no_gold = build_re_inputs(w, labels)
    assert no_gold.pair_labels is None
    none = build_re_inputs(w, ["O"] * 6)
    assert none.entities.shape == (0, 3) and none.pairs.shape == (0, 2)
