"""Outcomes -> Parquet rows (dicts valid against ``schemas.parquet``) and the per-document accounting.

Every page outcome yields one ``pages`` row (ok or failed) plus its lines / entities / pairs, and a failed page
one ``errors`` row. Every input yields exactly one ``documents`` row: :class:`BuildDocumentRowFn` joins the
document's :class:`~schemas.refs.DocHeader` with its page summaries (a document is ``ok`` only when all its
pages are), and a document that failed before it had pages also gets its ``errors`` row there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.errors import ErrorInfo, redact
from schemas.parquet import SCHEMA_VERSION
from schemas.records import Entity, PageOutcome
from schemas.refs import DocHeader, DocRef

__all__ = ["ToRowsFn", "BuildDocumentRowFn", "PageSummary", "ROW_TABLES"]

# The tagged outputs of ToRowsFn (the main output carries (doc_key, PageSummary)).
ROW_TABLES = ("pages", "lines", "entities", "pairs", "errors")
_TIMINGS = ("decode_ms", "det_ms", "rec_ms", "ser_ms", "re_ms")


@dataclass(frozen=True, slots=True)
class PageSummary:
    """What the documents table needs from one page."""

    page_no: int
    ok: bool
    width: int | None
    height: int | None
    lines: int
    entities: int
    pairs: int
    windows: int
    timings: tuple[float, ...]  # in _TIMINGS order
    error: ErrorInfo | None
    ocr_model: str | None
    kie_model: str | None
    ocr_runtime: str | None = None
    kie_runtime: str | None = None


def _keys(run_id: str, doc: DocRef) -> dict[str, Any]:
    # run_id is the Hive partition (the folder run_id=<id>), not a file column: see schemas.parquet.
    return {"doc_key": doc.doc_key, "doc_id": doc.doc_id}


def _box(prefix: str, box: tuple[int, int, int, int]) -> dict[str, int]:
    return {f"{prefix}x0": int(box[0]), f"{prefix}y0": int(box[1]), f"{prefix}x1": int(box[2]),
            f"{prefix}y1": int(box[3])}


class ToRowsFn(beam.DoFn):
    """PageOutcome -> rows of pages/lines/entities/pairs/errors (tagged outputs) and ``(doc_key, PageSummary)``."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._counters = {name: Metrics.counter("kiebeam", name)
                          for name in ("pages_ok", "pages_failed", "lines", "entities", "pairs")}
        self._dists = {name: Metrics.distribution("kiebeam", name) for name in _TIMINGS[1:]}

    def process(self, o: PageOutcome) -> Iterator[Any]:
        """Emits the rows of one page outcome."""
        keys = _keys(self._run_id, o.doc)
        ocr, kie = o.ocr, o.kie
        lines = ocr.lines if ocr is not None else ()
        entities: tuple[Entity, ...] = kie.entities if kie is not None else ()
        pairs = kie.pairs if kie is not None else ()
        timings = (o.decode_ms, ocr.det_ms if ocr else 0.0, ocr.rec_ms if ocr else 0.0,
                   kie.ser_ms if kie else 0.0, kie.re_ms if kie else 0.0)
        for i, line in enumerate(lines):
            yield beam.pvalue.TaggedOutput("lines", {
                **keys, "page_no": o.page_no, "line_id": i, "text": line.text, "score": float(line.score),
                "det_score": float(line.det_score), "polygon": [[float(x), float(y)] for x, y in line.polygon],
                **_box("", line.box),
                "ser_label": kie.line_labels[i] if kie is not None else None,
                "ser_score": float(kie.line_scores[i]) if kie is not None else None})
        by_id = {e.entity_id: e for e in entities}
        for e in entities:
            yield beam.pvalue.TaggedOutput("entities", {
                **keys, "page_no": o.page_no, "entity_id": e.entity_id, "label": e.label, "text": e.text,
                **_box("", e.box), "score": float(e.score), "line_ids": [int(i) for i in e.line_ids]})
        for p in pairs:
            q, a = by_id.get(p.question_id), by_id.get(p.answer_id)
            yield beam.pvalue.TaggedOutput("pairs", {
                **keys, "page_no": o.page_no, "question_id": p.question_id, "answer_id": p.answer_id,
                "question_text": q.text if q else None, "answer_text": a.text if a else None,
                **_box("question_", q.box if q else (0, 0, 0, 0)), **_box("answer_", a.box if a else (0, 0, 0, 0)),
                "score": float(p.score)})
        err = o.error
        windows = kie.windows if kie is not None else 0
        yield beam.pvalue.TaggedOutput("pages", {
            **keys, "page_no": o.page_no, "width": o.width, "height": o.height,
            "status": "failed" if err else "ok", "error_stage": err.stage if err else None,
            "error_type": err.error_type if err else None, "lines": len(lines), "entities": len(entities),
            "pairs": len(pairs), "windows": windows, **dict(zip(_TIMINGS, timings))})
        if err is not None:
            yield beam.pvalue.TaggedOutput("errors", {
                **keys, "uri": redact(o.doc.uri), "page_no": o.page_no, "stage": err.stage,
                "error_type": err.error_type, "message": redact(err.message)})
        self._counters["pages_failed" if err else "pages_ok"].inc()
        self._counters["lines"].inc(len(lines))
        self._counters["entities"].inc(len(entities))
        self._counters["pairs"].inc(len(pairs))
        for name, value in zip(_TIMINGS[1:], timings[1:]):
            if value:
                self._dists[name].update(int(value))
        yield o.doc.doc_key, PageSummary(o.page_no, err is None, o.width, o.height, len(lines), len(entities),
                                         len(pairs), windows, timings, err, o.ocr_model, o.kie_model,
                                         o.ocr_runtime, o.kie_runtime)


