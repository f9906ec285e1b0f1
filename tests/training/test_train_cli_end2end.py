"""The CLI's train / evaluate commands, and end-to-end OCR+SER evaluation (wiring, then the real models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.records import OcrLine, PageKie, PageOcr
from training import cli
from training.evaluate import evaluate_end2end
from training.shards import build_manifest, read_shard, shard_entry, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]
DEFAULT_KIE = Path(__file__).resolve().parents[2] / "models" / "assets" / "default_kie"


@pytest.fixture(scope="module")
def small_manifest(xfund_zh_train, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in ("zh_train_16.jpg", "zh_train_34.jpg")]
    write_shard(docs, str(folder / "s.txt"), sizes_uri=str(folder / "s.txt.sizes.json"))
    entries = [shard_entry(str(folder / "s.txt"), split, sizes_uri=str(folder / "s.txt.sizes.json"),
                           image_dir=str(xfund_zh_train / "image")) for split in ("train", "val")]
    (folder / "m.json").write_text(build_manifest(entries, LABELS).to_json())
    return str(folder / "m.json"), docs


def test_train_cli_train_then_evaluate(small_manifest, tmp_path, capsys):
    manifest, _ = small_manifest
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "tiny_ser", "--manifest", manifest, "--out_dir", str(out),
                     "--max_steps", "3", "--set", 'model={"num_hidden_layers": 1}', "--set", "max_len=128"]) == 0
    cfg = json.loads((out / "best" / "metadata.json").read_text())["config"]
    assert cfg["model"]["num_hidden_layers"] == 1 and cfg["max_steps"] == 3 and cfg["max_len"] == 128
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(out / "best"), "--manifest", manifest, "--split", "val",
                     "--out", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "micro" in printed and json.loads((tmp_path / "m.json").read_text())["task"] == "ser"
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['bogus'\]"):
        cli.main(["train", "--preset", "tiny_ser", "--manifest", manifest, "--out_dir", str(out), "--set", "bogus=1"])


def _oracle_ocr(docs):
    def ocr(images):
        return [PageOcr(d.width, d.height, tuple(OcrLine(ln.text, 1.0, ln.points, ln.box) for ln in d.lines))
                for d in docs]
    return ocr


def test_train_end2end_scores_callables(small_manifest):
    _, docs = small_manifest
    gold_kie = [PageKie(tuple(ln.label for ln in d.lines), tuple(1.0 for _ in d.lines), (), ()) for d in docs]
    perfect = evaluate_end2end(docs, [None] * len(docs), _oracle_ocr(docs), lambda pages: gold_kie)
    assert perfect["hmean"] == 1.0
    n_fg = sum(1 for d in docs for ln in d.lines if ln.label != "OTHER")
    assert perfect["support"] == n_fg
    all_q = [PageKie(tuple("QUESTION" for _ in d.lines), tuple(1.0 for _ in d.lines), (), ()) for d in docs]
    wrong = evaluate_end2end(docs, [None] * len(docs), _oracle_ocr(docs), lambda pages: all_q)
    n_q = sum(1 for d in docs for ln in d.lines if ln.label == "QUESTION")
    assert wrong["correct"] == n_q and wrong["predicted"] == sum(len(d.lines) for d in docs)


@pytest.mark.slow
def test_train_end2end_real_ocr_and_default_kie(xfund_zh_train, tmp_path):
    """Bundled PP-OCRv4 + the bundled default SER/RE on one held-out page (zh_train_0), via the CLI."""
    if not (DEFAULT_KIE / "ser" / "SHA256SUMS").exists():
        pytest.fail(f"default KIE model missing under {DEFAULT_KIE}: python -m training.default_model builds it")
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    write_shard(docs[:1], str(tmp_path / "s.txt"))
    entry = shard_entry(str(tmp_path / "s.txt"), "test", image_dir=str(xfund_zh_train / "image"))
    (tmp_path / "m.json").write_text(build_manifest([entry], LABELS).to_json())
    assert cli.main(["evaluate", "--end2end", "--manifest", str(tmp_path / "m.json"), "--split", "test",
                     "--ser_dir", str(DEFAULT_KIE / "ser"), "--re_dir", str(DEFAULT_KIE / "re"),
                     "--out", str(tmp_path / "e2e.json")]) == 0
    report = json.loads((tmp_path / "e2e.json").read_text())
    e2e = report["end2end"]
    scores = e2e["entities_paddleocr_e2e"]
    assert e2e["pages"] == 1 and scores["support"] == sum(1 for ln in docs[0].lines if ln.label != "OTHER")
    assert scores["correct"] > 0 and 0 < scores["hmean"] <= 1
    assert e2e["model"]["support"] == e2e["rule"]["support"] == len(docs[0].links())  # rule beside model
    assert 0 < report["ser_line"]["bio"]["micro"]["hmean"] <= 1 and report["re_gold"]["model"]["correct"] > 0


def test_train_re_starts_from_ser_checkpoint(small_manifest, tmp_path):
    import numpy as np

    from models.checkpoint import load_checkpoint
    from models.integrity import sha256_file
    from training.config import get_preset
    from training.train import main

    manifest, _ = small_manifest
    base = dict(manifest=manifest, max_steps=1, max_len=128, model={"num_hidden_layers": 1})
    main(get_preset("tiny_ser", out_dir=str(tmp_path / "ser"), **base))
    main(get_preset("tiny_re", out_dir=str(tmp_path / "re"), init_from=str(tmp_path / "ser" / "best"),
                    learning_rate=1e-12, **base))
    ser, re = load_checkpoint(tmp_path / "ser" / "best"), load_checkpoint(tmp_path / "re" / "best")
    key = "layoutxlm.encoder.layer.0.attention.self.query.weight"
    np.testing.assert_allclose(re.model.state_dict()[key].numpy(), ser.model.state_dict()[key].numpy(), atol=1e-6)
    assert sha256_file(tmp_path / "re" / "best" / "sentencepiece.bpe.model") == sha256_file(
        tmp_path / "ser" / "best" / "sentencepiece.bpe.model")


def test_averaged_geometric_re_heads_train_on_a_ser_encoder_and_run_in_the_predictor(small_manifest, tmp_path):
    from models.checkpoint import export_inference, load_checkpoint
    from models.kie import KiePredictor
    from training.config import get_preset
    from training.re_head import train_re_head
    from training.train import main

    manifest, docs = small_manifest
    base = dict(manifest=manifest, max_len=128, model={"num_hidden_layers": 1})
    main(get_preset("tiny_ser", out_dir=str(tmp_path / "ser"), max_steps=1, **base))
    result = train_re_head(get_preset("tiny_re", out_dir=str(tmp_path / "re"), init_from=str(tmp_path / "ser" / "best"),
                                      re_head="geo", re_heads=2, epochs=2, batch_size=2, **base))
    assert result["steps"] > 0 and 0.0 <= result["best_hmean"] <= 1.0
    lines = [json.loads(x) for x in (tmp_path / "re" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and all(x["loss"] > 0 for x in lines)
    head = load_checkpoint(tmp_path / "re" / "best", task="re").model
    assert head.heads == 2
    export_inference(tmp_path / "ser" / "best", tmp_path / "ser_x")
    export_inference(tmp_path / "re" / "best", tmp_path / "re_x")
    kie = KiePredictor.from_dirs(tmp_path / "ser_x", tmp_path / "re_x")  # checks the head's encoder is this SER's
    assert kie.re is not None and json.loads((tmp_path / "re_x" / "metadata.json").read_text())["re_heads"] == 2
