"""Issue 8: the whole pipeline (FnApiRunner, real PP-OCRv4, tiny SER/RE, real Parquet) over hostile inputs.

One run reads a CSV manifest listing the 40-file hostile corpus (in a folder whose name has spaces and non-ASCII
letters), a synthetic page with over a thousand words, a duplicated row, a file that vanished after the manifest
was written, malformed rows, ids that look like paths and URIs that carry credentials. Every input must come out
as exactly one documents row, with the corpus's expected reason for each bad file, and nothing may leak or escape.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hostile_corpus import write_hostile_corpus
from PIL import Image, ImageDraw, ImageFont

from pipelines.accounting import check_output
from pipelines.extract import run
from pipelines.output_reader import read_table

pytestmark = pytest.mark.slow
RUNNER = "--runner=FnApiRunner"
LINE_CAP = 40
SECRETS = ("SECRET-SIG-123", "hunter2", "cred-abc")
TABLE_NAMES = ("documents", "pages", "lines", "entities", "pairs", "errors")


def _rows(out: Path, table: str, run_id: str) -> list[dict]:
    return read_table(str(out), table, run_id).to_pylist()


def many_words_page(path: Path) -> None:
    """A 1200x1000 page with 1,200 short numbers (the detector finds well over 1,000 boxes), in ~50 ms."""
    im = Image.new("RGB", (1200, 1000), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=14)
    for r in range(60):
        for c in range(20):
            draw.text((6 + c * 60, 6 + r * 16), f"{(r * 20 + c) % 1000:03d}", fill="black", font=font)
    im.save(path)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_kie_dirs) -> dict:
    """Runs ``h1`` once; returns the run's paths and expectations."""
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "in dir ünï 文档"
    expected = write_hostile_corpus(folder)
    many_words_page(folder / "many words.png")
    (folder / "vanished.png").write_bytes((folder / "grayscale.png").read_bytes())
    manifest = root / "manifest.csv"
    rel = "in dir ünï 文档"
    # (uri, doc_id) rows; line numbers below count the header as line 1.
    rows = [(f"{rel}/{name}", "") for name in sorted(expected)]
    rows += [(f"{rel}/many words.png", "many"), (f"{rel}/grayscale.png", "dup"), (f"{rel}/grayscale.png", "dup"),
             (f"{rel}/vanished.png", "vanished"), (f"{rel}/bitmap.bmp", "../../escaped"),
             (f"{rel}/lossless.webp", "/etc/passwd"),
             ("https://storage.googleapis.com/b/o.png?X-Goog-Credential=cred-abc&X-Goog-Signature=SECRET-SIG-123",
              "signed"),
             ("https://user:hunter2@example.com/scan.png", "")]
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["uri", "doc_id"])
        w.writerows(rows)
        f.write(",no-uri\n")  # malformed: empty uri
        f.write("a.png,b,c\n")  # malformed: 3 fields for a 2-column header
    malformed_lines = (len(rows) + 2, len(rows) + 3)
    (folder / "vanished.png").unlink()  # listed, then gone before the run
    before = sorted(p.name for p in root.parent.iterdir())
    out = root / "out"
    ser, re_dir = tiny_kie_dirs
    result = run([f"--manifest={manifest}", f"--output={out}", "--run_id=h1", f"--ser_model_dir={ser}",
                  f"--re_model_dir={re_dir}", f"--det_db_max_candidates={LINE_CAP}", "--max_pages=2",
                  "--ocr_batch_size=4", RUNNER])
    assert result.state == "DONE"
    return {"out": out, "root": root, "expected": expected, "inputs": len(rows) + 2, "before": before,
            "malformed_lines": malformed_lines}


def test_accounting_invariant_and_check_clean(hostile):
    out, inputs = hostile["out"], hostile["inputs"]
    docs = _rows(out, "documents", "h1")
    assert len(docs) == inputs
    assert len({d["doc_key"] for d in docs}) == inputs
    ok = [d for d in docs if d["status"] == "ok"]
    failed = [d for d in docs if d["status"] == "failed"]
    assert len(ok) + len(failed) == inputs
    assert check_output(str(out), "h1", expected_documents=inputs) == []
    assert (out / "_published" / "run_id=h1.json").is_file()


