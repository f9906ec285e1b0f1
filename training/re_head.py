"""Train the geometric RE head on a trained SER model's frozen encoder (one encoder for SER and RE).

    kiebeam train --preset default_re_head --manifest data/manifest.json --init_from runs/ser/best --out_dir runs/re

The SER checkpoint's encoder runs once over every window (eval mode, no gradient) and its last hidden states are
kept in memory; the head (``models.layoutxlm.ReHeadModel``: entity representations, the pair's relative geometry
from ``models.features.pair_features``, biaffine + MLP) then trains for many epochs in seconds each. Gold
entities and links come from the shards, as PaddleOCR's RE training. The best head by the ``eval_split``'s RE
Hmean is saved to ``OUT_DIR/best`` (a head-only checkpoint that records the encoder it belongs to); the
metrics go to ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from models.features import IGNORE_INDEX, MODEL_INPUTS, PAIR_FEATURES, pair_features
from models.layoutxlm import ReHeadModel
from training.config import TrainConfig, lr_at
from training.data import Example, LengthBucketSampler, encode_documents, ser_batch
from training.metrics import re_scores

__all__ = ["train_re_head", "encode_hidden", "HeadExample", "PredictedPairs", "predicted_entity_items"]


class HeadExample:
    """One window's cached encoder states, entities, pairs, pair geometry and gold pair labels."""

    def __init__(self, example: Example, hidden: np.ndarray) -> None:
        self.example = example
        self.hidden = hidden  # (T, H) float32, the window's real tokens
        self.entities = example.re.entities
        self.pairs = example.re.pairs
        self.features = pair_features(example.window, example.re)
        self.labels = example.re.pair_labels


class PredictedPairs:
    """One window of SER-decoded entities on a document's detector view, its candidate pairs and their labels.

    Attributes as :class:`HeadExample`: ``hidden`` ``(T, H)``, ``entities`` ``(E, 3)``, ``pairs`` ``(P, 2)``,
    ``features`` ``(P, F)``, ``labels`` ``(P,)`` (1: both ends match the two ends of a gold link at box IoU >= 0.5,
    the end-to-end pair criterion of ``training.report.pair_scores``).
    """

    def __init__(self, hidden: np.ndarray, entities: np.ndarray, pairs: np.ndarray, features: np.ndarray,
                 labels: np.ndarray) -> None:
        self.hidden, self.entities, self.pairs, self.features, self.labels = hidden, entities, pairs, features, labels


def predicted_entity_items(ser_dir: str | Path, docs: Sequence[Any], batch_pages: int = 8) -> list[PredictedPairs]:
    """RE training windows over the entities the SER model decodes, as a detector would cut the lines.

    Each document's gold lines are cut as a line detector reads them (``training.report.detector_view``), the
    exported SER model (``ser_dir``: its encoder states, decoder and continuation settings) labels and joins them
    (``models.kie.KiePredictor.entities``), and every candidate pair of the decoded entities is labelled by whether
    it is a gold link end to end. The head then also learns from the entities it meets on real pages (pieces of
    wrapped keys, joined lines), not only from the annotated ones.
    """
    from models.features import RE_ENTITY_LABELS, batch_windows, entity_re_inputs, normalize_box
    from models.kie import KiePredictor
    from training.metrics import box_iou
    from training.report import detector_view

    kie = KiePredictor.from_dirs(ser_dir)
    items: list[PredictedPairs] = []
    for s in range(0, len(docs), batch_pages):
        chunk = docs[s:s + batch_pages]
        pages = detector_view(chunk)
        for doc, page, toks in zip(chunk, pages, kie.tokens(pages, keep_hidden=True)):
            ents = kie.entities(page, toks)[2]
            gold = [(doc.lines[q].box, doc.lines[a].box) for q, a in doc.links()]
            for i, w in enumerate(toks.windows):
                members = [j for j, e in enumerate(ents) if e.window == i and e.label in RE_ENTITY_LABELS]
                spans = [(ents[j].start, ents[j].end, RE_ENTITY_LABELS[ents[j].label]) for j in members]
                boxes = [normalize_box(ents[j].box, page.width, page.height, clip=True) for j in members]
                r = entity_re_inputs(spans, members, boxes=boxes)
                if not len(r.pairs):
                    continue
                batch = batch_windows([w], re=[r], geometry=True, feature_names=PAIR_FEATURES, multiple=0)
                labels = np.array([int(any(box_iou(gq, ents[r.entity_line_ids[q]].box) >= 0.5
                                           and box_iou(ga, ents[r.entity_line_ids[a]].box) >= 0.5
                                           for gq, ga in gold)) for q, a in r.pairs], np.int64)
                n_e, n_p = len(spans), len(r.pairs)
                items.append(PredictedPairs(toks.hidden[i].astype(np.float32), batch["entities"][0, :n_e],
                                            batch["pairs"][0, :n_p], batch["pair_features"][0, :n_p], labels))
    return items


