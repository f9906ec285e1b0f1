"""The OCR box margin of models trained here (``models.kie.tighten_boxes``), tuned on a manifest's TRAIN split only.

    python -m training.box_tuning --ser_dir models/assets/default_kie/ser --re_dir models/assets/default_kie/re \
        --manifest /tmp/kie_default/manifest.json

Runs the bundled OCR once over the train split's documents that have a page image (XFUND zh train documents 30..39
for the default manifest) and prints, as JSON:

* ``boxes``: how the detector's boxes sit against the annotated ones, for the lines whose text the recognizer got
  exactly right: each edge's offset in units of the annotated height, and the height ratio (quantiles);
* ``margins``: end-to-end pair F1 (``training.report.pair_scores``: both ends' boxes IoU >= 0.5) of the model's
  and the rule's pairs for each margin of :data:`GRID`, the models reading the tightened boxes too
  (``ocr_box_margin``);
* ``entity_margins``: the same with only the entities' boxes tightened (``entity_box_margin``);
* ``best``: the model's best margin of each.

The held-out split is never read. The input margin it favoured did not carry over to unseen pages (the model knows
these pages' annotated boxes by heart, so tightened inputs help it here only); the entity margin leaves what the
models read unchanged. ``training.default_model.OCR_BOX_MARGIN`` / ``ENTITY_BOX_MARGIN`` record the choices.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GRID", "box_offsets", "margin_scores", "main"]

GRID = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12)


def box_offsets(docs: Sequence[Any], pages: Sequence[Any]) -> dict[str, list[float]]:
    """Quantiles (10/25/50/75/90%) of the detector box's edges minus the annotated box's, over the annotated
    height, and of the height ratio, for every line the recognizer read exactly (spaces ignored) that overlaps its
    annotation."""
    from training.metrics import box_iou

    rows = []
    for doc, page in zip(docs, pages):
        for g in doc.lines:
            for ln in page.lines:
                if ln.text.replace(" ", "") == g.text.replace(" ", "") and box_iou(g.box, ln.box) > 0.2:
                    h = max(g.box[3] - g.box[1], 1)
                    rows.append([(o - a) / h for o, a in zip(ln.box, g.box)] + [(ln.box[3] - ln.box[1]) / h])
    r = np.array(rows).reshape(-1, 5)
    q = (0.1, 0.25, 0.5, 0.75, 0.9)
    out = {name: [round(float(v), 3) for v in np.quantile(r[:, i], q)] if len(r) else []
           for i, name in enumerate(("x0", "y0", "x1", "y1", "height_ratio"))}
    return {"lines": len(r), "quantiles": list(q), **out}


def margin_scores(kie: Any, docs: Sequence[Any], pages: Sequence[Any], margins: Sequence[float] = GRID, *,
                  entities_only: bool = False) -> dict[str, dict[str, Any]]:
    """End-to-end pair scores of the model and the rule with each box margin: the boxes the models read and the
    entities get (``KiePredictor.ocr_box_margin``), or with ``entities_only`` the entities' boxes alone
    (``entity_box_margin``; the models read the detector's boxes)."""
    from models.kie import tighten_boxes
    from training.report import _gold_pairs, _pair_rows

    gold = [_gold_pairs(d) for d in docs]
    out = {}
    toks = kie.tokens(pages) if entities_only else None
    for margin in margins:
        tight = [tighten_boxes(p, margin) for p in pages]
        read, tk = (pages, toks) if entities_only else (tight, kie.tokens(tight))
        decoded = [kie.entities(r, t, boxes=b) for r, b, t in zip(read, tight, tk)]
        out[f"{margin:g}"] = _pair_rows(kie, tight, tk, decoded, gold)
    return out


def main(argv: list[str] | None = None) -> int:
    """Prints the box offsets and the margin scores as JSON."""
    from models.kie import KiePredictor
    from models.ocr import OcrPredictor
    from training.data import split_images
    from training.shards import load_manifest, load_split

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ser_dir", required=True)
    p.add_argument("--re_dir", required=True)
    p.add_argument("--manifest", required=True)
    args = p.parse_args(argv)
    m = load_manifest(args.manifest)
    docs, _ = load_split(m, "train")
    unique = list({d.name: d for d in docs}.values())  # a shard listed twice (weighting) counts once here
    found = split_images(m, "train", unique)
    docs = [d for d, im in zip(unique, found) if im is not None]
    if not docs:
        raise SystemExit("no train-split document has a page image (shards need an image_dir)")
    pages = OcrPredictor()([im for im in found if im is not None])
    kie = KiePredictor.from_dirs(args.ser_dir, args.re_dir)
    grids = {key: margin_scores(kie, docs, pages, entities_only=key == "entity_margins")
             for key in ("margins", "entity_margins")}
    best = {key: float(max(g, key=lambda k: g[k]["model"]["hmean"])) for key, g in grids.items()}
    print(json.dumps({"documents": [d.name for d in docs], "boxes": box_offsets(docs, pages), **grids,
                      "best": best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
