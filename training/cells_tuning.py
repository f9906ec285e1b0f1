"""The wrapped-cell gap of models trained here (``models.reading_order.cells_together``, SER metadata ``cells_gap``),
measured on pages the SER model never saw: a fold model's ``test`` split (``training.default_model --fold``).

    python -m training.cells_tuning --ser_dir FOLD_EXPORT/ser --manifest /tmp/kie/fold30/manifest.json \
        --split test --gaps 0 0.15 0.3 0.5

For each gap it prints one JSON line, the geometric rule (``models.linker``) linking the decoded entities, so that no
RE head trained on one reading order favours it: ``e2e_pairs`` (from the page images through the bundled OCR, where
the split has images; XFUND zh 30..39 for the default manifests), ``detector_view_pairs`` (the gold lines cut as a
line detector cuts them, ``training.report.detector_view``), ``gold_ocr_pairs`` and ``line_f1`` (gold lines, BIO
decoding), and where the end-to-end question ends went (``question_end``, ``training.report.pair_losses``).
``training.default_model.CELLS_GAP`` records the choice. Never run it on the held-out split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["gap_scores", "main"]


def gap_scores(ser_dir: str, manifest: str, split: str, gaps: Sequence[float]) -> list[dict[str, Any]]:
    """One row of scores per gap (module docstring)."""
    from models.kie import KiePredictor
    from models.ocr import OcrPredictor
    from training.data import split_images
    from training.report import (
        _CLASSES,
        _gold_pages,
        _gold_pairs,
        _line_scores,
        _pair_rows,
        _rule_links,
        detector_view,
        pair_losses,
    )
    from training.shards import load_manifest, load_split

    m = load_manifest(manifest)
    docs, _ = load_split(m, split)
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents")
    found = split_images(m, split, docs)
    kept = [d for d, im in zip(docs, found) if im is not None]
    images = [im for im in found if im is not None]
    ocr = OcrPredictor()(images) if images else []
    kie = KiePredictor.from_dirs(ser_dir, "rule", decode="bio")
    views = {"detector_view_pairs": detector_view(docs), "gold_ocr_pairs": _gold_pages(docs)}
    gold_pairs = [_gold_pairs(d) for d in docs]
    gold_lines = [[ln.label if ln.label in _CLASSES else "O" for ln in d.lines] for d in docs]
    rows = []
    for gap in gaps:
        kie.cells_gap = float(gap)
        row: dict[str, Any] = {"gap": float(gap), "documents": len(docs), "pages_with_images": len(kept)}
        if kept:
            read, boxed = kie.box_views(ocr)
            toks = kie.tokens(read, images)
            decoded = [kie.entities(r, t, boxes=b) for r, b, t in zip(read, boxed, toks)]
            row["e2e_pairs"] = _rule_f1(_pair_rows(kie, boxed, toks, decoded, [_gold_pairs(d) for d in kept]))
            ents = [e for _, _, e in decoded]
            row["question_end"] = pair_losses(kept, boxed, ents, [_rule_links(e) for e in ents])["question_end"]
        for name, pages in views.items():
            toks = kie.tokens(pages)
            out = [kie.entities(p, t) for p, t in zip(pages, toks)]
            row[name] = _rule_f1(_pair_rows(kie, pages, toks, out, gold_pairs))
            if name == "gold_ocr_pairs":
                row["line_f1"] = round(_line_scores(gold_lines, [n for n, _, _ in out])["micro"]["hmean"], 4)
        rows.append(row)
    return rows


def _rule_f1(rows: dict[str, Any]) -> float:
    return round(rows["rule"]["hmean"], 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ser_dir", required=True, help="an exported SER folder (a fold model's, with its decoding)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="test", help="pages that SER model never saw (a fold's test split)")
    p.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.15, 0.3, 0.5],
                   help="cells_gap values, line heights (0: tb-yx as it is)")
    args = p.parse_args(argv)
    if any(not 0.0 <= g <= 1.0 for g in args.gaps):
        p.error(f"--gaps {args.gaps}: each must be in [0, 1] line heights")
    for row in gap_scores(args.ser_dir, args.manifest, args.split, args.gaps):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
