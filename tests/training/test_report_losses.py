"""training.report.pair_losses on a constructed page: each gold pair end lands in the one loss kind it shows."""

from __future__ import annotations

from models.kie import KieEntity
from schemas.annotations import KieDocument, KieLine
from schemas.records import OcrLine, PageOcr
from training.report import format_report, pair_losses


def _gold(text, label, box, i, link):
    x0, y0, x1, y1 = box
    return KieLine(text, label, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), box, i, ((link, i) if label == "ANSWER"
                                                                                    else (i, link),))


def _ocr(text, box):
    return OcrLine(text, 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)), box)


def _ent(label, box, line):
    return KieEntity(label, "x", box, 0.9, line, 0, line, line + 1)


def test_each_gold_end_lands_in_one_loss_kind():
    doc = KieDocument("constructed.jpg", (
        _gold("姓名", "QUESTION", (100, 100, 200, 130), 0, 1), _gold("张三", "ANSWER", (220, 100, 300, 130), 1, 0),
        _gold("性别", "QUESTION", (100, 200, 200, 230), 2, 3), _gold("男", "ANSWER", (220, 200, 260, 230), 3, 2),
        _gold("曾在何时何处进修学习", "QUESTION", (100, 300, 300, 370), 4, 5),
        _gold("北大", "ANSWER", (400, 300, 480, 330), 5, 4),
        _gold("住址", "QUESTION", (100, 500, 180, 530), 6, 7), _gold("北京", "ANSWER", (200, 500, 280, 530), 7, 6),
    ), 1000, 1000)
    page = PageOcr(1000, 1000, (
        _ocr("姓名", (100, 100, 200, 130)), _ocr("张三", (220, 100, 300, 130)),  # 0, 1: both ends right
        _ocr("性别", (100, 200, 200, 230)), _ocr("男", (220, 200, 260, 230)),  # 2, 3: right, but not linked
        _ocr("曾在何时何处", (100, 300, 300, 332)), _ocr("进修学习", (100, 338, 240, 370)),  # 4, 5: a wrapped cell
        _ocr("北大", (400, 300, 480, 330)),  # 6: the answer, labelled QUESTION
        _ocr("住址北京", (100, 500, 280, 530)),  # 7: key and value in one line, left whole
    ))
    ents = [_ent("QUESTION", (100, 100, 200, 130), 0), _ent("ANSWER", (220, 100, 300, 130), 1),
            _ent("QUESTION", (100, 200, 200, 230), 2), _ent("ANSWER", (220, 200, 260, 230), 3),
            _ent("QUESTION", (100, 300, 300, 332), 4), _ent("QUESTION", (100, 338, 240, 370), 5),
            _ent("QUESTION", (400, 300, 480, 330), 6), _ent("ANSWER", (100, 500, 280, 530), 7)]
    links = [(0, 1, 0.9), (4, 6, 0.9)]
    lo = pair_losses([doc], [page], [ents], [links])
    assert lo["pairs"] == 4 and lo["linked"] == 1 and lo["unlinked"] == 1
    assert lo["question_end"] == {"right": 2, "wrong_label": 0, "entity_cut_wrong": 0, "several_lines": 1,
                                  "inside_longer_line": 1, "no_line": 0}
    assert lo["answer_end"] == {"right": 2, "wrong_label": 1, "entity_cut_wrong": 0, "several_lines": 0,
                                "inside_longer_line": 1, "no_line": 0}
    # and the report prints them under the end-to-end rows
    prf = {"precision": 0.5, "recall": 0.5, "hmean": 0.5}
    rep = {"ser_token": prf, "ser_token_bio": prf, "ser_line": {"vote": {"micro": prf}, "bio": {"micro": prf}},
           "re_gold": {"rule": prf}, "pairs_gold_ocr": {"rule": prf},
           "end2end": {"rule": prf, "model": prf, "entities_paddleocr_e2e": prf, "losses": lo}}
    text = format_report(rep)
    assert "end-to-end gold pairs 4: both ends right 1 linked, 1 not" in text
    assert "question ends: right 2, wrong label 0, entity cut wrong 0, several lines 1, inside longer line 1" in text


def test_detector_view_cuts_tall_boxes_into_rows_and_vertical_text_into_characters():
    from training.report import detector_view

    doc = KieDocument("constructed.jpg", (
        _gold("主要工作", "QUESTION", (50, 100, 80, 220), 0, 9),  # vertical: 30 wide, 120 tall
        _gold("院系意见请审核", "QUESTION", (100, 100, 400, 190), 1, 9),  # three rows
        _gold("同意", "ANSWER", (500, 100, 600, 130), 2, 9), _gold("备注", "OTHER", (100, 300, 200, 330), 3, 9),
        _gold("日期", "QUESTION", (500, 400, 560, 430), 4, 9), _gold("签字", "QUESTION", (100, 500, 160, 530), 5, 9),
    ), 1000, 1000)
    lines = [(ln.text, ln.box) for ln in detector_view([doc])[0].lines]
    assert sorted(lines) == sorted([
        ("主", (50, 100, 80, 130)), ("要", (50, 130, 80, 160)), ("工", (50, 160, 80, 190)), ("作", (50, 190, 80, 220)),
        ("院系意", (100, 100, 400, 130)), ("见请审", (100, 130, 400, 160)), ("核", (100, 160, 200, 190)),
        ("同意", (500, 100, 600, 130)), ("备注", (100, 300, 200, 330)), ("日期", (500, 400, 560, 430)),
        ("签字", (100, 500, 160, 530))])
    # tb-yx order: the first row of every cell, then the next rows
    assert [t for t, _ in lines[:3]] == ["主", "院系意", "同意"] and lines[-3][0] == "备注"
