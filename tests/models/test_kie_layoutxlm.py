"""Parity of models.layoutxlm with PaddleNLP's LayoutXLM (VI mode) on tiny random-weight models."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel

TINY = dict(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
            coordinate_size=8, shape_size=8)


def _inputs(batch=2, seq=24, n_real=(17, 9), seed=0):
    rng = np.random.default_rng(seed)
    ids = np.ones((batch, seq), np.int64)
    bbox = np.zeros((batch, seq, 4), np.int64)
    mask = np.zeros((batch, seq), np.int64)
    for b, n in enumerate(n_real):
        ids[b, :n] = rng.integers(3, TINY["vocab_size"], n)
        x0, y0 = rng.integers(0, 500, (2, n))
        bbox[b, :n] = np.stack([x0, y0, x0 + rng.integers(0, 500, n), y0 + rng.integers(0, 500, n)], -1)
        mask[b, :n] = 1
    return ids, bbox, mask


def _nlp_config(num_labels=7):
    from paddlenlp.transformers import LayoutXLMConfig as NlpConfig

    return NlpConfig(use_visual_backbone=False, has_relative_attention_bias=False,
                     has_spatial_attention_bias=False, num_labels=num_labels, **TINY)


def _t(*arrays):
    return [paddle.to_tensor(a) for a in arrays]


def test_config_checks_layout_constraint():
    with pytest.raises(ValueError, match="4\\*coordinate_size"):
        LayoutXLMConfig(hidden_size=128)
    cfg = LayoutXLMConfig(**TINY)
    assert LayoutXLMConfig.from_dict(cfg.to_dict()) == cfg
    assert LayoutXLMConfig().hidden_size == 768 and LayoutXLMConfig().vocab_size == 250002
    assert LayoutXLMConfig.from_dict({**cfg.to_dict(), "has_spatial_attention_bias": True}).has_spatial_attention_bias
    with pytest.raises(ValueError, match="fast_qkv"):  # LayoutLMv2's fused QKV is not implemented
        LayoutXLMConfig.from_dict({**cfg.to_dict(), "fast_qkv": True})
    with pytest.raises(ValueError, match="unknown"):
        LayoutXLMConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_ser_matches_paddlenlp_token_classification():
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    paddle.seed(1)
    ref = LayoutXLMForTokenClassification(_nlp_config())
    ref.eval()
    ours = SerModel(LayoutXLMConfig(**TINY), num_labels=7)
    ours.eval()
    state = ref.state_dict()
    ours_keys = set(ours.state_dict())
    assert ours_keys == set(state), (sorted(ours_keys ^ set(state)))
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    ids, bbox, mask = _t(*_inputs())
    with paddle.no_grad():
        want = ref(input_ids=ids, bbox=bbox, attention_mask=mask)[0].numpy()
        out = ours(ids, bbox, mask)
    got = out.logits.numpy()
    assert got.shape == (2, 24, 7)
    real = mask.numpy().astype(bool)
    assert np.abs(got - want)[real].max() < 1e-5
    assert np.abs(got - want).max() < 1e-5  # padding positions too
    assert len(out.hidden_states) == 2 and out.hidden_states[0].shape == [2, 24, 48]


def test_ser_loss_is_masked_token_ce():
    paddle.seed(2)
    model = SerModel(LayoutXLMConfig(**TINY), num_labels=7)
    model.eval()
    ids, bbox, mask = _inputs()
    labels = np.where(mask == 1, np.random.default_rng(3).integers(0, 7, mask.shape), -100)
    labels[0, 20] = 4  # a label on a padded token must be ignored (attention_mask == 0)
    out = model(*_t(ids, bbox, mask), labels=paddle.to_tensor(labels))
    logits = out.logits.numpy().reshape(-1, 7)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
        1, keepdims=True)
    keep = (mask.reshape(-1) == 1) & (labels.reshape(-1) != -100)
    want = -logp[keep, labels.reshape(-1)[keep]].mean()
    assert abs(float(out.loss) - want) < 1e-5


def _reference_re(ref, seq, entities, pairs):
    """PaddleNLP REDecoder maths per document and pair (its build_relation is broken in 2.8.1)."""
    ext = ref.extractor
    out = []
    for b in range(seq.shape[0]):
        rows = []
        for h, t in pairs[b]:
            if h < 0:
                continue
            reps = []
            for e in (h, t):
                start, _, label = entities[b][e]
                tok = seq[b][int(start)].unsqueeze(0)
                reps.append(paddle.concat([tok, ext.entity_emb(paddle.to_tensor([label]))], axis=-1))
            rows.append(ext.rel_classifier(ext.ffnn_head(reps[0]), ext.ffnn_tail(reps[1])).numpy()[0])
        out.append(np.array(rows))
    return out


def re_case():
    """Entities ``(2, 4, 3)`` and candidate pairs ``(2, 4, 2)`` (-1 padding) over :func:`_inputs`' windows."""
    entities = np.full((2, 4, 3), -1, np.int64)
    entities[0, :4] = [(0, 3, 1), (3, 6, 2), (6, 9, 1), (9, 17, 2)]
    entities[1, :3] = [(0, 2, 0), (2, 5, 1), (5, 9, 2)]
    pairs = np.full((2, 4, 2), -1, np.int64)
    pairs[0] = [(0, 1), (0, 3), (2, 1), (2, 3)]
    pairs[1, :1] = [(1, 2)]
    return entities, pairs


def test_re_matches_paddlenlp_relation_extraction():
    from paddlenlp.transformers import LayoutXLMForRelationExtraction

    paddle.seed(4)
    ref = LayoutXLMForRelationExtraction(_nlp_config())
    ref.eval()
    ours = ReModel(LayoutXLMConfig(**TINY))
    ours.eval()
    state = ref.state_dict()
    assert set(ours.state_dict()) == set(state), sorted(set(ours.state_dict()) ^ set(state))
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    ids, bbox, mask = _inputs()
    entities, pairs = re_case()
    labels = np.array([[1, 0, 0, 1], [1, -100, -100, -100]])
    with paddle.no_grad():
        out = ours(*_t(ids, bbox, mask, entities, pairs), pair_labels=paddle.to_tensor(labels))
        seq = ref.layoutxlm(input_ids=paddle.to_tensor(ids), bbox=paddle.to_tensor(bbox),
                            attention_mask=paddle.to_tensor(mask))[0][:, :24]
        want = _reference_re(ref, seq, entities, pairs)
    got = out.logits.numpy()
    assert got.shape == (2, 4, 2)
    assert np.abs(got[0] - want[0]).max() < 1e-5
    assert np.abs(got[1, :1] - want[1]).max() < 1e-5

    def ce(lg, y):
        lg = lg - lg.max(-1, keepdims=True)
        return -(lg[np.arange(len(y)), y] - np.log(np.exp(lg).sum(-1)))

    want_loss = ce(want[0], labels[0]).mean() + ce(want[1], labels[1, :1]).mean()
    assert abs(float(out.loss) - want_loss) < 1e-5


def test_training_mode_dropout_and_backward():
    paddle.seed(5)
    model = SerModel(LayoutXLMConfig(**TINY), num_labels=7)
    model.train()
    ids, bbox, mask = _t(*_inputs())
    labels = paddle.where(mask == 1, paddle.ones_like(ids), paddle.full_like(ids, -100))
    out = model(ids, bbox, mask, labels=labels)
    out.loss.backward()
    assert np.isfinite(float(out.loss))
    assert model.classifier.weight.grad is not None
