"""SER training augmentation: the page as an OCR engine would give it, not as the annotator drew it.

Annotated entities are tight, one per line, and a from-scratch model learns them by heart (100% line accuracy on
its training pages) without learning what the pipeline meets: OCR lines that hold a key and its value at once
("姓名：曹玉华" for the entities "姓名：" and "曹玉华"), boxes a few pixels off, lines the detector missed, and
misread characters. :func:`augment_window` rebuilds one training window that way, freshly random at every step:

* ``merge``: two neighbours in reading order on one row (vertical overlap >= half the lower line, horizontal gap
  under ``merge_gap`` line heights) become one line with this probability: one text
  (``models.ser_decoding.merge_parts``),
  one box (the union), and token labels ``B-X I-X... B-Y I-Y...`` from each part's characters
  (the merged text is tokenised whole, as the pipeline tokenises an OCR line, and every piece takes the label of
  the part its first character belongs to). Chains merge too ("性别：女学号：").
* ``split``: an entity the detector would see as two lines (its box spans two text rows, or a gap in its row cut
  it) becomes two lines with this probability (:func:`split_line`): a box two rows tall is cut into its top and
  bottom halves, any other at a random character with a small gap; the second line's tokens are all ``I-X``,
  continuing the entity, which the BIO decoder reads as one entity over both lines (``models.kie``).
* ``rows``: a box two text rows tall (at least 1.7 of the page's median line height), which a line detector always
  cuts, is cut into its rows with this probability instead of ``split``'s (the larger of the two applies), so that
  the model meets a wrapped key's second row as the pipeline gives it: right after the first (the wrapped-cells
  reading order, ``models.reading_order.cells_together``), continuing it with ``I-X``.
* ``jitter``: every box edge moves by up to this fraction of the line height (uniform), clipped to the page.
* ``drop``: a line is left out with this probability (never every line).
* ``noise``: a token id is replaced by a random one with this probability (labels unchanged).
* ``swap``: an ``ANSWER`` line's text is replaced, with this probability, by the text of another training answer
  of the same script (:func:`answer_pool`; of five drawn, the one closest in length), so that the model reads a
  value from where it stands and how it looks next to its key, not from values it has learnt by heart.
* ``empty``: a linked ``QUESTION`` loses its answers with this probability (they leave the page) and becomes
  ``OTHER``, as XFUND labels a key whose field is empty (every QUESTION of XFUND zh train but one is linked, and
  ``training.shards.funsd_to_documents(xfund_labels=True)`` labels FUNSD's that way). With ``empty`` on, a question
  whose answers all left the window by ``drop`` is ``OTHER`` too, so no augmentation teaches the opposite. Use it
  with XFUND-convention data only (FUNSD converted with ``xfund_labels``).

The window keeps its place in the epoch (one window in, one window out), so batches, resume and the length
sampler are unchanged; a window whose rebuild would not fit ``max_len`` (or that holds a line cut across windows)
is returned as it is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.features import Window, build_windows, line_label_ids, tokenize_lines
from models.ser_decoding import merge_parts, token_char_spans
from schemas.annotations import KieDocument

__all__ = ["Augment", "two_rows", "split_line", "augment_window", "answer_pool"]


@dataclass(frozen=True)
class Augment:
    """Augmentation probabilities and sizes (all off by default); see the module docstring."""

    merge: float = 0.0
    merge_gap: float = 1.5
    split: float = 0.0
    rows: float = 0.0
    jitter: float = 0.0
    drop: float = 0.0
    noise: float = 0.0
    swap: float = 0.0
    empty: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return any(v > 0 for v in (self.merge, self.split, self.rows, self.jitter, self.drop, self.noise, self.swap,
                                   self.empty))


def _cjk(text: str) -> bool:
    return any("\u3000" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" or "\uff00" <= c <= "\uffef" for c in text)


def answer_pool(docs: Sequence[KieDocument]) -> dict[bool, list[str]]:
    """The training answers' texts for ``swap``, by script (True: with CJK characters), each text once, in order.

    >>> from schemas.annotations import KieLine
    >>> def line(text, label, i): return KieLine(text, label, ((0, 0), (9, 0), (9, 9), (0, 9)), (0, 0, 9, 9), i)
    >>> doc = KieDocument("p", (line("姓名", "QUESTION", 0), line("张三", "ANSWER", 1), line("Smith", "ANSWER", 2)),
    ...                   20, 20)
    >>> answer_pool([doc])
    {True: ['张三'], False: ['Smith']}
    """
    out: dict[bool, list[str]] = {True: [], False: []}
    seen: set[str] = set()
    for doc in docs:
        for ln in doc.lines:
            text = ln.text.strip()
            if ln.label == "ANSWER" and text and text not in seen:
                seen.add(text)
                out[_cjk(text)].append(text)
    return out


def _swapped(text: str, pool: Mapping[bool, Sequence[str]], rng: np.random.Generator) -> str:
    """Another answer of ``text``'s script, the closest in length of five drawn; ``text`` when there is none."""
    cands = pool.get(_cjk(text)) or ()
    if not cands:
        return text
    drawn = [cands[int(i)] for i in rng.integers(len(cands), size=5)]
    return min(drawn, key=lambda t: abs(len(t) - len(text)))


