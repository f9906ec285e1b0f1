"""inspect, check, README queries and visualize (pipelines.inspect_output) over a real Parquet output folder.

The folder is written with pyarrow under ``schemas.parquet``'s explicit schemas, from the gold XFUND labels of two
real pages (as OCR lines + SER entities + RE pairs) plus one undecodable input, in the pipeline's layout
``<out>/<table>/run_id=<run>/version=v1/part-*.parquet`` + the pointer ``<out>/_published/run_id=<run>.json``;
``run_id`` lives only in the folder name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.accounting import check_output
from pipelines.inspect_output import main
from pipelines.inspect_summary import inspect_output
from pipelines.output_reader import read_table
from pipelines.table_docs import COLUMN_DOCS, README_QUERIES, describe_tables, duckdb_views_sql, readme_section
from pipelines.visualize import page_records
from schemas.parquet import PARTITIONING, SCHEMA_VERSION, TABLES, with_partition

RUN = "r1"
DOCS = ("zh_train_0", "zh_train_1")


def _box(points: list[list[float]]) -> tuple[int, int, int, int]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))


def _rows_for(xfund: Path, name: str, key: dict) -> dict[str, list[dict]]:
    labels = dict(line.split("\t", 1) for line in (xfund / "train.json").read_text(encoding="utf-8").splitlines())
    items = json.loads(labels[f"{name}.jpg"])
    out: dict[str, list[dict]] = {t: [] for t in ("lines", "entities", "pairs")}
    ent_of: dict[int, dict] = {}
    for line_id, it in enumerate(items):
        x0, y0, x1, y1 = _box(it["points"])
        label = "O" if it["label"] == "other" else it["label"].upper()
        out["lines"].append({**key, "page_no": 0, "line_id": line_id, "text": it["transcription"], "score": 0.9,
                             "det_score": 0.8, "polygon": [[float(x), float(y)] for x, y in it["points"]],
                             "x0": x0, "y0": y0, "x1": x1, "y1": y1, "ser_label": label, "ser_score": 0.9})
        if label != "O":
            ent = {**key, "page_no": 0, "entity_id": len(out["entities"]), "label": label, "text": it["transcription"],
                   "x0": x0, "y0": y0, "x1": x1, "y1": y1, "score": 0.9, "line_ids": [line_id]}
            out["entities"].append(ent)
            ent_of[it["id"]] = ent
    links = sorted({(q, a) for it in items for q, a in it["linking"] if q in ent_of and a in ent_of})
    for q, a in links:
        eq, ea = ent_of[q], ent_of[a]
        if eq["label"] != "QUESTION" or ea["label"] != "ANSWER":
            continue
        out["pairs"].append({**key, "page_no": 0, "question_id": eq["entity_id"], "answer_id": ea["entity_id"],
                             "question_text": eq["text"], "answer_text": ea["text"],
                             **{f"question_{c}": eq[c] for c in ("x0", "y0", "x1", "y1")},
                             **{f"answer_{c}": ea[c] for c in ("x0", "y0", "x1", "y1")}, "score": 0.8})
    return out


def _build(out: Path, xfund: Path, run_id: str = RUN) -> None:
    """Write one run: two ok XFUND pages and one failed (undecodable) input."""
    rows: dict[str, list[dict]] = {t: [] for t in TABLES}
    for i, name in enumerate(DOCS):
        key = {"doc_key": f"k{i}", "doc_id": name}
        kie = _rows_for(xfund, name, key)
        for t in kie:
            rows[t] += kie[t]
        n = {t: len(kie[t]) for t in kie}
        timing = {"decode_ms": 40.0 + i, "det_ms": 120.0 + i, "rec_ms": 1500.0 + 10 * i, "ser_ms": 300.0,
                  "re_ms": 90.0}
        rows["pages"].append({**key, "page_no": 0, "width": 2480, "height": 3508, "status": "ok", "windows": 1,
                              **n, **timing})
        rows["documents"].append({**key, "uri": str(xfund / "image" / f"{name}.jpg"), "sha256": "0" * 64,
                                  "size_bytes": 1000, "format": "jpeg", "pages_found": 1, "pages_processed": 1,
                                  "pages_failed": 0, "page_width": 2480, "page_height": 3508, "status": "ok",
                                  "read_ms": 5.0, **n, **timing, "ocr_model": "det=v4;rec=v4",
                                  "kie_model": "vi-layoutxlm", "kie_enabled": True, "windows": 1,
                                  "schema_version": SCHEMA_VERSION})
    bad = {"doc_key": "k2", "doc_id": "broken"}
    rows["documents"].append({**bad, "uri": "/nowhere/broken.jpg", "status": "failed", "error_stage": "decode",
                              "error_type": "truncated", "pages_found": 0, "read_ms": 1.0, "kie_enabled": True,
                              "ocr_model": "det=v4;rec=v4", "kie_model": "vi-layoutxlm",
                              "schema_version": SCHEMA_VERSION})
    rows["errors"].append({**bad, "uri": "/nowhere/broken.jpg", "stage": "decode", "error_type": "truncated",
                           "message": "image file is truncated"})
    for table, schema in TABLES.items():
        part = out / table / f"run_id={run_id}" / "version=v1"
        part.mkdir(parents=True, exist_ok=True)
        for row in rows[table]:  # exactly the file schema's columns (from_pylist would drop extras silently)
            assert set(row) <= set(schema.names), sorted(set(row) - set(schema.names))
        pq.write_table(pa.Table.from_pylist(rows[table], schema=schema), part / PART)
    _publish(out, run_id, {t: [PART] for t in TABLES})


PART = "part-00000-of-00001.parquet"


def _publish(out: Path, run_id: str, files: dict[str, list[str]], version: str = "v1") -> None:
    """The run's pointer, as transforms.write writes it (the only thing that makes a version visible)."""
    (out / "_published").mkdir(parents=True, exist_ok=True)
    (out / "_published" / f"run_id={run_id}.json").write_text(json.dumps(
        {"run_id": run_id, "version": version, "schema_version": SCHEMA_VERSION, "files": files}))


