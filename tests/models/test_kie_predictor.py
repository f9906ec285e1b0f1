"""KiePredictor over exported tiny models: PaddleOCR's decoding rules, windows, pairs, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
import pytest

from models.checkpoint import export_inference
from models.features import build_re_inputs, build_windows
from models.kie import KiePredictor, select_pairs, vote_line_labels
from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
from models.paddle_infer import InferenceOptions
from models.tokenizer import load_tokenizer
from schemas.records import OcrLine, PageOcr

TEXTS = ["姓名：张三", "性别：男", "Name: John Smith", "Date of birth: 01/02/1990", "Adresse : 12 rue de la Paix",
         "Unterschrift", "APPLICATION FORM", "Total amount 1,234.56", "   ", "电话号码：13800000000"]


def _page(n_lines=10, width=1000, height=1400, repeat=1):
    lines = []
    for i in range(n_lines * repeat):
        x0, y0 = 50 + (i % 2) * 450, 40 + i * 12
        box = (x0, y0, x0 + 400, y0 + 10)
        poly = ((x0, y0), (x0 + 400, y0), (x0 + 400, y0 + 10), (x0, y0 + 10))
        lines.append(OcrLine(text=TEXTS[i % len(TEXTS)], score=0.9, polygon=poly, box=box))
    return PageOcr(width=width, height=height + 12 * n_lines * repeat, lines=tuple(lines))


def vote_like_paddleocr(votes: dict[int, list[int]], n_lines: int) -> list[str]:
    """PaddleOCR's line rule over XFUND token ids: I-X read as B-X, majority vote (ties: smaller id), no tokens = O."""
    labels = ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]
    want = []
    for k in range(n_lines):
        ids = [{2: 1, 4: 3, 6: 5}.get(i, i) for i in votes[k]]
        best = int(np.bincount(ids).argmax()) if ids else 0
        want.append("O" if best == 0 else labels[best][2:])
    return want


@pytest.fixture(scope="module")
def kie(tiny_kie_dirs):
    return KiePredictor.from_dirs(*tiny_kie_dirs)


def test_vote_and_pair_rules_like_paddleocr():
    to_b = np.array([0, 1, 1, 3, 3, 5, 5])
    # I-QUESTION counts as B-QUESTION; tie 2 vs 2 goes to the smaller id; no tokens -> O
    assert vote_line_labels([np.array([2, 2, 1, 4]), np.array([3, 1, 4, 2]), np.array([], int)], to_b) == [1, 1, 0]
    pairs = np.array([[0, 1], [0, 3], [2, 1], [2, 3]])
    logits = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 5.0], [0.0, 0.5]])
    got = select_pairs(pairs, logits)
    # (2, 1) has the higher score but answer 1 is already taken by the first candidate: first wins
    assert [(q, a) for q, a, _ in got] == [(0, 1), (2, 3)]
    assert got[0][2] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_predictor_outputs_are_consistent(kie):
    page = _page()
    (out,) = kie([page])
    assert len(out.line_labels) == len(page.lines) == len(out.line_scores)
    assert set(out.line_labels) <= {"O", "QUESTION", "ANSWER", "HEADER"}
    assert out.line_labels[8] == "O" and out.line_scores[8] == 0.0  # whitespace-only line: no tokens -> O
    assert all(0.0 <= s <= 1.0 for s in out.line_scores)
    non_o = [k for k, lab in enumerate(out.line_labels) if lab != "O"]
    assert [e.line_ids for e in out.entities] == [(k,) for k in non_o]
    assert [e.entity_id for e in out.entities] == list(range(len(non_o)))
    by_id = {e.entity_id: e for e in out.entities}
    answers = [p.answer_id for p in out.pairs]
    assert len(answers) == len(set(answers))
    for p in out.pairs:
        assert by_id[p.question_id].label == "QUESTION" and by_id[p.answer_id].label == "ANSWER"
        assert 0.5 <= p.score <= 1.0
    assert out.windows == 1
    assert kie.version.startswith("ser=ser@") and ";re=re@" in kie.version


