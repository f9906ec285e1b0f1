"""Grid search of the geometric rule's tolerances (``models.linker``) on a manifest's TRAIN split only.

    python -m training.rule_tuning --manifest /tmp/kie_default/manifest.json

Scores each setting by pair F1 with gold entities over the train split's documents and prints the best one;
``models.linker.DEFAULT_RULE`` holds the result. The held-out split is never read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from models.linker import RuleConfig, link_by_rule
from training.metrics import PRF

__all__ = ["rule_f1", "tune_rule", "main"]

GRID = {
    "row_overlap": (0.3, 0.5, 0.7),
    "left_slack": (0.0, 0.5, 1.0),
    "max_row_gap": (10.0, 30.0, 100.0),
    "col_overlap": (0.0, 0.1, 0.3),
    "above_slack": (0.0, 0.3, 0.6),
    "max_col_gap": (2.0, 4.0, 8.0),
}


def rule_f1(documents: list, config: RuleConfig) -> PRF:
    """Pair P/R/F1 of the rule with gold entities over documents (``schemas.annotations.KieDocument``)."""
    tp = n_pred = n_gold = 0
    for d in documents:
        gold = set(d.links())
        pred = set(link_by_rule([ln.box for ln in d.lines], [ln.label for ln in d.lines], config))
        tp, n_pred, n_gold = tp + len(gold & pred), n_pred + len(pred), n_gold + len(gold)
    return PRF.from_counts(tp, n_pred, n_gold)


def tune_rule(documents: list) -> tuple[RuleConfig, PRF]:
    """The best setting on ``documents``: two coordinate-wise passes over :data:`GRID` from the defaults."""
    best = RuleConfig()
    best_f = rule_f1(documents, best)
    for _ in range(2):
        for name, values in GRID.items():
            for v in values:
                cand = dataclasses.replace(best, **{name: v})
                f = rule_f1(documents, cand)
                if f.f1 > best_f.f1:
                    best, best_f = cand, f
    return best, best_f


def main(argv: list[str] | None = None) -> int:
    """Prints the tuned setting and its train-split F1 as JSON."""
    from training.shards import load_manifest, load_split

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    args = p.parse_args(argv)
    docs, _ = load_split(load_manifest(args.manifest), "train")
    seen, unique = set(), []
    for d in docs:  # a shard listed twice (weighting) counts once here
        if d.name not in seen:
            seen.add(d.name)
            unique.append(d)
    default_f = rule_f1(unique, RuleConfig())
    best, f = tune_rule(unique)
    print(json.dumps({"documents": len(unique), "default": default_f.to_dict(), "best": best.to_dict(),
                      "best_scores": f.to_dict(), "grid": {k: list(v) for k, v in GRID.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
