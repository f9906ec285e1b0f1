"""LayoutXLM with its visual backbone and relative biases: parity with PaddleNLP on tiny random-weight models.

PaddleNLP builds its ResNeXt-FPN from ``visual_backbone.yaml`` (read with yacs). The tiny tests give it a
smaller yacs config through the one function it reads it with; the full-size test builds the published
ResNeXt-101 32x8d FPN from PaddleNLP's own yaml and compares the visual token features.
"""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from test_kie_layoutxlm import TINY, _reference_re, re_case  # the VI parity test's tiny config and RE reference maths
from test_kie_layoutxlm import _inputs as text_inputs

from models.checkpoint import CheckpointError, export_inference, load_checkpoint
from models.integrity import write_sha256sums
from models.layoutxlm import LayoutXLMConfig, SerModel
from models.page_image import kie_image_batch, kie_thumbnail, normalize_kie_image
from models.tokenizer import train_tokenizer
from models.visual_backbone import VisualBackbone

TINY_VISUAL = dict(image_feature_pool_shape=(7, 7, 16), visual_depth=50, visual_num_groups=2,
                   visual_width_per_group=4, visual_stem_channels=8, visual_res2_channels=16)


@pytest.fixture()
def tiny_paddlenlp_backbone(monkeypatch):
    """Makes PaddleNLP build the TINY_VISUAL ResNeXt-FPN (its yaml, with the sizes overridden)."""
    from paddlenlp.transformers.layoutxlm import modeling, visual_backbone

    def read_tiny():
        cfg = visual_backbone.read_config().clone()
        cfg.defrost()
        cfg.MODEL.RESNETS.DEPTH = TINY_VISUAL["visual_depth"]
        cfg.MODEL.RESNETS.NUM_GROUPS = TINY_VISUAL["visual_num_groups"]
        cfg.MODEL.RESNETS.WIDTH_PER_GROUP = TINY_VISUAL["visual_width_per_group"]
        cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = TINY_VISUAL["visual_stem_channels"]
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = TINY_VISUAL["visual_res2_channels"]
        cfg.MODEL.FPN.OUT_CHANNELS = TINY_VISUAL["image_feature_pool_shape"][2]
        cfg.freeze()
        return cfg

    monkeypatch.setattr(modeling, "read_config", read_tiny)


def _nlp_config(relative: bool, num_labels: int = 7):
    from paddlenlp.transformers import LayoutXLMConfig as NlpConfig

    return NlpConfig(use_visual_backbone=True, has_relative_attention_bias=relative,
                     has_spatial_attention_bias=relative, num_labels=num_labels,
                     image_feature_pool_shape=list(TINY_VISUAL["image_feature_pool_shape"]), **TINY)


def _ours_config(relative: bool) -> LayoutXLMConfig:
    return LayoutXLMConfig(use_visual_backbone=True, has_relative_attention_bias=relative,
                           has_spatial_attention_bias=relative, **TINY, **TINY_VISUAL)


