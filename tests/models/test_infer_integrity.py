"""Model-folder verification and the thread-safe Paddle Inference wrapper, on the real bundled detector."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from models.integrity import ModelIntegrityError, verify_model_dir, write_sha256sums
from models.paddle_infer import InferenceOptions, PaddlePredictor, find_program


def test_write_then_verify_and_detect_tampering(tmp_path):
    (tmp_path / "inference.pdiparams").write_bytes(b"weights")
    (tmp_path / "inference.json").write_text("{}")
    write_sha256sums(tmp_path)
    assert set(verify_model_dir(tmp_path, ["inference.json"])) == {"inference.json", "inference.pdiparams"}
    (tmp_path / "inference.pdiparams").write_bytes(b"evil")
    with pytest.raises(ModelIntegrityError, match=r"checksum mismatch for .*inference\.pdiparams"):
        verify_model_dir(tmp_path)


def test_unverified_folder_is_refused_unless_allowed(tmp_path):
    (tmp_path / "inference.pdiparams").write_bytes(b"weights")
    with pytest.raises(ModelIntegrityError, match="no SHA256SUMS"):
        verify_model_dir(tmp_path, ["inference.pdiparams"])
    assert verify_model_dir(tmp_path, ["inference.pdiparams"], allow_unverified=True) == {}


@pytest.mark.parametrize("line, message", [
    ("nothex  file", "malformed line"),
    ("0" * 64 + "  ../escape", "plain name"),
])
def test_malformed_sums_files(tmp_path, line, message):
    (tmp_path / "SHA256SUMS").write_text(line + "\n")
    with pytest.raises(ModelIntegrityError, match=message):
        verify_model_dir(tmp_path)


def test_required_file_must_be_listed(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    write_sha256sums(tmp_path, ["a"])
    with pytest.raises(ModelIntegrityError, match="b is not listed"):
        verify_model_dir(tmp_path, ["a", "b"])


def test_find_program_errors(tmp_path):
    with pytest.raises(ValueError, match="has no program file"):
        find_program(tmp_path)
    (tmp_path / "inference.pdmodel").write_bytes(b"x")
    with pytest.raises(ValueError, match="no inference.pdiparams"):
        find_program(tmp_path)


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        InferenceOptions(device="tpu")
    with pytest.raises(ValueError, match="concurrency"):
        InferenceOptions(concurrency=0)


def test_predictor_is_thread_safe_and_refuses_tampered_weights(ocr_model_dirs, tmp_path):
    det_dir = ocr_model_dirs[0]
    predictor = PaddlePredictor(det_dir, InferenceOptions(concurrency=2))
    assert predictor.version.startswith("ch_PP-OCRv4_det_infer@")
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    want = predictor.run([x])[0]
    assert want.shape == (1, 1, 96, 128)
    got: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, predictor.run({"x": x})[0])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(np.array_equal(g, want) for g in got.values())

    copy = tmp_path / "det"
    shutil.copytree(det_dir, copy)
    with open(copy / "inference.pdiparams", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        PaddlePredictor(copy)
