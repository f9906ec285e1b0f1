"""KiePredictor with LayoutXLM (visual backbone) folders: the page image goes in, every window sees it."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from test_kie_predictor import _page, vote_like_paddleocr  # the predictor tests' page and line rule
from tiny_layoutxlm import TINY_VISUAL_CONFIG

from models.checkpoint import export_inference
from models.features import build_re_inputs, build_windows
from models.kie import KieEntity, KiePredictor
from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
from models.page_image import kie_image_batch, kie_thumbnail
from models.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def visual_models(tmp_path_factory):
    from conftest import _KIE_TEXTS

    root = tmp_path_factory.mktemp("visual_kie")
    tok_dir = train_tokenizer(list(_KIE_TEXTS) * 4, root / "tok", vocab_size=400)
    paddle.seed(11)  # a seed whose random SER gives questions, answers and headers on this page
    cfg = LayoutXLMConfig(**TINY_VISUAL_CONFIG)
    ser, re = SerModel(cfg, 7), ReModel(cfg)
    with paddle.no_grad():  # all four classes occur and RE sees questions and answers
        ser.classifier.weight.set_value(paddle.normal(0, 2.0, ser.classifier.weight.shape))
        re.extractor.rel_classifier.linear.bias.set_value(paddle.to_tensor([0.0, 1.0]))
    ser.eval()
    re.eval()
    ser_dir = export_inference(ser, root / "ser", tokenizer_dir=tok_dir, max_len=64)
    re_dir = export_inference(re, root / "re", tokenizer_dir=tok_dir, max_len=64)
    return ser, re, ser_dir, re_dir, tok_dir


def test_folder_says_it_needs_the_image(visual_models):
    _, _, ser_dir, re_dir, _ = visual_models
    for folder in (ser_dir, re_dir):
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["family"] == "layoutxlm" and meta["needs_image"] is True
    kie = KiePredictor.from_dirs(ser_dir, re_dir)
    assert kie.needs_image and kie.ser_image and kie.re_image
    with pytest.raises(ValueError, match="visual backbone.*needs each page's image"):
        kie([_page()])
    with pytest.raises(ValueError, match="needs each page's image"):
        kie([_page(), _page()], [np.zeros((50, 40, 3), np.uint8), None])


def test_predictor_matches_dynamic_model_with_the_image(visual_models):
    """Exported programs + page image == the dynamic models on the same windows and image (PaddleOCR's rules)."""
    ser, re, ser_dir, re_dir, tok_dir = visual_models
    kie = KiePredictor.from_dirs(ser_dir, re_dir, batch_size=3)
    page = _page(repeat=3)  # several 64-token windows, each with the same page image
    rgb = np.random.default_rng(3).integers(0, 256, (page.height, page.width, 3), dtype=np.uint8)
    (out,) = kie([page], [rgb])
    (from_thumb,) = kie([page], [kie_thumbnail(rgb)])  # the pipeline carries the 224x224 thumbnail
    assert (from_thumb.line_labels, from_thumb.entities, from_thumb.pairs) == (out.line_labels, out.entities,
                                                                                out.pairs)
    tokenizer = load_tokenizer(tok_dir)
    wins = build_windows([ln.text for ln in page.lines], [ln.box for ln in page.lines], page.width, page.height,
                         tokenizer, max_len=64)
    assert out.windows == len(wins) > 1
    image = paddle.to_tensor(kie_image_batch([rgb]))
    votes = {k: [] for k in range(len(page.lines))}
    with paddle.no_grad():
        for w in wins:
            logits = ser(*[paddle.to_tensor(a[None]) for a in (w.input_ids, w.bbox, w.attention_mask)],
                         image=image).logits
            pred = logits.numpy()[0].argmax(-1)
            for k, (s, e) in zip(w.line_ids, w.line_spans):
                votes[k].extend(pred[s:e].tolist())
    want = vote_like_paddleocr(votes, len(page.lines))
    assert list(out.line_labels) == want
    assert len(set(want)) >= 2
    # RE on given entities (questions and answers alternate over the lines): the exported program with the image
    # == the dynamic model, window by window, first question per answer.
    re_labels = ["QUESTION" if k % 2 else "ANSWER" for k in range(len(page.lines))]
    (toks,) = kie.tokens([page], [rgb])
    ents, seen = [], set()
    for i, w in enumerate(toks.windows):
        for k, (s, e) in zip(w.line_ids, w.line_spans):
            if k not in seen:
                seen.add(k)
                ents.append(KieEntity(re_labels[k], page.lines[k].text, page.lines[k].box, 1.0, k, i, s, e))
    got = [(ents[q].line, ents[a].line) for q, a, _ in kie.relate(page, toks, ents)]
    want_pairs, used = [], set()
    with paddle.no_grad():
        for w in wins:
            r = build_re_inputs(w, [lab if k in w.line_ids and w.line_spans[w.line_ids.index(k)][0] ==
                                    next(e.start for e in ents if e.line == k) else "O"
                                    for k, lab in enumerate(re_labels)])
            if not len(r.pairs):
                continue
            logits = re(*[paddle.to_tensor(a[None]) for a in (w.input_ids, w.bbox, w.attention_mask, r.entities,
                                                               r.pairs)], image=image).logits.numpy()[0]
            for (q, a), lg in zip(r.pairs.tolist(), logits):
                qa = (r.entity_line_ids[q], r.entity_line_ids[a])
                if lg.argmax() == 1 and qa[1] not in used:
                    used.add(qa[1])
                    want_pairs.append(qa)
    assert got == want_pairs
    assert want_pairs


def test_runtime_keeps_the_visual_backbone_fp32_and_gives_tensorrt_the_image_range(visual_models, tiny_kie_dirs):
    from models.backends import resolve_runtime
    from models.capabilities import Capabilities
    from models.paddle_infer import InferenceOptions, kie_trt_shapes

    _, _, ser_dir, re_dir, _ = visual_models
    bf16_cpu = Capabilities(frozenset({"amx_bf16"}))
    auto = resolve_runtime(InferenceOptions(precision="auto"), "ser", ser_dir, caps=bf16_cpu)
    assert auto.label() == "paddle/cpu/fp32" and not auto.notes
    asked = resolve_runtime(InferenceOptions(precision="bf16"), "re", re_dir, caps=bf16_cpu)
    assert asked.precision == "fp32" and "visual backbone" in asked.notes[0]
    vi = resolve_runtime(InferenceOptions(precision="auto"), "ser", tiny_kie_dirs[0], caps=bf16_cpu)
    assert vi.precision == "bf16"  # VI folders are unchanged
    shapes = kie_trt_shapes(ser_dir, batch=8)
    assert shapes["image"] == ([1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224])
    assert "image" not in kie_trt_shapes(tiny_kie_dirs[0])
