"""The one entry point that builds a model's predictor on the backend ``models.backends`` chooses.

OCR detection and recognition load through :func:`create_predictor` (Paddle Inference or OpenVINO); SER/RE use
:class:`models.paddle_infer.PaddlePredictor` directly (their PIR exports run on Paddle only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.backends import Capabilities, InferenceOptions, Runtime, resolve_runtime
from models.openvino_infer import OpenVinoPredictor
from models.paddle_infer import PaddlePredictor

__all__ = ["create_predictor", "runtime_label"]


def create_predictor(model_dir: str | Path, options: InferenceOptions, role: str,
                     extra_files: tuple[str, ...] = (), trt_shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
                     caps: Capabilities | None = None) -> PaddlePredictor | OpenVinoPredictor:
    """Builds the predictor for a model folder with the backend :func:`resolve_runtime` picks.

    Args:
        model_dir: the model folder (verified against its ``SHA256SUMS`` by either backend).
        options: inference requests.
        role: one of :data:`ROLES`.
        extra_files: other files of the folder the caller reads (verified too).
        trt_shapes: TensorRT shape ranges ``{input: (min, opt, max)}`` for GPU fp16 (Paddle only).
        caps: forced capabilities (tests); None detects them.

    Returns:
        A :class:`PaddlePredictor` or an :class:`OpenVinoPredictor`; both have ``run``, ``input_names``,
        ``output_names``, ``version``, ``model_dir`` and ``runtime``.
    """
    runtime = resolve_runtime(options, role, model_dir, caps)
    if runtime.backend == "openvino":
        return OpenVinoPredictor(model_dir, options, extra_files=extra_files, runtime=runtime)
    return PaddlePredictor(model_dir, options, extra_files=extra_files, role=role, trt_shapes=trt_shapes,
                           runtime=runtime)


def runtime_label(predictor: Any) -> str:  # noqa: ANN401 - OcrPredictor, KiePredictor or a single predictor
    """What a predictor's models run on, for the documents table: ``det=openvino/cpu/fp32;rec=...``.

    Args:
        predictor: an ``OcrPredictor`` or ``KiePredictor`` (their ``runtime`` text), or a single
            :class:`PaddlePredictor` / :class:`OpenVinoPredictor` (its :class:`models.backends.Runtime`).

    Returns:
        The label (``"unknown"`` when the predictor says nothing).
    """
    runtime = getattr(predictor, "runtime", None)
    if isinstance(runtime, Runtime):
        return runtime.label()
    return runtime if isinstance(runtime, str) and runtime else "unknown"
