"""Row builders against the explicit Parquet schemas: write -> read round trips, and per-document accounting."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.errors import ErrorInfo
from schemas.parquet import SCHEMA_VERSION, TABLES
from schemas.records import Entity, KeyValuePair, OcrLine, PageKie, PageOcr, PageOutcome
from schemas.refs import DocHeader, DocRef
from transforms.rows import BuildDocumentRowFn, ToRowsFn

DOC = DocRef("gs://b/x.jpg", "x", "gs://b/x.jpg")


def _line(text: str, x: int, y: int) -> OcrLine:
    poly = ((float(x), float(y)), (x + 50.0, float(y)), (x + 50.0, y + 10.0), (float(x), y + 10.0))
    return OcrLine(text=text, score=0.9, polygon=poly, box=(x, y, x + 50, y + 10), det_score=0.8)


def _ok_outcome() -> PageOutcome:
    ocr = PageOcr(200, 100, (_line("Name:", 0, 0), _line("Ada", 60, 0), _line("misc", 0, 50)), det_ms=3.0, rec_ms=4.0)
    kie = PageKie(line_labels=("QUESTION", "ANSWER", "O"), line_scores=(0.7, 0.6, 0.9),
                  entities=(Entity(0, "QUESTION", "Name:", (0, 0, 50, 10), 0.7, (0,)),
                            Entity(1, "ANSWER", "Ada", (60, 0, 110, 10), 0.6, (1,))),
                  pairs=(KeyValuePair(0, 1, 0.8),), windows=1, ser_ms=5.0, re_ms=1.0)
    return PageOutcome(DOC, 0, 200, 100, decode_ms=2.0, ocr=ocr, kie=kie, ocr_model="ocr@1", kie_model="kie@1")


def _split(outputs: list) -> dict[str, list]:
    tables: dict[str, list] = {name: [] for name in TABLES}
    tables["summaries"] = []
    for out in outputs:
        if isinstance(out, beam.pvalue.TaggedOutput):
            tables[out.tag].append(out.value)
        else:
            tables["summaries"].append(out)
    return tables


def _round_trip(tmp_path, name: str, rows: list[dict]) -> None:
    for row in rows:  # the builders fill exactly the schema's columns (from_pylist would drop extras silently)
        assert set(row) == set(TABLES[name].names)
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=TABLES[name]), path)
    back = pq.read_table(path)
    assert back.schema.equals(TABLES[name])
    assert back.to_pylist() == _floats32(rows, TABLES[name])
    assert back.num_rows == len(rows) > 0


def _floats32(rows: list[dict], schema: pa.Schema) -> list[dict]:
    """What float32 columns read back as (the written values rounded to float32)."""
    return pa.Table.from_pylist(rows, schema=schema).to_pylist()


def test_page_rows_round_trip_every_table(tmp_path):
    out = _split(list(ToRowsFn("r1").process(_ok_outcome())))
    assert [r["line_id"] for r in out["lines"]] == [0, 1, 2]
    assert [r["ser_label"] for r in out["lines"]] == ["QUESTION", "ANSWER", "O"]
    assert out["entities"][1]["line_ids"] == [1]
    assert out["pairs"][0]["question_text"] == "Name:" and out["pairs"][0]["answer_text"] == "Ada"
    assert out["pairs"][0]["answer_x0"] == 60
    assert out["pages"][0]["status"] == "ok" and out["pages"][0]["lines"] == 3 and out["errors"] == []
    for name in ("lines", "entities", "pairs", "pages"):
        _round_trip(tmp_path, name, out[name])

    (key, summary), = out["summaries"]
    header = DocHeader(DOC, sha256="ab" * 32, size_bytes=10, format="jpeg", pages_found=1, pages_to_process=1,
                       read_ms=1.0)
    docs = _split(list(BuildDocumentRowFn("r1", True).process((key, {"headers": [header], "pages": [summary]}))))
    (doc,) = docs["summaries"]  # the main output: the documents row
    assert doc["status"] == "ok" and doc["lines"] == 3 and doc["pairs"] == 1 and doc["det_ms"] == 3.0
    assert doc["kie_enabled"] is True and doc["schema_version"] == SCHEMA_VERSION and doc["kie_model"] == "kie@1"
    _round_trip(tmp_path, "documents", [doc])
    assert doc["pages_skipped"] == 0 and "run_id" not in doc  # run_id is the partition folder, not a column

    capped = DocHeader(DOC, sha256="ab" * 32, size_bytes=10, format="pdf", pages_found=4, pages_to_process=1)
    (doc,) = _split(list(BuildDocumentRowFn("r1", True).process((key, {"headers": [capped], "pages": [summary]}))))[
        "summaries"]
    assert (doc["status"], doc["pages_found"], doc["pages_processed"], doc["pages_skipped"]) == ("ok", 4, 1, 3)


def test_failed_document_and_page_each_get_one_row_and_one_error(tmp_path):
    failed_doc = DocHeader(DocRef("k1", "dup", "/nope.jpg"), read_ms=0.5,
                           error=ErrorInfo("read", "FileNotFoundError", "no such file"))
    out = _split(list(BuildDocumentRowFn("r1", False).process(("k1", {"headers": [failed_doc], "pages": []}))))
    (doc,) = out["summaries"]
    assert (doc["status"], doc["error_stage"], doc["pages_processed"], doc["kie_enabled"]) == ("failed", "read", 0,
                                                                                               False)
    (err,) = out["errors"]
    assert err["page_no"] is None and err["error_type"] == "FileNotFoundError"
    _round_trip(tmp_path, "errors", [err])

    bad_page = PageOutcome(DocRef("k2", "dup", "/two.tif"), 1, error=ErrorInfo("decode", "truncated", "cut"))
    page_out = _split(list(ToRowsFn("r1").process(bad_page)))
    assert page_out["pages"][0]["status"] == "failed" and page_out["errors"][0]["page_no"] == 1
    ok_page = _split(list(ToRowsFn("r1").process(_ok_outcome())))["summaries"][0][1]
    header = DocHeader(DocRef("k2", "dup", "/two.tif"), sha256="0" * 64, size_bytes=5, format="tiff", pages_found=2,
                       pages_to_process=2)
    out = _split(list(BuildDocumentRowFn("r1", True).process(
        ("k2", {"headers": [header], "pages": [page_out["summaries"][0][1], ok_page]}))))
    (doc,) = out["summaries"]
    assert (doc["status"], doc["error_stage"], doc["pages_processed"], doc["pages_failed"]) == ("failed", "decode",
                                                                                                1, 1)
    assert out["errors"] == []  # the page error row was already emitted by ToRowsFn


def test_missing_header_is_an_invariant_violation():
    with pytest.raises(RuntimeError, match="one header"):
        list(BuildDocumentRowFn("r1", True).process(("k", {"headers": [], "pages": []})))
