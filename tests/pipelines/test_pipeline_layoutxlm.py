"""The extraction pipeline with a tiny LayoutXLM (visual backbone) on real XFUND pages: OCR keeps a 224x224 image
per page for KIE only because the SER folder says it needs one; accounting exact, entities and pairs written."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline_extract import _check_accounting, _table

from models.paddle_infer import InferenceOptions
from pipelines.extract import run
from schemas.records import DocRef, OcrLine, PageOcr, PageOutcome
from transforms.inference import KiePageHandler, kie_needs_image

pytestmark = pytest.mark.slow
RUNNER = "--runner=FnApiRunner"


@pytest.fixture(scope="module")
def layoutxlm_run(tmp_path_factory, xfund_zh_train, tiny_layoutxlm_dirs) -> Path:
    """Three real XFUND page crops and one file that is not an image, through OCR + LayoutXLM SER + RE."""
    root = tmp_path_factory.mktemp("lx_corpus")
    (root / "in").mkdir()
    for i in range(3):
        im = Image.open(xfund_zh_train / "image" / f"zh_train_{i}.jpg").convert("RGB").crop((300, 150, 2200, 900))
        im.resize((im.width // 2, im.height // 2)).save(root / "in" / f"p{i}.jpg", quality=92)
    (root / "in" / "bad.jpg").write_bytes(b"not a jpeg")
    ser, re_dir = tiny_layoutxlm_dirs
    out = root / "out"
    result = run([f"--input={root / 'in' / '*'}", f"--output={out}", "--run_id=lx", f"--ser_model_dir={ser}",
                  f"--re_model_dir={re_dir}", "--ocr_batch_size=2", RUNNER])
    assert result.state == "DONE"
    return out


def test_layoutxlm_run_writes_entities_and_pairs(layoutxlm_run, tiny_layoutxlm_dirs):
    from pipelines.inspect_output import check_output

    out = layoutxlm_run
    assert kie_needs_image(*map(str, tiny_layoutxlm_dirs))
    docs = {d["doc_id"]: d for d in _table(out, "documents", "lx")}
    errors = _table(out, "errors", "lx")
    _check_accounting(list(docs.values()), errors, 4)
    assert check_output(str(out), expected_documents=4) == []
    assert [(e["doc_id"], e["stage"]) for e in errors] == [("bad", "probe")]  # no page failed in KIE
    for name in ("p0", "p1", "p2"):
        assert docs[name]["status"] == "ok" and docs[name]["kie_enabled"] and docs[name]["lines"] > 0
        assert docs[name]["kie_model"].startswith("ser=") and ";re=" in docs[name]["kie_model"]
    lines, entities, pairs = (_table(out, t, "lx") for t in ("lines", "entities", "pairs"))
    labels = {(r["doc_key"], r["page_no"], r["line_id"]): r["ser_label"] for r in lines}
    assert len(entities) == sum(1 for label in labels.values() if label != "O") > 0
    ents = {(e["doc_key"], e["page_no"], e["entity_id"]): e for e in entities}
    assert pairs and sum(d["pairs"] for d in docs.values()) == len(pairs)
    for p in pairs:
        q, a = ents[(p["doc_key"], p["page_no"], p["question_id"])], ents[(p["doc_key"], p["page_no"], p["answer_id"])]
        assert (q["label"], a["label"]) == ("QUESTION", "ANSWER")
        assert (q["text"], a["text"]) == (p["question_text"], p["answer_text"])


def _page(image=None, kie_image=None) -> PageOutcome:
    poly = ((10, 10), (200, 10), (200, 40), (10, 40))
    line = OcrLine(text="姓名：张三", score=0.9, polygon=poly, box=(10, 10, 200, 40))
    return PageOutcome(doc=DocRef(doc_key="d", doc_id="d", uri="mem://d"), page_no=0, width=400, height=300,
                       ocr=PageOcr(width=400, height=300, lines=(line, line)), image=image, kie_image=kie_image)


def test_a_page_without_its_image_fails_clearly_and_the_thumbnail_is_small(tiny_layoutxlm_dirs, tiny_kie_dirs):
    ser, re_dir = map(str, tiny_layoutxlm_dirs)
    assert not kie_needs_image(*map(str, tiny_kie_dirs))  # VI folders: OCR keeps no image
    assert kie_needs_image(str(tiny_kie_dirs[0]), re_dir) and not kie_needs_image(str(tiny_kie_dirs[0]), "rule")
    from transforms.inference import LoadedModel, _with_ocr_and_thumbnail

    handler = KiePageHandler(ser, re_dir, InferenceOptions())
    model = handler.load_model()
    (failed,) = handler.run_inference([_page()], model)
    assert failed.kie is None and failed.error.stage == "kie"
    assert "needs each page's image" in failed.error.message
    rgb = np.random.default_rng(0).integers(0, 256, (3508, 2480, 3), dtype=np.uint8)  # an XFUND page's size
    kept = _with_ocr_and_thumbnail(_page(image=rgb), _page().ocr, "v", "r")
    assert kept.image is None and kept.kie_image.shape == (224, 224, 3) and kept.kie_image.dtype == np.uint8
    (done,) = handler.run_inference([kept], model)
    assert done.error is None and done.kie is not None and done.kie_image is None  # dropped after KIE
    # What crossing a stage costs: the pickled outcome with its thumbnail vs without (and vs the page's pixels).
    with_thumb, without = len(pickle.dumps(kept)), len(pickle.dumps(kept.with_(kie_image=None)))
    assert with_thumb - without < 151_000 < rgb.nbytes // 100
    assert isinstance(model, LoadedModel)
