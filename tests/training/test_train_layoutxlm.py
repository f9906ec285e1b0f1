"""Fine-tuning LayoutXLM with its visual backbone: page images from the shards' image_dir reach the model in
training and evaluation; the frozen stem stays, the trained stages move; no image_dir is refused clearly."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from tiny_layoutxlm import TINY_VISUAL_CONFIG, xfund_manifests

from models.checkpoint import load_checkpoint, save_checkpoint
from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
from models.tokenizer import train_tokenizer
from training.config import PRESETS, get_preset
from training.evaluate import evaluate_checkpoint
from training.train import main


@pytest.fixture(scope="module")
def setup(xfund_zh_train, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lx_train")
    docs, _, _ = xfund_manifests(folder, xfund_zh_train, ("train", "val"))
    tok = train_tokenizer([ln.text for d in docs for ln in d.lines], folder / "tok", vocab_size=300)
    cfg = LayoutXLMConfig(**{**TINY_VISUAL_CONFIG, "vocab_size": 302})
    paddle.seed(3)
    ser = save_checkpoint(SerModel(cfg, 7), folder / "init_ser", tokenizer_dir=tok)
    re_ck = save_checkpoint(ReModel(cfg), folder / "init_re", tokenizer_dir=tok)
    return folder, ser, re_ck


def test_presets_from_paddleocr_layoutxlm_configs():
    ser, re = PRESETS["ser_layoutxlm"], PRESETS["re_layoutxlm"]
    assert (ser.epochs, ser.batch_size, ser.learning_rate, ser.warmup_epochs, ser.schedule, ser.eval_every,
            ser.seed, ser.udml) == (200, 8, 5e-5, 2, "linear", 19, 2022, False)
    assert (re.epochs, re.batch_size, re.learning_rate, re.warmup_epochs, re.schedule, re.clip_norm,
            re.eval_every) == (130, 2, 5e-5, 10, "constant", 10.0, 19)
    assert not any(name.startswith(("ser_layoutxlm_udml", "re_layoutxlm_udml")) for name in PRESETS)


@pytest.mark.parametrize("task", ["ser", "re"])
def test_fine_tuning_layoutxlm_reads_page_images(setup, tmp_path, task):
    folder, ser, re_ck = setup
    init = ser if task == "ser" else re_ck
    before = load_checkpoint(init).model.state_dict()
    preset = "tiny_ser" if task == "ser" else "tiny_re"
    result = main(get_preset(preset, manifest=str(folder / "m.json"), out_dir=str(tmp_path / "run"),
                             init_from=str(init), max_steps=2, max_len=128, learning_rate=1e-2, eval_every=2))
    assert result["steps"] == 2
    after = load_checkpoint(tmp_path / "run" / "best")
    assert after.config.use_visual_backbone and after.config.visual_depth == 50
    state = after.model.state_dict()
    stem = "layoutxlm.visual.backbone.bottom_up.stem.conv1.weight"  # FREEZE_AT=2: stem and res2 not trained
    trained = "layoutxlm.visual.backbone.bottom_up.res4.0.conv2.weight"
    assert np.array_equal(state[stem].numpy(), before[stem].numpy())
    assert not np.allclose(state[trained].numpy(), before[trained].numpy())
    for frozen_bn in ("res4.0.conv2.norm._mean", "res4.0.conv2.norm._variance", "res4.0.conv2.norm.weight"):
        key = f"layoutxlm.visual.backbone.bottom_up.{frozen_bn}"  # FrozenBN: statistics and affine never move
        assert np.array_equal(state[key].numpy(), before[key].numpy()), key
    # kiebeam evaluate --checkpoint (gold OCR, dynamic graph) reads the page images too, PaddleOCR's inputs as well
    metrics = evaluate_checkpoint(str(tmp_path / "run" / "best"), str(folder / "m.json"), "val",
                                  paddleocr_compat=True)
    assert metrics["task"] == task and 0 <= metrics["hmean"] <= 1 and 0 <= metrics["paddleocr_compat"]["hmean"] <= 1


def test_fine_tuning_without_page_images_is_refused(setup, tmp_path):
    folder, ser, _ = setup
    with pytest.raises(ValueError, match="reads the page image.*image_dir"):
        main(get_preset("tiny_ser", manifest=str(folder / "no_images.json"), out_dir=str(tmp_path / "run"),
                        init_from=str(ser), max_steps=1, max_len=128))
