"""Where model files live: the documented model-home layout and the bundled defaults.

Layout under the model home (default ``<checkout>/.models``; ``KIEBEAM_MODEL_HOME`` overrides it; the
Dataflow image sets it to ``/opt/kiebeam/models``)::

    ocr/ch_PP-OCRv4_det_infer/   inference.pdmodel | inference.json, inference.pdiparams, SHA256SUMS
    ocr/ch_PP-OCRv4_rec_infer/   the same, plus ppocr_keys_v1.txt (the character dictionary)
    kie/default/ser/             the default SER model (a kiebeam checkpoint or exported folder)
    kie/default/re/              the default RE model

Any PaddleOCR published inference folder (``*_det_infer``, ``*_rec_infer``: ``inference.pdmodel`` or
``inference.json`` + ``inference.pdiparams``) can be passed instead through the flags.
Only launch-side code (CLI, pipeline options) calls these functions; workers get explicit paths.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["model_home", "default_det_dir", "default_rec_dir", "default_rec_dict", "default_kie_dir"]

_CHECKOUT = Path(__file__).resolve().parent.parent


def model_home() -> Path:
    """The model home folder (``KIEBEAM_MODEL_HOME`` or ``<checkout>/.models``)."""
    return Path(os.environ.get("KIEBEAM_MODEL_HOME", _CHECKOUT / ".models"))


def default_det_dir() -> Path:
    """The bundled PP-OCRv4 detection model folder."""
    return model_home() / "ocr" / "ch_PP-OCRv4_det_infer"


def default_rec_dir() -> Path:
    """The bundled PP-OCRv4 recognition model folder."""
    return model_home() / "ocr" / "ch_PP-OCRv4_rec_infer"


def default_rec_dict() -> Path:
    """The character dictionary of the bundled recognition model."""
    return default_rec_dir() / "ppocr_keys_v1.txt"


def default_kie_dir() -> Path:
    """The folder holding the default SER (``ser/``) and RE (``re/``) models."""
    return model_home() / "kie" / "default"