@paddle.no_grad()
def encode_hidden(encoder: paddle.nn.Layer, examples: Sequence[Example], batch_size: int = 8) -> list[np.ndarray]:
    """The encoder's last hidden states of each example's real tokens (``(T, H)`` float32 arrays)."""
    encoder.eval()
    out: list[np.ndarray | None] = [None] * len(examples)
    order = np.argsort([e.window.num_tokens for e in examples], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = ser_batch([examples[i] for i in idx])
        hs = encoder(*(paddle.to_tensor(batch[k]) for k in MODEL_INPUTS))[-1].numpy()
        for row, i in enumerate(idx):
            out[i] = hs[row, :examples[i].window.num_tokens].astype(np.float32)
    return out  # type: ignore[return-value]


def _collate(items: Sequence[HeadExample]) -> dict[str, paddle.Tensor]:
    t = max(len(x.hidden) for x in items)
    n_e = max(max(len(x.entities) for x in items), 1)
    n_p = max(max(len(x.pairs) for x in items), 1)
    b = len(items)
    hidden = np.zeros((b, t, items[0].hidden.shape[1]), np.float32)
    ents = np.full((b, n_e, 3), -1, np.int64)
    pairs = np.full((b, n_p, 2), -1, np.int64)
    feats = np.zeros((b, n_p, items[0].features.shape[1]), np.float32)
    labels = np.full((b, n_p), IGNORE_INDEX, np.int64)
    for i, x in enumerate(items):
        hidden[i, :len(x.hidden)] = x.hidden
        ents[i, :len(x.entities)] = x.entities
        pairs[i, :len(x.pairs)] = x.pairs
        feats[i, :len(x.pairs)] = x.features
        if x.labels is not None:
            labels[i, :len(x.pairs)] = x.labels
    return {"hidden": paddle.to_tensor(hidden), "entities": paddle.to_tensor(ents), "pairs": paddle.to_tensor(pairs),
            "pair_features": paddle.to_tensor(feats), "pair_labels": paddle.to_tensor(labels)}


@paddle.no_grad()
def evaluate_head(head: ReHeadModel, items: Sequence[HeadExample], batch_size: int = 8) -> dict[str, Any]:
    """PaddleOCR's RE Hmean (gold entities; every pair with argmax == 1 is a predicted link)."""
    was_training = head.training
    head.eval()
    gold, pred = [], []
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch = _collate(chunk)
        del batch["pair_labels"]
        linked = head(**batch).logits.argmax(axis=-1).numpy()
        for b, x in enumerate(chunk):
            spans = [(int(e[0]), int(e[1])) for e in x.entities]
            gold.append([(spans[h], spans[t]) for (h, t), y in zip(x.pairs, x.labels) if y == 1])
            pred.append([(spans[h], spans[t]) for k, (h, t) in enumerate(x.pairs) if linked[b, k] == 1])
    if was_training:
        head.train()
    return {**re_scores(gold, pred).to_dict(), "windows": len(items)}


def _head_examples(encoder: paddle.nn.Layer, docs: Sequence[Any], tokenizer: Any, labels: Sequence[str],
                   max_len: int) -> list[HeadExample]:
    examples = [e for e in encode_documents(docs, tokenizer, labels, task="re", max_len=max_len) if len(e.re.pairs)]
    return [HeadExample(e, h) for e, h in zip(examples, encode_hidden(encoder, examples))]


def train_re_head(config: TrainConfig) -> dict[str, Any]:
    """Trains the geometric RE head on ``config.init_from``'s frozen SER encoder.

    Args:
        config: ``task="re"``, ``re_head="geo"``; ``init_from`` = a kiebeam SER checkpoint; ``epochs``,
            ``batch_size``, ``learning_rate``, ``warmup_epochs``, ``schedule``, ``clip_norm``, ``dropout``,
            ``seed``, ``eval_split`` as for any run; ``re_heads`` heads trained side by side and averaged;
            ``re_detector_entities`` adds :func:`predicted_entity_items` of the training documents.

    Returns:
        ``{"best_hmean", "best_step", "steps", "out_dir"}``.
    """
    from models.capabilities import use_fast_mkl
    from models.checkpoint import encoder_fingerprint, load_checkpoint, save_checkpoint
    from models.tokenizer import load_tokenizer
    from training.shards import load_manifest, load_split

    if not config.init_from:
        raise ValueError("the geometric RE head trains on a SER model's encoder: pass init_from (a SER checkpoint)")
    use_fast_mkl()  # before the encoder's first matmul (models.capabilities.mkl_cpu_type)
    random.seed(config.seed)
    np.random.seed(config.seed)
    paddle.seed(config.seed)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ser = load_checkpoint(config.init_from, allow_unverified=config.allow_unverified, task="ser")
    tokenizer = load_tokenizer(ser.tokenizer_dir)
    manifest = load_manifest(config.manifest)
    labels = list(manifest.labels)
    train_docs, skipped = load_split(manifest, "train")
    eval_docs, eval_skipped = load_split(manifest, config.eval_split)
    (out / "skipped.txt").write_text("".join(f"{s}\n" for s in skipped + eval_skipped))
    if not train_docs:
        raise ValueError(f"manifest {config.manifest} has no readable train documents ({len(skipped)} skipped)")

    t0 = time.perf_counter()
    encoder = ser.model.layoutxlm
    train_items = _head_examples(encoder, train_docs, tokenizer, labels, config.max_len)
    eval_items = _head_examples(encoder, eval_docs, tokenizer, labels, config.max_len)
    if config.re_detector_entities:  # the same documents again, as the SER model decodes their detector view
        exported = json.loads((Path(config.re_detector_entities) / "metadata.json").read_text())
        if exported.get("encoder_fingerprint") != encoder_fingerprint(ser.model.state_dict()):
            raise ValueError(f"re_detector_entities: {config.re_detector_entities} is not an export of the SER model "
                             f"in {config.init_from} (encoder fingerprints differ)")
        train_items = train_items + predicted_entity_items(config.re_detector_entities, train_docs)
    encode_s = time.perf_counter() - t0
    print(f"re_head: encoded {len(train_items)} train / {len(eval_items)} eval windows in {encode_s:.0f} s",
          flush=True)

    head_cfg = ser.config.__class__(**{**ser.config.to_dict(), "hidden_dropout_prob": config.dropout})
    head = ReHeadModel(head_cfg, len(PAIR_FEATURES), heads=config.re_heads)
    clip = paddle.nn.ClipGradByNorm(config.clip_norm) if config.clip_norm else None
    optimizer = paddle.optimizer.AdamW(learning_rate=config.learning_rate, parameters=head.parameters(),
                                       weight_decay=config.weight_decay, grad_clip=clip)
    sampler = LengthBucketSampler([len(x.pairs) for x in train_items], config.batch_size, seed=config.seed)
    steps_per_epoch = len(sampler)
    fingerprint = encoder_fingerprint(ser.model.state_dict())
    meta = {"re_head": "geo", "encoder": {"fingerprint": fingerprint, "checkpoint": str(config.init_from)},
            "pair_features": list(PAIR_FEATURES), "config": config.to_dict(),
            "train_documents": len(train_docs), "eval_documents": len(eval_docs)}
    metrics_file = (out / "metrics.jsonl").open("w")
    step, best, best_step = 0, -1.0, -1
    head.train()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        losses = []
        for indices in sampler:
            optimizer.set_lr(lr_at(step, config, steps_per_epoch))
            loss = head(**_collate([train_items[i] for i in indices])).loss
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            losses.append(float(loss))
            step += 1
        metrics = evaluate_head(head, eval_items)
        record = {"step": step, "epoch": epoch, "loss": float(np.mean(losses)), "eval": metrics,
                  "elapsed_s": round(time.perf_counter() - t0, 1)}
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        new_best = metrics["hmean"] > best
        print(f"re_head: epoch {epoch + 1}/{config.epochs} loss {record['loss']:.4f} "
              f"{config.eval_split} hmean {metrics['hmean']:.4f}{' (best)' if new_best else ''}", flush=True)
        if new_best:
            best, best_step = metrics["hmean"], step
            save_checkpoint(head, out / "best", tokenizer_dir=ser.tokenizer_dir, training_data=manifest.to_dict(),
                            metrics=metrics, extra={**meta, "step": step}, max_len=config.max_len)
    metrics_file.close()
    return {"best_hmean": best, "best_step": best_step, "steps": step, "out_dir": str(out)}
