"""Operator and analyst commands over an extraction output folder: ``inspect``, ``check`` and ``visualize``.

An output folder holds ``<output>/<table>/run_id=<run_id>/*.parquet`` (+ ``_SUCCESS``) for every table of
``schemas.parquet.TABLES``. ``run_id`` is the Hive partition key: it is taken from the folder name (files do not
store it), and every table read here carries it as its first column. Everything here reads it back with pyarrow
through fsspec, so local folders and ``gs://`` (gcsfs) both work. ``describe_tables()`` and ``README_QUERIES``
are the analysts' README section, generated from the schemas and tested verbatim against a real folder so they
cannot rot.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.parquet import PARTITION_FIELD, SCHEMA_VERSION, STAGES, TABLES, with_partition
from schemas.records import Entity, KeyValuePair, OcrLine, PageKie, PageOcr

__all__ = [
    "COLUMN_DOCS",
    "README_QUERIES",
    "list_runs",
    "read_table",
    "inspect_output",
    "format_inspect",
    "check_output",
    "describe_tables",
    "duckdb_views_sql",
    "readme_section",
    "page_records",
    "add_subcommands",
]

_BOX_DOC = "pixels of the decoded page, {} edge"
_EDGES = {"x0": "left", "y0": "top", "x1": "right", "y1": "bottom"}
_KEY_DOCS = {
    "run_id": "run identifier: the Hive partition key, read from the `run_id=` folder (not stored in the files)",
    "doc_key": "unique key of one input (manifest row or matched file), even when inputs share a URI or doc_id",
    "doc_id": "document id (manifest `doc_id`, else derived from the file name)",
}
_MS = "ms, wall time of the {} stage"
# Per table: column -> meaning. A test fails when a schema column has no entry here.
COLUMN_DOCS: dict[str, dict[str, str]] = {
    "documents": {
        "uri": "where the input was read from", "sha256": "hex sha256 of the input bytes",
        "size_bytes": "bytes, input size", "format": "detected file format (jpeg, png, tiff, pdf, ...)",
        "pages_found": "pages in the file", "pages_processed": "pages that went through OCR (and KIE)",
        "pages_failed": "pages that failed",
        "pages_skipped": "pages past `--max_pages`: counted, not decoded (pages_found - processed - failed)",
        "page_width": "pixels, width of the first decoded page",
        "page_height": "pixels, height of the first decoded page", "status": "`ok` or `failed`",
        "error_stage": f"first failing stage, one of {', '.join(STAGES)}; null when ok",
        "error_type": "exception / reason of that failure", "lines": "OCR lines over all pages",
        "entities": "SER entities over all pages", "pairs": "RE question-answer pairs over all pages",
        "read_ms": _MS.format("read"), "decode_ms": _MS.format("decode"), "det_ms": _MS.format("text detection"),
        "rec_ms": _MS.format("text recognition"), "ser_ms": _MS.format("SER"), "re_ms": _MS.format("RE"),
        "ocr_model": "OCR model version (detector + recognizer)", "kie_model": "SER/RE model version; null if off",
        "kie_enabled": "whether SER/RE ran", "windows": "512-token windows SER needed, summed over pages",
        "schema_version": f"output schema version (now {SCHEMA_VERSION})",
    },
    "pages": {
        "page_no": "0-based page index in the document", "width": "pixels, decoded page width",
        "height": "pixels, decoded page height", "status": "`ok` or `failed`",
        "error_stage": "failing stage; null when ok", "error_type": "exception / reason; null when ok",
        "lines": "OCR lines on the page", "entities": "SER entities on the page", "pairs": "RE pairs on the page",
        "windows": "512-token SER windows", "decode_ms": _MS.format("decode"), "det_ms": _MS.format("detection"),
        "rec_ms": _MS.format("recognition"), "ser_ms": _MS.format("SER"), "re_ms": _MS.format("RE"),
    },
    "lines": {
        "page_no": "0-based page index", "line_id": "reading-order index of the line on the page",
        "text": "recognised text", "score": "recognition confidence, 0-1", "det_score": "detection score, 0-1",
        "polygon": "4 [x, y] corners in pixels, clockwise from top-left",
        **{k: _BOX_DOC.format(v) for k, v in _EDGES.items()},
        "ser_label": "SER label (QUESTION, ANSWER, HEADER, O); null when KIE is off",
        "ser_score": "probability of the SER label, 0-1",
    },
    "entities": {
        "page_no": "0-based page index", "entity_id": "0-based entity index on the page, in reading order",
        "label": "QUESTION, ANSWER or HEADER", "text": "text of the entity's line(s)",
        **{k: _BOX_DOC.format(v) for k, v in _EDGES.items()},
        "score": "mean probability of the label, 0-1", "line_ids": "`line_id`s of the entity's lines",
    },
    "pairs": {
        "page_no": "0-based page index", "question_id": "`entity_id` of the question (key)",
        "answer_id": "`entity_id` of the answer (value)", "question_text": "the question's text",
        "answer_text": "the answer's text",
        **{f"question_{k}": "question box, " + _BOX_DOC.format(v) for k, v in _EDGES.items()},
        **{f"answer_{k}": "answer box, " + _BOX_DOC.format(v) for k, v in _EDGES.items()},
        "score": "RE link probability, 0-1",
    },
    "errors": {
        "uri": "the input's URI", "page_no": "failing page; null when the document failed before pages existed",
        "stage": f"failing stage, one of {', '.join(STAGES)}", "error_type": "exception class or reason",
        "message": "error message",
    },
}
for _docs in COLUMN_DOCS.values():
    _docs.update(_KEY_DOCS)

# Ready DuckDB queries for analysts; they run on the views of ``duckdb_views_sql`` (tested verbatim).
README_QUERIES: dict[str, str] = {
    "Key/value pairs of one document": (
        "SELECT page_no, question_text, answer_text, round(score, 3) AS score\n"
        "FROM pairs WHERE doc_id = 'zh_train_0'\nORDER BY page_no, question_id, answer_id;"),
    "Most frequent question texts": (
        "SELECT trim(text) AS question, count(*) AS n, count(DISTINCT doc_key) AS documents\n"
        "FROM entities WHERE label = 'QUESTION'\nGROUP BY 1 ORDER BY n DESC, question LIMIT 20;"),
    "Documents that failed, and why": (
        "SELECT d.run_id, d.doc_id, d.uri, e.stage, e.error_type, e.message\n"
        "FROM documents d LEFT JOIN errors e USING (run_id, doc_key)\n"
        "WHERE d.status = 'failed'\nORDER BY d.run_id, d.doc_id;"),
    "Entity counts by label": (
        "SELECT run_id, label, count(*) AS entities, count(DISTINCT doc_key) AS documents\n"
        "FROM entities GROUP BY ALL ORDER BY run_id, entities DESC;"),
}


def _fs(output: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(str(output))
    return fs, root.rstrip("/")


def list_runs(output: str) -> list[str]:
    """Run ids present in any table of ``output``, sorted.

    Args:
        output: output folder (local path or ``gs://...``).

    Returns:
        The ``run_id`` partition values found.
    """
    fs, root = _fs(output)
    runs = {p.rstrip("/").rsplit("run_id=", 1)[1] for t in TABLES for p in fs.glob(f"{root}/{t}/run_id=*")}
    return sorted(runs)


def _read_parts(output: str, table: str, run_id: str | None) -> list[tuple[str, str, pa.Table, bool]]:
    """``(partition run_id, file, rows, stores_run_id)`` of every Parquet file of one table.

    ``rows`` has ``with_partition(schema)``: ``run_id`` from the folder, then the file's schema columns.
    ``stores_run_id`` flags a file that also has a ``run_id`` column (schema 1.x layout; Hive readers reject it).
    """
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}', expected one of {sorted(TABLES)}")
    schema = TABLES[table]
    fs, root = _fs(output)
    parts = []
    for path in sorted(fs.glob(f"{root}/{table}/run_id={run_id or '*'}/*.parquet")):
        part_run = path.rsplit("run_id=", 1)[1].split("/", 1)[0]
        with fs.open(path, "rb") as f:  # one file, no dataset discovery: the folder's run_id is added below
            rows = pq.ParquetFile(f).read()
        missing = [n for n in schema.names if n not in rows.column_names]
        if missing:
            raise ValueError(f"{path}: columns {missing} of the '{table}' schema are missing")
        stores_run_id = PARTITION_FIELD.name in rows.column_names
        rows = rows.select(schema.names).cast(schema)
        run_col = pa.array([part_run] * rows.num_rows, PARTITION_FIELD.type)
        parts.append((part_run, path, rows.add_column(0, PARTITION_FIELD, run_col), stores_run_id))
    return parts


def read_table(output: str, table: str, run_id: str | None = None) -> pa.Table:
    """All rows of one table (of one run, or of every run): ``run_id`` from the partition folder, then the columns.

    Args:
        output: output folder (local path or ``gs://...``).
        table: a name in ``schemas.parquet.TABLES``.
        run_id: only this run; ``None`` for all runs.

    Returns:
        A ``pyarrow.Table`` with ``with_partition(TABLES[table])`` (empty when no file exists).

    Raises:
        ValueError: unknown table, or a file lacks schema columns.
    """
    parts = [rows for _, _, rows, _ in _read_parts(output, table, run_id)]
    return pa.concat_tables(parts) if parts else with_partition(TABLES[table]).empty_table()


def _stats(values: pa.ChunkedArray) -> dict[str, float] | None:
    arr = values.drop_null().to_numpy(zero_copy_only=False).astype(float)
    if arr.size == 0 or not arr.any():  # a stage that never ran (e.g. SER/RE with KIE off) writes 0 or null
        return None
    p50, p95 = np.percentile(arr, [50, 95])
    return {"n": int(arr.size), "mean": float(arr.mean()), "p50": float(p50), "p95": float(p95)}


def _counts(table: pa.Table, column: str) -> dict[str, int]:
    counts = Counter(table.column(column).to_pylist()).most_common()
    return {"(none)" if k is None else str(k): int(v) for k, v in counts}


def _has_success(output: str, table: str, run_id: str) -> bool:
    fs, root = _fs(output)
    return fs.exists(f"{root}/{table}/run_id={run_id}/_SUCCESS")


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
        "runs": [{"run_id": r, "documents": doc_runs.get(r, 0), "complete": _has_success(output, "documents", r)}
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
    out += [f"run      {r['run_id']}: {r['documents']} documents{'' if r['complete'] else ' (INCOMPLETE: no _SUCCESS)'}"
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


def _dupes(table: pa.Table, cols: list[str]) -> list[tuple]:
    grouped = table.select(cols).group_by(cols).aggregate([([], "count_all")])
    bad = grouped.filter(pc.greater(grouped.column("count_all"), 1))
    return [tuple(r[c] for c in cols) + (f"x{r['count_all']}",) for r in bad.to_pylist()]


def _orphans(child: pa.Table, parent: pa.Table, cols: list[str], parent_cols: list[str] | None = None) -> list[tuple]:
    """Key tuples of ``child`` rows with no matching ``parent`` row."""
    parent_keys = parent.select(parent_cols or cols).rename_columns(cols).group_by(cols).aggregate([])
    missing = child.select(cols).join(parent_keys, cols, join_type="left anti")
    return sorted({tuple(r[c] for c in cols) for r in missing.to_pylist()}, key=str)


def _count_mismatch(docs: pa.Table, child: pa.Table, column: str) -> list[tuple]:
    counted = Counter(zip(child.column("run_id").to_pylist(), child.column("doc_key").to_pylist()))
    bad = []
    for r in docs.select(["run_id", "doc_key", "status", column]).to_pylist():
        found = counted.get((r["run_id"], r["doc_key"]), 0)
        if r["status"] == "ok" and r[column] is not None and r[column] != found:
            bad.append((r["run_id"], r["doc_key"], f"{column}={r[column]} but {found} rows"))
    return bad


def _page_mismatch(docs: pa.Table, pages: pa.Table) -> list[tuple]:
    """Ok documents whose page accounting does not add up (every page found is processed or skipped on purpose)."""
    counted = Counter(zip(pages.column("run_id").to_pylist(), pages.column("doc_key").to_pylist()))
    cols = ["run_id", "doc_key", "status", "pages_found", "pages_processed", "pages_failed", "pages_skipped"]
    bad = []
    for r in docs.select(cols).to_pylist():
        if r["status"] != "ok" or r["pages_found"] is None:
            continue
        done = (r["pages_processed"] or 0) + (r["pages_failed"] or 0)
        rows = counted.get((r["run_id"], r["doc_key"]), 0)
        if r["pages_found"] != done + (r["pages_skipped"] or 0) or rows != done:
            bad.append((r["run_id"], r["doc_key"], f"found={r['pages_found']} processed={r['pages_processed']} "
                        f"failed={r['pages_failed']} skipped={r['pages_skipped']} pages rows={rows}"))
    return bad


def check_output(output: str, run_id: str | None = None, expected_documents: int | None = None,
                 max_examples: int = 20) -> list[str]:
    """Violations of the run accounting invariant and of referential integrity; empty when the folder is sound.

    Checked per run: a ``_SUCCESS`` marker; no file stores ``run_id`` as a column (it is the partition key, and
    Hive-partitioned readers such as BigQuery and pyarrow datasets reject a key that is also a column);
    documents rows == ``expected_documents`` (when given); status is ``ok``/``failed``; every failed document has an
    errors row; no duplicate keys (documents ``doc_key``, pages ``page_no``, lines ``line_id``, entities
    ``entity_id``, pairs ``(question_id, answer_id)``); pages and errors rows point at a document; lines, entities
    and pairs rows point at an *ok* document; pairs point at existing entities; the documents
    ``lines/entities/pairs`` counts equal the rows present; an ok document's ``pages_found`` equals its pages
    processed + failed + skipped (past ``--max_pages``), and it has one pages row per page processed or failed.

    Args:
        output: output folder (local path or ``gs://...``).
        run_id: only this run; ``None`` for all runs.
        expected_documents: number of inputs of each run, if known.
        max_examples: offending keys listed per violation.

    Returns:
        One message per violation kind, naming the table, the rule and example keys.
    """
    problems: list[str] = []

    def report(what: str, keys: list[tuple]) -> None:
        if keys:
            shown = "; ".join(" ".join(map(str, k)) for k in keys[:max_examples])
            more = f" ... and {len(keys) - max_examples} more" if len(keys) > max_examples else ""
            problems.append(f"{what}: {len(keys)} ({shown}{more})")

    runs = [r for r in list_runs(output) if run_id is None or r == run_id]
    if not runs:
        return [f"no run{'' if run_id is None else f' {run_id!r}'} found under {output}"]
    t: dict[str, pa.Table] = {}
    for name in TABLES:
        parts = _read_parts(output, name, run_id)
        report(f"{name}: files that store run_id as a column (it must live only in the run_id= folder)",
               [(path,) for _, path, _, stores_run_id in parts if stores_run_id])
        t[name] = pa.concat_tables([p[2] for p in parts]) if parts else with_partition(TABLES[name]).empty_table()
    report("runs without a documents/_SUCCESS marker (incomplete)",
           [(r,) for r in runs if not _has_success(output, "documents", r)])
    docs = t["documents"]
    per_run = Counter(docs.column("run_id").to_pylist())
    if expected_documents is not None:
        report(f"runs whose documents rows != {expected_documents} inputs",
               [(r, f"{per_run.get(r, 0)} rows") for r in runs if per_run.get(r, 0) != expected_documents])
    report("documents with a status other than ok/failed",
           [(r["run_id"], r["doc_key"], r["status"]) for r in docs.select(["run_id", "doc_key", "status"]).to_pylist()
            if r["status"] not in ("ok", "failed")])
    doc = ["run_id", "doc_key"]
    page = doc + ["page_no"]
    for name, cols in (("documents", doc), ("pages", page), ("lines", page + ["line_id"]),
                       ("entities", page + ["entity_id"]), ("pairs", page + ["question_id", "answer_id"])):
        report(f"{name}: duplicate ({', '.join(cols)}) rows", _dupes(t[name], cols))
    failed = docs.filter(pc.equal(docs.column("status"), "failed"))
    ok = docs.filter(pc.equal(docs.column("status"), "ok"))
    report("failed documents without an errors row", _orphans(failed, t["errors"], doc))
    for name in ("pages", "errors"):
        report(f"{name} rows without a documents row", _orphans(t[name], docs, doc))
    for name in ("lines", "entities", "pairs"):
        report(f"{name} rows of a document that is missing or not ok", _orphans(t[name], ok, doc))
    for side in ("question_id", "answer_id"):
        report(f"pairs whose {side} is not an entity of the page",
               _orphans(t["pairs"], t["entities"], page + [side], page + ["entity_id"]))
    for name in ("lines", "entities", "pairs"):
        report(f"documents whose {name} count differs from the {name} rows", _count_mismatch(docs, t[name], name))
    report("ok documents whose pages_found != pages_processed + pages_skipped, or whose pages rows differ",
           _page_mismatch(docs, t["pages"]))
    return problems


def describe_tables() -> str:
    """Markdown documentation of every column of every output table, generated from ``schemas.parquet``.

    Returns:
        One markdown table per output table: column, Arrow type, nullability, meaning (with unit).
    """
    out = []
    for name, schema in TABLES.items():
        out += [f"#### `{name}`", "", "| column | type | null | meaning |", "|---|---|---|---|"]
        docs = COLUMN_DOCS.get(name, {})
        for field in with_partition(schema):
            null = "yes" if field.nullable else "no"
            kind = f"`{field.type}` (partition)" if field.name == PARTITION_FIELD.name else f"`{field.type}`"
            out.append(f"| `{field.name}` | {kind} | {null} | {docs.get(field.name, '(undocumented)')} |")
        out.append("")
    return "\n".join(out)


def duckdb_views_sql(output: str) -> str:
    """DuckDB statements that create one view per table over ``output`` (run ``README_QUERIES`` after them).

    Args:
        output: output folder or ``gs://`` prefix (DuckDB's httpfs extension reads ``gs://``).

    Returns:
        ``CREATE VIEW`` statements, one per line.
    """
    root = str(output).rstrip("/").replace("'", "''")
    return "\n".join(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{root}/{t}/run_id=*/*.parquet', "
                     "hive_partitioning=true, hive_types={'run_id': VARCHAR});" for t in TABLES)


def readme_section(output: str = "out") -> str:
    """The analysts' README section: table reference and ready DuckDB queries.

    Args:
        output: the output folder named in the example view statements.

    Returns:
        Markdown.
    """
    out = ["### Output tables", "", describe_tables(), "### Querying with DuckDB", "",
           "Create the views once (`duckdb`, or `python -c 'import duckdb'`), then run any query below.", "",
           "```sql", duckdb_views_sql(output), "```", ""]
    for title, sql in README_QUERIES.items():
        out += [f"{title}:", "", "```sql", sql, "```", ""]
    return "\n".join(out)


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


def _load_page(uri: str, page_no: int, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one page exactly as the pipeline does (``transforms.decode``), resized to ``size`` if it differs."""
    from PIL import Image

    from transforms.decode import decode_page

    with fsspec.open(uri, "rb") as f:
        rgb = decode_page(f.read(), page_no)
    if size and size[0] > 0 and (rgb.shape[1], rgb.shape[0]) != size:
        rgb = np.asarray(Image.fromarray(rgb).resize(size))
    return rgb


def _run_models(args: argparse.Namespace, rgb: np.ndarray) -> tuple[PageOcr, PageKie | None]:
    """OCR (+ SER/RE when ``--ser_model_dir`` is given) on one page; Paddle is imported only in this mode."""
    from models.ocr import OcrPredictor

    [ocr] = OcrPredictor()([rgb])
    if not args.ser_model_dir:
        return ocr, None
    from models.kie import KiePredictor

    [kie] = KiePredictor.from_dirs(args.ser_model_dir, args.re_model_dir)([ocr])
    return ocr, kie


def _cmd_visualize(args: argparse.Namespace) -> int:
    from transforms.visualize import draw_page

    if args.image:
        rgb = _load_page(args.image, args.page_no, None)
        ocr, kie = _run_models(args, rgb)
    elif args.output and args.doc_id:
        uri, _, ocr, kie = page_records(args.output, args.doc_id, args.page_no, args.run_id)
        rgb = _load_page(uri, args.page_no, (ocr.width, ocr.height))
    else:
        raise ValueError("visualize needs --image PATH, or --output OUT with --doc_id ID")
    draw_page(rgb, ocr, kie, font_path=args.font_path).save(args.out)
    print(f"wrote {args.out} ({len(ocr.lines)} lines, {len(kie.entities) if kie else 0} entities, "
          f"{len(kie.pairs) if kie else 0} pairs)")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    summary = inspect_output(args.output, args.run_id)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_inspect(summary))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    problems = check_output(args.output, args.run_id, args.expected_documents)
    if not problems:
        print(f"OK {args.output}: accounting invariant and references hold for {len(list_runs(args.output))} run(s)")
        return 0
    print(f"FAILED {args.output}: {len(problems)} violation(s)")
    for p in problems:
        print(f"  - {p}")
    return 1


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``visualize``, ``inspect`` and ``check`` on the ``kiebeam`` parser.

    Each subparser sets ``func``: call ``sys.exit(args.func(args))`` after parsing.

    Args:
        subparsers: the object returned by ``parser.add_subparsers()``.
    """
    v = subparsers.add_parser("visualize", help="draw OCR/SER/RE results of one page to a PNG")
    v.add_argument("--output", help="output folder of an extraction run")
    v.add_argument("--doc_id", help="document to draw (with --output)")
    v.add_argument("--page_no", type=int, default=0, help="0-based page (default 0)")
    v.add_argument("--run_id", help="run to read (needed when several runs hold the document)")
    v.add_argument("--image", help="draw this image instead, running OCR (+ SER/RE with the model flags)")
    v.add_argument("--ser_model_dir", help="SER model folder (with --image)")
    v.add_argument("--re_model_dir", help="RE model folder (with --image)")
    v.add_argument("--font_path", help="font tried before the bundled CJK font")
    v.add_argument("--out", required=True, help="PNG file to write")
    v.set_defaults(func=_cmd_visualize)
    i = subparsers.add_parser("inspect", help="counts, errors, timings and models of an output folder")
    i.add_argument("output")
    i.add_argument("--run_id")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_cmd_inspect)
    c = subparsers.add_parser("check", help="verify the accounting invariant of an output folder (exit 1 if broken)")
    c.add_argument("output")
    c.add_argument("--run_id")
    c.add_argument("--expected_documents", type=int, help="number of inputs of each run, if known")
    c.set_defaults(func=_cmd_check)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m pipelines.inspect_output``) until ``pipelines.cli`` wires these in."""
    parser = argparse.ArgumentParser(prog="kiebeam", description=__doc__)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