def test_predictor_matches_dynamic_model_decoding(tmp_path, tiny_kie_dirs):
    """Exported-model predictor == PaddleOCR's decoding written out here over the dynamic models' logits."""
    tok_dir = tiny_kie_dirs[0]
    cfg = LayoutXLMConfig(vocab_size=402, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=96, coordinate_size=8, shape_size=8)
    paddle.seed(7)
    ser, re = SerModel(cfg, 7), ReModel(cfg)
    # Bias the classifier so that all four classes occur and RE sees questions and answers.
    with paddle.no_grad():
        ser.classifier.weight.set_value(paddle.normal(0, 2.0, ser.classifier.weight.shape))
        re.extractor.rel_classifier.linear.bias.set_value(paddle.to_tensor([0.0, 0.05]))
    ser.eval()
    re.eval()
    kie = KiePredictor.from_dirs(export_inference(ser, tmp_path / "ser", tokenizer_dir=tok_dir, max_len=64),
                                 export_inference(re, tmp_path / "re", tokenizer_dir=tok_dir, max_len=64),
                                 batch_size=3, inference=InferenceOptions(precision="fp32"))  # == dynamic fp32
    page = _page(repeat=3)  # ~250 tokens: several 64-token windows
    (out,) = kie([page])
    tokenizer = load_tokenizer(tok_dir)
    wins = build_windows([ln.text for ln in page.lines], [ln.box for ln in page.lines], page.width, page.height,
                         tokenizer, max_len=64)
    assert out.windows == len(wins) > 1
    votes = {k: [] for k in range(len(page.lines))}
    with paddle.no_grad():
        for w in wins:
            logits = ser(*[paddle.to_tensor(a[None]) for a in (w.input_ids, w.bbox, w.attention_mask)]).logits
            pred = logits.numpy()[0].argmax(-1)
            for k, (s, e) in zip(w.line_ids, w.line_spans):
                votes[k].extend(pred[s:e].tolist())
    want = vote_like_paddleocr(votes, len(page.lines))
    assert list(out.line_labels) == want
    assert len(set(want)) >= 3
    # RE: window by window, the same candidates, argmax == 1, first question per answer
    ent_of_line = {e.line_ids[0]: e.entity_id for e in out.entities}
    want_pairs, used = [], set()
    with paddle.no_grad():
        for w in wins:
            r = build_re_inputs(w, want)
            if not len(r.pairs):
                continue
            logits = re(*[paddle.to_tensor(a[None]) for a in (w.input_ids, w.bbox, w.attention_mask, r.entities,
                                                               r.pairs)]).logits.numpy()[0]
            for (q, a), lg in zip(r.pairs.tolist(), logits):
                qa = (r.entity_line_ids[q], r.entity_line_ids[a])
                if lg.argmax() == 1 and qa[1] not in used:
                    used.add(qa[1])
                    want_pairs.append((ent_of_line[qa[0]], ent_of_line[qa[1]]))
    assert [(p.question_id, p.answer_id) for p in out.pairs] == want_pairs
    assert want_pairs  # the test exercises RE


def test_ser_only_and_threads(tiny_kie_dirs):
    kie = KiePredictor.from_dirs(tiny_kie_dirs[0])
    pages = [_page(4), _page(10), PageOcr(width=100, height=100, lines=())]
    single = [kie([p])[0] for p in pages]
    batched = kie(pages)
    assert [b.line_labels for b in batched] == [s.line_labels for s in single]
    assert all(not b.pairs for b in batched)
    assert batched[2].line_labels == () and batched[2].windows == 1
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda p: kie([p])[0], pages * 2))
    assert [t.line_labels for t in threaded] == [s.line_labels for s in single] * 2


def test_from_dirs_rejects_swapped_folders(tiny_kie_dirs):
    ser_dir, re_dir = tiny_kie_dirs
    with pytest.raises(ValueError, match="expected 'ser'"):
        KiePredictor.from_dirs(re_dir)
