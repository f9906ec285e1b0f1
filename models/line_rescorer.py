"""The line re-scorer: a second look at each OCR line's SER class, from the line's neighbourhood.

The SER model labels tokens, and the BIO decoder turns them into line labels and entities
(``models.kie.KiePredictor.entities``). What it gets wrong most on unseen forms is a line's role in its row: a key
whose field is empty (XFUND labels it OTHER, the model calls it QUESTION), a table's cell called a key. The
re-scorer reads, per line, what the model said about the line *and about its nearest neighbours* (right on its row,
below in its column, left, above), the gaps to them, its colon, its length and whether the geometric rule
(``models.linker``) links it, and gives the line a class again with a multinomial logistic regression
(:data:`LINE_FEATURES`; ``training.line_rescorer`` fits it). Numpy only; its weights live in the SER folder's
``metadata.json`` (``line_rescorer``), so there is no file to unpickle.

It is fitted on the outputs of a *fold* model (``training.default_model --fold``) on pages that model never saw:
the bundled model knows its own training pages by heart, so its outputs there would teach the re-scorer to trust
it. :meth:`models.kie.KiePredictor.entities` applies it after decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LINE_CLASSES", "LINE_FEATURES", "LineRescorer", "line_class_probs", "neighbours", "line_features"]

LINE_CLASSES = ("O", "QUESTION", "ANSWER", "HEADER")
"""The classes the re-scorer reads and gives (XFUND's; ``O`` for OTHER)."""
DIRECTIONS = ("right", "below", "left", "above")
_MAX_GAP = 10.0  # neighbours farther than this many line heights are not neighbours
LINE_FEATURES: tuple[str, ...] = (
    *(f"p_{c}" for c in LINE_CLASSES),  # the line's tokens' mean class probability (B-X + I-X)
    *(f"is_{c}" for c in LINE_CLASSES),  # the decoder's line label
    "ends_colon", "has_colon", "log_chars",
    "rule_question", "rule_answer",  # the line is part of a question / an answer the rule links
    *(f"gap_{d}" for d in DIRECTIONS),  # gap to the nearest neighbour / 10 line heights (1: none)
    *(f"{d}_{x}" for d in DIRECTIONS for x in (*(f"p_{c}" for c in LINE_CLASSES), "exists")),
)
_COLONS = (":", "：")


def line_class_probs(labels: Sequence[str], token_probs: Sequence[np.ndarray | None]) -> np.ndarray:
    """``(lines, 4)``: per line, the mean over its tokens of each class's probability (``B-X`` + ``I-X``);
    ``[1, 0, 0, 0]`` for a line without tokens (None).

    >>> line_class_probs(["O", "B-QUESTION", "I-QUESTION"], [np.array([[0.2, 0.5, 0.3]]), None])[:, :2].tolist()
    [[0.2, 0.8], [1.0, 0.0]]
    """
    to_class = np.zeros((len(labels), len(LINE_CLASSES)))
    for j, name in enumerate(labels):
        cls = name[2:] if name[:2] in ("B-", "I-") else "O"
        if cls in LINE_CLASSES:
            to_class[j, LINE_CLASSES.index(cls)] = 1.0
    out = np.zeros((len(token_probs), len(LINE_CLASSES)))
    out[:, 0] = 1.0
    for k, pr in enumerate(token_probs):
        if pr is not None and len(pr):
            out[k] = pr.mean(axis=0) @ to_class
    return out


def neighbours(boxes: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Each line's nearest neighbour in each of :data:`DIRECTIONS` and the gap to it in its own heights.

    Right/left: lines that overlap its row by more than 0.4 of the smaller height and start after its right edge
    (end before its left edge), 0.2 of its height of overlap allowed; below/above: lines that overlap its columns and
    start below its bottom (end above its top), with the same allowance. The nearest by gap, the first line on ties;
    only gaps under 10 heights count.

    Returns:
        ``(index, gap)``, both ``(lines, 4)``: the neighbour's line index (-1: none) and the gap (10: none).

    >>> idx, gap = neighbours([(0, 0, 10, 10), (15, 0, 30, 10), (0, 20, 10, 30)])
    >>> idx.tolist(), gap[0].tolist()
    ([[1, 2, -1, -1], [-1, -1, 0, -1], [-1, -1, -1, 0]], [0.5, 1.0, 10.0, 10.0])
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    index, gap = np.full((n, 4), -1, dtype=np.int64), np.full((n, 4), _MAX_GAP)
    if n < 2:
        return index, gap
    x0, y0, x1, y1 = (b[:, i] for i in range(4))
    h = np.maximum(y1 - y0, 1.0)
    col = lambda v: v[:, None]  # noqa: E731 (this line i, against every line j in the row axis)
    y_over = np.minimum(col(y1), y1) - np.maximum(col(y0), y0)
    x_over = np.minimum(col(x1), x1) - np.maximum(col(x0), x0)
    other = ~np.eye(n, dtype=bool)
    row = other & (y_over > 0.4 * np.minimum(col(h), y1 - y0 + 1.0))
    column = other & (x_over > 0)
    right_side = x0 >= col(x1) - 0.2 * col(h)
    below_side = y0 >= col(y1) - 0.2 * col(h)
    cands = ((row & right_side, (x0 - col(x1)) / col(h)),
             (column & below_side, (y0 - col(y1)) / col(h)),
             (row & ~right_side & (x1 <= col(x0) + 0.2 * col(h)), (col(x0) - x1) / col(h)),
             (column & ~below_side & (y1 <= col(y0) + 0.2 * col(h)), (col(y0) - y1) / col(h)))
    for d, (ok, g) in enumerate(cands):
        g = np.where(ok & (g < _MAX_GAP), g, np.inf)
        best = g.argmin(axis=1)
        found = np.isfinite(g[np.arange(n), best])
        index[found, d] = best[found]
        gap[found, d] = g[found, best[found]]
    return index, gap


def line_features(boxes: Sequence[Sequence[float]], texts: Sequence[str], class_probs: np.ndarray,
                  line_labels: Sequence[str], rule_question: Sequence[bool], rule_answer: Sequence[bool]
                  ) -> np.ndarray:
    """``(lines, len(LINE_FEATURES))`` float64: the re-scorer's inputs, in :data:`LINE_FEATURES` order.

    Args:
        boxes: the lines' boxes (any one unit).
        texts: the lines' texts.
        class_probs: :func:`line_class_probs`.
        line_labels: the decoder's label per line (``O`` or a class of :data:`LINE_CLASSES`).
        rule_question / rule_answer: per line, whether it is part of a question / an answer the rule links.
    """
    n = len(texts)
    if not len(boxes) == len(class_probs) == len(line_labels) == len(rule_question) == len(rule_answer) == n:
        raise ValueError("line_features needs one box, class row, label and rule flag per text")
    index, gap = neighbours(boxes)
    is_label = np.zeros((n, len(LINE_CLASSES)))
    for k, name in enumerate(line_labels):
        is_label[k, LINE_CLASSES.index(name if name in LINE_CLASSES else "O")] = 1.0
    stripped = [t.strip() for t in texts]
    own = np.column_stack([class_probs, is_label,
                           [float(t.endswith(_COLONS)) for t in stripped],
                           [float(any(c in t for c in _COLONS)) for t in stripped],
                           np.log1p([len(t) for t in stripped]),
                           np.asarray(rule_question, dtype=np.float64), np.asarray(rule_answer, dtype=np.float64),
                           np.minimum(gap, _MAX_GAP) / _MAX_GAP]) if n else np.zeros((0, 17))
    parts = [own]
    for d in range(len(DIRECTIONS)):
        j = index[:, d]
        probs = np.where((j >= 0)[:, None], class_probs[np.maximum(j, 0)] if n else class_probs, 0.0)
        parts += [probs, (j >= 0).astype(np.float64)[:, None]]
    out = np.concatenate(parts, axis=1) if n else np.zeros((0, len(LINE_FEATURES)))
    assert out.shape[1] == len(LINE_FEATURES)
    return out


@dataclass(frozen=True)
class LineRescorer:
    """A multinomial logistic regression over :data:`LINE_FEATURES`.

    Attributes:
        coef: ``(classes, features)`` weights.
        intercept: ``(classes,)``.
        classes: the class of each row (:data:`LINE_CLASSES`).
        features: the feature names it was fitted on (must be this version's :data:`LINE_FEATURES`).
        fitted_on: where it was fitted (a note for the model card).
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: tuple[str, ...] = LINE_CLASSES
    features: tuple[str, ...] = LINE_FEATURES
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if tuple(self.features) != LINE_FEATURES:
            raise ValueError(f"the line re-scorer was fitted on features {list(self.features)}, which are not this "
                             f"version's {list(LINE_FEATURES)}")
        if tuple(self.classes) != LINE_CLASSES:
            raise ValueError(f"line re-scorer classes {list(self.classes)} != {list(LINE_CLASSES)}")
        if np.shape(self.coef) != (len(LINE_CLASSES), len(LINE_FEATURES)) or np.shape(self.intercept) != (
                len(LINE_CLASSES),):
            raise ValueError(f"line re-scorer weights of shape {np.shape(self.coef)} / {np.shape(self.intercept)}, "
                             f"expected {(len(LINE_CLASSES), len(LINE_FEATURES))} / {(len(LINE_CLASSES),)}")

    def probs(self, x: np.ndarray) -> np.ndarray:
        """``(lines, classes)`` class probabilities of feature rows ``x``."""
        z = np.asarray(x, dtype=np.float64) @ np.asarray(self.coef).T + np.asarray(self.intercept)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        """The ``metadata.json`` form."""
        return {"kind": "logistic", "classes": list(self.classes), "features": list(self.features),
                "coef": np.round(np.asarray(self.coef), 6).tolist(),
                "intercept": np.round(np.asarray(self.intercept), 6).tolist(), "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LineRescorer:
        """From :meth:`to_dict`'s form; ValueError on another kind, features or shapes."""
        if d.get("kind") != "logistic":
            raise ValueError(f"line_rescorer kind {d.get('kind')!r}: this version reads 'logistic'")
        return cls(np.asarray(d["coef"], dtype=np.float64), np.asarray(d["intercept"], dtype=np.float64),
                   tuple(d.get("classes", ())), tuple(d.get("features", ())), str(d.get("fitted_on", "")))
