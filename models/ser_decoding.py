"""SER decoding: token label probabilities -> line labels and whole entities. Pure numpy.

Two decoders, chosen per predictor (``models.kie.KiePredictor(decode=...)``):

* ``vote`` (PaddleOCR's): per token ``argmax``, ``I-X`` read as ``B-X``, per line a majority vote
  (``np.bincount(...).argmax()``, ties to the smaller id); one entity per non-``O`` line.
* ``bio`` (kiebeam's default for its own models): per line, the most probable label sequence that is valid BIO
  (constrained Viterbi: ``I-X`` only after ``B-X`` or ``I-X``; a line starts after ``O``, or, when it sits where
  the text of an ``X`` entity that ended with its line would go on (:func:`continues_line`: the next row of a
  wrapped cell, the next character of vertical text, the next piece of its row), with ``I-X``: the detector cut
  that entity into several lines and this one goes on with it), so the tokens of an entity agree and no
  fragments appear; each ``B-X I-X*`` run is one entity. A line whose tokens hold a key and its value
  ("姓名：张三") becomes two entities, QUESTION "姓名：" and ANSWER "张三", each with its own part of the line's
  text and a sub-line box (:func:`split_box`: from the recognizer's per-character positions when the OCR line has
  them, else in proportion to the characters). Runs shorter than ``min_run`` tokens that sit inside a longer
  entity of the same line are merged into it (one stray token does not split a line).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["vote_line_labels", "bio_transitions", "viterbi_bio", "Span", "bio_spans", "span_tags",
           "token_char_spans", "split_box", "continues_line", "merge_parts", "split_at_colon", "COLONS"]


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


def bio_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Allowed BIO moves as ``(start (C,), transition (C, C))`` boolean masks.

    A sequence may start with ``O`` or any ``B-X``; ``I-X`` may follow only ``B-X`` or ``I-X``; everything else
    may follow anything.

    >>> start, trans = bio_transitions(["O", "B-Q", "I-Q"])
    >>> start.tolist(), trans[0].tolist(), trans[1].tolist()
    ([True, True, False], [True, True, False], [True, True, True])
    """
    n = len(labels)
    start = np.array([not lab.startswith("I-") for lab in labels])
    trans = np.ones((n, n), dtype=bool)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            cls = lab[2:]
            trans[:, j] = [prev in (f"B-{cls}", f"I-{cls}") for prev in labels]
    return start, trans


