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
        ax0, ay0, ax1, ay1 = (float(v) for v in boxes[a])
        h = max(ay1 - ay0, 1e-6)
        best, best_gap = None, None
        for q in questions:  # 1. same row, to the left
            qx0, qy0, qx1, qy1 = (float(v) for v in boxes[q])
            if qx1 > ax0 + config.left_slack * h or _overlap(qy0, qy1, ay0, ay1) < config.row_overlap:
                continue
            gap = ax0 - qx1
            if gap <= config.max_row_gap * h and (best_gap is None or gap < best_gap):
                best, best_gap = q, gap
        if best is None:
            for q in questions:  # 2. above, same column
                qx0, qy0, qx1, qy1 = (float(v) for v in boxes[q])
                if qy1 > ay0 + config.above_slack * h or _overlap(qx0, qx1, ax0, ax1) < config.col_overlap:
                    continue
                gap = ay0 - qy1
                if gap <= config.max_col_gap * h and (best_gap is None or gap < best_gap):
                    best, best_gap = q, gap
        if best is not None:
            out.append((best, a))
    return out
