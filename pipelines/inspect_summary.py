"""``kiebeam inspect``: counts, errors, per-stage timings, model versions and runs of an output folder."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.output_reader import list_runs, published_version, read_table
from schemas.parquet import TABLES

__all__ = ["inspect_output", "format_inspect"]


def _stats(values: pa.ChunkedArray) -> dict[str, float] | None:
    arr = values.drop_null().to_numpy(zero_copy_only=False).astype(float)
    if arr.size == 0 or not arr.any():  # a stage that never ran (e.g. SER/RE with KIE off) writes 0 or null
        return None
    p50, p95 = np.percentile(arr, [50, 95])
    return {"n": int(arr.size), "mean": float(arr.mean()), "p50": float(p50), "p95": float(p95)}


def _counts(table: pa.Table, column: str) -> dict[str, int]:
    counts = Counter(table.column(column).to_pylist()).most_common()
    return {"(none)" if k is None else str(k): int(v) for k, v in counts}


def inspect_output(output: str, run_id: str | None = None) -> dict[str, Any]:
    """Summary of an output folder: counts, errors, per-stage timings, model versions and runs.

    Args:
        output: output folder (local path or ``gs://...``).
        run_id: only this run; ``None`` for all runs.

    Returns:
        A JSON-able dict with keys ``output, runs, documents, pages, lines, entities, pairs, errors,
        timings_ms, models``.
    """
    t = {name: read_table(output, name, run_id) for name in TABLES}
    docs, pages = t["documents"], t["pages"]
    runs = [r for r in list_runs(output) if run_id is None or r == run_id]
    doc_runs = Counter(docs.column("run_id").to_pylist())
    errors = Counter(zip(t["errors"].column("stage").to_pylist(), t["errors"].column("error_type").to_pylist()))
    timings = {"read": _stats(docs.column("read_ms"))}
    ok_pages = pages.filter(pc.equal(pages.column("status"), "ok"))
    for stage in ("decode", "det", "rec", "ser", "re"):
        timings[stage] = _stats(ok_pages.column(f"{stage}_ms"))
    return {
        "output": str(output),
        "runs": [{"run_id": r, "documents": doc_runs.get(r, 0), "complete": published_version(output, r) is not None}
                 for r in runs],
        "documents": {"total": docs.num_rows, **{s: n for s, n in _counts(docs, "status").items()}},
        "pages": {"total": pages.num_rows, **_counts(pages, "status")},
        "lines": t["lines"].num_rows,
        "entities": {"total": t["entities"].num_rows, "by_label": _counts(t["entities"], "label")},
        "pairs": t["pairs"].num_rows,
        "errors": [{"stage": s, "error_type": e, "count": n} for (s, e), n in errors.most_common()],
        "timings_ms": {k: v for k, v in timings.items() if v is not None},
        "models": {"ocr_model": _counts(docs, "ocr_model"), "kie_model": _counts(docs, "kie_model"),
                   "schema_version": _counts(docs, "schema_version")},
    }


def format_inspect(summary: dict[str, Any]) -> str:
    """Human-readable text of an ``inspect_output`` summary.

    Args:
        summary: the dict returned by ``inspect_output``.

    Returns:
        Multi-line text.
    """
    d = summary["documents"]
    out = [f"output   {summary['output']}"]
    out += [f"run      {r['run_id']}: {r['documents']} documents{'' if r['complete'] else ' (not published)'}"
            for r in summary["runs"]] or ["run      (none)"]
    out.append(f"documents {d['total']} (ok {d.get('ok', 0)}, failed {d.get('failed', 0)})")
    p = summary["pages"]
    out.append(f"pages    {p['total']} (ok {p.get('ok', 0)}, failed {p.get('failed', 0)})")
    out.append(f"lines    {summary['lines']}")
    labels = ", ".join(f"{k} {v}" for k, v in summary["entities"]["by_label"].items())
    out.append(f"entities {summary['entities']['total']}" + (f" ({labels})" if labels else ""))
    out.append(f"pairs    {summary['pairs']}")
    out.append("errors   none" if not summary["errors"] else "errors   stage    error_type                       count")
    out += [f"         {e['stage']:<8} {e['error_type']:<32} {e['count']}" for e in summary["errors"]]
    out.append("timings  stage        mean ms     p50 ms     p95 ms      n   (read: per document; others: per ok page)")
    out += [f"         {k:<8}{v['mean']:>11.1f}{v['p50']:>11.1f}{v['p95']:>11.1f}{v['n']:>7}"
            for k, v in summary["timings_ms"].items()]
    for key, values in summary["models"].items():
        out.append(f"{key:<15}" + "; ".join(f"{k} ({v})" for k, v in values.items()))
    return "\n".join(out)