def _randomize_frozen_bn(model, seed):
    """Random BN statistics and affine terms (PaddleNLP's defaults are the identity, which would test nothing)."""
    rng = np.random.default_rng(seed)
    for name, p in model.state_dict().items():
        if ".norm." in name:  # FrozenBN only (the encoder's are ".LayerNorm.")
            shape = p.shape
            if name.endswith("_variance"):
                p.set_value(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            else:
                p.set_value(rng.normal(0.0 if not name.endswith("weight") else 1.0, 0.2, shape).astype(np.float32))


def _inputs(batch=2, seq=24, n_real=(17, 9), seed=0):
    ids, bbox, mask = text_inputs(batch, seq, n_real, seed)
    rng = np.random.default_rng(seed)
    pages = [rng.integers(0, 256, (300 + 40 * b, 220 + 30 * b, 3), dtype=np.uint8) for b in range(batch)]
    return ids, bbox, mask, kie_image_batch(pages)


def _t(*arrays):
    return [paddle.to_tensor(a) for a in arrays]


def test_page_image_is_paddleocr_resize_then_normalize():
    import cv2

    rng = np.random.default_rng(1)
    page = rng.integers(0, 256, (351, 248, 3), dtype=np.uint8)
    want = (cv2.resize(page, (224, 224)).astype(np.float32) - np.float32([123.675, 116.28, 103.53])) \
        / np.float32([58.395, 57.12, 57.375])
    got = normalize_kie_image(kie_thumbnail(page))
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    assert np.array_equal(got, want.transpose(2, 0, 1))
    thumb = kie_thumbnail(page)
    assert kie_thumbnail(thumb) is thumb  # already 224x224: no second resize
    with pytest.raises(ValueError, match="RGB page image"):
        kie_thumbnail(np.zeros((10, 10, 4), np.uint8))


def test_config_family_and_round_trip():
    cfg = _ours_config(relative=True)
    assert cfg.family == "layoutxlm" and LayoutXLMConfig(**TINY).family == "vi-layoutxlm"
    assert LayoutXLMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="fast_qkv"):
        LayoutXLMConfig.from_dict({**cfg.to_dict(), "fast_qkv": True})
    with pytest.raises(ValueError, match="visual_depth"):
        LayoutXLMConfig(**{**TINY, **TINY_VISUAL, "use_visual_backbone": True, "visual_depth": 34})


def test_vi_model_has_no_visual_layers():
    model = SerModel(LayoutXLMConfig(**TINY), num_labels=7)
    assert not any(k.startswith(("layoutxlm.visual.", "layoutxlm.visual_proj.", "layoutxlm.encoder.rel_pos"))
                   for k in model.state_dict())


@pytest.mark.parametrize("relative", [False, True])
def test_ser_with_image_matches_paddlenlp(tiny_paddlenlp_backbone, relative):
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    paddle.seed(11)
    ref = LayoutXLMForTokenClassification(_nlp_config(relative))
    _randomize_frozen_bn(ref, 3)
    ref.eval()
    ours = SerModel(_ours_config(relative), num_labels=7)
    ours.eval()
    state = ref.state_dict()
    assert set(ours.state_dict()) == set(state), sorted(set(ours.state_dict()) ^ set(state))
    missing, unexpected = ours.set_state_dict(state)
    assert not missing and not unexpected
    ids, bbox, mask, image = _t(*_inputs())
    other = paddle.to_tensor(np.random.default_rng(9).normal(0, 1, image.shape).astype(np.float32))
    with paddle.no_grad():
        want = ref(input_ids=ids, bbox=bbox, image=image, attention_mask=mask)[0].numpy()
        out = ours(ids, bbox, mask, image=image)
        features, want_features = ours.layoutxlm.visual(image).numpy(), ref.layoutxlm.visual(image).numpy()
        other_features = ours.layoutxlm.visual(other).numpy()
        vi = ours.layoutxlm.encoder(ours.layoutxlm.embeddings(ids, bbox, paddle.zeros_like(ids)),
                                    (1.0 - mask.astype("float32")).unsqueeze([1, 2]) * -1e10)[-1]
        vi_logits = ours.classifier(vi).numpy()
    got = out.logits.numpy()
    assert got.shape == (2, 24, 7)
    assert np.abs(got - want).max() < 1e-5
    assert features.shape == (2, 49, 16)
    assert np.abs(features - want_features).max() <= 1e-5 * np.abs(want_features).max()
    # not vacuous: the image moves the visual features, and the visual tokens move the text logits
    assert np.abs(features - other_features).mean() > 1e-3 * np.abs(features).mean()
    assert np.abs(got - vi_logits).max() > 1e-3
    assert out.hidden_states[-1].shape == [2, 24, 48]  # text positions only
    with pytest.raises(ValueError, match="visual backbone"):
        ours(ids, bbox, mask)


