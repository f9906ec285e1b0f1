"""One page for ``kiebeam visualize``: its records read back from an output folder, or computed by the models.

The page's pixels are decoded exactly as the pipeline decodes them (``transforms.decode``).
"""

from __future__ import annotations

from typing import Any

import fsspec
import numpy as np
import pyarrow.compute as pc

from pipelines.output_reader import read_table
from schemas.records import Entity, KeyValuePair, OcrLine, PageKie, PageOcr

__all__ = ["page_records", "load_page", "run_models"]


def page_records(output: str, doc_id: str, page_no: int = 0,
                 run_id: str | None = None) -> tuple[str, int, PageOcr, PageKie | None]:
    """Read one page's OCR and KIE rows back into records.

    Args:
        output: output folder.
        doc_id: the document's ``doc_id``.
        page_no: 0-based page.
        run_id: the run; may be omitted when exactly one run holds ``doc_id``.

    Returns:
        ``(uri, page_no, PageOcr, PageKie | None)``; ``None`` when the run had KIE off.

    Raises:
        ValueError: the document is absent, ambiguous across runs, or has no such page.
    """
    docs = read_table(output, "documents", run_id)
    docs = docs.filter(pc.equal(docs.column("doc_id"), doc_id)).to_pylist()
    if not docs:
        raise ValueError(f"doc_id '{doc_id}' not found in {output}" + (f" run {run_id}" if run_id else ""))
    if len({(d["run_id"], d["doc_key"]) for d in docs}) > 1:
        keys = sorted((d["run_id"], d["doc_key"]) for d in docs)
        raise ValueError(f"doc_id '{doc_id}' is in several (run_id, doc_key) {keys}; pass --run_id")
    doc = docs[0]

    def rows(table: str) -> list[dict[str, Any]]:
        t = read_table(output, table, doc["run_id"])
        mask = pc.and_(pc.equal(t.column("doc_key"), doc["doc_key"]), pc.equal(t.column("page_no"), page_no))
        return t.filter(mask).to_pylist()

    page = rows("pages")
    if not page:
        raise ValueError(f"doc_id '{doc_id}' has no page_no {page_no} (pages_found={doc['pages_found']})")
    lines = sorted(rows("lines"), key=lambda r: r["line_id"])
    ocr = PageOcr(width=page[0]["width"] or 0, height=page[0]["height"] or 0, lines=tuple(
        OcrLine(text=r["text"] or "", score=r["score"] or 0.0, box=(r["x0"], r["y0"], r["x1"], r["y1"]),
                polygon=tuple(tuple(p) for p in r["polygon"]) if r["polygon"] else
                ((r["x0"], r["y0"]), (r["x1"], r["y0"]), (r["x1"], r["y1"]), (r["x0"], r["y1"])),
                det_score=r["det_score"] or 0.0) for r in lines))
    if not doc["kie_enabled"]:
        return doc["uri"], page_no, ocr, None
    entities = tuple(Entity(r["entity_id"], r["label"], r["text"] or "", (r["x0"], r["y0"], r["x1"], r["y1"]),
                            r["score"] or 0.0, tuple(r["line_ids"] or ())) for r in
                     sorted(rows("entities"), key=lambda r: r["entity_id"]))
    pairs = tuple(KeyValuePair(r["question_id"], r["answer_id"], r["score"] or 0.0) for r in rows("pairs"))
    kie = PageKie(line_labels=tuple(r["ser_label"] or "O" for r in lines),
                  line_scores=tuple(r["ser_score"] or 0.0 for r in lines), entities=entities, pairs=pairs)
    return doc["uri"], page_no, ocr, kie


def load_page(uri: str, page_no: int, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one page exactly as the pipeline does (``transforms.decode``), resized to ``size`` if it differs."""
    from PIL import Image

    from transforms.decode import decode_page

    with fsspec.open(uri, "rb") as f:
        rgb = decode_page(f.read(), page_no)
    if size and size[0] > 0 and (rgb.shape[1], rgb.shape[0]) != size:
        rgb = np.asarray(Image.fromarray(rgb).resize(size))
    return rgb


def run_models(rgb: np.ndarray, ser_model_dir: str | None = None,
               re_model_dir: str | None = None) -> tuple[PageOcr, PageKie | None]:
    """OCR (+ SER/RE when ``ser_model_dir`` is given) on one page; Paddle is imported only in this mode."""
    from models.ocr import OcrPredictor

    [ocr] = OcrPredictor()([rgb])
    if not ser_model_dir:
        return ocr, None
    from models.kie import KiePredictor

    [kie] = KiePredictor.from_dirs(ser_model_dir, re_model_dir)([ocr])
    return ocr, kie
