"""KIE quality parts on constructed examples: BIO decoding, line splits and their boxes, the rule linker, pair
geometry, CTC character positions, trimmed windows, and the geometric RE head (export == dynamic, encoder check)."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from models.checkpoint import encoder_fingerprint, export_inference
from models.features import PAIR_FEATURES, batch_windows, build_windows, entity_re_inputs, pair_features
from models.kie import KieEntity, KiePredictor, PageTokens
from models.layoutxlm import LayoutXLMConfig, ReHeadModel, SerModel
from models.linker import RuleConfig, link_by_rule
from models.paddle_infer import InferenceOptions
from models.ser_decoding import Span, bio_spans, span_tags, split_at_colon, split_box, token_char_spans, viterbi_bio
from models.text_recognizer import ctc_greedy_decode
from models.tokenizer import load_tokenizer
from schemas.records import OcrLine, PageOcr

LABELS = ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]
CFG = LayoutXLMConfig(vocab_size=402, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=96, coordinate_size=8, shape_size=8)


def _onehot(ids, p=0.9):
    out = np.full((len(ids), len(LABELS)), (1 - p) / (len(LABELS) - 1))
    out[np.arange(len(ids)), ids] = p
    return out


def test_viterbi_never_emits_invalid_bio_and_beats_argmax():
    # argmax: I-ANSWER first (invalid), then B-Q, I-A (invalid after B-Q): Viterbi repairs both.
    probs = np.array([[.1, .2, .1, .1, .4, .05, .05],
                      [.1, .5, .2, .1, .05, .03, .02],
                      [.1, .1, .35, .1, .3, .03, .02]])
    path = viterbi_bio(probs, LABELS)
    names = [LABELS[i] for i in path]
    for prev, cur in zip(["O"] + names, names):
        if cur.startswith("I-"):
            assert prev in ("B-" + cur[2:], cur), names
    assert names[1:] == ["B-QUESTION", "I-QUESTION"]


def test_line_with_key_and_value_splits_into_two_entities_with_sub_boxes():
    labels = ["O", "B-Q", "I-Q", "B-A", "I-A"]
    spans = bio_spans(np.array([1, 2, 3, 4]), np.full((4, 5), 0.2), labels)
    assert [(s.label, s.start, s.end) for s in spans] == [("Q", 0, 2), ("A", 2, 4)]
    chars = token_char_spans(["▁姓", "名：", "张", "三"], "姓名：张三")
    assert chars == [(0, 1), (1, 3), (3, 4), (4, 5)]
    line_box = (100, 50, 600, 80)
    key = split_box(line_box, 5, chars[0][0], chars[1][1])
    value = split_box(line_box, 5, chars[2][0], chars[3][1])
    assert key == (100, 50, 400, 80) and value == (400, 50, 600, 80)
    # With the recognizer's character positions the cut follows the ink, not the character count.
    cx = (0.05, 0.15, 0.25, 0.7, 0.9)
    assert split_box(line_box, 5, 3, 5, cx) == (338, 50, 600, 80)
    # A stray one-token run inside an entity does not split it.
    stray = bio_spans(np.array([1, 2, 3, 2, 2]), np.full((5, 5), 0.2), labels)
    assert [(s.label, s.start, s.end) for s in stray] == [("Q", 0, 5)]


def test_decoder_token_tags_are_its_entities():
    # What the token-level metric reads for the BIO decoder: the entities it outputs, as B-X I-X* runs, so a stray
    # token merged into an entity and a key/value split show up exactly as the pipeline writes them.
    labels = ["O", "B-Q", "I-Q", "B-A", "I-A"]
    stray = bio_spans(np.array([1, 2, 3, 2, 2, 0]), np.full((6, 5), 0.2), labels)
    assert span_tags(stray, 6) == ["B-Q", "I-Q", "I-Q", "I-Q", "I-Q", "O"]
    split = bio_spans(np.array([1, 2, 3, 4]), np.full((4, 5), 0.2), labels)
    assert span_tags(split, 4) == ["B-Q", "I-Q", "B-A", "I-A"]
    assert span_tags([], 2) == ["O", "O"]


def test_token_char_spans_survive_normalised_pieces():
    spans = token_char_spans(["▁ab", "X", "cd"], "ab?cd")  # "X" is not in the text: the rest is spread
    assert spans[0] == (0, 2) and spans[-1][1] == 5 and len(spans) == 3


def test_rule_links_same_row_then_column_and_leaves_far_answers():
    boxes = [(0, 0, 100, 20), (120, 0, 300, 20),  # Q0 -> A1 on its row
             (0, 100, 100, 120), (0, 125, 200, 145),  # Q2 above A3, same column
             (600, 400, 700, 420)]  # A4: nothing near
    labels = ["QUESTION", "ANSWER", "question", "ANSWER", "ANSWER"]
    assert link_by_rule(boxes, labels) == [(0, 1), (2, 3)]
    # A row candidate beats a closer one above; a too-strict row overlap falls back to the column.
    boxes2 = [(0, 0, 100, 20), (0, 22, 100, 42), (150, 22, 300, 42)]
    assert link_by_rule(boxes2, ["QUESTION", "QUESTION", "ANSWER"]) == [(1, 2)]
    with pytest.raises(ValueError):
        link_by_rule(boxes, labels[:2])
    assert link_by_rule(boxes, labels, RuleConfig(max_row_gap=0.1, max_col_gap=0.1)) == []


def test_pair_features_describe_the_geometry():
    win = build_windows(["a", "b", "c"], [(0, 0, 100, 20), (120, 0, 300, 20), (0, 100, 100, 120)], 1000, 1000,
                        None, token_ids=[[5], [6], [7]], max_len=8)[0]
    r = entity_re_inputs([(0, 1, 1), (1, 2, 2), (2, 3, 2)], [0, 1, 2])
    f = pair_features(win, r)
    assert f.shape == (2, len(PAIR_FEATURES))
    col = {n: i for i, n in enumerate(PAIR_FEATURES)}
    right, below = f[0], f[1]  # pairs (Q0, A1) and (Q0, A2)
    assert right[col["same_row"]] == 1 and right[col["is_row_nearest"]] == 1 and right[col["right_of"]] == 1
    assert below[col["same_row"]] == 0 and below[col["same_col"]] == 1 and below[col["is_col_nearest"]] == 1
    assert right[col["dx_gap"]] > 0 and below[col["dy_gap"]] > 0


def test_pair_features_by_name_keep_older_heads_and_carry_the_rule():
    boxes = [(0, 0, 100, 20), (120, 0, 300, 20), (0, 100, 100, 120), (0, 130, 100, 150)]
    win = build_windows(["q0", "a1", "q2", "a3"], boxes, 1000, 1000, None, token_ids=[[5], [6], [7], [8]],
                        max_len=8)[0]
    r = entity_re_inputs([(0, 1, 1), (1, 2, 2), (2, 3, 1), (3, 4, 2)], [0, 1, 2, 3])
    full = pair_features(win, r)
    for n_older in (20, 21):  # the lists of the first geometric heads and of the session-7 head
        older = PAIR_FEATURES[:n_older]
        assert np.array_equal(pair_features(win, r, older), full[:, :n_older])
    assert PAIR_FEATURES[20] == "rule_link"
    rule = full[:, PAIR_FEATURES.index("rule_link")]
    ruled = set(link_by_rule(boxes, ["QUESTION", "ANSWER", "QUESTION", "ANSWER"]))
    assert ruled == {(0, 1), (2, 3)}
    assert [bool(x) for x in rule] == [(int(q), int(a)) in ruled for q, a in r.pairs]
    with pytest.raises(ValueError, match="unknown pair features"):
        pair_features(win, r, ["dx_gap", "no_such_feature"])


def test_pair_features_describe_the_entities_around_a_pair_by_kind():
    # A table column: header Q0 over answers A1, A2; a row: key Q3, then answers A4, A5 to its right.
    boxes = [(0, 0, 100, 20), (0, 30, 100, 50), (0, 60, 100, 80),
             (0, 200, 100, 220), (120, 200, 200, 220), (220, 200, 300, 220)]
    win = build_windows([f"e{i}" for i in range(6)], boxes, 1000, 1000, None, token_ids=[[5 + i] for i in range(6)],
                        max_len=16)[0]
    kinds = [1, 2, 2, 1, 2, 2]
    r = entity_re_inputs([(i, i + 1, k) for i, k in enumerate(kinds)], list(range(6)))
    f = pair_features(win, r)
    col = {n: i for i, n in enumerate(PAIR_FEATURES)}
    row_of = {(int(q), int(a)): k for k, (q, a) in enumerate(r.pairs)}
    one = np.log1p(1)
    assert f[row_of[(0, 1)], col["col_between_answers"]] == 0
    assert np.isclose(f[row_of[(0, 2)], col["col_between_answers"]], one)  # A1 lies between Q0 and A2
    assert f[row_of[(0, 2)], col["col_between_questions"]] == 0
    assert f[row_of[(3, 4)], col["row_between_answers"]] == 0
    assert np.isclose(f[row_of[(3, 5)], col["row_between_answers"]], one)  # A4 lies between Q3 and A5
    assert f[row_of[(3, 5)], col["a_has_row_question"]] == 1 and f[row_of[(3, 5)], col["q_has_row_answer"]] == 1
    assert f[row_of[(0, 1)], col["a_has_row_question"]] == 0 and f[row_of[(0, 1)], col["q_has_row_answer"]] == 0


def test_an_exported_ser_folder_becomes_a_training_checkpoint_again(tmp_path, tiny_kie_dirs):
    from models.checkpoint import load_checkpoint
    from training.store import checkpoint_from_export

    ckpt = checkpoint_from_export(tiny_kie_dirs[0], tmp_path / "ckpt", labels=["OTHER", "QUESTION", "ANSWER",
                                                                               "HEADER"])
    model = load_checkpoint(ckpt, task="ser").model
    model.eval()
    rng = np.random.default_rng(1)
    ids = paddle.to_tensor(rng.integers(3, 400, (2, 32)).astype(np.int64))
    xy = np.sort(rng.integers(0, 1000, (2, 32, 2, 2)), axis=2)
    bbox = paddle.to_tensor(np.stack([xy[..., 0, 0], xy[..., 0, 1], xy[..., 1, 0], xy[..., 1, 1]], -1))
    mask, types = paddle.ones([2, 32], "int64"), paddle.zeros([2, 32], "int64")
    want = paddle.jit.load(str(tiny_kie_dirs[0] / "inference"))(ids, bbox, mask, types)
    got = model(ids, bbox, mask, types).logits
    assert np.abs(got.numpy() - want[0].numpy()).max() < 1e-5
    # An RE head trained on the rebuilt encoder pairs with the exported SER folder: the export drops the pooler
    # (random in the rebuilt model), which the fingerprint leaves out.
    exported = json.loads((tiny_kie_dirs[0] / "metadata.json").read_text())["encoder_fingerprint"]
    assert encoder_fingerprint(model.state_dict()) == exported


def test_ctc_steps_give_character_positions():
    probs = np.zeros((1, 8, 4))
    for t, c in enumerate([0, 1, 1, 0, 2, 0, 0, 3]):
        probs[0, t, c] = 1.0
    [(text, conf, steps)] = ctc_greedy_decode(probs, ["blank", "a", "b", "c"], with_steps=True)
    assert (text, steps) == ("abc", (1, 4, 7)) and conf == 1.0
    assert ctc_greedy_decode(probs, ["blank", "a", "b", "c"]) == [("abc", 1.0)]


def _export_pair(tmp_path, tok_dir, fingerprint_of=None):
    paddle.seed(3)
    ser = SerModel(CFG, 7)
    head = ReHeadModel(CFG, len(PAIR_FEATURES))
    with paddle.no_grad():  # make some pairs link
        head.extractor.pair_mlp[-1].bias.set_value(paddle.to_tensor([0.0, 0.3]))
    ser.eval()
    head.eval()
    src = fingerprint_of or ser
    ser_dir = export_inference(ser, tmp_path / "ser", tokenizer_dir=tok_dir, max_len=64)
    re_dir = export_inference(head, tmp_path / "re", tokenizer_dir=tok_dir, max_len=64)
    meta = json.loads((re_dir / "metadata.json").read_text())
    meta.update(re_head="geo", encoder={"fingerprint": encoder_fingerprint(src.state_dict())})
    (re_dir / "metadata.json").write_text(json.dumps(meta))
    from models.integrity import write_sha256sums

    write_sha256sums(re_dir)
    return ser, head, ser_dir, re_dir


def test_geometric_head_export_matches_dynamic_and_checks_its_encoder(tmp_path, tiny_kie_dirs):
    tok_dir = tiny_kie_dirs[0]
    ser, head, ser_dir, re_dir = _export_pair(tmp_path, tok_dir)
    # parity with the dynamic graph: fp32 (auto would run bf16 on a bf16 CPU)
    kie = KiePredictor.from_dirs(ser_dir, re_dir, decode="bio", inference=InferenceOptions(precision="fp32"))
    lines = [OcrLine(t, 0.9, ((x, y), (x + 150, y), (x + 150, y + 20), (x, y + 20)), (x, y, x + 150, y + 20))
             for t, x, y in [("姓名：", 50, 50), ("张三", 220, 50), ("性别：", 50, 100), ("男", 220, 100),
                             ("Date of birth:", 50, 150), ("01/02/1990", 220, 150)]]
    page = PageOcr(1000, 1400, tuple(lines))
    (toks,) = kie.tokens([page])
    assert toks.windows[0].num_tokens <= 64 and toks.hidden[0] is not None
    # SER program's encoder states and logits == the dynamic model's, on the trimmed window.
    tokenizer = load_tokenizer(tok_dir)
    w = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1400, tokenizer, max_len=64)[0]
    full = {k: paddle.to_tensor(v) for k, v in batch_windows([w], multiple=0).items()}
    with paddle.no_grad():
        out = ser(**full)
    n = w.num_tokens
    assert np.abs(out.hidden_states[-1].numpy()[0, :n] - toks.hidden[0]).max() < 1e-4
    probs = paddle.nn.functional.softmax(out.logits, -1).numpy()[0, :n]
    assert np.abs(probs - toks.probs[0]).max() < 1e-4
    # Head program == dynamic head on entities of alternating questions and answers.
    spans = [(s, e, 1 + (k % 2)) for k, (s, e) in enumerate(w.line_spans)]
    r = entity_re_inputs(spans, list(range(len(spans))))
    b = batch_windows([w], re=[r], geometry=True)
    with paddle.no_grad():
        want = head(paddle.to_tensor(toks.hidden[0][None]), paddle.to_tensor(b["entities"]),
                    paddle.to_tensor(b["pairs"]), paddle.to_tensor(b["pair_features"])).logits.numpy()
    got = kie.re.run([toks.hidden[0][None].astype(np.float32), b["entities"], b["pairs"], b["pair_features"]])[0]
    assert np.abs(want - got).max() < 1e-4
    # The whole page through the predictor: entities and pairs consistent.
    (res,) = kie([page])
    assert all(0 <= p.question_id < len(res.entities) and 0 <= p.answer_id < len(res.entities) for p in res.pairs)
    # A head trained on another encoder is refused with a clear message.
    paddle.seed(99)
    other = SerModel(CFG, 7)
    _, _, _, bad_re = _export_pair(tmp_path / "other", tok_dir, fingerprint_of=other)
    with pytest.raises(ValueError, match="encoder"):
        KiePredictor.from_dirs(ser_dir, bad_re)


def test_the_re_folders_link_threshold_decides_which_candidates_link(tmp_path, tiny_kie_dirs):
    from models.integrity import write_sha256sums

    _, _, ser_dir, re_dir = _export_pair(tmp_path, tiny_kie_dirs[0])
    lines = [OcrLine(t, 0.9, ((x, y), (x + 150, y), (x + 150, y + 20), (x, y + 20)), (x, y, x + 150, y + 20))
             for t, x, y in [("姓名：", 50, 50), ("张三", 220, 50), ("性别：", 50, 100), ("男", 220, 100)]]
    page = PageOcr(1000, 1400, tuple(lines))
    kie = KiePredictor.from_dirs(ser_dir, re_dir, decode="bio", inference=InferenceOptions(precision="fp32"))
    assert kie.link_threshold == 0.5  # no link_threshold in the metadata: PaddleOCR's argmax
    (toks,) = kie.tokens([page])
    ents = [KieEntity("QUESTION" if k % 2 == 0 else "ANSWER", ln.text, ln.box, 1.0, k, 0, s, e)
            for k, (ln, (s, e)) in enumerate(zip(lines, toks.windows[0].line_spans))]
    every = kie.relate(page, toks, ents, every_link=True)
    assert all(p > 0.5 for _, _, p in every)

    def at(t):
        meta = json.loads((re_dir / "metadata.json").read_text())
        (re_dir / "metadata.json").write_text(json.dumps({**meta, "link_threshold": t}))
        write_sha256sums(re_dir)
        kt = KiePredictor.from_dirs(ser_dir, re_dir, decode="bio", inference=InferenceOptions(precision="fp32"))
        assert kt.link_threshold == t
        return kt.relate(page, toks, ents, every_link=True), kt.relate(page, toks, ents)

    (low, low_best), (half, _), (high, _) = at(1e-6), at(0.5), at(1 - 1e-6)
    probs = sorted(p for _, _, p in low)
    assert len(low) == 4 and len(low_best) == 2 and half == every and high == []  # 2 x 2 candidates, 2 answers
    mid = (probs[1] + probs[2]) / 2
    some, best = at(mid)
    assert len(some) == 2 and all(p > mid for _, _, p in some) and len(best) <= 2
    with pytest.raises(ValueError, match="link_threshold"):
        KiePredictor(kie.ser, kie.labels, kie.tokenizer, 64, link_threshold=1.0)


def test_averaged_heads_mean_their_link_probabilities_and_survive_checkpoint_and_export(tmp_path, tiny_kie_dirs):
    from models.checkpoint import load_checkpoint, save_checkpoint

    tok_dir = tiny_kie_dirs[0]
    paddle.seed(7)
    head = ReHeadModel(CFG, len(PAIR_FEATURES), heads=3)
    head.eval()
    assert sum(k.startswith("more_extractors.") for k in head.state_dict()) > 0
    rng = np.random.default_rng(0)
    hidden = paddle.to_tensor(rng.normal(size=(1, 12, CFG.hidden_size)).astype(np.float32))
    entities = paddle.to_tensor(np.array([[[0, 3, 1], [3, 6, 2], [6, 9, 1], [9, 12, 2]]], dtype=np.int64))
    pairs = paddle.to_tensor(np.array([[[0, 1], [0, 3], [2, 3], [2, 1]]], dtype=np.int64))
    feats = paddle.to_tensor(rng.normal(size=(1, 4, len(PAIR_FEATURES))).astype(np.float32))
    labels = paddle.to_tensor(np.array([[1, 0, 1, 0]], dtype=np.int64))
    with paddle.no_grad():
        out = head(hidden, entities, pairs, feats, pair_labels=labels)
        each = [e(hidden, entities, pairs, feats) for e in (head.extractor, *head.more_extractors)]
    soft = paddle.nn.functional.softmax
    mean = np.mean([soft(x, -1).numpy() for x in each], axis=0)
    assert np.abs(soft(out.logits, -1).numpy() - mean).max() < 1e-6
    assert not np.allclose(each[0].numpy(), each[1].numpy())  # independently initialised
    # each head learns from its own loss: the total is the sum of the three
    single = ReHeadModel(CFG, len(PAIR_FEATURES))
    single.extractor.set_state_dict(head.extractor.state_dict())
    single.eval()
    with paddle.no_grad():
        one = single(hidden, entities, pairs, feats, pair_labels=labels)
    assert np.allclose(one.logits.numpy(), each[0].numpy()) and float(out.loss) > float(one.loss)
    saved = save_checkpoint(head, tmp_path / "ck", tokenizer_dir=tok_dir, max_len=64,
                            extra={"re_head": "geo", "pair_features": list(PAIR_FEATURES),
                                   "encoder": {"fingerprint": "x"}})
    loaded = load_checkpoint(saved, task="re").model
    assert loaded.heads == 3
    re_dir = export_inference(loaded, tmp_path / "re", tokenizer_dir=tok_dir, max_len=64)
    assert json.loads((re_dir / "metadata.json").read_text())["re_heads"] == 3
    from models.paddle_infer import PaddlePredictor

    program = PaddlePredictor(re_dir, InferenceOptions(precision="fp32"))
    got = program.run([hidden.numpy(), entities.numpy(), pairs.numpy(), feats.numpy()])[0]
    assert np.abs(got - out.logits.numpy()).max() < 1e-4


def test_trimmed_windows_predict_the_same_as_full_windows(tmp_path, tiny_kie_dirs):
    tok_dir = tiny_kie_dirs[0]
    paddle.seed(5)
    ser = SerModel(CFG, 7)
    ser.eval()
    lines = [OcrLine("Name: John", 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)), (50, 40, 400, 60))]
    page = PageOcr(1000, 1000, tuple(lines))
    ser_dir = export_inference(ser, tmp_path / "ser", tokenizer_dir=tok_dir, max_len=512)
    trimmed = KiePredictor.from_dirs(ser_dir)
    assert trimmed.multiple == 64
    full = KiePredictor(trimmed.ser, trimmed.labels, trimmed.tokenizer, 512, multiple=0)
    (a,), (b,) = trimmed.tokens([page]), full.tokens([page])
    assert np.abs(a.probs[0] - b.probs[0]).max() < 1e-5


def test_token_char_spans_read_pieces_as_the_tokenizer_normalised_them():
    # The tokenizer writes a full-width colon as ":" (NFKC): the pieces still land on their own characters.
    assert token_char_spans(["▁", "有效期", ":", "2", "年"], "有效期：2年") == [(0, 0), (0, 3), (3, 4), (4, 5), (5, 6)]
    assert token_char_spans(["▁", "电子", "邮件", "▁", "ab"], "电子邮件 ab") == [(0, 0), (0, 2), (2, 4), (5, 5), (5, 7)]
    assert token_char_spans(["▁Name", "1"], "Ｎａｍｅ①") == [(0, 4), (4, 5)]


def _cut(text, pieces, spans):
    chars = token_char_spans(pieces, text)
    return [(sp.label, text[chars[sp.start][0]:chars[sp.end - 1][1]]) for sp in split_at_colon(spans, chars, text)]


def test_split_at_colon_cuts_key_and_value_and_leaves_other_colons():
    q = [Span("QUESTION", 0, 5, 0.9)]
    assert _cut("有效期：2年", ["▁", "有效期", ":", "2", "年"], q) == [("QUESTION", "有效期："), ("ANSWER", "2年")]
    a = [Span("ANSWER", 0, 4, 0.9)]  # the model called the whole merged line a value
    assert _cut("类别：博士", ["▁类别", ":", "博", "士"], a) == [("QUESTION", "类别："), ("ANSWER", "博士")]
    # The colon the model gave the value goes back to its key.
    qa = [Span("QUESTION", 0, 1, 0.9), Span("ANSWER", 1, 4, 0.8)]
    assert _cut("姓名：张三", ["▁姓名", ":", "张", "三"], qa) == [("QUESTION", "姓名："), ("ANSWER", "张三")]
    # Left whole: a time, a key with its own note, a list item, a check box, a key alone, two keys in one line.
    assert _cut("12:30", ["▁12", ":", "30"], [Span("ANSWER", 0, 3, 0.9)]) == [("ANSWER", "12:30")]
    assert _cut("地址：(含邮编)", ["▁地址", ":", "(", "含", "邮编", ")"], [Span("QUESTION", 0, 6, 0.9)]) == [
        ("QUESTION", "地址：(含邮编)")]
    item = [Span("ANSWER", 0, 4, 0.9)]
    assert _cut("1.承诺：属实", ["▁1.", "承诺", ":", "属实"], item) == [("ANSWER", "1.承诺：属实")]
    assert _cut("☑其它：无", ["▁☑", "其它", ":", "无"], [Span("ANSWER", 0, 4, 0.9)]) == [("ANSWER", "☑其它：无")]
    assert _cut("姓名：", ["▁姓名", ":"], [Span("QUESTION", 0, 2, 0.9)]) == [("QUESTION", "姓名：")]
    assert _cut("性别：女学号：", ["▁性别", ":", "女", "学号", ":"], [Span("QUESTION", 0, 5, 0.9)]) == [
        ("QUESTION", "性别：女学号：")]
    assert _cut("第一页", ["▁第一", "页"], [Span("HEADER", 0, 2, 0.9)]) == [("HEADER", "第一页")]


def test_colon_split_in_metadata_cuts_the_pipelines_entities(tmp_path, tiny_kie_dirs):
    text = "有效期：2年"
    line = OcrLine(text, 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)), (100, 50, 400, 80))
    page = PageOcr(1000, 1000, (line,))
    pieces = ["▁", "有效期", ":", "2", "年"]
    win = build_windows([text], [line.box], 1000, 1000, None, token_ids=[[5, 6, 7, 8, 9]], max_len=8)[0]
    toks = PageTokens([win], [_onehot([1, 2, 2, 2, 2])], [None], [pieces])  # one QUESTION over the whole line
    import shutil

    from models.integrity import write_sha256sums

    ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    meta = json.loads((ser / "metadata.json").read_text())
    (ser / "metadata.json").write_text(json.dumps({**meta, "colon_split": True}))
    write_sha256sums(ser)
    off = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    on = KiePredictor.from_dirs(ser, "rule", decode="bio")
    assert not off.colon_split and on.colon_split
    assert [(e.label, e.text) for e in off.entities(page, toks)[2]] == [("QUESTION", text)]
    ents = on.entities(page, toks)[2]
    assert [(e.label, e.text) for e in ents] == [("QUESTION", "有效期："), ("ANSWER", "2年")]
    assert ents[0].box[2] == ents[1].box[0] and ents[0].box[0] == 100 and ents[1].box[2] == 400
    assert on.relate(page, toks, ents) == [(0, 1, 1.0)]


def test_entities_decoding_from_constructed_probabilities(tiny_kie_dirs):
    kie = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    text = "姓名：张三"
    line = OcrLine(text, 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)), (100, 50, 600, 80), char_x=(.1, .3, .45, .7, .9))
    page = PageOcr(1000, 1000, (line,))
    pieces = ["▁姓", "名：", "张", "三"]
    win = build_windows([text], [line.box], 1000, 1000, None, token_ids=[[5, 6, 7, 8]], max_len=8)[0]
    probs = _onehot([1, 2, 3, 4])  # B-Q I-Q B-A I-A
    toks = PageTokens([win], [probs], [None], [pieces])
    names, _, ents = kie.entities(page, toks)
    assert [(e.label, e.text) for e in ents] == [("QUESTION", "姓名："), ("ANSWER", "张三")]
    assert ents[0].box[2] == ents[1].box[0] == round(100 + (0.45 + 0.7) / 2 * 500)
    assert names == ["QUESTION"] or names == ["ANSWER"]
    assert kie.relate(page, toks, ents) == [(0, 1, 1.0)]  # the rule links the split key to its value
    _, _, voted = kie.entities(page, toks, decode="vote")
    assert len(voted) == 1 and voted[0].text == text


def test_a_line_that_continues_the_previous_entity_joins_it(tiny_kie_dirs):
    kie = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    box = ((0, 0), (1, 0), (1, 1), (0, 1))
    lines = (OcrLine("院系意见", 0.9, box, (100, 50, 300, 80)), OcrLine("(请审核)", 0.9, box, (90, 84, 310, 112)),
             OcrLine("同意", 0.9, box, (400, 50, 480, 80)), OcrLine("备注", 0.9, box, (100, 200, 180, 230)),
             OcrLine("无", 0.9, box, (300, 200, 330, 230)))
    page = PageOcr(1000, 1000, lines)
    win = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1000, None,
                        token_ids=[[5, 6], [7, 8, 9], [10], [11], [12]], max_len=16)[0]
    pieces = [["▁院系", "意见"], ["(", "请审核", ")"], ["同意"], ["备注"], ["无"]]
    # Line 2 starts inside the question line 1 ended in: one entity over both. Line 5 would "continue" too, but the
    # line before it is O: it starts its own answer.
    probs = _onehot([1, 2, 2, 2, 2, 3, 0, 4])
    probs[7] = [0.05, 0.05, 0.05, 0.3, 0.45, 0.05, 0.05]
    names, _, ents = kie.entities(page, PageTokens([win], [probs], [None], pieces))
    assert [(e.label, e.text, e.lines, e.start, e.end) for e in ents] == [
        ("QUESTION", "院系意见(请审核)", (0, 1), 0, 5), ("ANSWER", "同意", (2,), 5, 6), ("ANSWER", "无", (4,), 7, 8)]
    assert ents[0].box == (90, 50, 310, 112)  # the union of both lines
    assert names == ["QUESTION", "QUESTION", "ANSWER", "O", "ANSWER"]
    assert (0, 1, 1.0) in kie.relate(page, PageTokens([win], [probs], [None], pieces), ents)  # the joined key links


def test_continue_lines_in_metadata_chooses_which_entities_a_line_may_continue(tmp_path, tiny_kie_dirs):
    import shutil

    from models.integrity import write_sha256sums

    def predictor(value):
        ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / f"ser_{value}")
        meta = json.loads((ser / "metadata.json").read_text())
        (ser / "metadata.json").write_text(json.dumps({**meta, "continue_lines": value}))
        write_sha256sums(ser)
        return KiePredictor.from_dirs(ser, "rule", decode="bio")

    every = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")  # absent: every label, as before
    assert every.continue_labels == {"QUESTION", "ANSWER", "HEADER"}
    box = ((0, 0), (1, 0), (1, 1), (0, 1))
    # A key wrapped over two rows, then two check-box options of one row (the second starts with I-ANSWER).
    lines = (OcrLine("院系意见", 0.9, box, (100, 50, 300, 80)), OcrLine("(请审核)", 0.9, box, (90, 84, 310, 112)),
             OcrLine("是", 0.9, box, (400, 50, 430, 80)), OcrLine("口非", 0.9, box, (440, 50, 500, 80)))
    page = PageOcr(1000, 1000, lines)
    win = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1000, None,
                        token_ids=[[5, 6], [7, 8, 9], [10], [11, 12]], max_len=12)[0]
    toks = PageTokens([win], [_onehot([1, 2, 2, 2, 2, 3, 4, 4])], [None],
                      [["▁院系", "意见"], ["(", "请审核", ")"], ["是"], ["口", "非"]])

    def decoded(kie):
        return [(e.label, e.text, e.lines) for e in kie.entities(page, toks)[2]]

    assert decoded(every) == [("QUESTION", "院系意见(请审核)", (0, 1)), ("ANSWER", "是口非", (2, 3))]
    assert decoded(predictor(["QUESTION", "HEADER"])) == [
        ("QUESTION", "院系意见(请审核)", (0, 1)), ("ANSWER", "是", (2,)), ("ANSWER", "口非", (3,))]
    assert decoded(predictor(False)) == [("QUESTION", "院系意见", (0,)), ("QUESTION", "(请审核)", (1,)),
                                         ("ANSWER", "是", (2,)), ("ANSWER", "口非", (3,))]


def test_entity_box_margin_shrinks_the_entities_boxes_not_what_the_model_reads(tmp_path, tiny_kie_dirs):
    import shutil

    from models.integrity import write_sha256sums

    def predictor(name, **values):
        ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / name)
        meta = json.loads((ser / "metadata.json").read_text())
        (ser / "metadata.json").write_text(json.dumps({**meta, **values}))
        write_sha256sums(ser)
        return KiePredictor.from_dirs(ser, "rule", decode="bio", batch_size=2)

    box = ((0, 0), (1, 0), (1, 1), (0, 1))
    texts = ["姓名", "张三", "性别", "女", "备注", "无"]
    lines = tuple(OcrLine(t, 0.9, box, (100 + 300 * (i % 2), 50 + 100 * (i // 2), 250 + 300 * (i % 2),
                                        100 + 100 * (i // 2))) for i, t in enumerate(texts))
    page = PageOcr(1000, 1000, lines)
    plain = predictor("plain")
    shrunk = predictor("shrunk", entity_box_margin=0.1)
    assert plain.entity_box_margin == plain.ocr_box_margin == 0.0 and shrunk.entity_box_margin == 0.1
    read, boxed = shrunk.box_views([page])
    assert read[0] is page or read[0].lines == page.lines  # the model reads the detector's boxes
    assert [ln.box for ln in boxed[0].lines][:2] == [(105, 55, 245, 95), (405, 55, 545, 95)]  # 0.1 x 50 per side
    [a], [b] = plain([page]), shrunk([page])
    assert a.line_labels == b.line_labels and len(a.entities) == len(b.entities) > 0
    for ea, eb in zip(a.entities, b.entities):
        assert eb.box == tuple(v + d for v, d in zip(ea.box, (5, 5, -5, -5)))
    both = predictor("both", ocr_box_margin=0.1)  # the older setting: models and entities read tightened boxes
    assert both.entity_box_margin == 0.1 and both.box_views([page])[0][0].lines[0].box == (105, 55, 245, 95)
    with pytest.raises(ValueError, match="entity_box_margin"):
        predictor("bad", entity_box_margin=0.3)


def test_wrapped_cells_and_vertical_text_join_their_entity_across_interleaved_lines(tiny_kie_dirs):
    kie = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    box = ((0, 0), (1, 0), (1, 1), (0, 1))
    # A question wrapped over two rows of a cell, its answer right of the first row (so between them in reading
    # order), then vertical text read one character per line.
    lines = (OcrLine("曾在何时何处", 0.9, box, (100, 100, 300, 130)),
             OcrLine("北京大学", 0.9, box, (400, 100, 600, 130)), OcrLine("进修学习", 0.9, box, (100, 134, 230, 164)),
             OcrLine("主", 0.9, box, (50, 300, 80, 330)),
             OcrLine("要", 0.9, box, (50, 332, 80, 362)), OcrLine("备注", 0.9, box, (400, 400, 480, 430)))
    page = PageOcr(1000, 1000, lines)
    win = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1000, None,
                        token_ids=[[5, 6], [7, 8], [9, 10], [11], [12], [13]], max_len=16)[0]
    pieces = [["▁曾在何时", "何处"], ["▁北京", "大学"], ["▁进修", "学习"], ["▁主"], ["▁要"], ["▁备注"]]
    # labels: O B-Q I-Q B-A I-A B-H I-H
    probs = _onehot([1, 2, 3, 4, 2, 2, 1, 2, 2])
    names, _, ents = kie.entities(page, PageTokens([win], [probs], [None], pieces))
    assert [(e.label, e.text, e.lines, e.start, e.end) for e in ents[:3]] == [
        ("QUESTION", "曾在何时何处进修学习", (0, 2), 0, 2),  # RE reads only its first row's tokens: not adjacent
        ("ANSWER", "北京大学", (1,), 2, 4),
        ("QUESTION", "主要", (3, 4), 6, 8)]  # adjacent lines: its tokens grow over both
    assert ents[0].box == (100, 100, 300, 164) and ents[2].box == (50, 300, 80, 362)
    assert names[:5] == ["QUESTION", "ANSWER", "QUESTION", "QUESTION", "QUESTION"]
    assert all(e.lines == (5,) for e in ents[3:])  # "备注" continues nothing (far away): never joined


def test_re_model_dir_rule_reaches_the_kie_handler(tmp_path, tiny_kie_dirs):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import to_config
    from transforms.inference import KiePageHandler

    flags = [f"--input={tmp_path}/*.jpg", f"--output={tmp_path}/out", f"--ser_model_dir={tiny_kie_dirs[0]}",
             "--re_model_dir=rule"]
    cfg = to_config(PipelineOptions(flags))
    assert cfg.kie.re_model_dir == "rule"
    model = KiePageHandler(cfg.kie.ser_model_dir, cfg.kie.re_model_dir, cfg.kie.inference).load_model()
    assert "re=rule" in model.version()


def test_models_kie_imports_light_on_workers():
    """The KIE handler's module pulls in neither the training code nor the dynamic-graph model code."""
    import subprocess
    import sys

    code = ("import sys, models.kie; bad = [m for m in sys.modules if m in ('models.checkpoint', 'models.layoutxlm')"
            " or m == 'training' or m.startswith('training.')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__import__("pathlib").Path(__file__).parents[2])
    assert out.stdout.strip() == "[]", out.stdout


def test_label_bias_in_metadata_shifts_the_ser_decision(tmp_path, tiny_kie_dirs):
    import shutil

    from training.calibrate import write_label_bias

    ser_dir = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    lines = tuple(OcrLine(t, 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)), (50, 40 + 40 * i, 400, 60 + 40 * i))
                  for i, t in enumerate(["Name: John", "Date", "2024-01-01"]))
    page = PageOcr(1000, 1000, lines)
    plain = KiePredictor.from_dirs(ser_dir)
    write_label_bias(str(ser_dir), {"label_bias": {"B-HEADER": 50.0}, "split": "val"})
    biased = KiePredictor.from_dirs(ser_dir)  # re-sealed SHA256SUMS: the folder still verifies
    assert biased.label_bias[LABELS.index("B-HEADER")] == 50.0
    (tp,), (tb,) = plain.tokens([page]), biased.tokens([page])
    assert not np.allclose(tp.probs[0], tb.probs[0])
    assert (tb.probs[0].argmax(-1) == LABELS.index("B-HEADER")).all()
    assert biased.entities(page, tb)[0] == ["HEADER"] * 3
    bad = json.loads((ser_dir / "metadata.json").read_text())
    with pytest.raises(ValueError, match="label_bias"):
        KiePredictor(biased.ser, biased.labels, biased.tokenizer, 512, label_bias={"B-NOPE": 1.0})
    assert bad["label_bias_tuning"]["split"] == "val"


