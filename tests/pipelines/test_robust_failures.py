"""Issue 8: retried bundles, interrupted runs, inputs vanishing from GCS mid-run, model and manifest refusals.

Failures are injected into the real pipeline by wrapping one DoFn method of the running graph (the runners here run
in this process, so the wrapped class is the one Beam executes); a marker file makes a failure happen exactly once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gcs_emulator import delete as _delete
from gcs_emulator import gcs_emulator
from gcs_emulator import put as _put
from hostile_corpus import text_page

from pipelines.accounting import check_output
from pipelines.extract import run
from pipelines.options import to_config
from pipelines.output_reader import list_runs, read_table, unpublished_folders
from transforms import documents as documents_mod
from transforms import inputs as inputs_mod
from transforms import rows as rows_mod

pytestmark = pytest.mark.slow
TABLE_NAMES = ("documents", "pages", "lines", "entities", "pairs", "errors")


def _rows(out: Path | str, table: str, run_id: str) -> list[dict]:
    return read_table(str(out), table, run_id).to_pylist()


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory) -> Path:
    """``in/``: three small text pages (one of them holds the line the injected failures key on)."""
    root = tmp_path_factory.mktemp("robust_small")
    (root / "in").mkdir()
    for name, words in (("a", ["INVOICE No 42", "Name: Ada"]), ("b", ["Total: 17.50", "Date 2024"]),
                        ("target", ["Line one here", "Line two here", "Line three"])):
        text_page(240, 200, words).save(root / "in" / f"{name}.png")
    return root


def _fail_rows_of(target: str, marker: Path | None, after: int = 1):
    """A ToRowsFn.process that raises mid-element (after ``after`` outputs) for doc ``target``.

    With a marker: only while the marker file is absent (it is created first, so the retry succeeds).
    """
    original = rows_mod.ToRowsFn.process

    def process(self, o):
        for i, out in enumerate(original(self, o)):
            if i == after and o.doc.doc_id == target and (marker is None or not marker.exists()):
                if marker is not None:
                    marker.write_text("failed once")
                raise RuntimeError(f"injected failure in the middle of {target}")
            yield out
    return process


def test_retried_bundle_leaves_no_duplicates_and_failed_rerun_keeps_old_run(small_inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    base = [f"--input={small_inputs / 'in' / '*.png'}", f"--output={out}", "--run_id=r1", "--ser_model_dir=none"]
    # 1. The BundleBasedDirectRunner retries a failed bundle: the first attempt emitted rows, then raised.
    marker = tmp_path / "failed_once"
    monkeypatch.setattr(rows_mod.ToRowsFn, "process", _fail_rows_of("target", marker))
    result = run(base + ["--runner=BundleBasedDirectRunner"])
    assert result.state == "DONE" and marker.exists()  # it did fail once
    docs = _rows(out, "documents", "r1")
    assert sorted(d["doc_id"] for d in docs) == ["a", "b", "target"] and all(d["status"] == "ok" for d in docs)
    assert check_output(str(out), "r1", expected_documents=3) == []  # includes: no duplicate keys in any table
    lines = _rows(out, "lines", "r1")
    assert len(lines) == sum(d["lines"] for d in docs) and any(r["doc_id"] == "target" for r in lines)
    published = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())

    # 2. A rerun of r1 that fails mid-way (no retries on the FnApiRunner) must not touch the published run.
    monkeypatch.setattr(rows_mod.ToRowsFn, "process", _fail_rows_of("target", None))
    with pytest.raises(Exception, match="injected failure"):
        run(base + ["--runner=FnApiRunner"])
    leftovers = [out / p for p in unpublished_folders(str(out))]  # the failed launch's version: no reader sees it
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()
                  if not any(p.is_relative_to(d) for d in leftovers)) == published
    assert check_output(str(out), "r1", expected_documents=3) == []

    # 3. A new run id that fails mid-way leaves nothing a reader could take for results; check flags it.
    with pytest.raises(Exception, match="injected failure"):
        run([*base[:2], "--run_id=x1", "--ser_model_dir=none", "--runner=FnApiRunner"])
    assert not (out / "_published" / "run_id=x1.json").exists() and "x1" not in list_runs(str(out))
    assert all(read_table(str(out), t, "x1").num_rows == 0 for t in TABLE_NAMES)
    assert check_output(str(out), "x1")  # "no run 'x1' found": not mistaken for a result


@pytest.fixture
def gcs(monkeypatch) -> str:
    """A local GCS emulator with bucket ``kiebeam-robust``; yields the bucket URI."""
    with gcs_emulator("kiebeam-robust") as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        yield "gs://kiebeam-robust"


def test_gcs_objects_vanishing_mid_run_become_failed_rows(gcs, small_inputs, tmp_path, monkeypatch):
    src = small_inputs / "in"
    tiff = tmp_path / "two.tiff"
    text_page(200, 160, ["page one"]).save(tiff, save_all=True, append_images=[text_page(200, 160, ["page two"])])
    for name in ("a.png", "b.png", "target.png"):
        _put(src / name, f"{gcs}/in/{name}")
    _put(src / "a.png", f"{gcs}/in/vanish_after_listing.png")
    _put(tiff, f"{gcs}/in/two.tiff")
    _put(src / "b.png", f"{gcs}/m/c.png")
    _put(src / "b.png", f"{gcs}/m/gone.png")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"{gcs}/m/c.png\n{gcs}/m/gone.png\n")
    _delete(f"{gcs}/m/gone.png")  # the manifest was written, then the object went away before the run

    match, probe = inputs_mod.MatchPatternFn.process, documents_mod.ReadProbeFn.process

    def match_then_delete(self, pattern):  # an object deleted after the listing, before it is read
        refs = list(match(self, pattern))
        _delete(f"{gcs}/in/vanish_after_listing.png")
        yield from refs

    def probe_then_delete(self, doc):  # a multi-page file deleted after probing, before its pages are decoded
        yield from probe(self, doc)
        if doc.uri.endswith("two.tiff"):
            _delete(doc.uri)

    monkeypatch.setattr(inputs_mod.MatchPatternFn, "process", match_then_delete)
    monkeypatch.setattr(documents_mod.ReadProbeFn, "process", probe_then_delete)
    result = run([f"--input={gcs}/in/*", f"--manifest={manifest}", f"--output={gcs}/out", "--run_id=v1",
                  "--ser_model_dir=none", "--runner=FnApiRunner"])
    assert result.state == "DONE"
    docs = {d["doc_id"]: d for d in _rows(f"{gcs}/out", "documents", "v1")}
    assert sorted(docs) == ["a", "b", "c", "gone", "target", "two", "vanish_after_listing"]
    for name in ("a", "b", "c", "target"):
        assert docs[name]["status"] == "ok" and docs[name]["lines"] > 0, docs[name]
    for name in ("gone", "vanish_after_listing", "two"):
        assert (docs[name]["status"], docs[name]["error_stage"]) == ("failed", "read"), docs[name]
    errors = _rows(f"{gcs}/out", "errors", "v1")
    assert {e["doc_id"] for e in errors} == {"gone", "vanish_after_listing", "two"}
    assert all(e["message"] for e in errors)
    assert check_output(f"{gcs}/out", "v1", expected_documents=7) == []


def test_unverified_or_tampered_model_folders_are_refused_at_launch(tiny_kie_dirs, small_inputs, tmp_path):
    ser, _ = tiny_kie_dirs
    args = [f"--input={small_inputs / 'in' / 'a.png'}", f"--output={tmp_path / 'out'}", "--re_model_dir=none",
            "--runner=FnApiRunner"]
    from apache_beam.options.pipeline_options import PipelineOptions

    unverified = tmp_path / "ser_unverified"
    shutil.copytree(ser, unverified)
    (unverified / "SHA256SUMS").unlink()
    with pytest.raises(ValueError, match="SHA256SUMS"):
        to_config(PipelineOptions(args + [f"--ser_model_dir={unverified}"]))
    cfg = to_config(PipelineOptions(args + [f"--ser_model_dir={unverified}", "--allow_unverified_models"]))
    assert cfg.kie is not None and cfg.kie.inference.allow_unverified

    tampered = tmp_path / "ser_tampered"
    shutil.copytree(ser, tampered)
    victim = next(p for p in sorted(tampered.iterdir()) if p.name.endswith(".pdiparams"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    for extra in ([], ["--allow_unverified_models"]):  # the flag never excuses a checksum mismatch
        with pytest.raises(ValueError, match="checksum mismatch"):
            to_config(PipelineOptions(args + [f"--ser_model_dir={tampered}", *extra]))


def test_manifest_rows_report_line_numbers(tmp_path):
    text = tmp_path / "m.txt"
    text.write_text("# comment\n\na.png\nbad\x01name.png\n  b.png  \n")
    rows = list(inputs_mod.read_manifest_rows(str(text)))
    assert [(r.line, r.uri, r.problem) for r in rows] == [  # no comment syntax; paths as written
        (1, "# comment", None), (3, "a.png", None), (4, "bad\x01name.png", "uri contains control characters"),
        (5, "  b.png  ", None)]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('uri,doc_id\n"with, comma.png",x\nplain.png\n,y\nx.png,1,2\n"multi\nline.png",z\n')
    rows = list(inputs_mod.read_manifest_rows(str(csv_path)))
    assert [(r.line, r.uri, r.doc_id, r.problem is None) for r in rows] == [
        (2, "with, comma.png", "x", True), (3, "plain.png", None, True), (4, None, "y", False),
        (5, None, None, False), (6, None, None, False), (7, None, None, False)]  # a record is one line
    with pytest.raises(ValueError, match="no 'uri' column"):
        list(inputs_mod.read_manifest_rows(str(_write(tmp_path / "n.csv", "path,doc_id\na.png,a\n"))))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_timed_out_batches_become_one_failed_outcome_per_page():
    import numpy as np

    from schemas.records import PageOutcome
    from schemas.refs import DocRef
    from transforms.inference import failed_batch_to_outcomes

    pages = [PageOutcome(DocRef(f"k{i}", f"d{i}", f"/x/{i}.png"), i, decode_ms=1.5,
                         image=np.zeros((4, 4, 3), np.uint8)) for i in range(2)]
    failure = (pages, (TimeoutError, "TimeoutError()", ["Traceback ..."]))
    outs = list(failed_batch_to_outcomes(failure, "ocr"))
    assert [(o.doc.doc_key, o.page_no, o.error.stage, o.error.error_type) for o in outs] == [
        ("k0", 0, "ocr", "timeout"), ("k1", 1, "ocr", "timeout")]
    assert all(isinstance(o, PageOutcome) and o.ocr is None and o.image is None and o.decode_ms == 1.5
               and "2 page(s)" in o.error.message for o in outs)
    kie = list(failed_batch_to_outcomes(([outs[0].with_(error=None)], (KeyError, "KeyError()", [])), "kie"))
    assert [(o.doc.doc_key, o.error.stage, o.error.error_type) for o in kie] == [("k0", "kie", "KeyError")]
