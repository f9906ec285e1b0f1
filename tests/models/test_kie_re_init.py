"""The RE head's init: with normal(0, 0.02) head layers a small model sat on the "never linked" plateau.

Regression test for the bundled default RE model that never predicted a link: at hidden size 96 the pair term
``u^T W v`` of the biaffine head started at ~1e-4 and 150 full-batch steps on two windows still predicted nothing.
With Paddle's Xavier init for the head (PaddleOCR's RE starts from pretrained weights, so the head's init only
matters from scratch) one window is fitted in well under 100 steps.
"""

from __future__ import annotations

import numpy as np
import paddle

from models.layoutxlm import LayoutXLMConfig, ReModel
from models.tokenizer import load_tokenizer, train_tokenizer
from training.data import document_texts, encode_documents, re_batch
from training.shards import read_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _config(vocab: int) -> LayoutXLMConfig:  # the small_re preset's backbone size, no dropout
    return LayoutXLMConfig(vocab_size=vocab, hidden_size=96, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=192, coordinate_size=16, shape_size=16, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)


def test_re_head_keeps_xavier_init_and_backbone_gets_normal_002():
    paddle.seed(0)
    model = ReModel(_config(300))
    head = model.extractor.ffnn_head[0].weight.numpy()  # (2H, H) = (192, 96): Xavier std sqrt(2 / 288) ~ 0.083
    assert 0.06 < head.std() < 0.1, head.std()
    assert abs(model.layoutxlm.embeddings.word_embeddings.weight.numpy().std() - 0.02) < 0.003
    assert abs(model.extractor.entity_emb.weight.numpy().std() - 0.02) < 0.01


def test_small_re_model_fits_one_real_window_quickly(xfund_zh_train, tmp_path):
    docs, _ = read_shard(str(xfund_zh_train / "train.json"), LABELS, image_dir=str(xfund_zh_train / "image"))
    doc = next(d for d in docs if d.name == "zh_train_30.jpg")  # 45 lines, 15 links
    tok = load_tokenizer(train_tokenizer(document_texts([doc]), tmp_path / "tok", vocab_size=300))
    ex = [e for e in encode_documents([doc], tok, LABELS, task="re") if len(e.re.pairs)][:1]
    batch = {k: paddle.to_tensor(v) for k, v in re_batch(ex).items()}
    gold = batch["pair_labels"].numpy()[0] == 1
    assert gold.sum() >= 10
    paddle.seed(0)
    model = ReModel(_config(len(tok)))
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters(), weight_decay=0.0)
    for _ in range(80):
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    with paddle.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "pair_labels"}).logits.numpy()[0]
    pred = logits.argmax(-1) == 1
    correct = int((pred & gold).sum())
    hmean = 2 * correct / max(int(pred.sum()) + int(gold.sum()), 1)
    assert hmean >= 0.9, (hmean, int(pred.sum()), int(gold.sum()), float(np.mean(logits[:, 1] - logits[:, 0])))
