"""KiePredictor: OCR pages in, SER labels + entities + RE question/answer pairs out (exported models only).

It runs folders written by ``models.checkpoint.export_inference`` through Paddle Inference
(``models.paddle_infer``), never the dynamic graph. Per page, exactly PaddleOCR's inference rules:

1. windows from ``models.features.build_windows`` (lines must be in reading order; boxes are clipped to the
   page so a box a few pixels outside it does not fail the page);
2. SER on every window of every page, batched; per token ``argmax``, ``I-X`` mapped to ``B-X``; per line a
   majority vote ``np.bincount(...).argmax()`` over its tokens (ties go to the smaller id; a line without tokens
   is ``O``); a line cut over several windows votes over all its tokens. A line's score is the mean, over its
   tokens, of the softmax probability of its voted class (``B-X`` + ``I-X``);
3. non-``O`` lines become :class:`schemas.records.Entity` (one line each, reading order);
4. RE per window on all (question, answer) candidates, question-major; keep ``argmax == 1``; walk them in
   candidate order and keep only the first question for each answer (PaddleOCR's rule: first, not best);
   score = softmax probability of "linked". **Pairs exist only within a window**: a question and an answer
   in different 512-token windows of a long page are never linked.

Thread-safe: the predictors are (models.paddle_infer) and the rest keeps no mutable state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.checkpoint import LABELS_FILE, METADATA_FILE
from models.features import Window, build_re_inputs, build_windows, tokenize_lines
from models.integrity import sha256_file
from models.paddle_infer import InferenceOptions, PaddlePredictor
from models.tokenizer import TOKENIZER_FILE, load_tokenizer
from schemas.records import Entity, KeyValuePair, PageKie, PageOcr

__all__ = ["KiePredictor", "vote_line_labels", "select_pairs"]

_EXTRA_FILES = (LABELS_FILE, METADATA_FILE, TOKENIZER_FILE)
_DEFAULT_OPTIONS = InferenceOptions()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def vote_line_labels(token_preds: Sequence[np.ndarray], to_b: np.ndarray) -> list[int]:
    """PaddleOCR's per-line majority vote.

    Args:
        token_preds: per line, the argmax label ids of its tokens (possibly empty).
        to_b: ``to_b[id]`` = id of the ``B-`` label of the same class (``O`` maps to itself).

    Returns:
        The voted ``B-`` (or ``O``) id of each line; 0 for a line without tokens.

    >>> vote_line_labels([np.array([1, 2, 2, 3]), np.array([], int)], np.array([0, 1, 1, 3, 3]))
    [1, 0]
    """
    out = []
    for preds in token_preds:
        if len(preds) == 0:
            out.append(0)
        else:
            out.append(int(np.bincount(to_b[preds]).argmax()))
    return out


def select_pairs(pairs: np.ndarray, logits: np.ndarray) -> list[tuple[int, int, float]]:
    """PaddleOCR's RE post-processing: linked candidates in order, at most one question per answer (the first).

    Args:
        pairs: ``(P, 2)`` candidate (question, answer) entity indices, in candidate order.
        logits: ``(P, 2)`` pair logits.

    Returns:
        ``(question, answer, probability of "linked")`` triples.

    >>> select_pairs(np.array([[0, 1], [2, 1], [2, 3]]), np.array([[0., 1.], [0., 2.], [1., 0.]]))
    [(0, 1, 0.7310585786300049)]
    """
    probs = _softmax(np.asarray(logits, dtype=np.float64))
    used: set[int] = set()
    out = []
    for (q, a), p in zip(np.asarray(pairs).tolist(), probs):
        if p.argmax() != 1 or a in used:
            continue
        used.add(a)
        out.append((int(q), int(a), float(p[1])))
    return out


def _read_json(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {folder / name}: {e}") from e


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class KiePredictor:
    """SER (+ optional RE) over OCR pages, with exported models.

    Build it with :meth:`from_dirs`.

    >>> kie = KiePredictor.from_dirs("models/kie/ser", "models/kie/re")  # doctest: +SKIP
    >>> [page_kie] = kie([page_ocr])  # doctest: +SKIP
    """

    def __init__(self, ser: PaddlePredictor, labels: list[str], tokenizer, max_len: int,  # noqa: ANN001
                 re: PaddlePredictor | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not labels or labels[0] != "O":
            raise ValueError(f"SER labels must start with 'O', got {labels}")
        self.ser, self.re = ser, re
        self.labels = list(labels)
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        index = {n: i for i, n in enumerate(self.labels)}
        self._to_b = np.array([index.get("B-" + n[2:], i) if n.startswith("I-") else i
                               for i, n in enumerate(self.labels)], dtype=np.int64)
        self._class_of = [n[2:] if n[:2] in ("B-", "I-") else "O" for n in self.labels]
        self.version = f"ser={ser.version}" + (f";re={re.version}" if re is not None else "")

    @classmethod
    def from_dirs(cls, ser_dir: str | os.PathLike, re_dir: str | os.PathLike | None = None, *,
                  inference: InferenceOptions = _DEFAULT_OPTIONS, batch_size: int = 8) -> KiePredictor:
        """Loads exported SER (and RE) folders, each verified against its ``SHA256SUMS`` first.

        Args:
            ser_dir: exported SER folder (``models.checkpoint.export_inference``).
            re_dir: exported RE folder, or None for no pairs.
            inference: device / oneDNN / threads / ``allow_unverified``.
            batch_size: windows per model call.

        Returns:
            The predictor.

        Raises:
            ValueError: a folder that fails verification, is not the right task, or an RE model whose
                tokenizer or window length differ from the SER model's.
        """
        ser = PaddlePredictor(ser_dir, inference, extra_files=_EXTRA_FILES)
        ser_dir = Path(ser_dir)
        meta, labels = _read_json(ser_dir, METADATA_FILE), _read_json(ser_dir, LABELS_FILE)
        if labels.get("task") != "ser":
            raise ValueError(f"{ser_dir / LABELS_FILE} is for task {labels.get('task')!r}, expected 'ser'")
        re = None
        if re_dir is not None:
            re = PaddlePredictor(re_dir, inference, extra_files=_EXTRA_FILES)
            re_dir = Path(re_dir)
            re_meta = _read_json(re_dir, METADATA_FILE)
            if re_meta.get("task") != "re":
                raise ValueError(f"{re_dir / METADATA_FILE} is for task {re_meta.get('task')!r}, expected 're'")
            if sha256_file(re_dir / TOKENIZER_FILE) != sha256_file(ser_dir / TOKENIZER_FILE):
                raise ValueError(f"the RE tokenizer {re_dir / TOKENIZER_FILE} differs from the SER tokenizer "
                                 f"{ser_dir / TOKENIZER_FILE}; both models must share one tokenizer")
            if re_meta.get("max_len") != meta.get("max_len"):
                raise ValueError(f"RE max_len {re_meta.get('max_len')} != SER max_len {meta.get('max_len')}")
        return cls(ser, labels["labels"], load_tokenizer(ser_dir), int(meta.get("max_len", 512)), re,
                   batch_size=batch_size)

    def _ser(self, windows: list[Window]) -> list[np.ndarray]:
        """Softmax probabilities ``(L, C)`` of each window."""
        out = []
        for batch in _batches(windows, self.batch_size):
            logits = self.ser.run([np.stack([getattr(w, f) for w in batch]) for f in
                                   ("input_ids", "bbox", "attention_mask", "token_type_ids")])[0]
            out.extend(_softmax(logits.astype(np.float64)))
        return out

    def _re(self, items: list[tuple[Window, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Pair logits ``(P, 2)`` of each (window, entities, pairs) item."""
        out = []
        for batch in _batches(items, self.batch_size):
            n_ent = max(len(e) for _, e, _ in batch)
            n_pair = max(len(p) for _, _, p in batch)
            ents = np.full((len(batch), n_ent, 3), -1, np.int64)
            pairs = np.full((len(batch), n_pair, 2), -1, np.int64)
            for i, (_, e, p) in enumerate(batch):
                ents[i, :len(e)], pairs[i, :len(p)] = e, p
            logits = self.re.run([np.stack([getattr(w, f) for w, _, _ in batch]) for f in
                                  ("input_ids", "bbox", "attention_mask", "token_type_ids")] + [ents, pairs])[0]
            out.extend(logits[i, :len(p)] for i, (_, _, p) in enumerate(batch))
        return out

    def __call__(self, pages: Sequence[PageOcr]) -> list[PageKie]:
        """Runs SER (and RE) over pages.

        Args:
            pages: OCR pages, lines in reading order.

        Returns:
            One :class:`schemas.records.PageKie` per page, in order.
        """
        page_windows = []
        for page in pages:
            texts = [ln.text for ln in page.lines]
            page_windows.append(build_windows(texts, [ln.box for ln in page.lines], page.width, page.height,
                                              None, max_len=self.max_len, clip=True,
                                              token_ids=tokenize_lines(texts, self.tokenizer)))
        flat = [(p, w) for p, ws in enumerate(page_windows) for w in ws if w.line_ids]
        t0 = time.perf_counter()
        probs = self._ser([w for _, w in flat])
        ser_ms = (time.perf_counter() - t0) * 1000 / max(len(flat), 1)

        # Per page: every line's token argmaxes and voted-class probabilities, over all its windows.
        token_preds = [[[] for _ in page.lines] for page in pages]
        token_probs = [[[] for _ in page.lines] for page in pages]
        for (p, w), pr in zip(flat, probs):
            for k, (s, e) in zip(w.line_ids, w.line_spans):
                token_preds[p][k].append(pr[s:e].argmax(-1))
                token_probs[p][k].append(pr[s:e])
        results = []
        re_items: list[tuple[int, Window, np.ndarray, np.ndarray, tuple[int, ...]]] = []
        page_lines = []
        for p in range(len(pages)):
            preds = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in token_preds[p]]
            voted = vote_line_labels(preds, self._to_b)
            names, scores = [], []
            for k, v in enumerate(voted):
                cls = self._class_of[v]
                names.append(cls)
                if token_probs[p][k]:
                    pr = np.concatenate(token_probs[p][k])
                    same = [i for i, c in enumerate(self._class_of) if c == cls]
                    scores.append(float(pr[:, same].sum(axis=1).mean()))
                else:
                    scores.append(0.0)
            page_lines.append((names, scores))
            if self.re is not None:
                for w in page_windows[p]:
                    r = build_re_inputs(w, names)
                    if len(r.pairs):
                        re_items.append((p, w, r.entities, r.pairs, r.entity_line_ids))
        t0 = time.perf_counter()
        re_logits = self._re([(w, e, pr) for _, w, e, pr, _ in re_items]) if re_items else []
        re_ms = (time.perf_counter() - t0) * 1000 / max(len(re_items), 1)

        links: list[list[tuple[int, int, float]]] = [[] for _ in pages]
        for (p, _, _, pairs, ent_lines), logits in zip(re_items, re_logits):
            links[p].extend((ent_lines[q], ent_lines[a], s) for q, a, s in select_pairs(pairs, logits))
        for p, page in enumerate(pages):
            names, scores = page_lines[p]
            entities, entity_of_line = [], {}
            for k, (name, score) in enumerate(zip(names, scores)):
                if name == "O":
                    continue
                line = page.lines[k]
                entity_of_line[k] = len(entities)
                entities.append(Entity(entity_id=len(entities), label=name, text=line.text, box=tuple(line.box),
                                       score=score, line_ids=(k,)))
            kv, used = [], set()
            for q_line, a_line, s in links[p]:  # windows in order; one question per answer over the page
                if a_line in used:
                    continue
                used.add(a_line)
                kv.append(KeyValuePair(question_id=entity_of_line[q_line], answer_id=entity_of_line[a_line], score=s))
            n_win = len(page_windows[p])
            n_run = sum(1 for q, _ in flat if q == p)
            n_re = sum(1 for it in re_items if it[0] == p)
            results.append(PageKie(line_labels=tuple(names), line_scores=tuple(scores), entities=tuple(entities),
                                   pairs=tuple(kv), windows=n_win, ser_ms=ser_ms * n_run, re_ms=re_ms * n_re))
        return results
