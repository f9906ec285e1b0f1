"""Training loops on real XFUND documents with tiny from-scratch models: overfit, UDML, resume, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from models.checkpoint import load_checkpoint
from models.layoutxlm import LayoutXLMConfig, SerModel
from models.tokenizer import load_tokenizer, train_tokenizer
from training.config import get_preset
from training.data import document_texts, encode_documents, ser_batch
from training.evaluate import evaluate_checkpoint
from training.losses import dml_loss, hidden_l2_loss, udml_total
from training.shards import build_manifest, read_shard, shard_entry, write_shard
from training.train import main

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _manifest(xfund_zh_train, folder, names):
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    docs = [d for d in docs if d.name in names]
    folder.mkdir(parents=True, exist_ok=True)
    shard, sizes = str(folder / "shard.txt"), str(folder / "shard.txt.sizes.json")
    write_shard(docs, shard, sizes_uri=sizes)
    m = build_manifest([shard_entry(shard, split, sizes_uri=sizes) for split in ("train", "val")], LABELS)
    (folder / "manifest.json").write_text(m.to_json())
    return str(folder / "manifest.json"), docs


@pytest.fixture(scope="module")
def three_docs(xfund_zh_train, tmp_path_factory):
    """A manifest whose train and val splits are the same 3 small XFUND zh documents (overfitting)."""
    return _manifest(xfund_zh_train, tmp_path_factory.mktemp("three"), {f"zh_train_{i}.jpg" for i in (16, 26, 34)})


@pytest.fixture(scope="module")
def one_doc(xfund_zh_train, tmp_path_factory):
    return _manifest(xfund_zh_train, tmp_path_factory.mktemp("one"), {"zh_train_16.jpg"})


def _evals(out_dir):
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["eval"]["hmean"] for r in rows if "eval" in r]


def test_train_ser_overfits_three_documents(three_docs, tmp_path):
    manifest, _ = three_docs
    result = main(get_preset("tiny_ser", manifest=manifest, out_dir=str(tmp_path)))
    assert result["best_hmean"] >= 0.95, _evals(tmp_path)
    # the best checkpoint is a loadable, verified folder that reproduces its Hmean
    ck = load_checkpoint(tmp_path / "best")
    assert ck.task == "ser" and ck.metadata["metrics"]["hmean"] == pytest.approx(result["best_hmean"])
    assert ck.metadata["training_data"]["uri"] == manifest
    again = evaluate_checkpoint(str(tmp_path / "best"), manifest, "val")
    assert again["hmean"] == pytest.approx(result["best_hmean"])
    assert set(again["per_class"]) == {"QUESTION", "ANSWER", "HEADER"}
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "hmean.png").stat().st_size > 0


def test_train_re_overfits_three_documents(three_docs, tmp_path):
    manifest, _ = three_docs
    # 300 of the preset's 1002 steps: from scratch the RE head reaches Hmean 1.0 at step 150 (0.84 at step 100)
    result = main(get_preset("tiny_re", manifest=manifest, out_dir=str(tmp_path), max_steps=300))
    assert result["steps"] == 300 and result["best_hmean"] >= 0.95, _evals(tmp_path)
    assert load_checkpoint(tmp_path / "best").task == "re"


def _tiny_pair(docs, tmp_path):
    tok_dir = train_tokenizer(document_texts(docs), tmp_path / "tok", vocab_size=300)
    tok = load_tokenizer(tok_dir)
    cfg = LayoutXLMConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=96, coordinate_size=8, shape_size=8, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    paddle.seed(1)
    student, peer = SerModel(cfg, 7), SerModel(cfg, 7)
    peer.layoutxlm.set_state_dict(student.layoutxlm.state_dict())
    batch = {k: paddle.to_tensor(v) for k, v in ser_batch(encode_documents(docs, tok, LABELS)).items()}
    return student, peer, batch


def test_train_udml_step_decreases_combined_loss(one_doc, tmp_path):
    _, docs = one_doc
    student, peer, batch = _tiny_pair(docs, tmp_path)
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=student.parameters() + peer.parameters(),
                                 weight_decay=0.0)

    def combined():
        return udml_total(student(**batch), peer(**batch), batch["attention_mask"], layers=(0, 1), dml_weight=1.0,
                          l2_weight=0.5, ser=True)

    before, parts = combined()
    assert set(parts) == {"loss_student", "loss_peer", "loss_dml", "loss_l2_0", "loss_l2_1"}
    assert parts["loss_l2_0"] == pytest.approx(0.0, abs=1e-10)  # same backbone start
    assert parts["loss_dml"] > 0  # different heads
    before.backward()
    opt.step()
    opt.clear_grad()
    after, _ = combined()
    assert float(after) < float(before)


def test_train_udml_terms_are_symmetric_and_masked():
    rng = np.random.default_rng(0)
    a, b = (paddle.to_tensor(rng.normal(size=(2, 5, 3)).astype("float32")) for _ in range(2))
    mask = paddle.to_tensor(np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]))
    assert float(dml_loss(a, b, mask)) == pytest.approx(float(dml_loss(b, a, mask)), rel=1e-5)
    assert float(dml_loss(a, a, mask)) == pytest.approx(0.0, abs=1e-6)
    b2 = b.numpy().copy()
    b2[0, 3:] += 100.0  # padding positions do not count
    assert float(hidden_l2_loss(a, paddle.to_tensor(b2), mask)) == pytest.approx(float(hidden_l2_loss(a, b, mask)))
    a_np, b_np, m = a.numpy(), b.numpy(), mask.numpy() == 1
    assert float(hidden_l2_loss(a, b, mask)) == pytest.approx(float(((a_np[m] - b_np[m]) ** 2).mean()), rel=1e-5)


def test_train_udml_run_saves_only_the_student(one_doc, tmp_path):
    manifest, _ = one_doc
    cfg = get_preset("tiny_ser", manifest=manifest, out_dir=str(tmp_path), udml=True, max_steps=2, batch_size=1)
    main(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "loss_dml" in rows[0] and "loss_l2_1" in rows[0]
    ck = load_checkpoint(tmp_path / "best")
    assert isinstance(ck.model, SerModel) and ck.metadata["config"]["udml"] is True


def _loss_at(out_dir, step):
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r.get("step") == step and "loss" in r)


def test_train_resume_reproduces_next_step_loss(one_doc, tmp_path):
    manifest, _ = one_doc
    base = get_preset("tiny_ser", manifest=manifest, batch_size=1, dropout=0.1, epochs=5, max_len=128)
    main(base.replace(out_dir=str(tmp_path / "full"), max_steps=5))
    main(base.replace(out_dir=str(tmp_path / "cut"), max_steps=3))
    main(base.replace(out_dir=str(tmp_path / "cut"), max_steps=5, resume=True))
    assert _loss_at(tmp_path / "cut", 4) == pytest.approx(_loss_at(tmp_path / "full", 4), rel=1e-6)
    assert _loss_at(tmp_path / "cut", 5) == pytest.approx(_loss_at(tmp_path / "full", 5), rel=1e-6)
    state = json.loads((tmp_path / "cut" / "latest" / "state.json").read_text())
    assert state["step"] == 5


def test_relative_bias_tables_start_at_zero_and_train_at_their_own_rate(one_doc, tmp_path):
    from training.store import with_relative_attention_bias

    manifest, _ = one_doc
    base = get_preset("tiny_ser", manifest=manifest, batch_size=1, epochs=1, max_len=128, schedule="constant",
                      warmup_epochs=0, learning_rate=1e-3)
    main(base.replace(out_dir=str(tmp_path / "src"), max_steps=2))
    init = with_relative_attention_bias(tmp_path / "src" / "best", tmp_path / "init", labels=LABELS)
    src, rel = load_checkpoint(tmp_path / "src" / "best"), load_checkpoint(init)
    assert rel.config.has_relative_attention_bias and rel.config.has_spatial_attention_bias
    assert not src.config.has_relative_attention_bias and not src.config.has_spatial_attention_bias
    rng = np.random.default_rng(3)
    ids = paddle.to_tensor(rng.integers(3, src.config.vocab_size, (2, 40)).astype(np.int64))
    xy = np.sort(rng.integers(0, 1000, (2, 40, 2, 2)), axis=2)
    bbox = paddle.to_tensor(np.stack([xy[..., 0, 0], xy[..., 0, 1], xy[..., 1, 0], xy[..., 1, 1]], -1))
    mask, types = paddle.ones([2, 40], "int64"), paddle.zeros([2, 40], "int64")
    want, got = (c.model(ids, bbox, mask, types).logits.numpy() for c in (src, rel))
    assert np.abs(got - want).max() < 1e-5  # zero tables: the same model

    moved = {}
    for scale in (1.0, 10.0):  # Adam's first step moves each table entry that has a gradient by lr * scale
        out = tmp_path / f"scale_{scale:g}"
        main(base.replace(init_from=str(init), out_dir=str(out), max_steps=1, relative_bias_lr_scale=scale))
        state = paddle.load(str(out / "latest" / "model_0.pdparams"))
        moved[scale] = float(np.abs(state["layoutxlm.encoder.rel_pos_x_bias.weight"].numpy()).max())
    assert moved[1.0] == pytest.approx(1e-3, rel=1e-3)
    assert moved[10.0] == pytest.approx(1e-2, rel=1e-3)
