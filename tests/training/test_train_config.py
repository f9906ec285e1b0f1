"""Training presets name a backbone size without Paddle, and the model config is that size plus the rest."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from models.layoutxlm_size import LayoutXLMSize
from training.config import PRESETS, TrainConfig, get_preset


def test_training_config_imports_without_paddle():
    code = "import sys, training.config; print(sorted(m for m in sys.modules if m.split('.')[0] == 'paddle'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]", out.stdout


def test_every_preset_builds_its_layoutxlm_config():
    from models.layoutxlm import LayoutXLMConfig

    size_fields = [f.name for f in dataclasses.fields(LayoutXLMSize)]
    assert [f.name for f in dataclasses.fields(LayoutXLMConfig)][:len(size_fields)] == size_fields  # written once
    for name in PRESETS:
        cfg = get_preset(name)
        model = LayoutXLMConfig(**cfg.backbone_args(vocab_size=500))
        assert {k: getattr(model, k) for k in size_fields} == dataclasses.asdict(cfg.model)
        assert (model.vocab_size, model.hidden_dropout_prob, model.attention_probs_dropout_prob) == (
            500, cfg.dropout, cfg.dropout)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_a_size_that_breaks_the_layout_embedding_is_refused_before_paddle():
    with pytest.raises(ValueError, match="4\\*coordinate_size"):
        get_preset("tiny_ser").replace(model={"hidden_size": 50})
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        LayoutXLMSize(hidden_size=48, coordinate_size=8, shape_size=8, num_attention_heads=5)
