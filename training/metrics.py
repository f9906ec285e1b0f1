"""KIE metrics, pure Python: SER entity F1 (seqeval-compatible), RE pair F1, end-to-end OCR+SER matching.

* SER (PaddleOCR ``VQASerTokenMetric``): seqeval ``f1_score`` defaults -- micro average over entities,
  conlleval-style chunking (not strict), on per-document BIO tag lists. Re-implemented here (and tested against
  the ``seqeval`` package) so training has no hard dependency on it.
* RE (``VQAReTokenMetric``, ``re_score(mode="boundaries")``): micro F1 over ``(head span, tail span)`` pairs
  per document, with gold entities.
* End-to-end (``ppstructure/kie/tools/eval_with_label_end2end.py``): predicted and gold lines are matched
  greedily by descending polygon IoU (>= 0.5); a hit needs equal text (spaces ignored) and equal label;
  background labels (O/OTHER/OTHERS) are dropped from both sides first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PRF", "ser_entities", "ser_scores", "re_scores", "end2end_scores", "format_table", "box_iou",
           "edit_distance"]

_BACKGROUND = {"O", "OTHER", "OTHERS", "IGNORE"}


@dataclass(frozen=True)
class PRF:
    """Precision / recall / F1 with the counts behind them."""

    precision: float
    recall: float
    f1: float
    support: int  # gold count
    predicted: int
    correct: int

    @classmethod
    def from_counts(cls, correct: int, predicted: int, gold: int) -> PRF:
        """Builds the scores from counts (0 where a denominator is 0, as seqeval)."""
        p = correct / predicted if predicted else 0.0
        r = correct / gold if gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f, gold, predicted, correct)

    def to_dict(self) -> dict[str, float | int]:
        """Returns a JSON-ready dict."""
        return {"precision": self.precision, "recall": self.recall, "hmean": self.f1, "support": self.support,
                "predicted": self.predicted, "correct": self.correct}


def _split(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != kind


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag != "O" and prev_type != kind


def ser_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks one BIO(ES) tag sequence into entities, conlleval-style (as seqeval's default mode).

    Args:
        tags: e.g. ``["B-QUESTION", "I-QUESTION", "O"]``.

    Returns:
        ``(type, start, end_inclusive)`` per entity.

    >>> ser_entities(["B-Q", "I-Q", "O", "I-A"])
    [('Q', 0, 1), ('A', 3, 3)]
    """
    out: list[tuple[str, int, int]] = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):
        cur, kind = _split(tag)
        if _ends(prev, cur, prev_type, kind) and prev != "O":
            out.append((prev_type, begin, i - 1))
        if _starts(prev, cur, prev_type, kind):
            begin = i
        prev, prev_type = cur, kind
    return out


def ser_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[PRF, dict[str, PRF]]:
    """SER entity scores over documents (seqeval micro average).

    Args:
        gold: per-document gold tag lists.
        pred: per-document predicted tag lists (same lengths).

    Returns:
        ``(micro, per_class)``; ``micro.f1`` is PaddleOCR's SER hmean.
    """
    if len(gold) != len(pred):
        raise ValueError(f"got {len(gold)} gold and {len(pred)} predicted documents")
    g_all: set[tuple[int, str, int, int]] = set()
    p_all: set[tuple[int, str, int, int]] = set()
    for d, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"document {d}: {len(g)} gold tags but {len(p)} predicted tags")
        g_all |= {(d, *e) for e in ser_entities(g)}
        p_all |= {(d, *e) for e in ser_entities(p)}
    per_class = {}
    for kind in sorted({e[1] for e in g_all | p_all}):
        gk = {e for e in g_all if e[1] == kind}
        pk = {e for e in p_all if e[1] == kind}
        per_class[kind] = PRF.from_counts(len(gk & pk), len(pk), len(gk))
    return PRF.from_counts(len(g_all & p_all), len(p_all), len(g_all)), per_class