def test_ocr_box_margin_in_metadata_tightens_detector_boxes_only(tmp_path, tiny_kie_dirs):
    import shutil

    from models.integrity import write_sha256sums
    from models.kie import tighten_boxes

    ser_dir = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    meta = json.loads((ser_dir / "metadata.json").read_text())
    meta.update(label_bias={"B-HEADER": 50.0}, ocr_box_margin=0.1)  # every line one HEADER entity: boxes visible
    (ser_dir / "metadata.json").write_text(json.dumps(meta))
    write_sha256sums(ser_dir)
    kie = KiePredictor.from_dirs(ser_dir, "rule")
    assert kie.ocr_box_margin == 0.1
    lines = (OcrLine("Name", 0.9, ((50, 40), (450, 40), (450, 80), (50, 80)), (50, 40, 450, 80), char_x=(.1, .9)),
             OcrLine("2024-01-01", 0.9, ((50, 100), (400, 100), (400, 120), (50, 120)), (50, 100, 400, 120)))
    page = PageOcr(1000, 1000, lines)
    [ocr], [gold] = kie([page]), kie([page], ocr_boxes=False)
    assert [e.box for e in ocr.entities] == [(54, 44, 446, 76), (52, 102, 398, 118)]  # 0.1 x height on every side
    assert [e.box for e in gold.entities] == [ln.box for ln in lines]  # annotated boxes are read as they are
    tight = tighten_boxes(page, 0.1).lines[0]
    assert tight.polygon == lines[0].polygon and tight.text == "Name"  # the OCR line itself is not moved
    assert tight.char_x == (round((0.1 * 400 - 4) / 392, 3), round((0.9 * 400 - 4) / 392, 3))
    assert tighten_boxes(page, 0.0) is page
    with pytest.raises(ValueError, match="ocr_box_margin"):
        KiePredictor(kie.ser, kie.labels, kie.tokenizer, 512, ocr_box_margin=0.3)


