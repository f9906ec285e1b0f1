"""The output layout read by Hive-aware readers: ``run_id`` only in the folder, never a file column.

Two runs (one with a numeric-looking run id) are written by the real ``WriteRunTables`` on the FnApiRunner from
rows built by the real row builders (no models: synthetic OCR/KIE outcomes), then read back with pyarrow
(``pq.read_table`` and datasets), DuckDB (``hive_partitioning``) and the project's own readers.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.accounting import check_output
from pipelines.inspect_summary import inspect_output
from pipelines.output_reader import read_table
from pipelines.table_docs import README_QUERIES, duckdb_views_sql
from schemas.parquet import PARTITIONING, TABLES, with_partition
from schemas.records import Entity, KeyValuePair, OcrLine, PageKie, PageOcr, PageOutcome
from schemas.refs import DocHeader, DocRef
from transforms.rows import ROW_TABLES, BuildDocumentRowFn, ToRowsFn
from transforms.write import WriteRunTables

RUNS = ("r1", "2024")


def _line(text: str, x: int, y: int) -> OcrLine:
    poly = ((float(x), float(y)), (x + 50.0, float(y)), (x + 50.0, y + 10.0), (float(x), y + 10.0))
    return OcrLine(text=text, score=0.9, polygon=poly, box=(x, y, x + 50, y + 10), det_score=0.8)


def _outcome(doc: DocRef, page_no: int) -> PageOutcome:
    ocr = PageOcr(200, 100, (_line("Name:", 0, 0), _line("Ada", 60, 0)), det_ms=3.0, rec_ms=4.0)
    kie = PageKie(line_labels=("QUESTION", "ANSWER"), line_scores=(0.7, 0.6),
                  entities=(Entity(0, "QUESTION", "Name:", (0, 0, 50, 10), 0.7, (0,)),
                            Entity(1, "ANSWER", "Ada", (60, 0, 110, 10), 0.6, (1,))),
                  pairs=(KeyValuePair(0, 1, 0.8),), windows=1, ser_ms=5.0, re_ms=1.0)
    return PageOutcome(doc, page_no, 200, 100, decode_ms=2.0, ocr=ocr, kie=kie, ocr_model="ocr@1", kie_model="kie@1")


def _tables(run_id: str) -> dict[str, list[dict]]:
    """Rows of one run: a 3-page PDF capped at 2 pages and a single-page image, from the real row builders."""
    rows: dict[str, list[dict]] = {name: [] for name in TABLES}
    docs = [(DocRef("k-pdf", "form", "/in/form.pdf"), "pdf", 3, 2), (DocRef("k-img", "scan", "/in/scan.jpg"), "jpeg",
                                                                      1, 1)]
    for doc, fmt, found, to_process in docs:
        summaries = []
        for page_no in range(to_process):
            for out in ToRowsFn(run_id).process(_outcome(doc, page_no)):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    rows[out.tag].append(out.value)
                else:
                    summaries.append(out[1])
        header = DocHeader(doc, sha256="0" * 64, size_bytes=10, format=fmt, pages_found=found,
                           pages_to_process=to_process)
        rows["documents"] += list(BuildDocumentRowFn(run_id, True).process((doc.doc_key, {
            "headers": [header], "pages": summaries})))
    return rows


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables") / "out"
    for run_id in RUNS:
        rows = _tables(run_id)
        with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
            pcolls = {name: p | f"Create{name.capitalize()}" >> beam.Create(rows[name], reshuffle=False)
                      for name in TABLES}
            _ = pcolls | WriteRunTables(str(out), run_id, launch_id=f"launch-{run_id}")
    return out


def test_files_hold_the_schema_columns_and_the_folder_holds_run_id(output):
    assert set(ROW_TABLES) | {"documents"} == set(TABLES)
    for name, schema in TABLES.items():
        for run_id in RUNS:
            files = sorted((output / name / f"run_id={run_id}" / f"version=launch-{run_id}").glob("*.parquet"))
            assert files and (output / "_published" / f"run_id={run_id}.json").is_file()
            assert all(pq.read_schema(f).names == schema.names for f in files)  # no run_id column


def test_pyarrow_reads_a_table_folder_with_run_id_from_the_partition(output):
    plain = pq.read_table(output / "lines")  # default hive discovery: run_id and version from the folders
    assert sorted(set(plain.column("run_id").to_pylist())) == sorted(RUNS) and plain.num_rows == 2 * 6
    docs = pq.read_table(output / "documents", partitioning=PARTITIONING)
    assert docs.schema.field("run_id").type == pa.string()
    by_run = {(r["run_id"], r["doc_id"]): r for r in docs.to_pylist()}
    assert set(by_run) == {(r, d) for r in RUNS for d in ("form", "scan")}
    form = by_run[("2024", "form")]
    assert (form["pages_found"], form["pages_processed"], form["pages_skipped"], form["status"]) == (3, 2, 1, "ok")
    pairs = ds.dataset(output / "pairs", format="parquet", partitioning=PARTITIONING)
    assert pairs.to_table(filter=ds.field("run_id") == "2024").num_rows == 3


def test_duckdb_reads_the_partitions_and_the_readme_views_run(output):
    con = duckdb.connect()
    got = con.execute(f"SELECT run_id, typeof(run_id), count(*) FROM read_parquet('{output}/documents/*/*/*.parquet', "
                      "hive_partitioning=true, hive_types={'run_id': VARCHAR}) GROUP BY ALL ORDER BY 1").fetchall()
    assert got == [("2024", "VARCHAR", 2), ("r1", "VARCHAR", 2)]
    con.execute(duckdb_views_sql(str(output)))
    assert con.execute("SELECT count(DISTINCT run_id), sum(pages_skipped) FROM documents").fetchone() == (2, 2)
    assert all(con.execute(sql).fetchall() is not None for sql in README_QUERIES.values())


def test_project_readers_and_checker_agree(output):
    docs = read_table(str(output), "documents")
    assert docs.schema == with_partition(TABLES["documents"]) and docs.num_rows == 4
    assert check_output(str(output), expected_documents=2) == []
    s = inspect_output(str(output), run_id="2024")
    assert s["documents"] == {"total": 2, "ok": 2} and s["pages"] == {"total": 3, "ok": 3}


def test_a_file_that_also_stores_run_id_breaks_hive_readers_and_is_flagged(output, tmp_path):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(output, copy)
    legacy = sorted((copy / "pages").glob("run_id=*/version=*/*.parquet"))
    for path in legacy:  # the schema 1.x layout: run_id in the folder AND as a column
        t = pq.read_table(path)
        run_id = path.parent.parent.name.split("=", 1)[1]
        pq.write_table(t.append_column("run_id", pa.array([run_id] * t.num_rows)), path)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):  # column vs partition: duplicate or clashing types
        pq.read_table(copy / "pages")
    problems = check_output(str(copy))
    assert len(problems) == 1 and problems[0].startswith(
        "pages: files that store run_id as a column (it must live only in the run_id= folder): 2 "), problems
    assert read_table(str(copy), "pages").num_rows == 6  # the project's reader still copes