class BuildDocumentRowFn(beam.DoFn):
    """``(doc_key, {"headers": [DocHeader], "pages": [PageSummary, ...]})`` -> one ``documents`` row (+ error)."""

    def __init__(self, run_id: str, kie_enabled: bool) -> None:
        self._run_id = run_id
        self._kie_enabled = kie_enabled
        self._ok = Metrics.counter("kiebeam", "documents_ok")
        self._failed = {}

    def _count_failed(self, stage: str) -> None:
        if stage not in self._failed:
            self._failed[stage] = Metrics.counter("kiebeam", f"documents_failed_{stage}")
        self._failed[stage].inc()

    def process(self, element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[Any]:
        """Builds the documents row of one input."""
        _, grouped = element
        headers: list[DocHeader] = list(grouped["headers"])
        pages: list[PageSummary] = sorted(grouped["pages"], key=lambda s: s.page_no)
        if len(headers) != 1:  # an internal invariant: doc keys are unique per input
            raise RuntimeError(f"expected one header per document key, got {len(headers)}: {headers[:2]}")
        h = headers[0]
        error = h.error
        if error is None and len(pages) != h.pages_to_process:
            error = ErrorInfo("decode", "missing_pages", f"{len(pages)} page outcomes for {h.pages_to_process} pages")
        if error is None:
            error = next((p.error for p in pages if p.error is not None), None)
        first = pages[0] if pages else None
        totals = [sum(p.timings[i] for p in pages) for i in range(len(_TIMINGS))]
        row = {
            **_keys(self._run_id, h.doc), "uri": redact(h.doc.uri), "sha256": h.sha256, "size_bytes": h.size_bytes,
            "format": h.format, "pages_found": h.pages_found, "pages_processed": sum(p.ok for p in pages),
            "pages_failed": sum(not p.ok for p in pages), "pages_skipped": max(h.pages_found - h.pages_to_process, 0),
            "page_width": first.width if first else None, "page_height": first.height if first else None,
            "status": "failed" if error else "ok", "error_stage": error.stage if error else None,
            "error_type": error.error_type if error else None,
            "lines": sum(p.lines for p in pages), "entities": sum(p.entities for p in pages),
            "pairs": sum(p.pairs for p in pages), "read_ms": h.read_ms, **dict(zip(_TIMINGS, totals)),
            "ocr_model": next((p.ocr_model for p in pages if p.ocr_model), None),
            "kie_model": next((p.kie_model for p in pages if p.kie_model), None),
            "ocr_runtime": next((p.ocr_runtime for p in pages if p.ocr_runtime), None),
            "kie_runtime": next((p.kie_runtime for p in pages if p.kie_runtime), None),
            "kie_enabled": self._kie_enabled, "windows": sum(p.windows for p in pages),
            "schema_version": SCHEMA_VERSION,
        }
        yield row
        if error is not None:
            self._count_failed(error.stage)
        else:
            self._ok.inc()
        if h.error is not None or (error is not None and error.error_type == "missing_pages"):
            yield beam.pvalue.TaggedOutput("errors", {
                **_keys(self._run_id, h.doc), "uri": redact(h.doc.uri), "page_no": None, "stage": error.stage,
                "error_type": error.error_type, "message": redact(error.message)})
