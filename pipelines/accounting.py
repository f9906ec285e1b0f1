"""``kiebeam check``: the run accounting invariant and referential integrity of an output folder."""

from __future__ import annotations

import posixpath
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.output_reader import list_runs, published_version, read_parts
from schemas.parquet import TABLES, with_partition

__all__ = ["check_output"]


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

    Only published versions are checked (what every reader sees; ``transforms.write``). Checked per run: the
    files of its published version are exactly those its pointer lists (none missing, none added); no file
    stores ``run_id`` as a column (it is the partition key, and
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
        parts = read_parts(output, name, run_id)
        for r in runs:
            pointer = published_version(output, r) or {"files": {}, "version": None}
            listed = set(pointer["files"].get(name, []))
            present = {posixpath.basename(path) for run, path, _, _ in parts if run == r}
            report(f"{name}: files of run {r}'s published version {pointer['version']} that are missing",
                   [(f,) for f in sorted(listed - present)])
            report(f"{name}: files in run {r}'s published version {pointer['version']} that its pointer does not "
                   f"list", [(f,) for f in sorted(present - listed)])
        report(f"{name}: files that store run_id as a column (it must live only in the run_id= folder)",
               [(path,) for _, path, _, stores_run_id in parts if stores_run_id])
        t[name] = pa.concat_tables([p[2] for p in parts]) if parts else with_partition(TABLES[name]).empty_table()
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