def test_vi_relative_biases_match_paddlenlp():
    """Relative biases without the visual backbone (VI-LayoutLMv2-style): still text-only and exact."""
    from paddlenlp.transformers import LayoutXLMConfig as NlpConfig
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    paddle.seed(12)
    ref = LayoutXLMForTokenClassification(NlpConfig(use_visual_backbone=False, has_relative_attention_bias=True,
                                                    has_spatial_attention_bias=True, num_labels=5, **TINY))
    ref.eval()
    ours = SerModel(LayoutXLMConfig(has_relative_attention_bias=True, has_spatial_attention_bias=True, **TINY), 5)
    ours.eval()
    assert not ours.set_state_dict(ref.state_dict())[1]
    ids, bbox, mask, _ = _t(*_inputs(seq=40, n_real=(40, 30)))
    with paddle.no_grad():
        want = ref(input_ids=ids, bbox=bbox, attention_mask=mask)[0].numpy()
        got = ours(ids, bbox, mask).logits.numpy()
    assert np.abs(got - want).max() < 1e-5


def _paddleocr_folder(ref, folder, head: str, num_classes: int | None = None):
    """A PaddleOCR-layout best_accuracy folder: the state dict and a PaddleNLP v1 model_config.json.

    PaddleOCR (PaddleNLP <= 2.5) wrote ``init_args`` from ``layoutxlm-base-uncased``'s init configuration, which
    has no ``use_visual_backbone`` key: the loader must find the backbone from the weights.
    """
    folder.mkdir(parents=True)
    paddle.save(ref.state_dict(), str(folder / "model_state.pdparams"))
    base = {**TINY, "has_relative_attention_bias": False, "has_spatial_attention_bias": False,
            "hidden_act": "gelu", "max_position_embeddings": 514, "max_2d_position_embeddings": 1024,
            "image_feature_pool_shape": list(TINY_VISUAL["image_feature_pool_shape"]), "fast_qkv": False,
            "init_class": "LayoutXLMModel"}
    cfg = {"init_args": [base], "init_class": head, "dropout": 0}
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    (folder / "model_config.json").write_text(json.dumps(cfg))
    write_sha256sums(folder)
    return folder


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(["Name: Bob", "姓名：张三", "Adresse rue", "Datum 2024"] * 5,
                           tmp_path_factory.mktemp("tok"), vocab_size=100)


def test_paddleocr_ser_folder_loads_matches_and_exports(tiny_paddlenlp_backbone, tok_dir, tmp_path):
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    from models.paddle_infer import InferenceOptions, PaddlePredictor

    paddle.seed(13)
    ref = LayoutXLMForTokenClassification(_nlp_config(False))
    _randomize_frozen_bn(ref, 4)
    ref.eval()
    folder = _paddleocr_folder(ref, tmp_path / "ser_LayoutXLM" / "best_accuracy", "LayoutXLMForTokenClassification",
                               7)
    ck = load_checkpoint(folder, tokenizer_dir=tok_dir)
    assert ck.task == "ser" and ck.config.use_visual_backbone and ck.config.family == "layoutxlm"
    assert ck.config.image_feature_pool_shape == (7, 7, 16) and ck.config.visual_depth == 50
    ids, bbox, mask, image = _inputs()
    with paddle.no_grad():
        want = ref(*_t(ids, bbox, image, mask))[0].numpy()
        got = ck.model(*_t(ids, bbox, mask), image=paddle.to_tensor(image)).logits.numpy()
    assert np.abs(got - want).max() < 1e-5
    # PaddleNLP folder (save_pretrained: config.json with use_visual_backbone) loads the same model
    nlp_dir = tmp_path / "nlp"
    ref.save_pretrained(str(nlp_dir))
    write_sha256sums(nlp_dir)
    ck2 = load_checkpoint(nlp_dir, tokenizer_dir=tok_dir)
    assert ck2.config.use_visual_backbone
    with paddle.no_grad():
        got2 = ck2.model(*_t(ids, bbox, mask), image=paddle.to_tensor(image)).logits.numpy()
    assert np.abs(got2 - want).max() < 1e-5
    # Paddle Inference export == dynamic graph, the image a fifth input
    out = export_inference(ck, tmp_path / "export")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["family"] == "layoutxlm" and meta["needs_image"] is True
    assert meta["input_names"] == ["input_ids", "bbox", "attention_mask", "token_type_ids", "image"]
    assert meta["image"]["size"] == [224, 224]
    pred = PaddlePredictor(out, InferenceOptions(precision="fp32"))
    logits = pred.run([ids, bbox, mask, np.zeros_like(ids), image])[0]
    assert np.abs(logits - got).max() < 1e-4


