"""PaddleOCR's order in the shard reader, and scoring "as PaddleOCR would" (first 512 tokens, its RE chunk rule)."""

from __future__ import annotations

import json

import paddle
import pytest

from models.layoutxlm import LayoutXLMConfig, ReModel
from models.reading_order import order_by_tbyx, order_lines
from models.tokenizer import load_tokenizer, train_tokenizer
from schemas.annotations import KieDocument, KieLine
from training import cli
from training.data import encode_documents
from training.evaluate import evaluate_re, evaluate_ser
from training.paddleocr_compat import kept_by_chunk, paddleocr_examples, re_chunk_start
from training.shards import build_manifest, read_shard, shard_entry, write_shard
from training.store import save_model

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _item(i, text, label, box):
    x0, y0, x1, y1 = box
    return {"transcription": text, "label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "id": i,
            "linking": []}


def test_reader_sorts_all_lines_before_dropping_empty_ones(tmp_path):
    # The empty line sits first; with it, the one neighbour-swap pass reaches (A, B) and swaps them (their tops
    # differ by 5 px < 20 and B is further left). Without it, A and B are the first two lines, never swapped.
    boxes = {"empty": (0, 0, 40, 8), "A": (100, 10, 150, 20), "B": (0, 15, 50, 25)}
    items = [_item(0, "", "other", boxes["empty"]), _item(1, "Name", "question", boxes["A"]),
             _item(2, "Date", "question", boxes["B"])]
    shard = tmp_path / "s.txt"
    shard.write_text("a.jpg\t" + json.dumps(items) + "\n")
    (doc,), skips = read_shard(str(shard), LABELS, page_size=(200, 100))
    assert [ln.text for ln in doc.lines] == ["Date", "Name"]  # PaddleOCR: sort all, then skip the empty line
    assert len(skips) == 1 and "empty transcription: line id 0 dropped" in skips[0].reason
    # the two orders really differ here: dropping first would give Name, Date
    assert [["Name", "Date"][i] for i in order_by_tbyx([boxes["A"], boxes["B"]])] == ["Name", "Date"]
    assert order_lines(list(boxes.values()), keep=[False, True, True]) == [2, 1]
    assert order_lines(list(boxes.values()), method="none") == [0, 1, 2]
    with pytest.raises(ValueError, match="keep flags"):
        order_lines(list(boxes.values()), keep=[True])


def test_chunk_rule_keeps_an_entity_only_when_its_exclusive_end_is_below_512():
    assert kept_by_chunk((510, 511), 0) and not kept_by_chunk((511, 512), 0) and not kept_by_chunk((500, 530), 0)
    assert re_chunk_start([(511, 512), (512, 520)], 600) == 512  # the first chunk keeps nothing: the next one
    assert re_chunk_start([(511, 512)], 512) is None


@pytest.fixture(scope="module")
def edge_case(tmp_path_factory):
    """A real tokenizer and a page whose second link ends exactly at token 512, a third link after it."""
    root = tmp_path_factory.mktemp("edge")
    tok_dir = train_tokenizer(["a b c d e", "Name Date Total", "a", "b", "c"] * 20, root / "tok", vocab_size=60)
    tok = load_tokenizer(tok_dir)
    one = [t for t in ("a", "b", "c", "d", "e") if len(tok.tokenize(t)) == 1]
    assert one, "the test needs a one-token line text"
    t = one[0]
    spec = [("question", 0), ("answer", 0)] + [("other", None)] * 508 + [("question", 1), ("answer", 1),
                                                                          ("question", 2), ("answer", 2)]
    lines = []
    for i, (label, pair) in enumerate(spec):
        partner = i + 1 if label == "question" else i - 1
        links = ((min(i, partner), max(i, partner)),) if pair is not None else ()
        box = (10, 10 + 30 * i, 60, 30 + 30 * i)
        lines.append(KieLine(t, label.upper(), ((10.0, box[1]), (60.0, box[1]), (60.0, box[3]), (10.0, box[3])),
                             box, i, links))
    doc = KieDocument("edge.jpg", tuple(lines), 100, 30 * len(spec) + 40)
    return root, tok_dir, tok, doc


def test_entity_ending_at_512_counted_as_paddleocr_counts_it(edge_case, tmp_path):
    root, tok_dir, tok, doc = edge_case
    (ex,) = paddleocr_examples([doc], tok, LABELS, task="re")
    # Q1 [0,1), A1 [1,2), Q2 [510,511) kept; A2 [511,512) dropped with the link Q2-A2; Q3/A3 lie after token 512
    assert [tuple(e[:2]) for e in ex.re.entities] == [(0, 1), (1, 2), (510, 511)]
    assert int(ex.re.pair_labels.sum()) == 1 and len(ex.re.pairs) == 2
    ours = encode_documents([doc], tok, LABELS, task="re")
    assert [w.window.num_tokens for w in ours] == [512, 2]
    assert sum(int(e.re.pair_labels.sum()) for e in ours) == 3  # kiebeam keeps A2, and scores the second window

    paddle.seed(0)
    model = ReModel(LayoutXLMConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=96, coordinate_size=8, shape_size=8))
    assert evaluate_re(model, [ex])["support"] == 1 and evaluate_re(model, ours)["support"] == 3

    # SER "as PaddleOCR": tokens [0, 512) only, so Q3 / A3 are not scored
    (ser_ex,) = paddleocr_examples([doc], tok, LABELS, task="ser")
    assert int((ser_ex.window.labels != -100).sum()) == 512

    # the command line: kiebeam evaluate --paddleocr_compat reports both scores
    shard, sizes = str(tmp_path / "s.txt"), str(tmp_path / "s.txt.sizes.json")
    write_shard([doc], shard, sizes_uri=sizes)
    (tmp_path / "m.json").write_text(build_manifest([shard_entry(shard, "val", sizes_uri=sizes)], LABELS).to_json())
    save_model(model, tmp_path / "ck", task="re", tokenizer_dir=tok_dir, labels=LABELS, metadata={}, max_len=512)
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "ck"), "--manifest", str(tmp_path / "m.json"),
                     "--split", "val", "--paddleocr_compat", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["support"] == 3 and result["paddleocr_compat"]["support"] == 1


def test_ser_compat_scores_the_first_512_tokens(edge_case):
    _, _, tok, doc = edge_case
    from models.layoutxlm import SerModel

    paddle.seed(0)
    model = SerModel(LayoutXLMConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=96, coordinate_size=8, shape_size=8), 7)
    compat = evaluate_ser(model, paddleocr_examples([doc], tok, LABELS, task="ser"), LABELS)
    ours = evaluate_ser(model, encode_documents([doc], tok, LABELS, task="ser"), LABELS)
    assert (compat["support"], ours["support"]) == (4, 6)  # Q1 A1 Q2 A2 vs all six entities
