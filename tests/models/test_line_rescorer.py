"""The line re-scorer (models.line_rescorer): its features, its fit, and how KiePredictor applies it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from models.features import build_windows
from models.kie import KiePredictor, PageTokens
from models.line_rescorer import LINE_CLASSES, LINE_FEATURES, LineRescorer, line_class_probs, neighbours
from schemas.records import OcrLine, PageOcr
from training.line_rescorer import Rows, fit_line_rescorer, fit_logistic, write_into

LABELS = ["O", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER"]
QUAD = ((0, 0), (1, 0), (1, 1), (0, 1))


def _onehot(ids, p=0.9):
    out = np.full((len(ids), len(LABELS)), (1 - p) / (len(LABELS) - 1))
    out[np.arange(len(ids)), ids] = p
    return out


def _weights(**by_class: dict[str, float]) -> LineRescorer:
    coef = np.zeros((len(LINE_CLASSES), len(LINE_FEATURES)))
    for cls, terms in by_class.items():
        for name, w in terms.items():
            coef[LINE_CLASSES.index(cls), LINE_FEATURES.index(name)] = w
    return LineRescorer(coef, np.zeros(len(LINE_CLASSES)), fitted_on="hand-made")


def test_neighbours_find_the_nearest_line_on_each_side():
    boxes = [(100, 100, 200, 130), (260, 102, 400, 128), (500, 100, 600, 130),  # one row of three
             (100, 160, 200, 190),  # below the first
             (90, 600, 210, 630)]  # far below: more than 10 heights away
    idx, gap = neighbours(boxes)
    assert idx[0].tolist() == [1, 3, -1, -1]  # right: the nearer of two; below; none left or above
    assert idx[1].tolist() == [2, -1, 0, -1] and idx[3].tolist() == [-1, -1, -1, 0]
    assert gap[0, 0] == pytest.approx(2.0) and gap[0, 1] == pytest.approx(1.0)
    assert idx[4].tolist() == [-1, -1, -1, -1] and gap[4].tolist() == [10.0] * 4
    assert neighbours([])[0].shape == (0, 4) and neighbours([(0, 0, 1, 1)])[0].tolist() == [[-1] * 4]


def test_line_class_probs_sum_b_and_i_per_class():
    p = line_class_probs(LABELS, [_onehot([1, 2]), None, _onehot([3], p=0.7)])
    assert p.shape == (3, 4) and np.allclose(p.sum(axis=1), 1.0)
    assert p[0].argmax() == 1 and p[0, 1] == pytest.approx(0.9 + 0.1 / 6)
    assert p[1].tolist() == [1.0, 0.0, 0.0, 0.0] and p[2].argmax() == 2


def test_rescorer_relabels_drops_and_adds_entities_and_leaves_split_lines(tmp_path, tiny_kie_dirs):
    """A key with nothing on its right becomes OTHER (dropped), a line the decoder called O becomes a header, a
    line the decoder cut into a key and its value keeps both, and the vote decoder is left alone."""
    lines = (OcrLine("姓名", 0.9, QUAD, (100, 50, 200, 80)), OcrLine("张三", 0.9, QUAD, (300, 50, 400, 80)),
             OcrLine("电话", 0.9, QUAD, (100, 150, 200, 180)), OcrLine("备注栏", 0.9, QUAD, (100, 250, 250, 280)),
             OcrLine("性别男", 0.9, QUAD, (100, 350, 250, 380)))
    page = PageOcr(1000, 1000, lines)
    win = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1000, None,
                        token_ids=[[5], [6], [7], [8, 9], [10, 11]], max_len=16)[0]
    toks = PageTokens([win], [_onehot([1, 3, 1, 0, 0, 1, 3])], [None], [["姓名"], ["张三"], ["电话"],
                                                                      ["备注", "栏"], ["性别", "男"]])
    ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    rescorer = _weights(O={"gap_right": 4.0}, QUESTION={"is_QUESTION": 3.0}, ANSWER={"is_ANSWER": 5.0},
                        HEADER={"is_O": 10.0})
    write_into(ser, rescorer, {"note": "test"})
    plain = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    kie = KiePredictor.from_dirs(ser, "rule", decode="bio")  # SHA256SUMS re-pinned: the folder verifies
    assert plain.line_rescorer is None and kie.line_rescorer is not None
    names0, _, ents0 = plain.entities(page, toks)
    assert [(e.label, e.text) for e in ents0] == [("QUESTION", "姓名"), ("ANSWER", "张三"), ("QUESTION", "电话"),
                                                   ("QUESTION", "性别"), ("ANSWER", "男")]
    names, scores, ents = kie.entities(page, toks)
    assert [(e.label, e.text, e.line) for e in ents] == [
        ("QUESTION", "姓名", 0), ("ANSWER", "张三", 1), ("HEADER", "备注栏", 3), ("QUESTION", "性别", 4),
        ("ANSWER", "男", 4)]
    assert names == ["QUESTION", "ANSWER", "O", "HEADER", names0[4]]
    header = ents[2]
    assert (header.window, header.start, header.end) == (0, 3, 5) and header.box == (100, 250, 250, 280)
    assert 0.5 < scores[3] <= 1.0 and scores[3] == header.score
    assert [(e.label, e.text) for e in kie.entities(page, toks, decode="vote")[2]] == [
        (e.label, e.text) for e in plain.entities(page, toks, decode="vote")[2]]
    # features the rescorer was not fitted on are refused with the folder's name
    meta = json.loads((ser / "metadata.json").read_text())
    meta["line_rescorer"]["features"] = meta["line_rescorer"]["features"][:-1]
    (ser / "metadata.json").write_text(json.dumps(meta))
    from models.integrity import write_sha256sums

    write_sha256sums(ser)
    with pytest.raises(ValueError, match="line_rescorer.*features"):
        KiePredictor.from_dirs(ser)


def test_a_joined_entity_the_rescorer_parts_becomes_one_entity_per_line(tiny_kie_dirs):
    kie = KiePredictor.from_dirs(tiny_kie_dirs[0], "rule", decode="bio")
    lines = (OcrLine("院系意见", 0.9, QUAD, (100, 50, 300, 80)), OcrLine("(请审核)", 0.9, QUAD, (90, 84, 310, 112)))
    page = PageOcr(1000, 1000, lines)
    win = build_windows([ln.text for ln in lines], [ln.box for ln in lines], 1000, 1000, None,
                        token_ids=[[5, 6], [7]], max_len=8)[0]
    toks = PageTokens([win], [_onehot([1, 2, 2])], [None], [["▁院系", "意见"], ["(请审核)"]])
    assert [e.lines for e in kie.entities(page, toks)[2]] == [(0, 1)]  # the decoder joins the wrapped key
    kie.line_rescorer = _weights(QUESTION={"is_QUESTION": 3.0}, O={"above_exists": 9.0})  # the second line: O
    names, _, ents = kie.entities(page, toks)
    assert names == ["QUESTION", "O"] and [(e.label, e.text, e.lines) for e in ents] == [("QUESTION", "院系意见", (0,))]
    assert (ents[0].start, ents[0].end) == (0, 2)


def test_fit_logistic_reaches_scikit_learns_minimum():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = (x @ rng.normal(size=(6, 3))).argmax(axis=1)
    noise = rng.random(400) < 0.1  # some labels against the weights: the classes overlap
    y[noise] = rng.integers(0, 3, size=int(noise.sum()))
    w, b = fit_logistic(x, y, 3, c=1.0)

    def objective(w, b):
        z = x @ w.T + b
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(y)), y].sum() + 0.5 * (w ** 2).sum()

    sk = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x, y)
    assert objective(w, b) == pytest.approx(objective(sk.coef_, sk.intercept_), rel=1e-4)
    assert ((x @ w.T + b).argmax(axis=1) == sk.predict(x)).mean() > 0.99
    with pytest.raises(ValueError, match="c="):
        fit_logistic(x, y, 3, c=0.0)


def test_fit_line_rescorer_checks_itself_on_held_out_groups():
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(10):  # documents whose decoder called every line QUESTION; the truth follows two features
        x = rng.random((30, len(LINE_FEATURES)))
        y = np.where(x[:, LINE_FEATURES.index("gap_right")] > 0.5, 0, 1 + (x[:, 0] > 0.5))
        rows.append(Rows(x, y, ["QUESTION"] * 30, len(rows)))
    rescorer, check = fit_line_rescorer(rows, group=5)
    assert check["documents"] == 10 and check["line_f1_rescored"] > check["line_f1_decoder"] + 0.2
    assert LineRescorer.from_dict(rescorer.to_dict()).probs(rows[0][0]).shape == (30, 4)
    with pytest.raises(ValueError, match="kind"):
        LineRescorer.from_dict({**rescorer.to_dict(), "kind": "trees"})


def test_line_rescorer_cli_fits_on_both_views_of_a_split_and_writes_into_a_folder(xfund_zh_train, tiny_kie_dirs,
                                                                                     tmp_path):
    from training.line_rescorer import collect_lines, main
    from training.shards import build_manifest, read_shard, shard_entry, write_shard

    docs, _ = read_shard(str(xfund_zh_train / "train.json"), ["OTHER", "QUESTION", "ANSWER", "HEADER"],
                         image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in {"zh_train_16.jpg", "zh_train_26.jpg"}]
    shard, sizes = str(tmp_path / "shard.txt"), str(tmp_path / "sizes.json")
    write_shard(docs, shard, sizes_uri=sizes)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(build_manifest([shard_entry(shard, "test", sizes_uri=sizes)],
                                       ["OTHER", "QUESTION", "ANSWER", "HEADER"]).to_json())
    rows = collect_lines(str(tiny_kie_dirs[0]), str(manifest), "test")
    assert [(r.doc, r.view) for r in rows] == [(0, "gold"), (1, "gold"), (0, "detector"), (1, "detector")]
    for r in rows:
        assert r.x.shape == (len(r.y), len(LINE_FEATURES)) == (len(r.names), len(LINE_FEATURES))
    assert len(rows[2].y) > len(rows[0].y)  # the detector cuts the tall boxes into rows, each with its box's class
    ser = shutil.copytree(tiny_kie_dirs[0], tmp_path / "ser")
    assert main(["--ser_dir", str(tiny_kie_dirs[0]), "--manifest", str(manifest), "--split", "test",
                 "--into", str(ser)]) == 0
    meta = json.loads((ser / "metadata.json").read_text())["line_rescorer"]
    assert meta["check"]["views"] == ["detector", "gold"] and meta["check"]["documents"] == 2
    assert KiePredictor.from_dirs(ser).line_rescorer is not None
    from training.store import checkpoint_from_export

    checkpoint = checkpoint_from_export(tiny_kie_dirs[0], tmp_path / "checkpoint",
                                        labels=["OTHER", "QUESTION", "ANSWER", "HEADER"])
    assert main(["--ser_dir", str(checkpoint), "--manifest", str(manifest), "--split", "test", "--into", str(ser)]) == 0
    again = json.loads((ser / "metadata.json").read_text())["line_rescorer"]
    assert again["fitted_on"].startswith(str(checkpoint)) and again["check"]["documents"] == 2  # exported first
    # two folds: each its own SER model and manifest, documents numbered apart
    assert main(["--ser_dir", str(tiny_kie_dirs[0]), str(checkpoint), "--manifest", str(manifest), str(manifest),
                 "--split", "test", "--into", str(ser)]) == 0
    both = json.loads((ser / "metadata.json").read_text())["line_rescorer"]
    assert both["check"]["documents"] == 4 and both["fitted_on"].count(str(manifest)) == 2
    with pytest.raises(SystemExit):
        main(["--ser_dir", str(tiny_kie_dirs[0]), "--manifest", str(manifest), "--into", str(tmp_path / "nope")])
    with pytest.raises(SystemExit):  # a manifest per SER model
        main(["--ser_dir", str(tiny_kie_dirs[0]), str(checkpoint), "--manifest", str(manifest), "--into", str(ser)])
