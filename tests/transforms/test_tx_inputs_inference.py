"""Input fan-out (patterns, manifests), model-folder localisation, and per-element OCR failures with the real model."""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.ocr import OcrConfig
from schemas.errors import ErrorInfo
from schemas.records import PageOutcome
from schemas.refs import DocRef
from transforms.inference import HandlerOptions, OcrPageHandler, localize
from transforms.inputs import MatchPatternFn, ReadManifestFn, default_doc_id, split_patterns


def test_split_patterns_and_default_ids():
    assert split_patterns(["a/*.jpg, b/*.png", "gs://x/y.pdf", " "]) == ["a/*.jpg", "b/*.png", "gs://x/y.pdf"]
    assert default_doc_id("gs://b/scans/form_01.jpg") == "form_01" and default_doc_id("/x/README") == "README"


def test_match_keeps_a_missing_literal_and_drops_an_empty_glob(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"y")
    refs = list(MatchPatternFn().process(str(tmp_path / "*.jpg")))
    assert [r.doc_id for r in refs] == ["a", "b"] and refs[0].doc_key == str(tmp_path / "a.jpg")
    assert [r.uri for r in MatchPatternFn().process(str(tmp_path / "gone.jpg"))] == [str(tmp_path / "gone.jpg")]
    assert list(MatchPatternFn().process(str(tmp_path / "*.png"))) == []


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_manifest_rows_are_unique_inputs_even_when_repeated(tmp_path, kind):
    path = tmp_path / f"m.{kind}"
    if kind == "txt":
        path.write_text("img/a.jpg\n\n/abs/b.jpg\nimg/a.jpg\n")
    elif kind == "csv":
        path.write_text("uri,doc_id\nimg/a.jpg,A\n/abs/b.jpg,\nimg/a.jpg,A\n")
    else:
        pq.write_table(pa.table({"uri": ["img/a.jpg", "/abs/b.jpg", "img/a.jpg"], "doc_id": ["A", None, "A"]}), path)
    refs = list(ReadManifestFn().process(str(path)))
    assert [r.uri for r in refs] == [str(tmp_path / "img" / "a.jpg"), "/abs/b.jpg", str(tmp_path / "img" / "a.jpg")]
    assert len({r.doc_key for r in refs}) == 3
    assert [r.doc_id for r in refs][1] == "b"
    if kind != "txt":
        assert [r.doc_id for r in refs] == ["A", "b", "A"]


def test_manifest_without_uri_column_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path\nx.jpg\n")
    with pytest.raises(ValueError, match="no 'uri' column"):
        list(ReadManifestFn().process(str(path)))


def test_localize_passes_local_paths_through(tmp_path):
    # Remote folders (gs://) are covered end to end in tests/pipelines/test_pipeline_extract.py (GCS emulator).
    assert localize(str(tmp_path), None) == str(tmp_path) and localize(None) is None
    assert localize(f"file://{tmp_path}") == str(tmp_path)


def test_handler_options_are_validated():
    with pytest.raises(ValueError, match="max_batch_size"):
        HandlerOptions(max_batch_size=0)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_batch_duration_secs"):
            HandlerOptions(max_batch_duration_secs=bad)


def test_max_batch_duration_flag_reaches_beams_batching(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import to_config

    flags = [f"--input={tmp_path}/*.jpg", f"--output={tmp_path}/out", "--ser_model_dir=none", "--ocr_batch_size=3"]
    cfg = to_config(PipelineOptions(flags + ["--max_batch_duration_secs=5"]))
    assert cfg.ocr_handler.max_batch_duration_secs == cfg.kie_handler.max_batch_duration_secs == 5
    kwargs = OcrPageHandler(cfg.ocr, cfg.ocr_handler).batch_elements_kwargs()
    assert (kwargs["max_batch_duration_secs"], kwargs["max_batch_size"]) == (5, 3)
    default = to_config(PipelineOptions(flags))
    assert "max_batch_duration_secs" not in OcrPageHandler(default.ocr, default.ocr_handler).batch_elements_kwargs()


@pytest.mark.slow
def test_a_bad_page_fails_alone_in_its_ocr_batch(ocr_model_dirs, xfund_zh_train):
    from PIL import Image

    det, rec, _ = ocr_model_dirs
    handler = OcrPageHandler(OcrConfig(det_model_dir=str(det), rec_model_dir=str(rec)), HandlerOptions(2))
    model = handler.load_model()
    src = Image.open(xfund_zh_train / "image" / "zh_train_0.jpg").convert("RGB")
    page = np.asarray(src.crop((300, 150, 1200, 450)))
    doc = DocRef("k", "d", "/x.png")
    failed = PageOutcome(doc, 2, error=ErrorInfo("decode", "truncated", "cut"))  # passes through, no model call
    batch = [PageOutcome(doc, 0, decode_ms=1.5, image=page),
             PageOutcome(doc, 1, image=np.zeros((5, 5), np.uint8)), failed]  # 2-D: not an RGB page
    assert handler.get_num_bytes(batch) == page.nbytes + 25
    good, bad, passed = handler.run_inference(batch, model)
    assert good.ocr.lines and good.ocr_model == model.version() and good.decode_ms == 1.5
    assert (good.width, good.height) == (page.shape[1], page.shape[0]) and good.image is None and good.error is None
    assert isinstance(bad.error, ErrorInfo) and bad.error.stage == "ocr" and bad.ocr is None and bad.image is None
    assert passed is failed
    assert handler.batch_elements_kwargs()["max_batch_size"] == 2


def test_cli_subcommand_passes_flags_through():
    from pipelines.extract import add_subcommand

    parser = argparse.ArgumentParser(prog="kiebeam")
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["extract", "--demo", "--runner=FnApiRunner", "--run_id", "x"])
    assert args.command == "extract" and args.beam_args == ["--demo", "--runner=FnApiRunner", "--run_id", "x"]
