"""Fits the line re-scorer (``models.line_rescorer``) on a fold model's outputs and writes it into a SER folder.

    python -m training.line_rescorer --ser_dir /tmp/kie/fold30/ser/best /tmp/kie/fold70/ser/best \
        --manifest /tmp/kie/fold30/manifest.json /tmp/kie/fold70/manifest.json --split test \
        --into COPY_OF_THE_BUNDLE/ser

The SER model that gives the features must not have seen the pages it is fitted on: the bundled model's own
training pages come out nearly perfect, so a re-scorer fitted there would learn to trust the decoder. A fold model
(``training.default_model --fold A:B``: the bundled recipe without XFUND zh A..B-1) gives honest outputs on A..B-1;
the re-scorer fitted on them is then written into the bundled SER folder (``metadata.json`` ``line_rescorer``,
``SHA256SUMS`` re-pinned), whose outputs on unseen pages look like the fold model's on its fold.

The fit is a multinomial logistic regression, L2-penalised as scikit-learn's ``LogisticRegression(C=c)``
(penalty ``||W||^2 / 2``, the intercept free), in numpy; it prints the line-level F1 before and after with the
fitting pages cut into 5-document groups, each scored by a fit on the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from models.line_rescorer import LINE_CLASSES, LineRescorer

__all__ = ["Rows", "fit_logistic", "collect_lines", "fit_line_rescorer", "write_into", "main"]


class Rows(NamedTuple):
    """One page's lines in one view: the re-scorer's inputs, the gold classes, the decoder's labels."""

    x: np.ndarray
    y: np.ndarray
    names: list[str]
    doc: int = 0
    view: str = "gold"


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, *, c: float = 1.0, steps: int = 3000,
                 lr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: ``(coef (classes, features), intercept (classes,))`` minimising
    ``sum(cross-entropy) + ||coef||^2 / (2 c)`` by full-batch Adam (a convex objective: one minimum).

    >>> w, b = fit_logistic(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]), 2, c=100.0)
    >>> bool((np.array([[0.0], [3.0]]) @ w.T + b).argmax(1).tolist() == [0, 1])
    True
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or not len(y):
        raise ValueError(f"fit_logistic needs rows x {x.shape} and one label each {y.shape}")
    if c <= 0:
        raise ValueError(f"c={c} must be positive")
    onehot = np.eye(n_classes)[y]
    params = [np.zeros((n_classes, x.shape[1])), np.zeros(n_classes)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    scale = 1.0 / len(y)  # the objective divided by the row count: the step size does not depend on it
    for t in range(1, steps + 1):
        z = x @ params[0].T + params[1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        d = (p - onehot) * scale
        grads = [d.T @ x + params[0] * scale / c, d.sum(axis=0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-12)
    return params[0], params[1]


def collect_lines(ser_dir: str, manifest: str, split: str, *, views: Sequence[str] = ("gold", "detector")
                  ) -> list[Rows]:
    """Per document of the split and view: its :class:`Rows`, with
    the SER folder's own decoding and no re-scorer (``KiePredictor.line_features``). Views: ``gold``, the
    annotated lines; ``detector``, the same cut as a line detector cuts them (``training.report.detector_view``),
    each cut line with its annotated line's class: the pipeline's lines are the detector's."""
    from models.kie import KiePredictor
    from training.report import _gold_pages, detector_view_sources
    from training.shards import load_manifest, load_split

    docs, _ = load_split(load_manifest(manifest), split)
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents")
    unknown = set(views) - {"gold", "detector"}
    if unknown or not views:
        raise ValueError(f"views {list(views)}: expected gold and/or detector")
    kie = KiePredictor.from_dirs(ser_dir, None)
    kie.line_rescorer = None  # the decoder's own view: what a re-scorer is fitted to correct
    gold = [[LINE_CLASSES.index(ln.label if ln.label in LINE_CLASSES else "O") for ln in d.lines] for d in docs]
    pages: list[tuple[Any, list[int], int, str]] = []
    for view in views:
        pages += ([(p, g, i, view) for i, (p, g) in enumerate(zip(_gold_pages(docs), gold))] if view == "gold" else
                  [(p, [g[k] for k in src], i, view) for i, ((p, src), g) in
                   enumerate(zip(detector_view_sources(docs), gold))])
    out = []
    for (page, y, doc, view), tk in zip(pages, kie.tokens([p[0] for p in pages])):
        names, _, ents = kie.entities(page, tk, decode="bio")
        out.append(Rows(kie.line_features(page, tk, names, ents), np.array(y, dtype=np.int64), names, doc, view))
    return out


def _line_f1(gold: Sequence[np.ndarray], pred: Sequence[Sequence[str]]) -> float:
    from training.report import _line_scores

    return _line_scores([[LINE_CLASSES[i] for i in g] for g in gold], pred)["micro"]["hmean"]


def fit_line_rescorer(rows: Sequence[Rows], *, c: float = 1.0, fitted_on: str = "", group: int = 5
                      ) -> tuple[LineRescorer, dict[str, Any]]:
    """The re-scorer fitted on every row, and its check: the line-level F1 of the gold-line rows (view ``gold``)
    before and after re-scoring, each group of ``group`` documents re-scored by a fit on the other documents."""
    k = len(LINE_CLASSES)
    docs = sorted({r.doc for r in rows})
    gold_rows, preds = [], []
    for s in range(0, len(docs), group):
        held = set(docs[s:s + group])
        rest = [r for r in rows if r.doc not in held]
        if not rest:
            break
        w, b = fit_logistic(np.concatenate([r.x for r in rest]), np.concatenate([r.y for r in rest]), k, c=c)
        for r in rows:
            if r.doc in held and r.view == "gold":
                gold_rows.append(r)
                preds.append([LINE_CLASSES[i] for i in (r.x @ w.T + b).argmax(axis=1)])
    check: dict[str, Any] = {"documents": len(docs), "views": sorted({r.view for r in rows}), "group": group, "c": c}
    if gold_rows and len(docs) > group:
        check.update(line_f1_decoder=round(_line_f1([r.y for r in gold_rows], [r.names for r in gold_rows]), 4),
                     line_f1_rescored=round(_line_f1([r.y for r in gold_rows], preds), 4))
    w, b = fit_logistic(np.concatenate([r.x for r in rows]), np.concatenate([r.y for r in rows]), k, c=c)
    return LineRescorer(w, b, fitted_on=fitted_on), check


def write_into(ser: Path, rescorer: LineRescorer, check: dict[str, Any]) -> None:
    """Writes the re-scorer (and its check) into an exported SER folder's ``metadata.json``, re-pinned."""
    from models.integrity import write_sha256sums

    meta_path = ser / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["line_rescorer"] = {**rescorer.to_dict(), "check": check}
    meta_path.write_text(json.dumps(meta, indent=2, default=str))
    write_sha256sums(ser)


def _decoding_export(ser: str, tmp: Path) -> str:
    """An exported SER folder as it is; a training checkpoint exported to ``tmp`` with the bundle's decoding
    settings (``training.default_model.export_with_decoding``), so that the re-scorer learns from what that decoder
    outputs."""
    if (Path(ser) / "inference.json").exists() or (Path(ser) / "inference.pdmodel").exists():
        return ser
    from training.default_model import export_with_decoding

    return str(export_with_decoding(Path(ser), tmp / "ser"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ser_dir", required=True, nargs="+",
                   help="the SER model whose outputs it learns from (a fold's): an exported folder, or a checkpoint "
                        "(exported with the bundle's decoding settings first); several folds: one per --manifest")
    p.add_argument("--manifest", required=True, nargs="+", help="the fold's manifest (one per --ser_dir, in order)")
    p.add_argument("--split", default="test", help="the split of pages that SER model never saw (a fold's test)")
    p.add_argument("--into", required=True, help="the exported SER folder the re-scorer is written into")
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength (scikit-learn's C)")
    args = p.parse_args(argv)
    into = Path(args.into)
    if not (into / "metadata.json").exists():
        p.error(f"--into {into}: not an exported SER folder (no metadata.json)")
    if len(args.ser_dir) != len(args.manifest):
        p.error(f"{len(args.ser_dir)} --ser_dir for {len(args.manifest)} --manifest: give one manifest per SER model")
    command = "python -m training.line_rescorer " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[Rows] = []
    for i, (ser, manifest) in enumerate(zip(args.ser_dir, args.manifest)):
        with tempfile.TemporaryDirectory() as tmp:
            # documents of each fold numbered apart, so that the check's groups stay within one fold
            rows += [r._replace(doc=r.doc + 100_000 * i)
                     for r in collect_lines(_decoding_export(ser, Path(tmp)), manifest, args.split)]
    fitted_on = "; ".join(f"{ser} on {manifest} {args.split}" for ser, manifest in zip(args.ser_dir, args.manifest))
    rescorer, check = fit_line_rescorer(rows, c=args.c, fitted_on=fitted_on)
    check["command"] = command
    write_into(into, rescorer, check)
    print(json.dumps(check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