def viterbi_bio(probs: np.ndarray, labels: Sequence[str], *, continues: str | None = None) -> np.ndarray:
    """The most probable valid BIO label sequence of one line's tokens.

    Args:
        probs: ``(T, C)`` per-token label probabilities.
        labels: the BIO label names (index = id).
        continues: the class of an entity that ended with its line where this line may go on with it (the
            detector cut one entity into several lines, :func:`continues_line`): the line may then also start
            with ``I-<continues>``.

    Returns:
        ``(T,)`` label ids.

    >>> p = np.array([[.1, .5, .4], [.1, .2, .7], [.6, .1, .3]])  # O, B-Q, I-Q
    >>> viterbi_bio(p, ["O", "B-Q", "I-Q"]).tolist()
    [1, 2, 0]
    >>> viterbi_bio(np.array([[.1, .3, .6], [.1, .2, .7]]), ["O", "B-Q", "I-Q"]).tolist()  # cannot start with I
    [1, 2]
    >>> viterbi_bio(np.array([[.1, .3, .6], [.1, .2, .7]]), ["O", "B-Q", "I-Q"], continues="Q").tolist()
    [2, 2]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probs must be (T, {len(labels)}), got {probs.shape}")
    if len(probs) == 0:
        return np.zeros(0, dtype=np.int64)
    start, trans = bio_transitions(labels)
    if continues:
        start = start | (np.asarray(labels) == f"I-{continues}")
    logp = np.log(np.clip(probs, 1e-12, None))
    neg = -1e18
    score = np.where(start, logp[0], neg)
    back = np.zeros((len(probs), len(labels)), dtype=np.int64)
    penalty = np.where(trans, 0.0, neg)
    for t in range(1, len(probs)):
        cand = score[:, None] + penalty  # (prev, next)
        back[t] = cand.argmax(axis=0)
        score = cand.max(axis=0) + logp[t]
    path = np.zeros(len(probs), dtype=np.int64)
    path[-1] = int(score.argmax())
    for t in range(len(probs) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


@dataclass(frozen=True)
class Span:
    """One decoded entity inside a line: class, token range ``[start, end)`` and mean class probability."""

    label: str
    start: int
    end: int
    score: float


def bio_spans(path: np.ndarray, probs: np.ndarray, labels: Sequence[str], *, min_run: int = 2) -> list[Span]:
    """The entities of a decoded line: each ``B-X I-X*`` run, short runs inside a same-class entity merged.

    Args:
        path: ``(T,)`` label ids from :func:`viterbi_bio`.
        probs: ``(T, C)`` the token probabilities (for the scores).
        labels: BIO label names.
        min_run: a run of fewer tokens is merged into a neighbour of the same class it interrupts.

    Returns:
        The spans, in token order (``O`` tokens belong to none).

    >>> labs = ["O", "B-Q", "I-Q", "B-A", "I-A"]
    >>> p = np.full((5, 5), 0.2)
    >>> [(s.label, s.start, s.end) for s in bio_spans(np.array([1, 2, 3, 4, 4]), p, labs)]
    [('Q', 0, 2), ('A', 2, 5)]
    """
    runs: list[list] = []  # [class, start, end]
    for t, lab_id in enumerate(np.asarray(path).tolist()):
        name = labels[lab_id]
        if name[:2] not in ("B-", "I-"):
            continue
        cls = name[2:]
        if name.startswith("B-") or not runs or runs[-1][0] != cls or runs[-1][2] != t:
            runs.append([cls, t, t + 1])
        else:
            runs[-1][2] = t + 1
    merged: list[list] = []
    for r in runs:
        if (len(merged) >= 2 and merged[-2][0] == r[0] != merged[-1][0] and merged[-1][2] - merged[-1][1] < min_run
                and merged[-2][2] == merged[-1][1] and merged[-1][2] == r[1]):
            merged.pop()  # X Y(short) X -> one X
            merged[-1][2] = r[2]
        elif merged and merged[-1][0] == r[0] and merged[-1][2] == r[1]:
            merged[-1][2] = r[2]  # B-X B-X ... adjacent runs of one class (a line starts an entity once)
        else:
            merged.append(list(r))
    out = []
    for cls, s, e in merged:
        ids = [i for i, n in enumerate(labels) if n in (f"B-{cls}", f"I-{cls}")]
        score = float(np.asarray(probs)[s:e][:, ids].sum(axis=1).mean())
        out.append(Span(cls, s, e, score))
    return out


COLONS = ":："
_NOT_A_VALUE = tuple("(（[【《<“\"'/_")  # after a colon: the key's own note ("地址：(含邮编)"), a URL, a blank
_ITEM = re.compile(r"^\s*([0-9]{1,2}[.、．)）]|[（(][0-9一二三四五六七八九十]{1,2}[）)]"
                   r"|[一二三四五六七八九十]{1,2}、|[☑☐□口■√✓])")
"""The start of a list item or a check box: such a line is a value even when it holds a colon."""


def split_at_colon(spans: Sequence[Span], chars: Sequence[tuple[int, int]], text: str) -> list[Span]:
    """Key and value the model left in one entity, cut at the key's colon; a colon that went to the value given
    back to its key.

    A QUESTION or ANSWER span whose text holds a colon with text after it, no other colon after it and no digits
    on both sides of it (a time, "12:30"), becomes QUESTION up to and with the colon and ANSWER after it (XFUND and
    FUNSD keys end with their colon: "姓名：" "张三"); the colon must end a token. Left whole: a colon followed by a
    bracket, quote, slash or blank (the key's own note: "出生地点：(国家/省/城市)", a URL), and a span that starts as
    a list item or a check box ("1.诚信报名承诺：...", "☑其它：无"). An ANSWER that starts with a
    colon token right after a QUESTION gives that token to the QUESTION.

    Args:
        spans: the line's spans (:func:`bio_spans`).
        chars: each token's character range in ``text`` (:func:`token_char_spans`).
        text: the line's text.

    >>> chars = [(0, 3), (3, 4), (4, 5), (5, 6)]                     # 有效期 | ： | 2 | 年
    >>> [(sp.label, sp.start, sp.end) for sp in split_at_colon([Span("QUESTION", 0, 4, 0.9)], chars, "有效期：2年")]
    [('QUESTION', 0, 2), ('ANSWER', 2, 4)]
    >>> [(sp.label, sp.start, sp.end) for sp in split_at_colon([Span("QUESTION", 0, 1, 0.9),
    ...                                                         Span("ANSWER", 1, 4, 0.8)], chars, "有效期：2年")]
    [('QUESTION', 0, 2), ('ANSWER', 2, 4)]
    >>> [(sp.label, sp.start, sp.end) for sp in split_at_colon([Span("ANSWER", 0, 3, 0.9)],
    ...                                                        [(0, 2), (2, 3), (3, 5)], "12:30")]
    [('ANSWER', 0, 3)]
    """
    out: list[Span] = []
    for sp in spans:
        first = text[chars[sp.start][0]:chars[sp.start][1]].strip()
        if (out and sp.label == "ANSWER" and out[-1].label == "QUESTION" and out[-1].end == sp.start
                and sp.end - sp.start > 1 and first and first in COLONS):
            out[-1] = Span(out[-1].label, out[-1].start, sp.start + 1, out[-1].score)
            out.append(Span(sp.label, sp.start + 1, sp.end, sp.score))
            continue
        cut = None
        if sp.label in ("QUESTION", "ANSWER"):
            for t in range(sp.start, sp.end - 1):
                c = chars[t][1] - 1
                if c < 0 or text[c] not in COLONS:
                    continue
                after = text[c + 1:chars[sp.end - 1][1]].strip()
                before = text[chars[sp.start][0]:c].strip()
                if (after and before and not any(ch in COLONS for ch in after) and not after.startswith(_NOT_A_VALUE)
                        and not _ITEM.match(before) and not (before[-1:].isdigit() and after[:1].isdigit())):
                    cut = t + 1
                    break
        if cut is None:
            out.append(sp)
        else:
            out += [Span("QUESTION", sp.start, cut, sp.score), Span("ANSWER", cut, sp.end, sp.score)]
    return out


def span_tags(spans: Sequence[Span], n_tokens: int) -> list[str]:
    """Token labels of decoded entities: ``B-X`` on each entity's first token, ``I-X`` on the rest, ``O`` outside
    every entity (what PaddleOCR's token-level metric reads). ``spans`` are anything with ``label``, ``start`` and
    ``end`` over ``n_tokens`` tokens: a line's :class:`Span` s, or a window's ``models.kie.KieEntity`` s.

    >>> span_tags([Span("QUESTION", 0, 2, 1.0), Span("ANSWER", 2, 4, 1.0)], 5)
    ['B-QUESTION', 'I-QUESTION', 'B-ANSWER', 'I-ANSWER', 'O']
    """
    tags = ["O"] * n_tokens
    for sp in spans:
        tags[sp.start:sp.end] = [f"B-{sp.label}"] + [f"I-{sp.label}"] * (sp.end - sp.start - 1)
    return tags


def token_char_spans(pieces: Sequence[str], text: str) -> list[tuple[int, int]]:
    """Character range ``[start, end)`` in ``text`` of each sentencepiece piece of that text.

    Pieces are matched left to right against the text as the tokenizer saw it (NFKC-normalised: full-width
    "：" is ":" in a piece), with spaces skipped and the ``▁`` word marker dropped, and mapped back to the
    original characters; where the tokenizer changed characters otherwise, the remaining pieces are spread in
    proportion.

    >>> token_char_spans(["▁姓名", ":", "张三"], "姓名:张三")
    [(0, 2), (2, 3), (3, 5)]
    >>> token_char_spans(["▁", "有效期", ":", "2", "年"], "有效期：2年")
    [(0, 0), (0, 3), (3, 4), (4, 5), (5, 6)]
    """
    norm, src = [], []  # the normalised text, and per normalised character its original index
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch):
            norm.append(c)
            src.append(i)
    norm_text = "".join(norm)
    out: list[tuple[int, int]] = []
    pos = 0
    for k, piece in enumerate(pieces):
        core = unicodedata.normalize("NFKC", piece.replace("\u2581", ""))
        while pos < len(norm_text) and norm_text[pos].isspace():
            pos += 1
        if not core:  # a lone word marker: no characters of its own
            at = src[pos] if pos < len(src) else len(text)
            out.append((at, at))
            continue
        if norm_text.startswith(core, pos):
            out.append((src[pos], src[pos + len(core) - 1] + 1))
            pos += len(core)
            continue
        # Fallback: spread what is left of the text over the remaining pieces by their lengths.
        start = src[pos] if pos < len(src) else len(text)
        rest = [max(len(p.replace("\u2581", "")), 1) for p in pieces[k:]]
        left = len(text) - start
        acc = 0
        for n in rest:
            s0 = start + round(left * acc / sum(rest))
            acc += n
            out.append((s0, start + round(left * acc / sum(rest))))
        return out
    return out


def split_box(box: Sequence[float], text_len: int, start: int, end: int,
              char_x: Sequence[float] = ()) -> tuple[int, int, int, int]:
    """The sub-box of characters ``[start, end)`` of a horizontal line ``box`` of ``text_len`` characters.

    Args:
        box: the line's ``(x0, y0, x1, y1)`` pixels.
        text_len: number of characters of the line's text.
        start / end: the character range.
        char_x: each character's centre as a fraction (0..1) of the line's width, from the recognizer's CTC
            steps (``models.text_recognizer``); without them the width is split in proportion to characters.

    Returns:
        ``(x0, y0, x1, y1)`` ints; the full box for the whole range.

    >>> split_box((100, 10, 200, 30), 10, 0, 5)
    (100, 10, 150, 30)
    >>> split_box((100, 10, 200, 30), 4, 2, 4, char_x=(0.1, 0.2, 0.7, 0.9))
    (145, 10, 200, 30)
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if text_len <= 0 or (start <= 0 and end >= text_len):
        return int(x0), int(y0), int(x1), int(y1)
    w = x1 - x0
    if len(char_x) == text_len:
        cx = [float(c) for c in char_x]
        left = 0.0 if start <= 0 else (cx[start - 1] + cx[start]) / 2
        right = 1.0 if end >= text_len else (cx[end - 1] + cx[end]) / 2
    else:
        left, right = start / text_len, end / text_len
    return int(round(x0 + left * w)), int(y0), int(round(x0 + right * w)), int(y1)  # neighbours meet exactly


def continues_line(prev: Sequence[float], box: Sequence[float]) -> bool:
    """Whether text in ``box`` may go on from the text in ``prev`` (both ``(x0, y0, x1, y1)``): the next piece of
    its row (rows overlap by half the lower line, ``box`` starts at most 1.5 line heights right of ``prev``'s end)
    or its next row / character (columns overlap by half the narrower box, ``box`` starts at most 0.8 line heights
    below ``prev``), as a wrapped table cell or vertical text comes out of a line detector.

    >>> continues_line((0, 0, 100, 20), (110, 2, 200, 22)), continues_line((0, 0, 100, 20), (0, 24, 40, 44))
    (True, True)
    >>> continues_line((0, 0, 100, 20), (300, 0, 400, 20)), continues_line((0, 0, 100, 20), (0, 60, 100, 80))
    (False, False)
    """
    h = min(prev[3] - prev[1], box[3] - box[1])
    if h <= 0:
        return False
    rows = min(prev[3], box[3]) - max(prev[1], box[1])
    if rows >= 0.5 * h and -0.25 * h <= box[0] - prev[2] <= 1.5 * h:
        return True
    cols = min(prev[2], box[2]) - max(prev[0], box[0])
    return cols >= 0.5 * min(prev[2] - prev[0], box[2] - box[0]) and -0.3 * h <= box[1] - prev[3] <= 0.8 * h


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def merge_parts(parts: Sequence[str]) -> tuple[str, list[int]]:
    """One line's text from the texts of its parts, and where each part starts in it.

    A space joins two parts only where the right one starts with a Latin letter or digit and the left one ends
    with an ASCII character (an OCR engine reads that gap as a space; between CJK characters it reads none).

    >>> merge_parts(["姓名：", "曹玉华"])
    ('姓名：曹玉华', [0, 3])
    >>> merge_parts(["Name", "John"])
    ('Name John', [0, 5])
    """
    text, starts = "", []
    for t in parts:
        if text and t and text[-1].isascii() and not text[-1].isspace() and _is_latin(t[0]):
            text += " "
        starts.append(len(text))
        text += t
    return text, starts
