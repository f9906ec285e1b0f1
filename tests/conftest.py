"""Shared fixtures: paths to ../shared/data (skipping cleanly where it is absent) and the bundled models."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import zoo

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}: tests that need shared data read it from ../shared/data")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (skips where it is absent)."""
    return _need(SHARED_DATA, "shared data folder")


@pytest.fixture(scope="session")
def xfund_zh_train() -> Path:
    """``../shared/data/xfund_zh_train`` with ``train.json`` and ``image/``."""
    return _need(SHARED_DATA / "xfund_zh_train" / "train.json", "XFUND zh train labels").parent


@pytest.fixture(scope="session")
def ocr_model_dirs() -> tuple[Path, Path, Path]:
    """``(det_dir, rec_dir, dict_path)`` of the bundled PP-OCRv4 models (installed by bin/bootstrap.sh)."""
    det, rec, dic = zoo.default_det_dir(), zoo.default_rec_dir(), zoo.default_rec_dict()
    for p in (det, rec, dic):
        if not p.exists():
            pytest.fail(f"bundled OCR model file {p} is missing: run bin/bootstrap.sh (the README's commands do)")
    return det, rec, dic
