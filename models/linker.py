"""The geometric key/value linker: a baseline and a model-free RE for users with an SER model but no RE model.

The rule, per ANSWER entity ``a`` (boxes ``(x0, y0, x1, y1)`` in any one unit, e.g. pixels):

1. **same row, to the left**: among the QUESTIONs that end to the left of ``a`` (``q.x1 <= a.x0 + slack``, slack =
   ``left_slack`` x the answer's height) and overlap it vertically by at least ``row_overlap`` of the smaller
   height, take the one whose right edge is nearest to ``a``'s left edge, if the gap is at most ``max_row_gap``
   x the answer's height;
2. else **above, same column**: among the QUESTIONs that end above ``a`` (``q.y1 <= a.y0 + slack``, slack =
   ``above_slack`` x the answer's height) and overlap it horizontally by at least ``col_overlap`` of the smaller
   width, take the nearest (vertical gap), if the gap is at most ``max_col_gap`` x the answer's height;
3. else ``a`` stays unlinked.

Each answer gets at most one question; a question may have several answers. The tolerances were tuned on training
data only (the default model's train split: XFUND zh train documents 30..138, XFUND de train + val, XFUND fr
val, FUNSD train + test; 557 documents), never on the held-out documents 0..29: pair F1 with gold entities 0.774
with the first guesses, 0.808 tuned (``python -m training.rule_tuning --manifest WORK/manifest.json``).
:data:`DEFAULT_RULE` holds the tuned values.
Pure Python, no Paddle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["RuleConfig", "DEFAULT_RULE", "link_by_rule"]

Box = Sequence[float]


@dataclass(frozen=True)
class RuleConfig:
    """Tolerances of the rule, in units of the answer's box height (except the overlap fractions)."""

    row_overlap: float = 0.3
    left_slack: float = 1.0
    max_row_gap: float = 30.0
    col_overlap: float = 0.1
    above_slack: float = 0.6
    max_col_gap: float = 8.0

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return asdict(self)


DEFAULT_RULE = RuleConfig()


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Overlap of two intervals divided by the shorter one's length (0 when one is empty)."""
    inter = min(a1, b1) - max(a0, b0)
    shorter = min(a1 - a0, b1 - b0)
    return max(inter, 0.0) / shorter if shorter > 0 else 0.0


def _nearest_before(ans: tuple[float, ...], questions: list[tuple[int, tuple[float, ...]]], h: float, *, axis: int,
                    slack: float, overlap: float, max_gap: float) -> int | None:
    """The question that ends before ``ans`` along ``axis`` (0 = x: to its left, 1 = y: above it), overlaps it by
    ``overlap`` on the other axis and is nearest, within ``max_gap`` x ``h``; None if there is none."""
    other = 1 - axis
    found = []
    for q, b in questions:
        gap = ans[axis] - b[axis + 2]
        if not -slack * h <= gap <= max_gap * h:
            continue
        if _overlap(b[other], b[other + 2], ans[other], ans[other + 2]) < overlap:
            continue
        found.append((gap, q))
    return min(found)[1] if found else None


def link_by_rule(boxes: Sequence[Box], labels: Sequence[str],
                 config: RuleConfig = DEFAULT_RULE) -> list[tuple[int, int]]:
    """Links answers to questions by the rule in the module docstring.

    Args:
        boxes: ``(x0, y0, x1, y1)`` of each entity.
        labels: each entity's class (``QUESTION``, ``ANSWER``, anything else is ignored), any case.

    Returns:
        ``(question index, answer index)`` pairs, answers in input order.

    >>> link_by_rule([(0, 0, 50, 10), (60, 0, 90, 10), (0, 20, 40, 30), (0, 32, 40, 42)],
    ...              ["QUESTION", "ANSWER", "QUESTION", "ANSWER"])
    [(0, 1), (2, 3)]
    """
    if len(boxes) != len(labels):
        raise ValueError(f"got {len(boxes)} boxes but {len(labels)} labels")
    kinds = [str(x).strip().upper() for x in labels]
    questions = [i for i, k in enumerate(kinds) if k == "QUESTION"]
    out = []
    for a, kind in enumerate(kinds):
        if kind != "ANSWER":
            continue
        ans = tuple(float(v) for v in boxes[a])
        h = max(ans[3] - ans[1], 1e-6)
        qs = [(q, tuple(float(v) for v in boxes[q])) for q in questions]
        # 1. same row, to the left
        best = _nearest_before(ans, qs, h, axis=0, slack=config.left_slack, overlap=config.row_overlap,
                               max_gap=config.max_row_gap)
        if best is None:  # 2. above, same column
            best = _nearest_before(ans, qs, h, axis=1, slack=config.above_slack, overlap=config.col_overlap,
                                   max_gap=config.max_col_gap)
        if best is not None:
            out.append((best, a))
    return out
