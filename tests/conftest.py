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


# --- tiny KIE models (engineer B): a tokenizer, random-weight tiny SER + RE models, exported ---------------------

_KIE_TEXTS = (
    "姓名：张三", "性别：男", "出生日期：1990年1月1日", "电话号码：13800000000", "地址：北京市海淀区",
    "申请表", "签名", "日期：2024年8月15日", "Name: John Smith", "Date of birth: 01/02/1990", "Address",
    "Telephone number", "Signature", "Nom : Dupont", "Adresse : 12 rue de la Paix, Paris", "Date de naissance",
    "Numéro de téléphone", "Straße und Hausnummer", "Geburtsdatum", "Unterschrift", "Invoice No. 2024-0815",
    "Total amount 1,234.56", "0123456789", "APPLICATION FORM", "question answer header other",
)


@pytest.fixture(scope="session")
def tiny_kie_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """``(ser_dir, re_dir)``: exported tiny random-weight VI-LayoutXLM SER and RE models (512-token windows).

    Built in a few seconds without shared data; both share one tiny tokenizer. Load them with
    ``models.kie.KiePredictor.from_dirs(ser_dir, re_dir)``. Predictions are random but deterministic.
    """
    import paddle

    from models.checkpoint import export_inference
    from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
    from models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_kie")
    tok = train_tokenizer(list(_KIE_TEXTS) * 4, root / "tokenizer", vocab_size=400)
    cfg = LayoutXLMConfig(vocab_size=402, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=96, coordinate_size=8, shape_size=8)
    paddle.seed(2022)
    ser_dir = export_inference(SerModel(cfg, num_labels=7), root / "ser", tokenizer_dir=tok)
    re_dir = export_inference(ReModel(cfg), root / "re", tokenizer_dir=tok)
    return ser_dir, re_dir


@pytest.fixture(scope="session")
def tiny_layoutxlm_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """``(ser_dir, re_dir)``: exported tiny random-weight LayoutXLM models with the visual backbone (seed 11, RE
    "linked" logit +2 so that some pairs are linked), built once for the pipeline and evaluation tests."""
    from tiny_layoutxlm import export_tiny_layoutxlm

    return export_tiny_layoutxlm(tmp_path_factory.mktemp("tiny_layoutxlm"), seed=11, link_bias=2.0)
