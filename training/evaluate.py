"""Evaluation: SER and RE Hmean of a model on documents (gold OCR), and end-to-end OCR+SER from images.

* SER (PaddleOCR ``VQASerTokenMetric``): per document, the BIO tags of every non-padding token of all its windows
  (in order), gold vs argmax; seqeval-style micro F1 (:func:`training.metrics.ser_scores`).
* RE (``VQAReTokenMetric``): gold entities and entity labels; a predicted link is every candidate pair with
  argmax == 1; micro F1 over ``(head span, tail span)`` per window.
* End-to-end (:func:`evaluate_end2end`): any OCR callable ``images -> [PageOcr]`` and any KIE callable
  ``[PageOcr] -> [PageKie]`` (e.g. ``models.ocr.OcrPredictor`` and ``models.kie.KiePredictor``), scored against the
  labels as ``eval_with_label_end2end`` (:func:`training.metrics.end2end_scores`). Exported folders on a manifest
  split, page images included, go through ``training.report`` (``kiebeam evaluate --ser_dir ... --end2end``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import paddle

from models.features import MODEL_INPUTS, RE_INPUTS, bio_labels
from schemas.annotations import KieDocument
from schemas.records import PageKie, PageOcr
from training.data import Example, re_batch, ser_batch
from training.metrics import end2end_scores, re_scores, ser_scores

__all__ = ["evaluate_ser", "evaluate_re", "evaluate_end2end", "evaluate_checkpoint"]


def _tensors(batch: dict[str, np.ndarray], keys: Sequence[str]) -> dict[str, paddle.Tensor]:
    """The model inputs ``keys`` of a batch, plus its page images when it has them (a visual-backbone model)."""
    return {k: paddle.to_tensor(batch[k]) for k in (*keys, *(("image",) if "image" in batch else ()))}


@paddle.no_grad()
def evaluate_ser(model: paddle.nn.Layer, examples: Sequence[Example], labels: Sequence[str],
                 batch_size: int = 8) -> dict[str, Any]:
    """SER Hmean of a model on encoded documents.

    Args:
        model: a ``models.layoutxlm.SerModel``.
        examples: from ``training.data.encode_documents`` (with labels).
        labels: the class list.
        batch_size: windows per forward.

    Returns:
        ``{"hmean", "precision", "recall", "per_class": {name: {...}}, "documents"}``.
    """
    was_training = model.training
    model.eval()
    id2label = bio_labels(labels)
    gold: dict[int, list[str]] = {}
    pred: dict[int, list[str]] = {}
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        batch = ser_batch(chunk)
        out = model(**_tensors(batch, MODEL_INPUTS))
        argmax = out.logits.argmax(axis=-1).numpy()
        for ex, row, lab in zip(chunk, argmax, batch["labels"]):
            keep = lab != -100
            gold.setdefault(ex.doc, []).extend(id2label[i] for i in lab[keep])
            pred.setdefault(ex.doc, []).extend(id2label[i] for i in row[keep])
    if was_training:
        model.train()
    docs = sorted(gold)
    micro, per_class = ser_scores([gold[d] for d in docs], [pred[d] for d in docs])
    return {**micro.to_dict(), "per_class": {k: v.to_dict() for k, v in per_class.items()}, "documents": len(docs)}


@paddle.no_grad()
def evaluate_re(model: paddle.nn.Layer, examples: Sequence[Example], batch_size: int = 8) -> dict[str, Any]:
    """RE Hmean of a model with gold entities.

    Args:
        model: a ``models.layoutxlm.ReModel``.
        examples: RE examples (``Example.re`` with gold pair labels).
        batch_size: windows per forward.

    Returns:
        ``{"hmean", "precision", "recall", "support", "predicted", "correct", "windows"}``.
    """
    was_training = model.training
    model.eval()
    gold, pred = [], []
    examples = [e for e in examples if len(e.re.pairs)] + [e for e in examples if not len(e.re.pairs)]
    for s in range(0, len(examples), batch_size):
        chunk = examples[s:s + batch_size]
        if not any(len(e.re.pairs) for e in chunk):  # no candidates: nothing predicted, gold links (none) count
            gold += [[] for _ in chunk]
            pred += [[] for _ in chunk]
            continue
        batch = re_batch(chunk)
        out = model(**_tensors(batch, MODEL_INPUTS + RE_INPUTS))
        linked = out.logits.argmax(axis=-1).numpy()  # (B, P)
        for b, ex in enumerate(chunk):
            ents, prs = ex.re.entities, ex.re.pairs

            def span(i: int, ents: np.ndarray = ents) -> tuple[int, int]:
                return int(ents[i, 0]), int(ents[i, 1])

            gold.append([(span(h), span(t)) for (h, t), y in zip(prs, ex.re.pair_labels) if y == 1])
            pred.append([(span(h), span(t)) for k, (h, t) in enumerate(prs) if linked[b, k] == 1])
    if was_training:
        model.train()
    return {**re_scores(gold, pred).to_dict(), "windows": len(examples)}


def evaluate_end2end(documents: Sequence[KieDocument], images: Sequence[np.ndarray],
                     ocr: Callable[[Sequence[np.ndarray]], list[PageOcr]],
                     kie: Callable[[list[PageOcr]], list[PageKie]],
                     *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """End-to-end OCR + SER scores from page images against their labels.

    Args:
        documents: the gold documents.
        images: their page images (RGB arrays), aligned with ``documents``.
        ocr: images -> ``PageOcr`` list (e.g. ``models.ocr.OcrPredictor``).
        kie: pages -> ``PageKie`` (e.g. ``models.kie.KiePredictor``).
        iou_threshold: polygon IoU needed for a match.

    Returns:
        ``{"hmean", "precision", "recall", ...}`` (hits need equal text, spaces ignored, and equal label).
    """
    if len(documents) != len(images):
        raise ValueError(f"got {len(documents)} documents but {len(images)} images")
    pages = list(ocr(list(images)))
    results = kie(pages)
    gold = [[(ln.points, ln.text, ln.label) for ln in d.lines] for d in documents]
    pred = [[(line.polygon, line.text, label) for line, label in zip(page.lines, res.line_labels)]
            for page, res in zip(pages, results)]
    return end2end_scores(gold, pred, iou_threshold=iou_threshold).to_dict()


def evaluate_checkpoint(checkpoint: str, manifest: str, split: str = "test", *, batch_size: int = 8,
                        allow_unverified: bool = False, paddleocr_compat: bool = False) -> dict[str, Any]:
    """Loads a checkpoint folder and evaluates it on one split of a manifest (gold OCR).

    Args:
        checkpoint: a checkpoint folder (``models.checkpoint.load_checkpoint`` formats).
        manifest: the manifest URI.
        split: ``train``, ``val`` or ``test``.
        batch_size: windows per forward.
        allow_unverified: accept a folder without ``SHA256SUMS``.
        paddleocr_compat: also score the inputs PaddleOCR's eval would build (first 512 tokens, its RE chunk
            rule; ``training.paddleocr_compat``), under ``paddleocr_compat``.

    Returns:
        The metrics (``evaluate_ser`` / ``evaluate_re``) plus ``task``, ``split``, ``skipped`` (and
        ``paddleocr_compat``).
    """
    from models.checkpoint import load_checkpoint
    from models.tokenizer import load_tokenizer
    from training.data import encode_documents, split_images
    from training.shards import load_manifest, load_split

    ck = load_checkpoint(checkpoint, allow_unverified=allow_unverified)
    m = load_manifest(manifest)
    if ck.task == "ser" and bio_labels(m.labels) != list(ck.labels):
        raise ValueError(f"manifest labels {list(m.labels)} give BIO labels {bio_labels(m.labels)}, but checkpoint "
                         f"{checkpoint} was trained with {ck.labels}")
    docs, skips = load_split(m, split)
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents ({len(skips)} skipped)")
    max_len = int(ck.metadata.get("max_len", 512))
    tokenizer = load_tokenizer(ck.tokenizer_dir)
    images = split_images(m, split, docs, required=True) if ck.config.use_visual_backbone else None
    examples = encode_documents(docs, tokenizer, m.labels, task=ck.task, max_len=max_len, images=images)
    if ck.task == "ser":
        metrics = evaluate_ser(ck.model, examples, m.labels, batch_size)
    else:
        metrics = evaluate_re(ck.model, examples, batch_size)
    if paddleocr_compat:
        from training.paddleocr_compat import paddleocr_examples

        compat = paddleocr_examples(docs, tokenizer, m.labels, task=ck.task, max_len=max_len)
        if images is not None:  # the same page images as the all-windows examples
            page_image = {e.doc: e.image for e in examples}
            compat = [dataclasses.replace(e, image=page_image[e.doc]) for e in compat]
        metrics["paddleocr_compat"] = (evaluate_ser(ck.model, compat, m.labels, batch_size) if ck.task == "ser"
                                       else evaluate_re(ck.model, compat, batch_size))
    return {"task": ck.task, "split": split, "checkpoint": str(checkpoint), **metrics, "skipped": len(skips)}