def test_each_corpus_file_gets_its_expected_reason(hostile):
    out, expected = hostile["out"], hostile["expected"]
    docs = {d["uri"].rsplit("/", 1)[1]: d for d in _rows(out, "documents", "h1")
            if d["uri"].startswith("/") and d["doc_id"] == d["uri"].rsplit("/", 1)[1].rpartition(".")[0]}
    errors = _rows(out, "errors", "h1")
    assert len(expected) >= 20 and sum(r is not None for r in expected.values()) >= 20
    for name, reason in expected.items():
        d = docs[name]
        if reason is None:
            assert d["status"] == "ok" and d["error_type"] is None, (name, d["error_type"])
            assert d["pages_processed"] >= 1
            continue
        assert (d["status"], d["error_type"]) == ("failed", reason), (name, d["error_type"])
        assert d["error_stage"] in ("probe", "decode"), (name, d["error_stage"])
        mine = [e for e in errors if e["doc_key"] == d["doc_key"]]
        assert mine and all(e["error_type"] == reason and e["message"].startswith(reason) for e in mine), (name, mine)
    # Multi-page inputs stop at --max_pages=2 (3 pages found, 2 processed), and are still ok.
    for name in ("multipage_3.tiff", "multipage_3.pdf"):
        assert (docs[name]["pages_found"], docs[name]["pages_processed"], docs[name]["status"]) == (3, 2, "ok")
    assert docs["scan with spaces ünïcödé 文档.png"]["lines"] >= 1
    assert docs["blank_white_page.png"]["lines"] == 0  # a page with no text is an ok page with no lines


def test_duplicates_vanished_and_line_cap(hostile):
    docs = _rows(hostile["out"], "documents", "h1")
    by_id: dict[str, list[dict]] = {}
    for d in docs:
        by_id.setdefault(d["doc_id"], []).append(d)
    dup = by_id["dup"]
    assert len(dup) == 2 and dup[0]["doc_key"] != dup[1]["doc_key"] and dup[0]["sha256"] == dup[1]["sha256"]
    assert all(d["status"] == "ok" for d in dup)
    [gone] = by_id["vanished"]
    assert (gone["status"], gone["error_stage"]) == ("failed", "read")
    [many] = by_id["many"]
    assert many["status"] == "ok" and 0 < many["lines"] <= LINE_CAP  # the detector saw > 1,000 boxes


def test_malformed_manifest_rows_name_their_lines(hostile):
    out = hostile["out"]
    errors = [e for e in _rows(out, "errors", "h1") if e["error_type"] == "malformed_manifest_row"]
    assert len(errors) == 2
    messages = " | ".join(sorted(e["message"] for e in errors))
    for line in hostile["malformed_lines"]:
        assert f"line {line}:" in messages
    assert "empty uri" in messages and "3 fields for a 2-column header" in messages
    docs = [d for d in _rows(out, "documents", "h1") if d["error_type"] == "malformed_manifest_row"]
    assert len(docs) == 2 and all(d["status"] == "failed" and d["error_stage"] == "read" for d in docs)


def test_no_credentials_in_any_table_and_ids_never_become_paths(hostile):
    out, root = hostile["out"], hostile["root"]
    for name in TABLE_NAMES:
        for row in _rows(out, name, "h1"):
            text = repr(row)
            assert not any(s in text for s in SECRETS), (name, text)
    docs = {d["doc_id"]: d for d in _rows(out, "documents", "h1")}
    signed = docs["signed"]
    assert signed["status"] == "failed" and signed["error_stage"] == "read"
    assert "X-Goog-Signature=REDACTED" in signed["uri"]
    assert any(d["uri"].startswith("https://***@example.com/") for d in docs.values())
    # Path-like ids are plain values: the files were processed, and nothing was written outside --output.
    assert docs["../../escaped"]["status"] == "ok" and docs["/etc/passwd"]["status"] == "ok"
    assert sorted(p.name for p in root.parent.iterdir()) == hostile["before"]
    assert sorted(p.name for p in root.iterdir()) == sorted(["in dir ünï 文档", "manifest.csv", "out"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*TABLE_NAMES, "_published"])
    for table in TABLE_NAMES:
        assert [p.name for p in (out / table).iterdir()] == ["run_id=h1"]
