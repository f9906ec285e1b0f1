"""The extraction pipeline end to end on the FnApiRunner: real XFUND crops, real PP-OCRv4, tiny SER/RE, real Parquet.

Pages are small crops of XFUND pages so OCR stays cheap on 2 shared cores; each run is computed once per module.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcs_emulator import gcs_emulator
from gcs_emulator import put as _put
from PIL import Image

from models.capabilities import detect_capabilities
from pipelines.extract import run, summarize
from schemas.parquet import PARTITIONING, TABLES

pytestmark = pytest.mark.slow
RUNNER = "--runner=FnApiRunner"
_RESULTS: dict = {}


def _crop(src: Path, box: tuple[int, int, int, int], scale: float = 0.5) -> Image.Image:
    im = Image.open(src).convert("RGB").crop(box)
    return im.resize((int(im.width * scale), int(im.height * scale)))


def _table(out: Path, name: str, run_id: str) -> list[dict]:
    """One run's rows, read the way analysts do: the table folder as a Hive-partitioned dataset."""
    assert sorted((out / name / f"run_id={run_id}").glob("version=*/*.parquet")), f"no {name} files for {run_id}"
    table = pq.read_table(out / name, partitioning=PARTITIONING, filters=[("run_id", "=", run_id)])
    # The files hold exactly the schema's columns; pyarrow appends run_id from the folder.
    assert table.schema.names == TABLES[name].names + ["run_id"], table.schema.names
    assert table.schema.field("run_id").type == pa.string()
    return table.to_pylist()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, xfund_zh_train) -> Path:
    """``in/``: two single-page crops, a 2-page TIFF, a 3-page PDF, and a file that is not an image."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "in").mkdir()
    img = xfund_zh_train / "image"
    _crop(img / "zh_train_0.jpg", (300, 150, 2200, 650)).save(root / "in" / "a.jpg", quality=92)
    _crop(img / "zh_train_1.jpg", (300, 150, 2200, 650)).save(root / "in" / "b.png")
    p1, p2 = (_crop(img / "zh_train_2.jpg", box) for box in ((300, 150, 1600, 500), (300, 600, 1600, 950)))
    p1.save(root / "in" / "two.tif", save_all=True, append_images=[p2])
    # A PDF of three small XFUND crops at 100 dpi (rendered with --pdf_dpi=100: same pixels); --max_pages=2 skips
    # the third page on purpose.
    pdf = [_crop(img / f"zh_train_{i}.jpg", box) for i, box in ((3, (300, 150, 1600, 500)), (2, (300, 600, 1600, 950)),
                                                                (5, (300, 150, 1600, 500)))]
    pdf[0].save(root / "in" / "form.pdf", "PDF", resolution=100.0, save_all=True, append_images=pdf[1:])
    (root / "in" / "bad.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture(scope="module")
def first_run(corpus, tiny_kie_dirs) -> Path:
    """Run r1: OCR + SER + RE over ``in/*`` (5 inputs, one bad), at most 2 pages per document."""
    ser, re_dir = tiny_kie_dirs
    out = corpus / "out"
    result = run([f"--input={corpus / 'in' / '*'}", f"--output={out}", "--run_id=r1", f"--ser_model_dir={ser}",
                  f"--re_model_dir={re_dir}", "--ocr_batch_size=2", "--max_pages=2", "--pdf_dpi=100", RUNNER])
    assert result.state == "DONE"
    _RESULTS["r1"] = result
    return out


def _counter(result, name: str) -> int:
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in found)


def _check_accounting(docs: list[dict], errors: list[dict], inputs: int) -> None:
    assert len(docs) == inputs
    assert len({d["doc_key"] for d in docs}) == inputs
    ok = [d for d in docs if d["status"] == "ok"]
    failed = [d for d in docs if d["status"] == "failed"]
    assert len(ok) + len(failed) == inputs
    for d in failed:  # every failed document has an errors row
        assert any(e["doc_key"] == d["doc_key"] and e["stage"] == d["error_stage"] for e in errors)


def test_every_table_of_a_kie_run(first_run):
    out = first_run
    docs = {d["doc_id"]: d for d in _table(out, "documents", "r1")}
    errors = _table(out, "errors", "r1")
    _check_accounting(list(docs.values()), errors, 5)
    assert docs["bad"]["status"] == "failed" and docs["bad"]["error_stage"] == "probe"
    assert docs["bad"]["error_type"] == "unsupported_format"
    assert [(e["doc_id"], e["page_no"], e["stage"]) for e in errors] == [("bad", None, "probe")]
    for name in ("a", "b", "two", "form"):
        d = docs[name]
        assert d["status"] == "ok" and d["kie_enabled"] and d["lines"] > 0, d
        assert len(d["sha256"]) == 64 and d["size_bytes"] > 0
        assert d["ocr_model"] and d["ocr_model"] == docs["a"]["ocr_model"]
        assert d["kie_model"].startswith("ser=") and ";re=" in d["kie_model"]
        # the backend and precision that made the row (defaults: auto, resolved on this machine)
        assert d["ocr_runtime"] == "det=openvino/cpu/fp32;rec=openvino/cpu/fp32"
        kie_precision = "bf16" if detect_capabilities().bf16 else "fp32"
        assert d["kie_runtime"] == f"ser=paddle/cpu/{kie_precision};re=paddle/cpu/{kie_precision}"
        assert d["det_ms"] > 0 and d["rec_ms"] > 0 and d["ser_ms"] > 0
    assert (docs["two"]["format"], docs["two"]["pages_found"], docs["two"]["pages_processed"]) == ("tiff", 2, 2)
    assert docs["two"]["pages_skipped"] == 0 and docs["a"]["pages_skipped"] == 0
    # The PDF is over the page cap: pages 0-1 processed, page 2 counted as skipped (not silently dropped).
    form = docs["form"]
    assert (form["format"], form["pages_found"], form["pages_processed"], form["pages_failed"],
            form["pages_skipped"]) == ("pdf", 3, 2, 0, 1)
    assert (form["page_width"], form["page_height"]) == (650, 175)
    assert (docs["a"]["page_width"], docs["a"]["page_height"]) == (950, 250)

    pages = _table(out, "pages", "r1")
    assert sorted((p["doc_id"], p["page_no"]) for p in pages) == [
        ("a", 0), ("b", 0), ("form", 0), ("form", 1), ("two", 0), ("two", 1)]
    form_pages = {p["page_no"]: p for p in pages if p["doc_id"] == "form"}
    assert sum(p["lines"] for p in form_pages.values()) == form["lines"] and all(
        (p["width"], p["height"]) == (650, 175) and p["lines"] > 0 for p in form_pages.values()), form_pages
    assert {r["page_no"] for r in _table(out, "lines", "r1") if r["doc_id"] == "form"} == {0, 1}
    assert all(p["status"] == "ok" for p in pages)

    lines = _table(out, "lines", "r1")
    for p in pages:  # line ids are the reading-order index 0..n-1 of each page, labels from SER
        ids = sorted(r["line_id"] for r in lines if r["doc_key"] == p["doc_key"] and r["page_no"] == p["page_no"])
        assert ids == list(range(p["lines"])) and p["lines"] > 0
    assert all(r["ser_label"] is not None and 0 <= r["x0"] <= r["x1"] and r["text"] for r in lines)
    assert sum(d["lines"] for d in docs.values()) == len(lines)

    entities = _table(out, "entities", "r1")
    pairs = _table(out, "pairs", "r1")
    ents = {(e["doc_key"], e["page_no"], e["entity_id"]): e for e in entities}
    labels = {(r["doc_key"], r["page_no"], r["line_id"]): r["ser_label"] for r in lines}
    for e in entities:  # an entity is a line whose SER label is not O
        assert e["line_ids"] and all(labels[(e["doc_key"], e["page_no"], i)] == e["label"] for i in e["line_ids"])
    assert len(entities) == sum(1 for label in labels.values() if label not in ("O", "OTHER"))
    for p in pairs:
        q = ents[(p["doc_key"], p["page_no"], p["question_id"])]
        a = ents[(p["doc_key"], p["page_no"], p["answer_id"])]
        assert (q["text"], a["text"]) == (p["question_text"], p["answer_text"])
    assert sum(d["pairs"] for d in docs.values()) == len(pairs)
    for name in ("documents", "pages", "lines", "entities", "pairs", "errors"):  # one version, published
        assert len(list((out / name / "run_id=r1").iterdir())) == 1
    assert (out / "_published" / "run_id=r1.json").is_file()
    assert not (out / "_staging").exists()
    result = _RESULTS["r1"]
    assert (_counter(result, "documents_ok"), _counter(result, "documents_failed_probe")) == (4, 1)
    assert (_counter(result, "lines"), _counter(result, "pairs")) == (len(lines), len(pairs))
    s = summarize(str(out), "r1")
    assert (s["documents"], s["ok"], s["failed"], s["lines"], s["kie_enabled"]) == (5, 4, 1, len(lines), True)
    assert {d["run_id"] for d in docs.values()} == {"r1"}
    # Hive readers: DuckDB takes run_id from the folder; the checker's accounting (skipped pages too) holds.
    import duckdb

    from pipelines.inspect_output import check_output

    found = duckdb.connect().execute(
        f"SELECT run_id, count(*), sum(pages_skipped) FROM read_parquet('{out}/documents/*/*/*.parquet', "
        "hive_partitioning=true) GROUP BY run_id").fetchall()
    assert found == [("r1", 5, 1)]
    assert check_output(str(out), expected_documents=5) == []


@pytest.fixture(scope="module")
def rerun(first_run, corpus) -> Path:
    """Run r1 again from a CSV manifest (a duplicated row, a missing file), OCR only, 2 worker processes,
    batching across bundles (``--max_batch_duration_secs``: Beam's stateful ``BatchElements``)."""
    manifest = corpus / "manifest.csv"
    manifest.write_text("uri,doc_id\nin/a.jpg,A\nin/a.jpg,A\nin/missing.jpg,M\n")
    result = run([f"--manifest={manifest}", f"--output={first_run}", "--run_id=r1", "--ser_model_dir=none", RUNNER,
                  "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--max_batch_duration_secs=1"])
    assert result.state == "DONE"
    return first_run


def test_rerun_replaces_the_partition_and_keeps_duplicate_inputs_apart(rerun):
    docs = _table(rerun, "documents", "r1")
    errors = _table(rerun, "errors", "r1")
    _check_accounting(docs, errors, 3)  # nothing left from the first r1 run
    assert sorted(d["doc_id"] for d in docs) == ["A", "A", "M"]
    assert not any(d["kie_enabled"] for d in docs)
    a1, a2 = sorted((d for d in docs if d["doc_id"] == "A"), key=lambda d: d["doc_key"])
    assert a1["doc_key"] != a2["doc_key"] and a1["sha256"] == a2["sha256"] and a1["lines"] == a2["lines"] > 0
    missing = next(d for d in docs if d["doc_id"] == "M")
    assert (missing["status"], missing["error_stage"]) == ("failed", "read")
    lines = _table(rerun, "lines", "r1")
    assert len(lines) == a1["lines"] * 2 and all(r["ser_label"] is None for r in lines)
    texts = {k: [r["text"] for r in sorted(lines, key=lambda r: r["line_id"]) if r["doc_key"] == k]
             for k in (a1["doc_key"], a2["doc_key"])}
    assert texts[a1["doc_key"]] == texts[a2["doc_key"]]
    assert _table(rerun, "entities", "r1") == [] and _table(rerun, "pairs", "r1") == []


def test_new_run_id_gets_its_own_partition(rerun, corpus):
    result = run([f"--input={corpus / 'in' / 'a.jpg'}", f"--output={rerun}", "--run_id=r2", "--ser_model_dir=none",
                  RUNNER])
    assert result.state == "DONE"
    assert [d["doc_id"] for d in _table(rerun, "documents", "r2")] == ["a"]
    assert len(_table(rerun, "documents", "r1")) == 3
    assert sorted(p.name for p in (rerun / "documents").iterdir()) == ["run_id=r1", "run_id=r2"]


@pytest.fixture(scope="module")
def gcs(monkeypatch_module) -> str:
    """A local GCS emulator with bucket ``kiebeam-test``; yields the bucket URI."""
    with gcs_emulator("kiebeam-test") as host:
        monkeypatch_module.setenv("STORAGE_EMULATOR_HOST", host)
        yield "gs://kiebeam-test"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_reads_and_writes_gs_through_an_emulator(gcs, corpus, tiny_kie_dirs):
    ser, _ = tiny_kie_dirs
    _put(corpus / "in" / "a.jpg", f"{gcs}/in/a.jpg")
    _put(corpus / "in" / "bad.jpg", f"{gcs}/in/bad.jpg")
    for f in Path(ser).iterdir():  # the SER model also comes from gs:// (copied to a local cache, verified)
        _put(f, f"{gcs}/models/ser/{f.name}")
    result = run([f"--input={gcs}/in/*.jpg", f"--output={gcs}/out", "--run_id=g1",
                  f"--ser_model_dir={gcs}/models/ser", "--re_model_dir=none", RUNNER])
    assert result.state == "DONE"
    s = summarize(f"{gcs}/out", "g1")
    assert (s["documents"], s["ok"], s["failed"], s["errors"], s["kie_enabled"]) == (2, 1, 1, 1, True)
    assert s["lines"] > 0 and s["pairs"] == 0

    from apache_beam.io.filesystems import FileSystems

    assert FileSystems.exists(f"{gcs}/out/_published/run_id=g1.json")
    assert not FileSystems.match([f"{gcs}/out/_staging/**"])[0].metadata_list