def test_cells_gap_reads_a_wrapped_cell_together_and_the_report_reads_gold_tags_in_that_order(tmp_path,
                                                                                                tiny_kie_dirs):
    """A SER folder with ``cells_gap`` reads a wrapped key's second row right after its first (before the answer
    tb-yx puts between them); line indices stay the page's, and the report's gold windows follow the same order
    token for token (comparing tags in two orders was the bug this test keeps out)."""
    import shutil

    from models.integrity import write_sha256sums
    from schemas.annotations import KieDocument, KieLine
    from training.report import _gold_pages, gold_windows

    pts = ((0, 0), (1, 0), (1, 1), (0, 1))
    doc = KieDocument("a.jpg", (KieLine("何时、何校", "QUESTION", pts, (100, 100, 300, 140), 0),
                                KieLine("北京大学硕士", "ANSWER", pts, (400, 120, 600, 160), 1),
                                KieLine("获何种学位", "QUESTION", pts, (100, 144, 300, 184), 2)), 1000, 1000)
    [page] = _gold_pages([doc])
    ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    meta = json.loads((ser / "metadata.json").read_text())
    (ser / "metadata.json").write_text(json.dumps({**meta, "cells_gap": 0.15}))
    write_sha256sums(ser)
    plain, cells = KiePredictor.from_dirs(tiny_kie_dirs[0]), KiePredictor.from_dirs(ser, decode="bio")
    assert (plain.cells_gap, cells.cells_gap) == (0.0, 0.15)
    assert plain.line_order(page) == [0, 1, 2] and cells.line_order(page) == [0, 2, 1]
    tokenizer = load_tokenizer(ser)
    label2id = {n: i for i, n in enumerate(cells.labels)}
    for kie in (plain, cells):
        [tk] = kie.tokens([page])
        [w] = tk.windows
        assert w.line_ids == tuple(kie.line_order(page))  # page indices, in reading order
        [g] = gold_windows(kie, doc, page, tokenizer, label2id)
        assert g.line_ids == w.line_ids and g.line_spans == w.line_spans
        assert np.array_equal(g.input_ids, w.input_ids) and np.array_equal(g.bbox, w.bbox)
        names, _, ents = kie.entities(page, tk, decode="bio")
        assert len(names) == 3 and all(set(e.lines) <= {0, 1, 2} for e in ents)
    [w] = cells.tokens([page])[0].windows
    spans = dict(zip(w.line_ids, w.line_spans))
    assert spans[2][0] == spans[0][1]  # the second row's tokens follow the first row's
    with pytest.raises(ValueError, match="cells_gap"):
        KiePredictor(cells.ser, cells.labels, cells.tokenizer, cells.max_len, cells_gap=2.0)