def _same_row_neighbours(a: Sequence[float], b: Sequence[float], max_gap: float) -> bool:
    """``b`` continues ``a`` on its row: vertical overlap >= half the lower height, gap < ``max_gap`` heights."""
    h = min(a[3] - a[1], b[3] - b[1])
    if h <= 0:
        return False
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    gap = b[0] - a[2]
    return overlap >= 0.5 * h and -0.25 * h <= gap <= max_gap * h


def two_rows(box: Sequence[float], row_height: float) -> bool:
    """Whether ``box`` (``x0, y0, x1, y1``) holds two text rows: at least 1.7 ``row_height`` tall."""
    return float(box[3]) - float(box[1]) >= 1.7 * row_height


def split_line(text: str, box: Sequence[float], row_height: float, rng: np.random.Generator
               ) -> tuple[tuple[str, tuple[float, ...]], tuple[str, tuple[float, ...]]] | None:
    """One line cut in two as a text detector could see it, or None for a line too short to cut.

    Args:
        text: the line's text (at least two characters).
        box: its ``(x0, y0, x1, y1)``.
        row_height: the page's typical line height (median); a box at least 1.7 of it tall holds two text rows.
        rng: the random source.

    Returns:
        ``((text, box), (text, box))``: a two-row box cut at half height, its text in proportion (the cut point
        moved at most one character), else cut at a random character, the width in proportion to the characters
        and a gap of up to 0.3 line heights between the halves.

    >>> top, bottom = split_line("院系意见请审核", (0, 0, 100, 60), 25, np.random.default_rng(0))
    >>> top[1], bottom[1], top[0] + bottom[0]
    ((0, 0, 100, 30.0), (0, 30.0, 100, 60), '院系意见请审核')
    """
    n = len(text)
    if len(text.strip()) < 2:
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    if two_rows(box, row_height):
        cut = min(max(n // 2 + int(rng.integers(-1, 2)), 1), n - 1)
        mid = (y0 + y1) / 2
        return (text[:cut], (box[0], box[1], box[2], mid)), (text[cut:], (box[0], mid, box[2], box[3]))
    cut = int(rng.integers(1, n))
    gap = rng.uniform(0, 0.3) * (y1 - y0) / 2
    at = x0 + (x1 - x0) * cut / n
    return (text[:cut], (x0, y0, max(at - gap, x0 + 1), y1)), (text[cut:], (min(at + gap, x1 - 1), y0, x1, y1))


def _part_label_ids(pieces: Sequence[str], text: str, starts: Sequence[int], labels: Sequence[str],
                    label2id: Mapping[str, int]) -> list[int]:
    """Per piece of a merged line, its BIO label id: the part of its first character; B- on a part's first piece."""
    ids = line_label_ids(labels, label2id)
    spans = token_char_spans(list(pieces), text)
    out, last_part = [], -1
    for s, _ in spans:
        part = max(bisect_right(starts, s) - 1, 0)
        b_id, i_id = ids[part]
        out.append(b_id if part != last_part else i_id)
        last_part = part
    return out


def _answers_in_window(window: Window, doc: KieDocument) -> dict[int, set[int]]:
    """Each linked question of the window whose answers are all in the window -> those answers (line indices)."""
    answers: dict[int, set[int]] = {}
    for q, a in doc.links():
        answers.setdefault(q, set()).add(a)
    inside = set(window.line_ids)
    return {q: a for q, a in answers.items() if q in inside and a <= inside}


def _emptied(answers: Mapping[int, set[int]], rng: np.random.Generator, p: float) -> set[int]:
    """``empty``: the answers of each linked question (``answers``), drawn with probability ``p``, to leave out."""
    gone: set[int] = set()
    for _, a in sorted(answers.items()):
        if rng.random() < p:
            gone |= a
    return gone


def augment_window(window: Window, doc: KieDocument, tokenizer, label2id: Mapping[str, int],  # noqa: ANN001
                   rng: np.random.Generator, aug: Augment, *, max_len: int = 512,
                   pool: Mapping[bool, Sequence[str]] | None = None) -> Window:
    """One training window rebuilt with ``aug`` (see the module docstring); labels are required.

    Args:
        window: a window of ``doc`` (``models.features.build_windows`` with line labels).
        doc: its document.
        tokenizer: the model's tokenizer.
        label2id: BIO label map.
        rng: the random source (seed it per step for a reproducible, resumable run).
        aug: what to do.
        max_len: the window length.
        pool: the answers ``swap`` draws from (:func:`answer_pool` of the training documents); no swap without it.

    Returns:
        The new window, or ``window`` itself when it cannot be rebuilt within ``max_len``.
    """
    if not aug.active or not window.line_ids or len(set(window.line_ids)) != len(window.line_ids):
        return window
    lines = [doc.lines[k] for k in window.line_ids]
    tokens = dict(zip(lines, tokenize_lines([ln.text for ln in lines], tokenizer)))  # each line's token ids
    if any(e - s != len(tokens[ln]) for ln, (s, e) in zip(lines, window.line_spans)):
        return window  # a line cut across windows: leave the window as built
    answers = _answers_in_window(window, doc) if aug.empty > 0 else {}
    gone = _emptied(answers, rng, aug.empty) if answers else set()
    kept = [k for k in window.line_ids if k not in gone and (aug.drop <= 0 or rng.random() >= aug.drop)]
    if not kept:
        kept = [window.line_ids[int(rng.integers(len(lines)))]]
    empty = {q for q, a in answers.items() if q in kept and not a & set(kept)}  # keys whose answers all left
    keep = []
    for k in kept:
        ln = doc.lines[k]
        if k in empty:
            ln = replace(ln, label="OTHER")
            tokens[ln] = tokens[doc.lines[k]]
        keep.append(ln)
    if aug.swap > 0 and pool:
        for i, ln in enumerate(keep):
            if ln.label == "ANSWER" and rng.random() < aug.swap:
                new = replace(ln, text=_swapped(ln.text, pool, rng))
                ids = list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(new.text)))
                if ids:
                    keep[i], tokens[new] = new, ids

    # Merge neighbours on one row into groups of (text, label, box) parts.
    groups: list[list] = []
    for ln in keep:
        if (groups and aug.merge > 0 and _same_row_neighbours(groups[-1][-1].box, ln.box, aug.merge_gap)
                and rng.random() < aug.merge):
            groups[-1].append(ln)
        else:
            groups.append([ln])

    # One OCR line per group, or two for a cut entity (the second continuing the first): text, box, ids, labels.
    row_height = float(np.median([ln.box[3] - ln.box[1] for ln in lines]))
    items: list[tuple[str, tuple, list[int], list[int] | None, str | None]] = []
    for g in groups:
        box = (min(ln.box[0] for ln in g), min(ln.box[1] for ln in g),
               max(ln.box[2] for ln in g), max(ln.box[3] for ln in g))
        if len(g) > 1:
            text, starts = merge_parts([ln.text for ln in g])
            pieces = tokenizer.tokenize(text)
            labs = _part_label_ids(pieces, text, starts, [ln.label for ln in g], label2id)
            items.append((text, box, list(tokenizer.convert_tokens_to_ids(pieces)), labs, None))
            continue
        p_cut = max(aug.split, aug.rows) if two_rows(box, row_height) else aug.split
        parts = split_line(g[0].text, box, row_height, rng) if p_cut > 0 and rng.random() < p_cut else None
        halves = [list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t))) for t, _ in parts or ()]
        if not parts or not all(halves):
            items.append((g[0].text, box, tokens[g[0]], None, g[0].label))
            continue
        b_id, i_id = line_label_ids([g[0].label], label2id)[0]
        items += [(parts[0][0], parts[0][1], halves[0], [b_id] + [i_id] * (len(halves[0]) - 1), None),
                  (parts[1][0], parts[1][1], halves[1], [i_id] * len(halves[1]), None)]

    texts, boxes, token_ids, token_labels, line_labels = [], [], [], [], []
    for text, box, ids, labs, label in items:
        if aug.jitter > 0:
            h = max(box[3] - box[1], 1)
            d = rng.uniform(-aug.jitter, aug.jitter, 4) * h
            x0, y0 = min(max(box[0] + d[0], 0), doc.width - 1), min(max(box[1] + d[1], 0), doc.height - 1)
            box = (x0, y0, min(max(box[2] + d[2], x0 + 1), doc.width), min(max(box[3] + d[3], y0 + 1), doc.height))
        if aug.noise > 0 and ids:
            hit = rng.random(len(ids)) < aug.noise
            ids = [int(rng.integers(5, len(tokenizer))) if h else t for t, h in zip(ids, hit)]
        texts.append(text)
        boxes.append(box)
        token_ids.append(ids)
        token_labels.append(labs)
        line_labels.append(label)
    if sum(map(len, token_ids)) > max_len:
        return window
    out = build_windows(texts, boxes, doc.width, doc.height, None, line_labels=line_labels, label2id=label2id,
                        max_len=max_len, clip=True, token_ids=token_ids, token_label_ids=token_labels)
    return out[0] if len(out) == 1 else window
