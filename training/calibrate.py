"""Calibrate an exported model's decisions on validation data: the SER model's label priors (a bias per BIO label
added to its logits) and the RE model's link threshold.

    python -m training.calibrate --ser_dir models/assets/default_kie/ser --manifest WORK/manifest.json --split val
    python -m training.calibrate --ser_dir SER --re_dir RE --manifest WORK/manifest.json --split val --links

A model trained from scratch on a few hundred pages, with UDML and label smoothing of its own making, need not put
the boundary between OTHER and the entity classes where line-level F1 is best (the default model predicted 17% more
QUESTION/ANSWER/HEADER lines than there are). :func:`tune_label_bias` searches a bias for ``O`` and one for each
class (its ``B-`` and ``I-`` labels alike), by coordinate ascent over a grid, maximising line-level micro F1 over
QUESTION/ANSWER/HEADER with gold OCR and the model's own decoding, on the manifest's *validation* split only; the
result goes into the folder's ``metadata.json`` (``label_bias``), which ``models.kie.KiePredictor`` adds to the logits
before decoding. Nothing else of the model changes.

:func:`tune_link_threshold` picks the probability of "linked" above which the RE model links a candidate pair
(``models.kie.KiePredictor.link_threshold``; 0.5 is PaddleOCR's ``argmax``): the grid value that maximises the sum
of the model's pair F1 with gold OCR and on the gold lines cut as a line detector cuts them
(``training.report.detector_view``), on the validation split only; it goes into the RE folder's ``metadata.json``
(``link_threshold``). A head trained to link only sure pairs (``--re_detector_entities``) can be too sure: the
bundled one linked with precision 0.84 and recall 0.72 on the validation pages at 0.5.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tune_label_bias", "write_label_bias", "tune_link_threshold", "write_link_threshold", "main"]

GRID = tuple(np.round(np.arange(-2.0, 2.01, 0.25), 2))
LINK_GRID = (0.2, 0.3, 0.4, 0.5)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tune_label_bias(ser_dir: str, manifest: str, split: str = "val", *, rounds: int = 2,
                    grid: Sequence[float] = GRID) -> dict[str, Any]:
    """Searches per-label logit biases that maximise line-level micro F1 on ``split``.

    Args:
        ser_dir: an exported SER folder.
        manifest: the shard manifest.
        split: the split to tune on (the validation split; never the held-out test split).
        rounds: coordinate-ascent passes over the groups (``O``, then each class).
        grid: the candidate biases of one group.

    Returns:
        ``{"label_bias": {label: bias}, "f1_before", "f1_after", "split", "documents"}``.
    """
    from models.kie import KiePredictor
    from training.report import _CLASSES, _gold_pages, _line_scores
    from training.shards import load_manifest, load_split

    docs, _ = load_split(load_manifest(manifest), split)
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents")
    kie = KiePredictor.from_dirs(ser_dir)
    kie.label_bias = np.zeros(len(kie.labels))  # tune from the raw logits
    pages = _gold_pages(docs)
    toks = kie.tokens(pages)
    logp = [[None if p is None else np.log(np.clip(p, 1e-30, None)) for p in tk.probs] for tk in toks]
    gold = [[ln.label if ln.label in _CLASSES else "O" for ln in d.lines] for d in docs]
    groups = {"O": ["O"]} | {c: [n for n in kie.labels if n[2:] == c] for c in dict.fromkeys(
        n[2:] for n in kie.labels if n != "O")}

    def score(bias: dict[str, float]) -> float:
        vec = np.array([bias.get(n, 0.0) for n in kie.labels])
        pred = []
        for page, tk, lp in zip(pages, toks, logp):
            shifted = replace(tk, probs=[None if x is None else _softmax(x + vec) for x in lp])
            pred.append(kie.entities(page, shifted)[0])
        return _line_scores(gold, pred)["micro"]["hmean"]

    bias: dict[str, float] = {}
    before = best = score(bias)
    for _ in range(rounds):
        for names in groups.values():
            for b in grid:
                trial = {**bias, **{n: float(b) for n in names}}
                f1 = score(trial)
                # ties go to the smaller bias, so an uninformative split leaves the model as it is
                current = abs(bias.get(names[0], 0.0))
                if f1 > best + 1e-9 or (abs(f1 - best) <= 1e-9 and abs(b) < current):
                    best, bias = f1, trial
    return {"label_bias": {k: v for k, v in bias.items() if v}, "f1_before": before, "f1_after": best,
            "split": split, "documents": len(docs), "decode": kie.decode}


def _record(folder: str, key: str, result: dict[str, Any]) -> None:
    """``result[key]`` and the rest of ``result`` (as ``KEY_tuning``) into the folder's ``metadata.json``, and
    ``SHA256SUMS`` re-sealed."""
    from models.integrity import write_sha256sums

    path = Path(folder) / "metadata.json"
    meta = json.loads(path.read_text())
    meta[key] = result[key]
    meta[f"{key}_tuning"] = {k: v for k, v in result.items() if k != key}
    path.write_text(json.dumps(meta, indent=2, default=str))
    write_sha256sums(folder)


def write_label_bias(ser_dir: str, result: dict[str, Any]) -> None:
    """Records a :func:`tune_label_bias` result in the SER folder (``label_bias``)."""
    _record(ser_dir, "label_bias", result)


def tune_link_threshold(ser_dir: str, re_dir: str, manifest: str, split: str = "val", *,
                        grid: Sequence[float] = LINK_GRID) -> dict[str, Any]:
    """Searches the RE link threshold that maximises pair F1 with gold OCR plus on the detector view, on ``split``.

    Args:
        ser_dir / re_dir: exported SER and RE folders (the SER model's own decoding settings apply).
        manifest: the shard manifest.
        split: the split to tune on (the validation split; never the held-out test split).
        grid: the candidate thresholds; ties go to the one nearest 0.5.

    Returns:
        ``{"link_threshold", "scores": {threshold: {"gold_ocr", "detector_view", "sum"}}, "split", "documents"}``.
    """
    from models.kie import KiePredictor
    from training.report import _gold_pages, _gold_pairs, _pair_rows, detector_view
    from training.shards import load_manifest, load_split

    docs, _ = load_split(load_manifest(manifest), split)
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents")
    kie = KiePredictor.from_dirs(ser_dir, re_dir)
    if kie.re is None:
        raise ValueError(f"{re_dir}: no RE model to tune")
    gold = [_gold_pairs(d) for d in docs]
    views = []
    for pages in (_gold_pages(docs), detector_view(docs)):
        toks = kie.tokens(pages)
        views.append((pages, toks, [kie.entities(p, t) for p, t in zip(pages, toks)]))
    scores: dict[float, dict[str, float]] = {}
    for t in grid:
        kie.link_threshold = float(t)
        f1 = [_pair_rows(kie, pages, toks, decoded, gold)["model"]["hmean"] for pages, toks, decoded in views]
        scores[float(t)] = {"gold_ocr": f1[0], "detector_view": f1[1], "sum": f1[0] + f1[1]}
    best = max(scores, key=lambda t: (round(scores[t]["sum"], 9), -abs(t - 0.5)))
    return {"link_threshold": best, "scores": scores, "split": split, "documents": len(docs)}


def write_link_threshold(re_dir: str, result: dict[str, Any]) -> None:
    """Records a :func:`tune_link_threshold` result in the RE folder (``link_threshold``)."""
    _record(re_dir, "link_threshold", result)


def main(argv: list[str] | None = None) -> int:
    """Command line: tune and (with ``--write``) record the biases, or with ``--links`` the link threshold."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ser_dir", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--re_dir", help="the RE folder (--links)")
    p.add_argument("--links", action="store_true", help="tune the RE link threshold instead of the SER biases")
    p.add_argument("--write", action="store_true",
                   help="record the result in SER_DIR/metadata.json (with --links: RE_DIR/metadata.json)")
    args = p.parse_args(argv)
    if args.split == "test":
        print("calibrate: refusing to tune on the test split (held out)", file=sys.stderr)
        return 2
    if args.links and not args.re_dir:
        print("calibrate: --links needs --re_dir", file=sys.stderr)
        return 2
    if args.links:
        result = tune_link_threshold(args.ser_dir, args.re_dir, args.manifest, args.split)
    else:
        result = tune_label_bias(args.ser_dir, args.manifest, args.split)
    print(json.dumps(result, indent=2))
    if args.write:
        (write_link_threshold if args.links else write_label_bias)(args.re_dir if args.links else args.ser_dir,
                                                                    result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
