"""The backend and precision flags: requests carried to the workers as they are (resolved where models load)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import to_config

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "examples"


def _config(tmp_path, *flags: str):
    page = sorted(EXAMPLE.glob("*.jpg"))[0]
    return to_config(PipelineOptions(["--input", str(page), "--output", str(tmp_path / "out"), *flags]))


def test_defaults_are_auto_and_kie_runs_on_paddle(tmp_path):
    cfg = _config(tmp_path)
    ocr, kie = cfg.ocr.inference, cfg.kie.inference
    assert (ocr.backend, ocr.precision, ocr.use_tensorrt, ocr.trt_cache_dir) == ("auto", "auto", True, None)
    assert (kie.backend, kie.precision) == ("paddle", "auto")
    assert kie.cpu_threads == ocr.cpu_threads and kie.device == ocr.device


def test_flags_reach_the_ocr_and_kie_options_separately(tmp_path):
    cfg = _config(tmp_path, "--ocr_backend", "paddle", "--ocr_precision", "bf16", "--kie_precision", "fp32",
                  "--device", "gpu", "--use_tensorrt", "false", "--trt_cache_dir", str(tmp_path / "trt"))
    ocr, kie = cfg.ocr.inference, cfg.kie.inference
    assert (ocr.backend, ocr.precision, ocr.device, ocr.use_tensorrt) == ("paddle", "bf16", "gpu", False)
    assert ocr.trt_cache_dir == str(tmp_path / "trt") == kie.trt_cache_dir
    assert (kie.backend, kie.precision, kie.use_tensorrt) == ("paddle", "fp32", False)


@pytest.mark.parametrize("flag, value", [("--ocr_backend", "onnx"), ("--kie_precision", "int8"),
                                         ("--ocr_precision", "fp64")])
def test_an_unknown_choice_is_refused(tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit):
        _config(tmp_path, flag, value)
    assert "invalid choice" in capsys.readouterr().err
