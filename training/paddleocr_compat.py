"""Inputs "as PaddleOCR would" build them, to score a model beside kiebeam's all-windows evaluation.

PaddleOCR's KIE eval transforms (``VQATokenLabelEncode`` -> ``VQATokenPad`` -> ``VQASerTokenChunk``, or
``VQAReTokenRelation`` -> ``VQAReTokenChunk``, ``max_seq_len`` 512) give each document ONE model input:

* SER: the document's tokens ``[0, 512)``; a line that crosses token 512 is cut there and nothing after it is
  scored.
* RE: the first 512-token chunk ``[c, c + 512)`` (``c`` = 0, 512, 1024, ...) that keeps at least one entity. An
  entity (a HEADER / QUESTION / ANSWER line) is kept when ``c <= start`` and its **exclusive** end is
  ``< c + 512``, so an entity that ends exactly on the chunk's last token is dropped; a relation is kept when both
  its entities are. A document without such a chunk is not scored.

kiebeam's own evaluation packs whole lines into as many windows as a page needs and keeps an entity that ends
at 512. Everything else is shared: the tokens, 0-1000 boxes and BIO labels come from
``models.features.build_windows`` (one window holding the whole document, then cut as above), entities, pairs and
gold pair labels from ``models.features.build_re_inputs``, and the examples are scored by the same
``training.evaluate`` functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.features import (
    IGNORE_INDEX,
    PAD_TOKEN_ID,
    RE_ENTITY_LABELS,
    Window,
    bio_labels,
    build_re_inputs,
    build_windows,
    tokenize_lines,
)
from schemas.annotations import KieDocument
from training.data import Example

__all__ = ["kept_by_chunk", "re_chunk_start", "paddleocr_examples"]


def kept_by_chunk(span: tuple[int, int], chunk_start: int, max_len: int = 512) -> bool:
    """PaddleOCR's ``VQAReTokenChunk`` rule for one entity span ``[start, end)``.

    >>> kept_by_chunk((500, 511), 0), kept_by_chunk((500, 512), 0), kept_by_chunk((512, 520), 512)
    (True, False, True)
    """
    start, end = span
    return chunk_start <= start < chunk_start + max_len and chunk_start <= end < chunk_start + max_len


def re_chunk_start(entity_spans: Sequence[tuple[int, int]], num_tokens: int, max_len: int = 512) -> int | None:
    """The start of the chunk PaddleOCR's RE evaluation uses: the first one keeping an entity (None: none does)."""
    for c in range(0, num_tokens, max_len):
        if any(kept_by_chunk(sp, c, max_len) for sp in entity_spans):
            return c
    return None


def _cut(full: Window, start: int, max_len: int, spans: dict[int, tuple[int, int]]) -> Window:
    """Tokens ``[start, start + max_len)`` of a whole-document window, padded; ``spans``: the lines it holds."""
    def piece(a: np.ndarray, fill: int) -> np.ndarray:
        out = np.full((max_len, *a.shape[1:]), fill, dtype=a.dtype)
        part = a[start:start + max_len]
        out[:len(part)] = part
        return out

    labels = piece(full.labels, IGNORE_INDEX) if full.labels is not None else None
    return Window(piece(full.input_ids, PAD_TOKEN_ID), piece(full.bbox, 0), piece(full.attention_mask, 0),
                  piece(full.token_type_ids, 0), labels, tuple(spans), tuple(spans.values()))


def paddleocr_examples(documents: Sequence[KieDocument], tokenizer, labels: Sequence[str],  # noqa: ANN001
                       *, task: str = "ser", max_len: int = 512) -> list[Example]:
    """One example per document, cut as PaddleOCR's eval transforms cut it (see the module docstring).

    Args:
        documents: documents with lines in reading order (``training.shards``).
        tokenizer: the checkpoint's ``LayoutXLMTokenizer``.
        labels: the class list.
        task: ``ser`` or ``re``.
        max_len: PaddleOCR's ``max_seq_len``.

    Returns:
        Examples for ``training.evaluate.evaluate_ser`` / ``evaluate_re``. A window's ``line_ids`` /
        ``line_spans`` are the lines the chunk rule keeps (spans relative to the chunk); RE documents without a
        chunk that keeps an entity are left out, as PaddleOCR leaves them out.
    """
    label2id = {n: i for i, n in enumerate(bio_labels(labels))}
    out = []
    for d, doc in enumerate(documents):
        texts = [ln.text for ln in doc.lines]
        line_labels = [ln.label for ln in doc.lines]
        ids = tokenize_lines(texts, tokenizer)
        total = sum(len(x) for x in ids)
        if not total:
            continue
        (full,) = build_windows(texts, [ln.box for ln in doc.lines], doc.width, doc.height, tokenizer,
                                line_labels=line_labels, label2id=label2id, max_len=total, clip=True, token_ids=ids)
        spans = dict(zip(full.line_ids, full.line_spans))
        start = 0
        if task == "re":
            entity_spans = [sp for k, sp in spans.items() if line_labels[k].upper() in RE_ENTITY_LABELS]
            start = re_chunk_start(entity_spans, total, max_len)
            if start is None:
                continue
        kept = {k: (s - start, e - start) for k, (s, e) in spans.items() if kept_by_chunk((s, e), start, max_len)}
        window = _cut(full, start, max_len, kept)
        out.append(Example(d, window, build_re_inputs(window, line_labels, doc.links()) if task == "re" else None))
    return out