def test_paddleocr_re_folder_loads_matches_and_exports(tiny_paddlenlp_backbone, tok_dir, tmp_path):
    from paddlenlp.transformers import LayoutXLMForRelationExtraction

    from models.paddle_infer import InferenceOptions, PaddlePredictor

    paddle.seed(14)
    ref = LayoutXLMForRelationExtraction(_nlp_config(False))
    _randomize_frozen_bn(ref, 5)
    ref.eval()
    folder = _paddleocr_folder(ref, tmp_path / "re_LayoutXLM" / "best_accuracy", "LayoutXLMForRelationExtraction")
    ck = load_checkpoint(folder, tokenizer_dir=tok_dir)
    assert ck.task == "re" and ck.config.use_visual_backbone
    ids, bbox, mask, image = _inputs()
    entities, pairs = re_case()
    with paddle.no_grad():
        seq = ref.layoutxlm(input_ids=paddle.to_tensor(ids), bbox=paddle.to_tensor(bbox),
                            image=paddle.to_tensor(image), attention_mask=paddle.to_tensor(mask))[0][:, :24]
        want = _reference_re(ref, seq, entities, pairs)
        got = ck.model(*_t(ids, bbox, mask, entities, pairs), image=paddle.to_tensor(image)).logits.numpy()
    assert np.abs(got[0] - want[0]).max() < 1e-5
    assert np.abs(got[1, :1] - want[1]).max() < 1e-5
    out = export_inference(ck, tmp_path / "export")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["input_names"][-3:] == ["image", "entities", "pairs"] and meta["needs_image"] is True
    pred = PaddlePredictor(out, InferenceOptions(precision="fp32"))
    exported = pred.run([ids, bbox, mask, np.zeros_like(ids), image, entities, pairs])[0]
    assert np.abs(exported - got).max() < 1e-4


def test_visual_backbone_weights_with_a_vi_config_are_refused(tiny_paddlenlp_backbone, tok_dir, tmp_path):
    from paddlenlp.transformers import LayoutXLMForTokenClassification

    paddle.seed(15)
    ref = LayoutXLMForTokenClassification(_nlp_config(False))
    nlp_dir = tmp_path / "nlp"
    ref.save_pretrained(str(nlp_dir))
    cfg = json.loads((nlp_dir / "config.json").read_text())
    (nlp_dir / "config.json").write_text(json.dumps({**cfg, "use_visual_backbone": False}))
    write_sha256sums(nlp_dir)
    with pytest.raises(CheckpointError, match="use_visual_backbone=False.*visual backbone"):
        load_checkpoint(nlp_dir, tokenizer_dir=tok_dir)


@pytest.mark.slow
def test_full_size_backbone_matches_paddlenlp_yaml():
    """The published ResNeXt-101 32x8d FPN, built by PaddleNLP from its own visual_backbone.yaml."""
    from paddlenlp.transformers import LayoutXLMConfig as NlpConfig
    from paddlenlp.transformers.layoutxlm.modeling import VisualBackbone as NlpVisual

    paddle.seed(16)
    ref = NlpVisual(NlpConfig(use_visual_backbone=True))
    _randomize_frozen_bn(ref, 6)
    ref.eval()
    ours = VisualBackbone()
    ours.eval()
    state = ref.state_dict()
    assert set(ours.state_dict()) == set(state), sorted(set(ours.state_dict()) ^ set(state))
    ours.set_state_dict(state)
    image = paddle.to_tensor(kie_image_batch([np.random.default_rng(7).integers(0, 256, (500, 350, 3),
                                                                                  dtype=np.uint8)]))
    with paddle.no_grad():
        want = ref(image).numpy()
        got = ours(image).numpy()
    assert got.shape == (1, 49, 256)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
