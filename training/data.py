"""Documents -> model examples and padded batches, through ``models.features`` (the one feature builder).

Each document's lines are already in tb-yx order (``training.shards``). A document becomes one or more 512-token
windows (``models.features.build_windows``: PaddleOCR trains on the first window only; we keep every window, so
long documents are trained and evaluated whole). For RE, every window gets its gold entities and candidate
(question, answer) pairs with gold pair labels (``models.features.build_re_inputs``); a window without candidate
pairs adds nothing to the RE loss and is left out of RE training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.features import ReInputs, Window, bio_labels, build_re_inputs, build_windows
from training.shards import KieDocument

__all__ = ["Example", "encode_documents", "ser_batch", "re_batch", "document_texts"]


@dataclass(frozen=True, eq=False)
class Example:
    """One model input: a window of a document (and its RE inputs for the RE task)."""

    doc: int
    window: Window
    re: ReInputs | None = None


def document_texts(documents: Sequence[KieDocument]) -> list[str]:
    """All line texts of the documents (tokenizer training corpus)."""
    return [ln.text for d in documents for ln in d.lines]


def encode_documents(documents: Sequence[KieDocument], tokenizer, labels: Sequence[str],  # noqa: ANN001
                     *, task: str = "ser", max_len: int = 512) -> list[Example]:
    """Builds the examples of a list of documents.

    Args:
        documents: documents with lines in reading order.
        tokenizer: a ``LayoutXLMTokenizer`` (``models.tokenizer.load_tokenizer``).
        labels: the class list (``Manifest.labels``).
        task: ``ser`` or ``re``.
        max_len: tokens per window.

    Returns:
        The examples, in document order.
    """
    label2id = {n: i for i, n in enumerate(bio_labels(labels))}
    out = []
    for d, doc in enumerate(documents):
        texts = [ln.text for ln in doc.lines]
        line_labels = [ln.label for ln in doc.lines]
        windows = build_windows(texts, [ln.box for ln in doc.lines], doc.width, doc.height, tokenizer,
                                line_labels=line_labels, label2id=label2id, max_len=max_len, clip=True)
        links = doc.links() if task == "re" else None
        for w in windows:
            out.append(Example(d, w, build_re_inputs(w, line_labels, links) if task == "re" else None))
    return out


def ser_batch(examples: Sequence[Example]) -> dict[str, np.ndarray]:
    """Stacks SER examples into a batch of int64 arrays.

    Args:
        examples: the examples.

    Returns:
        ``input_ids (B,L)``, ``bbox (B,L,4)``, ``attention_mask (B,L)``, ``token_type_ids (B,L)``, ``labels (B,L)``.
    """
    ws = [e.window for e in examples]
    batch = {k: np.stack([getattr(w, k) for w in ws]) for k in ("input_ids", "bbox", "attention_mask",
                                                                  "token_type_ids")}
    batch["labels"] = np.stack([w.labels for w in ws])
    return batch


def re_batch(examples: Sequence[Example]) -> dict[str, np.ndarray]:
    """Stacks RE examples into a padded batch of int64 arrays.

    Args:
        examples: RE examples (``Example.re`` set, with gold pair labels for training).

    Returns:
        The SER keys but ``labels``, plus ``entities (B,E,3)`` (padding -1), ``pairs (B,P,2)`` (padding -1) and
        ``pair_labels (B,P)`` (padding -100).
    """
    batch = ser_batch(examples)
    del batch["labels"]
    n_e = max([len(e.re.entities) for e in examples] + [1])
    n_p = max([len(e.re.pairs) for e in examples] + [1])
    ents = np.full((len(examples), n_e, 3), -1, dtype=np.int64)
    pairs = np.full((len(examples), n_p, 2), -1, dtype=np.int64)
    pl = np.full((len(examples), n_p), -100, dtype=np.int64)
    for b, e in enumerate(examples):
        ents[b, :len(e.re.entities)] = e.re.entities
        pairs[b, :len(e.re.pairs)] = e.re.pairs
        if e.re.pair_labels is not None:
            pl[b, :len(e.re.pairs)] = e.re.pair_labels
    batch.update(entities=ents, pairs=pairs, pair_labels=pl)
    return batch
