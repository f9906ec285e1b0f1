"""Metrics: our SER F1 equals the seqeval package; RE and end-to-end scores on hand-computed cases; LR schedule."""

from __future__ import annotations

import random
import warnings

import pytest

from training.config import TrainConfig, lr_at
from training.metrics import end2end_scores, format_table, re_scores, ser_entities, ser_scores


def test_train_ser_scores_equal_seqeval_on_random_tags():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(2022)
    tags = ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]
    for _ in range(200):
        gold = [[rng.choice(tags) for _ in range(rng.randint(0, 15))] for _ in range(rng.randint(1, 4))]
        pred = [[rng.choice(tags) for _ in doc] for doc in gold]
        micro, per_class = ser_scores(gold, pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert micro.f1 == pytest.approx(seqeval.f1_score(gold, pred))
            assert micro.precision == pytest.approx(seqeval.precision_score(gold, pred))
            assert micro.recall == pytest.approx(seqeval.recall_score(gold, pred))
            report = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
        for name, s in per_class.items():
            if s.support:
                assert s.f1 == pytest.approx(report[name]["f1-score"]), name


def test_train_ser_entities_and_table():
    assert ser_entities(["B-Q", "I-Q", "I-A", "O", "I-Q"]) == [("Q", 0, 1), ("A", 2, 2), ("Q", 4, 4)]
    micro, per = ser_scores([["B-Q", "I-Q", "B-A"]], [["B-Q", "I-Q", "B-Q"]])
    assert (micro.correct, micro.predicted, micro.support) == (1, 2, 2)
    table = format_table(micro, per)
    assert "micro" in table and "A" in table


def test_train_re_scores_boundaries():
    gold = [[((0, 2), (5, 7)), ((3, 4), (8, 9))], [((1, 2), (3, 4))]]
    pred = [[((0, 2), (5, 7)), ((3, 4), (5, 7))], []]
    s = re_scores(gold, pred)
    assert (s.correct, s.predicted, s.support) == (1, 2, 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_train_end2end_scores_iou_text_and_label():
    def sq(x, y, w=10, h=10):
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]

    gold = [[(sq(0, 0), "Na me", "QUESTION"), (sq(50, 0), "Ada", "ANSWER"), (sq(0, 50), "x", "OTHER")]]
    pred = [[(sq(1, 0), "Name", "QUESTION"),  # IoU 0.82, spaces ignored -> hit
             (sq(58, 0), "Ada", "ANSWER"),    # IoU 0.11 < 0.5 -> no match
             (sq(0, 50), "x", "O")]]          # background, dropped
    s = end2end_scores(gold, pred)
    assert (s.correct, s.predicted, s.support) == (1, 2, 2)
    assert end2end_scores(gold, pred, ignore_space=False).correct == 0


def test_train_lr_schedules_follow_paddleocr():
    lin = TrainConfig(epochs=10, warmup_epochs=2, learning_rate=1.0, schedule="linear")
    assert [lr_at(s, lin, 2) for s in (0, 2, 4)] == [0.0, 0.5, 1.0]
    assert lr_at(14, lin, 2) == pytest.approx(0.5)  # decay restarts after warmup (Paddle LinearWarmup)
    const = TrainConfig(epochs=10, warmup_epochs=1, learning_rate=2.0, schedule="constant")
    assert [lr_at(s, const, 4) for s in (0, 2, 4, 39)] == [0.0, 1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        TrainConfig(schedule="cosine")
