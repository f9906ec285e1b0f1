"""SER training augmentation (training.augment) on constructed pages, and a training run that uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.features import bio_labels, build_windows, normalize_box
from models.ser_decoding import merge_parts
from models.tokenizer import load_tokenizer
from schemas.annotations import KieDocument, KieLine
from training.augment import Augment, answer_pool, augment_window

ROOT = Path(__file__).resolve().parents[2]

LABELS = bio_labels(["OTHER", "QUESTION", "ANSWER", "HEADER"])
L2I = {n: i for i, n in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ROOT / "models" / "assets" / "default_kie" / "ser")  # the bundled tokenizer


def _line(text, label, box, i):
    x0, y0, x1, y1 = box
    return KieLine(text, label, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), box, i)


def _doc():
    # Row 1: key and value close together; row 2: key and a value far to the right; row 3: a header alone.
    lines = (_line("姓名：", "QUESTION", (100, 100, 220, 140), 0), _line("张三", "ANSWER", (240, 100, 330, 140), 1),
             _line("地址", "QUESTION", (100, 300, 180, 340), 2), _line("北京", "ANSWER", (700, 300, 790, 340), 3),
             _line("申请表", "HEADER", (400, 500, 560, 550), 4))
    return KieDocument("constructed.jpg", lines, 1000, 1000)


def _window(doc, tokenizer):
    [w] = build_windows([ln.text for ln in doc.lines], [ln.box for ln in doc.lines], doc.width, doc.height,
                        tokenizer, line_labels=[ln.label for ln in doc.lines], label2id=L2I)
    return w


def _lines_of(w, tokenizer):
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in w.input_ids[:w.num_tokens]])
    return [("".join(pieces[s:e]), [LABELS[int(x)] for x in w.labels[s:e]], w.bbox[s].tolist())
            for s, e in w.line_spans]


def test_merge_parts_joins_latin_with_a_space_only():
    assert merge_parts(["Name:", "John"]) == ("Name: John", [0, 6])
    assert merge_parts(["性别：", "女", "学号："]) == ("性别：女学号：", [0, 3, 4])


def test_swap_replaces_answer_texts_by_other_answers_of_their_script_only(tokenizer):
    doc = _doc()
    other = KieDocument("other.jpg", (_line("王五六", "ANSWER", (0, 0, 90, 40), 0),
                                      _line("12345", "ANSWER", (0, 50, 90, 90), 1)), 100, 100)
    pool = answer_pool([other])
    assert pool == {True: ["王五六"], False: ["12345"]}
    w = augment_window(_window(doc, tokenizer), doc, tokenizer, L2I, np.random.default_rng(0), Augment(swap=1.0),
                       pool=pool)
    lines = _lines_of(w, tokenizer)
    texts = ["".join(t.replace("▁", "") for t in text) for text, _, _ in lines]
    assert texts == ["姓名:", "王五六", "地址", "王五六", "申请表"]  # both answers swapped, keys and header kept
    assert [labs[0] for _, labs, _ in lines] == ["B-QUESTION", "B-ANSWER", "B-QUESTION", "B-ANSWER", "B-HEADER"]
    assert [box for _, _, box in lines] == [box for _, _, box in _lines_of(_window(doc, tokenizer), tokenizer)]
    same = augment_window(_window(doc, tokenizer), doc, tokenizer, L2I, np.random.default_rng(0), Augment(swap=1.0))
    assert _lines_of(same, tokenizer) == _lines_of(_window(doc, tokenizer), tokenizer)  # no pool, no swap


def test_merge_makes_one_ocr_like_line_with_two_entities(tokenizer):
    doc = _doc()
    w = augment_window(_window(doc, tokenizer), doc, tokenizer, L2I, np.random.default_rng(0), Augment(merge=1.0))
    lines = _lines_of(w, tokenizer)
    assert len(lines) == 4  # only the close neighbours on row 1 merged
    text, labels, box = lines[0]
    # tokenised whole, as the pipeline tokenises an OCR line
    want = tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(tokenizer.tokenize("姓名：张三")))
    assert text == "".join(want)
    n_key = len(tokenizer.tokenize("姓名："))
    assert labels[0] == "B-QUESTION" and set(labels[1:n_key]) <= {"I-QUESTION"}
    assert labels[n_key] == "B-ANSWER" and set(labels[n_key + 1:]) <= {"I-ANSWER"}
    assert box == list(normalize_box((100, 100, 330, 140), 1000, 1000))  # the union, every token
    assert [ln[1][0] for ln in lines[1:]] == ["B-QUESTION", "B-ANSWER", "B-HEADER"]


def test_split_cuts_an_entity_in_two_lines_the_second_continuing_it(tokenizer):
    from training.augment import split_line

    # A two-row question (a tall box) and a one-row answer.
    lines = (_line("院系意见请审核", "QUESTION", (100, 100, 400, 180), 0),
             _line("同意", "ANSWER", (500, 100, 600, 140), 1), _line("备注", "OTHER", (100, 300, 200, 340), 2))
    doc = KieDocument("constructed.jpg", lines, 1000, 1000)
    w = augment_window(_window(doc, tokenizer), doc, tokenizer, L2I, np.random.default_rng(0), Augment(split=1.0))
    got = _lines_of(w, tokenizer)
    assert len(got) == 6  # every line cut in two
    (_, q1, qb1), (_, q2, qb2), (_, a1, ab1), (_, a2, ab2), (_, o1, _), (_, o2, _) = got
    assert q1[0] == "B-QUESTION" and set(q1[1:] + q2) == {"I-QUESTION"}  # the second half continues the entity
    assert a1[0] == "B-ANSWER" and set(a1[1:] + a2) <= {"I-ANSWER"} and a2[0] == "I-ANSWER"
    assert set(o1 + o2) == {"O"}
    assert qb1[1] == 100 and qb1[3] == qb2[1] == 140 and qb2[3] == 180  # the tall box: top and bottom halves
    assert ab1[1] == ab2[1] == 100 and ab1[2] <= ab2[0]  # the one-row box: side by side, a gap between
    rng = np.random.default_rng(1)
    for _ in range(20):
        (t1, b1), (t2, b2) = split_line("2019年11月5日", (0, 0, 300, 40), 40, rng)
        assert t1 + t2 == "2019年11月5日" and t1 and t2 and b1[2] <= b2[0] and b1[1] == b2[1] == 0
    assert split_line("年", (0, 0, 30, 40), 40, rng) is None


def test_rows_cuts_every_two_row_box_into_adjacent_rows_and_nothing_else(tokenizer):
    from training.augment import two_rows

    lines = (_line("院系意见请审核", "QUESTION", (100, 100, 400, 180), 0),
             _line("同意", "ANSWER", (500, 100, 600, 140), 1), _line("备注", "OTHER", (100, 300, 200, 340), 2))
    doc = KieDocument("constructed.jpg", lines, 1000, 1000)
    assert two_rows(lines[0].box, 40) and not two_rows(lines[1].box, 40) and not two_rows((0, 0, 9, 67), 40)
    for seed in range(5):
        w = augment_window(_window(doc, tokenizer), doc, tokenizer, L2I, np.random.default_rng(seed), Augment(rows=1.0))
        got = _lines_of(w, tokenizer)
        assert len(got) == 4  # only the tall key is cut, into its two rows, read one after the other
        (_, q1, qb1), (_, q2, qb2), (_, a, _), (_, o, _) = got
        assert q1[0] == "B-QUESTION" and set(q1[1:] + q2) == {"I-QUESTION"}
        assert qb1[3] == qb2[1] == 140 and a[0] == "B-ANSWER" and set(o) == {"O"}
    assert Augment(rows=0.5).active and not Augment().active


def test_off_returns_the_window_itself(tokenizer):
    doc = _doc()
    w = _window(doc, tokenizer)
    assert augment_window(w, doc, tokenizer, L2I, np.random.default_rng(0), Augment()) is w
    assert augment_window(w, doc, tokenizer, L2I, np.random.default_rng(0), Augment(merge=0.0, drop=0.0)) is w


def test_jitter_moves_boxes_within_the_page_and_the_bound(tokenizer):
    doc = _doc()
    w0 = _window(doc, tokenizer)
    w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(1), Augment(jitter=0.2))
    assert w.line_spans == w0.line_spans and (w.labels == w0.labels).all() and (w.input_ids == w0.input_ids).all()
    moved = 0
    for (s, _), ln in zip(w.line_spans, doc.lines):
        h = ln.box[3] - ln.box[1]
        got = w.bbox[s] / 1000 * 1000  # page is 1000x1000: the 0..1000 grid is pixels
        assert np.all(np.abs(got - np.array(ln.box)) <= 0.2 * h + 1)
        assert got.min() >= 0 and got.max() <= 1000
        moved += int(np.any(got != np.array(ln.box)))
    assert moved >= 4


def test_drop_and_noise(tokenizer):
    doc = _doc()
    w0 = _window(doc, tokenizer)
    w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(2), Augment(drop=1.0))
    assert len(w.line_spans) == 1  # never every line
    w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(3), Augment(noise=1.0))
    n = w0.num_tokens
    assert w.num_tokens == n and (w.labels[:n] == w0.labels[:n]).all()
    assert (w.input_ids[:n] != w0.input_ids[:n]).mean() > 0.8


def test_same_seed_same_window(tokenizer):
    doc = _doc()
    w0 = _window(doc, tokenizer)
    aug = Augment(merge=0.5, jitter=0.1, drop=0.2, noise=0.1)
    a = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng([7, 0, 3]), aug)
    b = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng([7, 0, 3]), aug)
    assert (a.input_ids == b.input_ids).all() and (a.bbox == b.bbox).all() and (a.labels == b.labels).all()


def test_augment_settings_are_checked():
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="augment_merge"):
        TrainConfig(augment_merge=1.5)
    with pytest.raises(ValueError, match="augment_split"):
        TrainConfig(augment_split=-0.1)
    with pytest.raises(ValueError, match="SER settings"):
        TrainConfig(task="re", augment_jitter=0.1)


def test_augmented_training_resumes_exactly_and_changes_the_batches(xfund_zh_train, tmp_path):
    import json

    from training.config import get_preset
    from training.shards import build_manifest, read_shard, shard_entry, write_shard
    from training.train import main

    classes = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), classes, image_dir=str(xfund_zh_train / "image"))
    shard, sizes = str(tmp_path / "shard.txt"), str(tmp_path / "shard.txt.sizes.json")
    write_shard([d for d in docs if d.name == "zh_train_16.jpg"], shard, sizes_uri=sizes)
    m = build_manifest([shard_entry(shard, s, sizes_uri=sizes) for s in ("train", "val")], classes)
    (tmp_path / "manifest.json").write_text(m.to_json())
    base = get_preset("tiny_ser", manifest=str(tmp_path / "manifest.json"), batch_size=1, epochs=4, max_len=128)
    aug = base.replace(augment_merge=0.5, augment_jitter=0.1, augment_drop=0.1, augment_noise=0.05)

    def losses(out):
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    main(base.replace(out_dir=str(tmp_path / "plain"), max_steps=3))
    main(aug.replace(out_dir=str(tmp_path / "full"), max_steps=3))
    main(aug.replace(out_dir=str(tmp_path / "cut"), max_steps=2))
    main(aug.replace(out_dir=str(tmp_path / "cut"), max_steps=3, resume=True))
    assert losses(tmp_path / "cut")[3] == pytest.approx(losses(tmp_path / "full")[3], rel=1e-6)
    assert losses(tmp_path / "full")[1] != pytest.approx(losses(tmp_path / "plain")[1], rel=1e-3)


def test_default_model_augment_flag():
    from training.default_model import _augment_fields

    assert _augment_fields(["merge=0.5", "noise=0.03"]) == {"augment_merge": 0.5, "augment_noise": 0.03}
    assert _augment_fields(["rows=1"]) == {"augment_rows": 1.0}
    with pytest.raises(SystemExit, match="expected merge=P"):
        _augment_fields(["blur=1"])


def test_empty_leaves_out_a_keys_answers_and_labels_the_key_other(tokenizer):
    def linked(text, label, box, i, *links):
        return KieLine(text, label, _line(text, label, box, i).points, box, i, tuple(links))

    lines = (linked("姓名：", "QUESTION", (100, 100, 220, 140), 0, (0, 1)),
             linked("张三", "ANSWER", (240, 100, 330, 140), 1, (0, 1)),
             linked("地址", "QUESTION", (100, 300, 180, 340), 2, (2, 3)),
             linked("北京", "ANSWER", (700, 300, 790, 340), 3, (2, 3)),
             _line("申请表", "HEADER", (400, 500, 560, 550), 4))
    doc = KieDocument("linked.jpg", lines, 1000, 1000)
    w0 = _window(doc, tokenizer)
    w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(0), Augment(empty=1.0))
    assert [(t.replace("▁", ""), labs[0]) for t, labs, _ in _lines_of(w, tokenizer)] == [
        ("姓名:", "O"), ("地址", "O"), ("申请表", "B-HEADER")]  # keys without values are OTHER
    # drop with empty on: a key whose answer was dropped is OTHER, a key that kept its answer stays QUESTION.
    seen = set()
    for seed in range(40):
        w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(seed), Augment(drop=0.3, empty=1e-9))
        got = dict((t.replace("▁", ""), labs[0]) for t, labs, _ in _lines_of(w, tokenizer))
        for key, value in (("姓名:", "张三"), ("地址", "北京")):
            if key in got:
                assert got[key] == ("B-QUESTION" if value in got else "O")
                seen.add(got[key])
    assert seen == {"B-QUESTION", "O"}
    # without empty, drop keeps the old labels (and the old random draws)
    w = augment_window(w0, doc, tokenizer, L2I, np.random.default_rng(5), Augment(drop=0.5))
    assert all(labs[0] != "O" for _, labs, _ in _lines_of(w, tokenizer))
