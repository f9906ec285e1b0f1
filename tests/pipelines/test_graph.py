"""The extraction graph's joins and accounting, checked as Beam's own tests do: ``TestPipeline`` + ``assert_that``.

``pipelines.extract.build_graph`` is built into a ``TestPipeline`` on the FnApiRunner over a handful of tiny inputs
written to a temporary folder: a small text page matched by two patterns and listed again in a manifest, a 3-page
TIFF capped at 2 pages, an empty file, a file that is not an image, and a manifest row that cannot be parsed.
OCR is the real PP-OCRv4 on small pictures and SER/RE the tiny random-weight models, so the numbers of lines,
entities and pairs are not known in advance: the assertions are about how the rows of the six tables relate.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected by pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageDraw, ImageFont

from pipelines.extract import build_graph, run
from pipelines.options import to_config
from pipelines.output_reader import read_table
from schemas.parquet import TABLES

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples" / "zh_train_4.jpg"


def _page(text: str) -> Image.Image:
    im = Image.new("RGB", (360, 120), "white")
    font = ImageFont.load_default(size=28)
    ImageDraw.Draw(im).text((16, 40), text, fill="black", font=font)
    return im


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("graph")
    (root / "in").mkdir()
    Image.open(EXAMPLE).convert("RGB").crop((300, 150, 1500, 450)).resize((600, 150)).save(root / "in" / "form.png")
    frames = [_page(t) for t in ("Name: Ada", "Date: 1990", "Page three")]
    frames[0].save(root / "in" / "three.tif", save_all=True, append_images=frames[1:])
    (root / "in" / "empty.jpg").write_bytes(b"")
    (root / "in" / "bad.jpg").write_bytes(b"this is not a jpeg")
    (root / "manifest.csv").write_text(f'uri,doc_id\n{root / "in" / "form.png"},again\n"unclosed,quote\n')
    return root


def _options(root: Path, tiny_kie_dirs, *extra: str) -> PipelineOptions:
    ser, re_dir = tiny_kie_dirs
    return PipelineOptions([
        f"--input={root / 'in' / 'form.png'}", f"--input={root / 'in' / '*'}",  # form.png is matched twice
        f"--manifest={root / 'manifest.csv'}", f"--output={root / 'out'}", "--run_id=g", "--max_pages=2",
        f"--ser_model_dir={ser}", f"--re_model_dir={re_dir}", "--progress_interval_secs=0", "--runner=FnApiRunner",
        *extra])


def _docs(rows: list[dict]) -> list[tuple]:
    return [(d["doc_id"], d["status"], d["error_stage"], d["pages_found"], d["pages_processed"], d["pages_failed"],
             d["pages_skipped"]) for d in rows]


EXPECTED_DOCS = [  # (doc_id, status, error_stage, pages found / processed / failed / skipped)
    ("form", "ok", None, 1, 1, 0, 0),  # matched by both patterns: one row
    ("again", "ok", None, 1, 1, 0, 0),  # the same file from the manifest: its own row
    ("three", "ok", None, 3, 2, 0, 1),  # --max_pages=2: the third page is counted, not decoded
    ("empty", "failed", "probe", 0, 0, 0, 0),
    ("bad", "failed", "probe", 0, 0, 0, 0),
    ("line-3", "failed", "read", 0, 0, 0, 0),  # the unparseable manifest row
]


def _tagged(tables: dict[str, beam.PCollection], label: str) -> beam.PCollection:
    """Every table's rows as ``(table, row)`` in one PCollection, for a matcher that relates the tables."""
    return ([tables[t] | f"{label}Tag{t.capitalize()}" >> beam.Map(lambda r, t=t: (t, r)) for t in TABLES]
            | f"{label}FlattenTables" >> beam.Flatten())


def _relations_hold(tagged: list[tuple[str, dict]]) -> None:
    """The accounting of ``kiebeam check``, asserted on the rows before they are written."""
    rows: dict[str, list[dict]] = {t: [] for t in TABLES}
    for table, row in tagged:
        rows[table].append(row)
    docs = {d["doc_key"]: d for d in rows["documents"]}
    assert len(docs) == len(rows["documents"]), "one documents row per input"
    for table in ("pages", "lines", "entities", "pairs", "errors"):
        assert {r["doc_key"] for r in rows[table]} <= set(docs), f"{table} rows point at a document"
    for table in ("lines", "entities", "pairs"):
        per_doc = Counter(r["doc_key"] for r in rows[table])
        assert {k: d[table] for k, d in docs.items() if d["status"] == "ok"} == {
            k: per_doc.get(k, 0) for k, d in docs.items() if d["status"] == "ok"}, f"documents.{table} = its rows"
    pages = Counter(r["doc_key"] for r in rows["pages"])
    for key, d in docs.items():
        if d["status"] == "ok":
            assert pages[key] == d["pages_processed"] + d["pages_failed"]
    failed = {k for k, d in docs.items() if d["status"] == "failed"}
    assert failed == {r["doc_key"] for r in rows["errors"]}, "an errors row for every failed document, and only"
    entities = {(r["doc_key"], r["page_no"], r["entity_id"]) for r in rows["entities"]}
    for p in rows["pairs"]:
        assert {(p["doc_key"], p["page_no"], p[side]) for side in ("question_id", "answer_id")} <= entities
    assert sum(d["lines"] for d in docs.values() if d["lines"]) > 0  # OCR read the pages


def test_graph_joins_every_input_to_one_documents_row(inputs, tiny_kie_dirs):
    with BeamTestPipeline(options=_options(inputs, tiny_kie_dirs)) as p:
        tables = build_graph(p, to_config(p.options))
        assert_that(tables["documents"] | beam.Map(lambda d: _docs([d])[0]), equal_to(EXPECTED_DOCS),
                    label="CheckDocuments")
        assert_that(tables["pages"] | beam.Map(lambda r: (r["doc_id"], r["page_no"], r["status"])),
                    equal_to([("form", 0, "ok"), ("again", 0, "ok"), ("three", 0, "ok"), ("three", 1, "ok")]),
                    label="CheckPages")
        assert_that(tables["errors"] | beam.Map(lambda r: (r["doc_id"], r["stage"], r["error_type"])),
                    equal_to([("empty", "probe", "empty_file"), ("bad", "probe", "unsupported_format"),
                              ("line-3", "read", "malformed_manifest_row")]), label="CheckErrors")
        assert_that(_tagged(tables, "All"), _relations_hold, label="CheckAccounting")
        assert_that(tables["documents"] | beam.Map(lambda d: d["kie_enabled"]) | beam.Distinct(), equal_to([True]),
                    label="CheckKieRan")


def test_run_builds_the_same_graph_into_a_test_pipeline(inputs, tiny_kie_dirs):
    """``run(argv, test_pipeline=...)``, with per-batch timeouts: the graph with Beam's dead-letter branch."""
    options = _options(inputs, tiny_kie_dirs, "--inference_timeout_secs=600", "--run_id=t")
    result = run(test_pipeline=BeamTestPipeline(options=options))  # no argv: the test pipeline's options
    assert result.state == "DONE"
    docs = read_table(str(inputs / "out"), "documents", "t").to_pylist()
    assert sorted(_docs(docs)) == sorted(EXPECTED_DOCS)