@pytest.fixture()
def output(tmp_path, xfund_zh_train) -> Path:
    out = tmp_path / "out"
    _build(out, xfund_zh_train)
    return out


def _rewrite(out: Path, table: str, edit) -> None:
    path = out / table / f"run_id={RUN}" / "version=v1" / PART
    pq.write_table(edit(pq.ParquetFile(path).read()), path)


def _rows(out: Path, table: str) -> list[dict]:
    """Every row of a table, read file by file (independently of the code under test)."""
    return [r for p in sorted(out.glob(f"{table}/run_id=*/version=*/*.parquet"))
            for r in pq.ParquetFile(p).read().to_pylist()]


def test_sound_folder_checks_ok(output, capsys):
    assert check_output(str(output), expected_documents=3) == []
    assert main(["check", str(output)]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_check_detects_a_missing_documents_row(output, capsys):
    _rewrite(output, "documents", lambda t: t.slice(1))  # drop zh_train_0's row; its lines/entities stay
    problems = check_output(str(output), expected_documents=3)
    text = "\n".join(problems)
    assert "documents rows != 3 inputs" in text
    assert "lines rows of a document that is missing or not ok" in text and "k0" in text
    assert main(["check", str(output)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_check_detects_a_duplicate_row(output):
    _rewrite(output, "documents", lambda t: pa.concat_tables([t, t.slice(2, 1)]))
    problems = check_output(str(output))
    assert any("documents: duplicate (run_id, doc_key) rows: 1 (r1 k2 x2)" in p for p in problems), problems


def test_check_detects_counts_that_disagree_with_the_rows(output):
    def bump(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("entities")
        return t.set_column(i, "entities", pc.add(t.column("entities"), 1))

    _rewrite(output, "documents", bump)
    problems = check_output(str(output))
    assert len(problems) == 1 and problems[0].startswith("documents whose entities count differs"), problems


def test_check_detects_a_failed_document_without_error_and_a_dangling_pair(output):
    _rewrite(output, "errors", lambda t: t.slice(0, 0))
    _rewrite(output, "pairs", lambda t: t.set_column(t.schema.get_field_index("answer_id"), "answer_id",
                                                     pa.array([999] * t.num_rows, pa.int32())))
    text = "\n".join(check_output(str(output)))
    assert "failed documents without an errors row: 1 (r1 k2)" in text
    assert "pairs whose answer_id is not an entity of the page" in text


def test_check_detects_an_incomplete_run_and_rows_copied_into_another_partition(output):
    (output / "pages" / f"run_id={RUN}" / "version=v1" / PART).unlink()  # a published file went missing
    shutil.copytree(output / "errors" / f"run_id={RUN}", output / "errors" / "run_id=r2")
    _publish(output, "r2", {"errors": [PART]})
    text = "\n".join(check_output(str(output)))
    assert f"pages: files of run r1's published version v1 that are missing: 1 ({PART})" in text
    # The copied errors rows take run_id r2 from their folder, where no document exists.
    assert "errors rows without a documents row: 1 (r2 k2)" in text


def test_check_detects_pages_that_are_neither_processed_nor_skipped(output):
    def found_more(t: pa.Table) -> pa.Table:  # k0 claims 3 pages found, 1 processed, none skipped
        i = t.schema.get_field_index("pages_found")
        return t.set_column(i, "pages_found", pa.array([3, 1, 0], pa.int32()))

    _rewrite(output, "documents", found_more)
    problems = check_output(str(output))
    assert len(problems) == 1 and problems[0].startswith("ok documents whose pages_found") and "r1 k0" in problems[0]
    _rewrite(output, "documents", lambda t: t.set_column(t.schema.get_field_index("pages_skipped"), "pages_skipped",
                                                         pa.array([2, None, 0], pa.int32())))
    assert check_output(str(output)) == []


def test_check_flags_a_file_that_stores_run_id_as_a_column(output):
    _rewrite(output, "pages", lambda t: t.append_column("run_id", pa.array([RUN] * t.num_rows)))
    problems = check_output(str(output))
    assert len(problems) == 1 and problems[0].startswith("pages: files that store run_id as a column"), problems
    assert read_table(str(output), "pages").column("run_id").to_pylist() == [RUN, RUN]  # still readable


def test_hive_readers_get_run_id_from_the_folder(output, xfund_zh_train):
    _build(output, xfund_zh_train, run_id="2024")  # a numeric-looking run id must stay a string
    for table in TABLES:
        assert "run_id" not in pq.read_schema(next((output / table / f"run_id={RUN}").rglob("*.parquet"))).names
    plain = pq.read_table(output / "documents")  # pyarrow's default hive discovery (run_id and version)
    assert sorted(set(plain.column("run_id").to_pylist())) == ["2024", RUN] and plain.num_rows == 6
    docs = pq.read_table(output / "documents", partitioning=PARTITIONING)
    assert docs.schema.field("run_id").type == pa.string() and docs.num_rows == 6
    assert sorted(set(docs.column("run_id").to_pylist())) == ["2024", RUN]
    dataset = ds.dataset(output / "pairs", format="parquet", partitioning=PARTITIONING)
    assert dataset.count_rows() == len(_rows(output, "pairs")) > 0
    con = duckdb.connect()
    rows = con.execute(f"SELECT run_id, typeof(run_id), count(*) FROM read_parquet('{output}/documents/*/*/*.parquet', "
                       "hive_partitioning=true, hive_types={'run_id': VARCHAR}) GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("2024", "VARCHAR", 3), (RUN, "VARCHAR", 3)]
    assert con.execute(f"SELECT count(*) FROM read_parquet('{output}/lines/*/*/*.parquet', hive_partitioning=true)"
                       ).fetchone()[0] == len(_rows(output, "lines"))
    ours = read_table(str(output), "documents")
    assert ours.schema == with_partition(TABLES["documents"])
    assert sorted(ours.column("run_id").to_pylist()) == sorted(docs.column("run_id").to_pylist())
    assert check_output(str(output), expected_documents=3) == []


def test_inspect_counts_and_timings(output, capsys):
    s = inspect_output(str(output))
    lines = len(_rows(output, "lines"))
    assert s["documents"] == {"total": 3, "ok": 2, "failed": 1}
    assert s["pages"] == {"total": 2, "ok": 2}
    assert s["lines"] == lines > 100
    assert set(s["entities"]["by_label"]) == {"QUESTION", "ANSWER", "HEADER"}
    assert sum(s["entities"]["by_label"].values()) == s["entities"]["total"]
    assert s["errors"] == [{"stage": "decode", "error_type": "truncated", "count": 1}]
    assert s["timings_ms"]["rec"] == pytest.approx({"n": 2, "mean": 1505.0, "p50": 1505.0, "p95": 1509.5})
    assert s["models"]["ocr_model"] == {"det=v4;rec=v4": 3}
    assert s["runs"] == [{"run_id": RUN, "documents": 3, "complete": True}]
    assert main(["inspect", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == s
    assert main(["inspect", str(output)]) == 0
    assert "failed 1" in capsys.readouterr().out


def test_inspect_filters_by_run(output, xfund_zh_train):
    _build(output, xfund_zh_train, run_id="r2")
    assert inspect_output(str(output))["documents"]["total"] == 6
    assert inspect_output(str(output), run_id="r2")["documents"]["total"] == 3
    assert check_output(str(output), expected_documents=3) == []


def test_read_table_reads_only_the_columns_asked_for(output):
    docs = read_table(str(output), "documents", RUN, ["status", "doc_key"])
    assert docs.schema.names == ["run_id", "doc_key", "status"]  # partition first, then schema order
    assert sorted(docs.column("status").to_pylist()) == ["failed", "ok", "ok"]
    assert read_table(str(output), "documents", "nope", ["status"]).schema.names == ["run_id", "status"]
    with pytest.raises(ValueError, match="unknown columns \\['colour'\\]"):
        read_table(str(output), "documents", RUN, ["status", "colour"])


def test_the_run_summary_and_inspect_read_the_same_tables(output, xfund_zh_train):
    from pipelines.extract import summarize

    _build(output, xfund_zh_train, run_id="r2")  # another run in the folder must not leak into r1's summary
    s, seen = summarize(str(output), RUN), inspect_output(str(output), run_id=RUN)
    assert (s["documents"], s["ok"], s["failed"]) == (3, 2, 1) == tuple(seen["documents"][k]
                                                                         for k in ("total", "ok", "failed"))
    assert (s["lines"], s["entities"], s["pairs"]) == (seen["lines"], seen["entities"]["total"], seen["pairs"])
    assert s["pages"] == seen["pages"]["total"] == 2 and s["errors"] == 1
    assert s["failed_by_stage"] == {"decode": 1} and s["kie_enabled"] is True


def test_the_one_reader_reads_gs_through_an_emulator(output, monkeypatch):
    import fsspec
    from gcs_emulator import gcs_emulator

    from pipelines.extract import summarize

    with gcs_emulator("kiebeam-read") as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        gcs = fsspec.filesystem("gs", skip_instance_cache=True)  # Beam's uploader takes seconds a file here
        for path in sorted(p for p in output.rglob("*") if p.is_file()):
            gcs.pipe_file(f"kiebeam-read/out/{path.relative_to(output).as_posix()}", path.read_bytes())
        assert summarize("gs://kiebeam-read/out", RUN) == summarize(str(output), RUN)
        assert check_output("gs://kiebeam-read/out", expected_documents=3) == []


def test_readme_queries_run_verbatim_on_duckdb(output):
    con = duckdb.connect()
    con.execute(duckdb_views_sql(str(output)))
    results = {title: con.execute(sql).fetchall() for title, sql in README_QUERIES.items()}
    pairs = _rows(output, "pairs")
    assert len(results["Key/value pairs of one document"]) == sum(p["doc_id"] == "zh_train_0" for p in pairs) > 0
    assert results["Documents that failed, and why"] == [
        (RUN, "broken", "/nowhere/broken.jpg", "decode", "truncated", "image file is truncated")]
    by_label = {label: n for _, label, n, _ in results["Entity counts by label"]}
    assert by_label == inspect_output(str(output))["entities"]["by_label"]
    top = results["Most frequent question texts"]
    assert 0 < len(top) <= 20 and top[0][1] >= top[-1][1]
    # The README section carries exactly these query texts.
    section = readme_section()
    assert all(sql in section for sql in README_QUERIES.values())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert duckdb_views_sql("out") in readme and all(sql in readme for sql in README_QUERIES.values())


def test_every_column_is_documented():
    undocumented = [f"{t}.{f.name}" for t, s in TABLES.items() for f in s if f.name not in COLUMN_DOCS[t]]
    assert undocumented == []
    text = describe_tables()
    assert "(undocumented)" not in text
    assert all(f"#### `{t}`" in text for t in TABLES)


def test_page_records_round_trip_and_visualize_cli(output, tmp_path):
    uri, page_no, ocr, kie = page_records(str(output), "zh_train_0")
    lines = _rows(output, "lines")
    assert page_no == 0 and uri.endswith("zh_train_0.jpg")
    assert [ln.text for ln in ocr.lines] == [r["text"] for r in lines if r["doc_id"] == "zh_train_0"]
    assert kie is not None and len(kie.entities) > 0 and len(kie.pairs) > 0
    png = tmp_path / "p.png"
    assert main(["visualize", "--output", str(output), "--doc_id", "zh_train_0", "--out", str(png)]) == 0
    pic = np.asarray(Image.open(png).convert("RGB")).astype(int)
    page = np.asarray(Image.open(uri).convert("RGB")).astype(int)
    assert pic.shape == page.shape
    diff = np.abs(pic - page).sum(axis=2)
    e = kie.entities[0]
    assert diff[e.box[1]:e.box[3], e.box[0]:e.box[2]].mean() > 10
    assert main(["visualize", "--output", str(output), "--doc_id", "nope", "--out", str(png)]) == 2


@pytest.fixture(scope="module")
def pipeline_output(tmp_path_factory, ocr_model_dirs) -> Path:
    """A real ``pipelines.extract`` run (FnApiRunner, OCR only): one example page and one truncated file."""
    from pipelines import extract

    examples = Path(__file__).resolve().parent.parent / "pipelines" / "examples"
    inputs = tmp_path_factory.mktemp("in")
    shutil.copy(examples / "zh_train_4.jpg", inputs / "zh_train_4.jpg")
    (inputs / "cut.jpg").write_bytes((examples / "zh_train_16.jpg").read_bytes()[:5000])
    out = tmp_path_factory.mktemp("pipe") / "out"
    extract.run([f"--input={inputs}/*.jpg", f"--output={out}", "--run_id=p1", "--ser_model_dir=none",
                 "--runner=FnApiRunner"])
    return out


@pytest.mark.slow
def test_check_inspect_and_visualize_a_real_pipeline_run(pipeline_output, tmp_path):
    out = str(pipeline_output)
    assert check_output(out, expected_documents=2) == []
    s = inspect_output(out)
    assert s["documents"] == {"total": 2, "ok": 1, "failed": 1}
    assert s["lines"] == len(_rows(pipeline_output, "lines")) > 10
    assert s["errors"][0]["count"] == 1 and s["runs"] == [{"run_id": "p1", "documents": 2, "complete": True}]
    assert {"det", "rec"} <= set(s["timings_ms"])
    png = tmp_path / "p.png"
    assert main(["visualize", "--output", out, "--doc_id", "zh_train_4", "--out", str(png)]) == 0
    _, _, ocr, kie = page_records(out, "zh_train_4")
    assert kie is None and Image.open(png).size == (ocr.width, ocr.height)
    # Break the real folder: drop the failed document's errors row.
    errors = next(pipeline_output.glob("errors/run_id=p1/version=*/*.parquet"))
    backup = errors.read_bytes()
    try:
        pq.write_table(pq.ParquetFile(errors).read().slice(0, 0), errors)
        assert any("failed documents without an errors row: 1" in p for p in check_output(out))
    finally:
        errors.write_bytes(backup)


@pytest.mark.slow
def test_visualize_an_image_directly_runs_ocr(tmp_path, ocr_model_dirs):
    image = Path(__file__).resolve().parent.parent / "pipelines" / "examples" / "zh_train_26.jpg"
    png = tmp_path / "direct.png"
    assert main(["visualize", "--image", str(image), "--out", str(png)]) == 0
    pic, page = Image.open(png), Image.open(image)
    assert pic.size == page.size
    assert not np.array_equal(np.asarray(pic.convert("RGB")), np.asarray(page.convert("RGB")))  # boxes were drawn
