"""The KIE evaluation report: every number users and PaddleOCR report, with the geometric rule beside the model.

    kiebeam evaluate --ser_dir models/assets/default_kie/ser --re_dir models/assets/default_kie/re \
        --manifest data/manifest.json --split test --end2end --out report.json

It runs exported folders (the ones the pipeline runs) through ``models.kie.KiePredictor``; a training checkpoint
is exported to a temporary folder first. On the split's gold documents (gold OCR = the labelled lines):

* ``ser_token``: PaddleOCR's token-level SER Hmean (seqeval over every token's BIO tag) with the tokens' argmax,
  as PaddleOCR computes it, and with the tokens the BIO decoder outputs (``ser_token_bio``: constrained Viterbi
  per line, short runs merged, each entity as ``B-X I-X*``; the tags of the entities the pipeline writes);
* ``ser_line``: line-level SER P/R/F1 per class and micro over QUESTION/ANSWER/HEADER, for both decoders;
* ``re_gold``: RE with gold entities: PaddleOCR's RE Hmean (every candidate the model calls linked, gold links
  within a window), the model with one question per answer, and the rule on the same entities, page level;
* ``pairs_gold_ocr``: key/value pairs from the predicted entities (SER + RE) against the gold links, a pair right
  when both its ends match a gold linked pair's boxes with IoU >= 0.5; the model and the rule on the same SER;
* ``pairs_detector_view``: the same on the gold lines cut as a line detector reads them (:func:`detector_view`:
  every box several rows tall one line per row or character, in tb-yx order), scored against the uncut gold
  boxes: whether entities come back whole over the lines they were cut into, measured without page images;
* ``end2end`` (``--end2end``, images needed): the same from page images through the bundled OCR, the
  entity-level end-to-end score (PaddleOCR's ``eval_with_label_end2end``: box IoU, text and label), and
  ``losses`` (:func:`pair_losses`): where the model's end-to-end pairs are lost.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.features import bio_labels
from models.linker import link_by_rule
from models.reading_order import order_lines
from schemas.records import OcrLine, PageOcr
from training.data import split_images
from training.metrics import PRF, box_iou, end2end_scores, ser_scores

__all__ = ["evaluate_report", "format_report", "box_iou", "pair_scores", "pair_losses", "detector_view",
           "detector_view_sources", "gold_windows"]

_CLASSES = ("QUESTION", "ANSWER", "HEADER")


def pair_scores(gold: Sequence[Sequence[tuple[Sequence[float], Sequence[float]]]],
                pred: Sequence[Sequence[tuple[Sequence[float], Sequence[float]]]], *,
                iou_threshold: float = 0.5) -> PRF:
    """Key/value pair P/R/F1: a predicted (question box, answer box) pair matches a gold one when both ends have
    box IoU >= ``iou_threshold``; each gold pair matches at most one prediction (best IoU sum first).

    >>> pair_scores([[((0, 0, 10, 10), (20, 0, 30, 10))]], [[((1, 0, 10, 10), (20, 0, 31, 10))]]).f1
    1.0
    """
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred, strict=True):
        n_gold, n_pred = n_gold + len(g), n_pred + len(p)
        cands = []
        for i, (gq, ga) in enumerate(g):
            for j, (pq, pa) in enumerate(p):
                iq, ia = box_iou(gq, pq), box_iou(ga, pa)
                if iq >= iou_threshold and ia >= iou_threshold:
                    cands.append((iq + ia, i, j))
        used_g: set[int] = set()
        used_p: set[int] = set()
        for _, i, j in sorted(cands, reverse=True):
            if i not in used_g and j not in used_p:
                used_g.add(i)
                used_p.add(j)
                tp += 1
    return PRF.from_counts(tp, n_pred, n_gold)


LOSS_KINDS = ("right", "wrong_label", "entity_cut_wrong", "several_lines", "inside_longer_line", "no_line")


def _end_kind(box: Sequence[float], label: str, page: PageOcr, ents: Sequence[Any]) -> tuple[str, int]:
    """How one gold pair end came out: ``(kind, entity index or -1)``, kinds as :data:`LOSS_KINDS`."""
    best = max(range(len(ents)), key=lambda i: box_iou(box, ents[i].box), default=-1)
    if best >= 0 and box_iou(box, ents[best].box) >= 0.5:
        return ("right" if ents[best].label == label else "wrong_label"), best
    if any(box_iou(box, ln.box) >= 0.5 for ln in page.lines):
        return "entity_cut_wrong", -1  # an OCR line matches: SER cut or joined it wrong (or called it O)
    near = [ln.box for ln in page.lines if box_iou(box, ln.box) > 0.05]
    if len(near) > 1:
        return "several_lines", -1  # the detector read it as several lines (wrapped cell, vertical text, a gap)
    if near:
        return "inside_longer_line", -1  # one longer OCR line holds it and more: not cut at the right place
    return "no_line", -1


def pair_losses(docs: Sequence[Any], pages: Sequence[PageOcr], ents: Sequence[Sequence[Any]],
                links: Sequence[Sequence[tuple[int, int, float]]]) -> dict[str, Any]:
    """Where end-to-end pairs are lost: per gold pair, each end's outcome (:data:`LOSS_KINDS`, the first that
    applies: an entity at IoU >= 0.5 with the right label, with another label, an OCR line at IoU >= 0.5 but no
    such entity, several OCR lines over it, one longer OCR line holding it, no OCR line near), and for the pairs
    with both ends right whether the pairs link them.

    Returns:
        ``{"pairs", "linked", "unlinked", "question_end": {kind: n}, "answer_end": {kind: n}}``.
    """
    out: dict[str, Any] = {"pairs": 0, "linked": 0, "unlinked": 0,
                           "question_end": dict.fromkeys(LOSS_KINDS, 0), "answer_end": dict.fromkeys(LOSS_KINDS, 0)}
    for doc, page, es, ls in zip(docs, pages, ents, links, strict=True):
        linked = {(q, a) for q, a, _ in ls}
        for q, a in doc.links():
            (kq, iq), (ka, ia) = (_end_kind(doc.lines[k].box, doc.lines[k].label, page, es) for k in (q, a))
            out["pairs"] += 1
            out["question_end"][kq] += 1
            out["answer_end"][ka] += 1
            if kq == ka == "right":
                out["linked" if (iq, ia) in linked else "unlinked"] += 1
    return out


def _line_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Line-level P/R/F1 per class and micro over QUESTION/ANSWER/HEADER (gold OCR: lines align)."""
    out: dict[str, Any] = {}
    tot = [0, 0, 0]
    for cls in _CLASSES:
        tp = sum(g == p == cls for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
        n_p = sum(p == cls for ps in pred for p in ps)
        n_g = sum(g == cls for gs in gold for g in gs)
        out[cls] = PRF.from_counts(tp, n_p, n_g).to_dict()
        tot = [tot[0] + tp, tot[1] + n_p, tot[2] + n_g]
    out["micro"] = PRF.from_counts(*tot).to_dict()
    return out


def _gold_pages(docs: Sequence[Any]) -> list[PageOcr]:
    return [PageOcr(d.width, d.height, tuple(OcrLine(ln.text, 1.0, ln.points, ln.box) for ln in d.lines))
            for d in docs]


def _detector_rows(text: str, box: Sequence[int], row_height: float) -> list[tuple[str, tuple[int, ...]]]:
    """One annotated line as the lines a detector reads: itself, or, for a box at least 1.7 ``row_height`` tall,
    one line per character (over twice as tall as wide: vertical text) or per row (``round(height /
    row_height)`` rows, at most one per character, the text in equal shares, left-aligned, the last row as wide as
    its characters)."""
    x0, y0, x1, y1 = box
    h, w, n = y1 - y0, x1 - x0, len(text)
    if n < 2 or row_height <= 0 or h < 1.7 * row_height:
        return [(text, tuple(box))]
    if h > 2 * w:
        return [(ch, (x0, round(y0 + i * h / n), x1, round(y0 + (i + 1) * h / n))) for i, ch in enumerate(text)]
    rows = min(max(round(h / row_height), 2), n)
    per_row = -(-n // rows)
    chunks = [text[i:i + per_row] for i in range(0, n, per_row)]
    return [(t, (x0, round(y0 + i * h / rows), round(x0 + w * len(t) / per_row), round(y0 + (i + 1) * h / rows)))
            for i, t in enumerate(chunks)]


def detector_view(docs: Sequence[Any]) -> list[PageOcr]:
    """Gold pages with every annotated box that holds several text rows (or vertical text) cut into one line per
    row (or character), all lines then put in tb-yx order as OCR lines are (``models.reading_order.order_lines``):
    the rows of a wrapped table cell come apart, other cells of their rows in between, as a line detector gives
    them. Deterministic; the training augmentation's ``split`` (``training.augment.split_line``) is a random,
    two-piece counterpart.

    >>> from schemas.annotations import KieDocument, KieLine
    >>> pts = ((0, 0), (1, 0), (1, 1), (0, 1))
    >>> doc = KieDocument("a.jpg", (KieLine("曾在何时何处进修学习", "QUESTION", pts, (100, 100, 300, 160), 0),
    ...                             KieLine("北大", "ANSWER", pts, (400, 100, 480, 130), 1),
    ...                             KieLine("备注", "OTHER", pts, (100, 200, 160, 230), 2)), 1000, 1000)
    >>> [(ln.text, ln.box) for ln in detector_view([doc])[0].lines][:3]
    [('曾在何时何', (100, 100, 300, 130)), ('北大', (400, 100, 480, 130)), ('处进修学习', (100, 130, 300, 160))]
    """
    return [page for page, _ in detector_view_sources(docs)]


def detector_view_sources(docs: Sequence[Any]) -> list[tuple[PageOcr, list[int]]]:
    """:func:`detector_view`, each page with the annotated line each of its lines was cut from (index into
    ``doc.lines``), so that a cut line can take its annotated line's label."""
    out = []
    for d in docs:
        row_height = float(np.median([ln.box[3] - ln.box[1] for ln in d.lines])) if d.lines else 0.0
        parts = [(k, r) for k, ln in enumerate(d.lines) for r in _detector_rows(ln.text, ln.box, row_height)]
        lines, sources = [], []
        for i in order_lines([b for _, (_, b) in parts]):
            k, (text, (x0, y0, x1, y1)) = parts[i]
            lines.append(OcrLine(text, 1.0, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), (x0, y0, x1, y1)))
            sources.append(k)
        out.append((PageOcr(d.width, d.height, tuple(lines)), sources))
    return out


def _gold_pairs(doc: Any) -> list[tuple[tuple, tuple]]:
    return [(doc.lines[q].box, doc.lines[a].box) for q, a in doc.links()]


def _gold_entities(kie: Any, page: PageOcr, toks: Any, doc: Any) -> list[Any]:
    """The gold lines as ``KieEntity`` (one per labelled Q/A/H line, in the window of its first token)."""
    from models.kie import KieEntity

    places: dict[int, tuple[int, int, int]] = {}
    for i, w in enumerate(toks.windows):
        for k, (s, e) in zip(w.line_ids, w.line_spans):
            places.setdefault(k, (i, s, e))
    return [KieEntity(ln.label, ln.text, tuple(ln.box), 1.0, k, *places[k])
            for k, ln in enumerate(doc.lines) if ln.label in _CLASSES and k in places]


def _kv_boxes(ents: Sequence[Any], links: Sequence[tuple[int, int, float]]) -> list[tuple[tuple, tuple]]:
    return [(ents[q].box, ents[a].box) for q, a, _ in links]


def _rule_links(ents: Sequence[Any]) -> list[tuple[int, int, float]]:
    return [(q, a, 1.0) for q, a in link_by_rule([e.box for e in ents], [e.label for e in ents])]


def _export_if_needed(folder: str | None, tmp: Path, name: str) -> str | None:
    """An exported folder as it is; a training checkpoint exported to ``tmp/name`` first."""
    if folder is None or folder == "rule" or any((Path(folder) / f).exists()
                                                 for f in ("inference.json", "inference.pdmodel")):
        return folder
    from models.checkpoint import export_inference

    return str(export_inference(folder, tmp / name))


def evaluate_report(ser_dir: str, re_dir: str | None, manifest: str, split: str = "test", *,
                    end2end: bool = False, limit: int = 0, kie_precision: str = "auto") -> dict[str, Any]:
    """Every metric of the module docstring on one split of a manifest.

    Args:
        ser_dir: SER folder: exported, or a checkpoint (exported to a temporary folder).
        re_dir: RE folder (exported or checkpoint), ``"rule"``, or None (the rule rows are always computed).
        manifest: the manifest URI.
        split: ``train``, ``val`` or ``test``.
        end2end: also OCR the split's page images (shards need an ``image_dir``).
        limit: at most this many documents (0 = all).
        kie_precision: the SER/RE programs' precision request (``models.backends``; the report records the
            runtime it resolved to as ``kie_runtime``).

    Returns:
        One JSON-ready dict of every number.
    """
    from models.kie import KiePredictor
    from models.paddle_infer import InferenceOptions
    from models.tokenizer import load_tokenizer
    from training.shards import load_manifest, load_split

    m = load_manifest(manifest)
    docs, skips = load_split(m, split)
    docs = docs[:limit] if limit else docs
    if not docs:
        raise ValueError(f"split {split!r} of {manifest} has no readable documents ({len(skips)} skipped)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ser_dir = _export_if_needed(ser_dir, Path(tmp), "ser")
        re_dir = _export_if_needed(re_dir, Path(tmp), "re")
        kie = KiePredictor.from_dirs(ser_dir, re_dir, inference=InferenceOptions(precision=kie_precision))
        tokenizer = load_tokenizer(ser_dir)
        label2id = {n: i for i, n in enumerate(kie.labels)}
        if kie.labels != bio_labels(m.labels):
            raise ValueError(f"the SER model's labels {kie.labels} are not the manifest's {bio_labels(m.labels)}")
        pages = _gold_pages(docs)
        images = split_images(m, split, docs, required=True) if kie.needs_image else None
        toks = kie.tokens(pages, images)
        report: dict[str, Any] = {"split": split, "documents": len(docs), "skipped": len(skips),
                                  "ser_dir": str(ser_dir), "re_dir": str(re_dir), "model_decode": kie.decode,
                                  "kie_runtime": kie.runtime}

        # SER, token level (PaddleOCR's metric) and line level.
        gold_tags, argmax_tags, bio_tags = [], [], []
        gold_lines, vote_lines, bio_lines = [], [], []
        decoded: dict[str, list] = {"vote": [], "bio": []}
        for doc, page, tk in zip(docs, pages, toks):
            windows = gold_windows(kie, doc, page, tokenizer, label2id)
            g, a = [], []
            for w, pr in zip(windows, tk.probs):
                if pr is None:
                    continue
                g += [kie.labels[i] for i in w.labels[:w.num_tokens]]
                a += [kie.labels[i] for i in pr.argmax(-1)]
            gold_tags.append(g)
            argmax_tags.append(a)
            for mode in ("vote", "bio"):
                decoded[mode].append(kie.entities(page, tk, decode=mode))
            bio_tags.append(_bio_token_tags(tk, decoded["bio"][-1][2]))
            gold_lines.append([ln.label if ln.label in _CLASSES else "O" for ln in doc.lines])
            vote_lines.append(decoded["vote"][-1][0])
            bio_lines.append(decoded["bio"][-1][0])
        for key, pred in (("ser_token", argmax_tags), ("ser_token_bio", bio_tags)):
            micro, per_class = ser_scores(gold_tags, pred)
            report[key] = {**micro.to_dict(), "per_class": {k: v.to_dict() for k, v in per_class.items()}}
        report["ser_line"] = {"vote": _line_scores(gold_lines, vote_lines), "bio": _line_scores(gold_lines, bio_lines)}

        # RE with gold entities.
        gold_w, pred_w, gold_p, model_p, rule_p = [], [], [], [], []
        for doc, page, tk in zip(docs, pages, toks):
            ents = _gold_entities(kie, page, tk, doc)
            links = {(q, a) for q, a in doc.links()}
            line_of = [e.line for e in ents]
            win_of = {e.line: e.window for e in ents}
            gold_p.append(_gold_pairs(doc))
            gold_w.append({(q, a) for q, a in links if q in win_of and a in win_of and win_of[q] == win_of[a]})
            rule_p.append(_kv_boxes(ents, _rule_links(ents)))
            if kie.re is not None:
                pred_w.append({(line_of[q], line_of[a]) for q, a, _ in kie.relate(page, tk, ents, every_link=True)})
                model_p.append(_kv_boxes(ents, kie.relate(page, tk, ents)))
        re_gold: dict[str, Any] = {"rule": pair_scores(gold_p, rule_p).to_dict()}
        if kie.re is not None:
            tp = sum(len(g & p) for g, p in zip(gold_w, pred_w))
            re_gold["paddleocr_metric"] = PRF.from_counts(tp, sum(map(len, pred_w)), sum(map(len, gold_w))).to_dict()
            re_gold["model"] = pair_scores(gold_p, model_p).to_dict()
        report["re_gold"] = re_gold

        # Pairs from predicted entities, gold OCR.
        report["pairs_gold_ocr"] = _pair_rows(kie, pages, toks, decoded[kie.decode], gold_p)
        cut = detector_view(docs)
        cut_toks = kie.tokens(cut, images)
        report["pairs_detector_view"] = _pair_rows(kie, cut, cut_toks, [kie.entities(p, t) for p, t in
                                                                        zip(cut, cut_toks)], gold_p)
        if end2end:
            report["end2end"] = _end2end(kie, m, split, docs)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def gold_windows(kie: Any, doc: Any, page: PageOcr, tokenizer: Any, label2id: dict[str, int]) -> list[Any]:
    """A gold document's windows with its gold BIO tags (``KiePredictor.windows``: its lines in the order the
    model reads them), token for token the windows ``kie.tokens`` runs on ``page``, its gold page."""
    return kie.windows(page, tokenizer, line_labels=[ln.label for ln in doc.lines], label2id=label2id)


def _bio_token_tags(tk: Any, ents: Sequence[Any]) -> list[str]:
    """Every token's tag as the BIO decoder output it (``KiePredictor.entities(decode="bio")``: each entity
    ``B-X I-X*``, the rest ``O``), in window order: the token-level metric's input."""
    from models.ser_decoding import span_tags

    tags: list[str] = []
    for i, (w, pr) in enumerate(zip(tk.windows, tk.probs)):
        if pr is not None:
            tags += span_tags([e for e in ents if e.window == i], w.num_tokens)
    return tags


def _pair_rows(kie: Any, pages: Sequence[PageOcr], toks: Sequence[Any], decoded: Sequence[Any],
               gold: Sequence[Any], links: Sequence[Any] | None = None) -> dict[str, Any]:
    """Pair scores of the model and of the rule on the decoded entities; ``links``: the model's links per page
    when the caller already has them (else :meth:`KiePredictor.relate` runs here)."""
    model, rule = [], []
    for i, (page, tk, (_, _, ents)) in enumerate(zip(pages, toks, decoded)):
        rule.append(_kv_boxes(ents, _rule_links(ents)))
        if kie.re is not None:
            model.append(_kv_boxes(ents, links[i] if links is not None else kie.relate(page, tk, ents)))
    out = {"rule": pair_scores(gold, rule).to_dict()}
    if kie.re is not None:
        out["model"] = pair_scores(gold, model).to_dict()
    return out


def _end2end(kie: Any, m: Any, split: str, docs: Sequence[Any]) -> dict[str, Any]:
    from models.ocr import OcrPredictor

    if not any(s.image_dir for s in m.split(split)):
        return {"skipped": "the split's shards have no image_dir"}
    found = split_images(m, split, docs)
    kept = [d for d, im in zip(docs, found) if im is not None]
    images = [im for im in found if im is not None]
    if not kept:
        return {"skipped": "no page image found"}
    read, pages = kie.box_views(OcrPredictor()(images))  # as KiePredictor.__call__
    toks = kie.tokens(read, images)
    decoded = [kie.entities(r, t, boxes=p) for r, p, t in zip(read, pages, toks)]
    links = [kie.relate(p, t, ents) for p, t, (_, _, ents) in zip(pages, toks, decoded)] if kie.re is not None else None
    out = _pair_rows(kie, pages, toks, decoded, [_gold_pairs(d) for d in kept], links)
    if links is not None:
        out["losses"] = pair_losses(kept, pages, [ents for _, _, ents in decoded], links)
    gold = [[(ln.points, ln.text, ln.label) for ln in d.lines] for d in kept]
    pred = [[(line.polygon, line.text, lab) for line, lab in zip(p.lines, names)]
            for p, (names, _, _) in zip(pages, decoded)]
    out["entities_paddleocr_e2e"] = end2end_scores(gold, pred).to_dict()
    out["pages"] = len(kept)
    return out


def format_report(r: dict[str, Any]) -> str:
    """The report as a short plain-text table."""
    def f(d: dict[str, Any] | None) -> str:
        if not d:
            return "   -      -      -  "
        return f"{d['precision']:.3f}  {d['recall']:.3f}  {d.get('hmean', d.get('f1', 0)):.3f}"

    rows = [f"SER/RE runtime: {r.get('kie_runtime') or '-'}", f"{'metric':<44}{'P':>6}{'R':>7}{'F1':>7}",
            f"{'SER token Hmean (PaddleOCR, argmax)':<44}{f(r['ser_token'])}",
            f"{'SER token Hmean (BIO decoding)':<44}{f(r['ser_token_bio'])}",
            f"{'SER line micro Q/A/H (vote)':<44}{f(r['ser_line']['vote']['micro'])}",
            f"{'SER line micro Q/A/H (BIO)':<44}{f(r['ser_line']['bio']['micro'])}",
            f"{'RE gold entities (PaddleOCR metric)':<44}{f(r['re_gold'].get('paddleocr_metric'))}",
            f"{'RE gold entities, model, 1 question/answer':<44}{f(r['re_gold'].get('model'))}",
            f"{'RE gold entities, rule':<44}{f(r['re_gold']['rule'])}",
            f"{'pairs, gold OCR, model':<44}{f(r['pairs_gold_ocr'].get('model'))}",
            f"{'pairs, gold OCR, rule on the same SER':<44}{f(r['pairs_gold_ocr']['rule'])}"]
    if "pairs_detector_view" in r:
        rows += [f"{'pairs, gold lines cut as a detector, model':<44}{f(r['pairs_detector_view'].get('model'))}",
                 f"{'pairs, gold lines cut as a detector, rule':<44}{f(r['pairs_detector_view']['rule'])}"]
    e = r.get("end2end") or {}
    if "rule" in e:
        rows += [f"{'pairs end to end from images, model':<44}{f(e.get('model'))}",
                 f"{'pairs end to end from images, rule':<44}{f(e['rule'])}",
                 f"{'entities end to end (PaddleOCR e2e)':<44}{f(e['entities_paddleocr_e2e'])}"]
    if "losses" in e:
        lo = e["losses"]
        rows.append(f"end-to-end gold pairs {lo['pairs']}: both ends right {lo['linked']} linked, {lo['unlinked']} not")
        rows += [f"  {end.replace('_', ' ')}s: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in lo[end].items())
                 for end in ("question_end", "answer_end")]
    return "\n".join(rows)


if __name__ == "__main__":  # python -m training.report SER RE MANIFEST SPLIT [--end2end]
    import sys

    args = [a for a in sys.argv[1:] if a != "--end2end"]
    rep = evaluate_report(args[0], None if args[1] == "none" else args[1], args[2], args[3],
                          end2end="--end2end" in sys.argv)
    print(format_report(rep))
    print(json.dumps(rep, default=str))