Span = tuple[int, int]


def re_scores(gold: Sequence[Sequence[tuple[Span, Span]]], pred: Sequence[Sequence[tuple[Span, Span]]]) -> PRF:
    """RE micro scores over ``(head span, tail span)`` pairs ("boundaries" mode).

    Args:
        gold: per-document gold pairs (token spans of question and answer entities).
        pred: per-document predicted pairs.

    Returns:
        The micro scores; ``f1`` is PaddleOCR's RE hmean.
    """
    if len(gold) != len(pred):
        raise ValueError(f"got {len(gold)} gold and {len(pred)} predicted documents")
    tp = fp = fn = 0
    for g, p in zip(gold, pred):
        gs, ps = {tuple(map(tuple, x)) for x in g}, {tuple(map(tuple, x)) for x in p}
        tp, fp, fn = tp + len(gs & ps), fp + len(ps - gs), fn + len(gs - ps)
    return PRF.from_counts(tp, tp + fp, tp + fn)


Item = tuple[Sequence[Sequence[float]], str, str]  # (polygon, text, label)


def _iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def end2end_scores(gold: Sequence[Sequence[Item]], pred: Sequence[Sequence[Item]], *, iou_threshold: float = 0.5,
                   ignore_space: bool = True, ignore_case: bool = False,
                   ignore_background: bool = True) -> PRF:
    """End-to-end OCR+SER scores as PaddleOCR's ``eval_with_label_end2end``.

    Args:
        gold: per page, ``(polygon, text, label)`` of the gold lines.
        pred: per page, the predicted lines (OCR polygon, OCR text, SER label).
        iou_threshold: minimum polygon IoU for a match.
        ignore_space / ignore_case: text normalisation before comparing.
        ignore_background: drop O/OTHER/OTHERS lines on both sides.

    Returns:
        precision = hits / predicted, recall = hits / gold.
    """
    if len(gold) != len(pred):
        raise ValueError(f"got {len(gold)} gold and {len(pred)} predicted pages")

    def norm(t: str) -> str:
        t = t.replace(" ", "") if ignore_space else t
        return t.lower() if ignore_case else t

    def keep(items: Sequence[Item]) -> list[Item]:
        return [x for x in items if not (ignore_background and x[2].upper() in _BACKGROUND)]

    hits = n_gold = n_pred = 0
    for g_items, p_items in zip(gold, pred):
        g, p = keep(g_items), keep(p_items)
        n_gold, n_pred = n_gold + len(g), n_pred + len(p)
        cands = sorted(((_iou(gp[0], pp[0]), i, j) for i, gp in enumerate(g) for j, pp in enumerate(p)),
                       reverse=True)
        used_g: set[int] = set()
        used_p: set[int] = set()
        for iou, i, j in cands:
            if iou < iou_threshold:
                break
            if i in used_g or j in used_p:
                continue
            used_g.add(i)
            used_p.add(j)
            if norm(g[i][1]) == norm(p[j][1]) and g[i][2].upper() == p[j][2].upper():
                hits += 1
    return PRF.from_counts(hits, n_pred, n_gold)


def format_table(micro: PRF, per_class: dict[str, PRF] | None = None) -> str:
    """Formats a per-class precision / recall / F1 table.

    Args:
        micro: the overall scores.
        per_class: optional per-class scores.

    Returns:
        A plain-text table.
    """
    rows = [f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for name, s in sorted((per_class or {}).items()):
        rows.append(f"{name:<12}{s.precision:>10.4f}{s.recall:>10.4f}{s.f1:>10.4f}{s.support:>9d}")
    rows.append(f"{'micro':<12}{micro.precision:>10.4f}{micro.recall:>10.4f}{micro.f1:>10.4f}{micro.support:>9d}")
    return "\n".join(rows)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1).

    >>> edit_distance("kitten", "sitting")
    3
    """
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
