"""The analysts' reference of the output tables: column meanings, ready DuckDB queries, the README section.

``describe_tables()`` and ``README_QUERIES`` are generated from ``schemas.parquet`` and tested verbatim against a
real folder, so they cannot rot.
"""

from __future__ import annotations

from schemas.parquet import PARTITION_FIELD, SCHEMA_VERSION, STAGES, TABLES, with_partition

__all__ = ["COLUMN_DOCS", "README_QUERIES", "describe_tables", "duckdb_views_sql", "readme_section"]

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
        "ocr_runtime": "backend/device/precision of the detector and recognizer, e.g. "
                       "`det=openvino/cpu/fp32;rec=openvino/cpu/fp32` (`--ocr_backend`, `--ocr_precision`)",
        "kie_runtime": "backend/device/precision of SER and RE, e.g. `ser=paddle/cpu/bf16;re=paddle/cpu/bf16` "
                       "(`--kie_precision`); null if off",
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
    # Only the version each run's pointer names (transforms.write): a killed or half-replaced launch is invisible.
    return "\n".join(
        f"CREATE OR REPLACE VIEW {t} AS SELECT f.* EXCLUDE (version) FROM read_parquet("
        f"'{root}/{t}/run_id=*/version=*/*.parquet', hive_partitioning=true, "
        "hive_types={'run_id': VARCHAR, 'version': VARCHAR}) f SEMI JOIN read_json("
        f"'{root}/_published/run_id=*.json', columns={{'run_id': 'VARCHAR', 'version': 'VARCHAR'}}) p "
        "USING (run_id, version);" for t in TABLES)


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
