"""Which backend and precision run a model: the one place that turns ``auto`` and user requests into a runtime.

Requests come from :class:`models.paddle_infer.InferenceOptions` (``backend``, ``precision``, ``use_tensorrt``,
``device``); what the machine offers comes from :func:`models.capabilities.detect_capabilities`, on the worker
that loads the model. :func:`resolve_runtime` decides, and says in one line (:attr:`Runtime.notes`, logged once by
the predictor) every request it could not follow. The rules, per model role (``det``, ``rec``, ``ser``, ``re``):

* **backend** (OCR only): ``auto`` is OpenVINO on CPU for PaddleOCR's ``inference.pdmodel`` folders (measured
  faster than Paddle Inference + oneDNN with the same text, on the AMD EPYC and the Intel AMX machine kinds:
  README, Benchmarks), else Paddle. OpenVINO 2026.4 cannot read Paddle 3 PIR programs (``inference.json``): such a
  folder runs on Paddle. SER/RE always run on Paddle (their exports are PIR programs).
* **precision** ``auto``: on GPU fp16 through TensorRT where Paddle has TensorRT (``--use_tensorrt``), else fp32;
  on CPU bf16 for SER/RE where the CPU has ``avx512_bf16``/AMX, else fp32; OCR stays fp32 on CPU (bf16 OCR is
  opt-in: its accuracy on real pages was not measured on a bf16 machine).
* ``bf16`` needs a bf16 CPU (and oneDNN on Paddle), and never runs the DB detector on Paddle (Paddle 3.3.1 fails:
  a float32/bfloat16 mismatch in ``elementwise_mul``); ``fp16`` needs TensorRT on a GPU. Otherwise fp32.
* ``device="gpu"`` without a usable GPU runs on CPU.

:func:`models.predictors.create_predictor` builds the predictor the runtime names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from models.capabilities import BF16_FLAGS, Capabilities, detect_capabilities

__all__ = ["InferenceOptions", "Runtime", "resolve_runtime", "log_notes", "BACKENDS", "PRECISIONS", "ROLES",
           "OCR_ROLES"]

BACKENDS = ("auto", "paddle", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OCR_ROLES = ("det", "rec")
ROLES = ("det", "rec", "ser", "re", "model")
"""Model roles: the OCR detector and recognizer, the KIE models, and ``model`` for anything else (fp32 by default)."""

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceOptions:
    """How to run an exported model.

    Attributes:
        device: ``"cpu"`` or ``"gpu"``.
        gpu_id: GPU ordinal when ``device == "gpu"``.
        enable_mkldnn: oneDNN kernels on CPU (about 5x faster than off on this project's CPUs, same results).
        cpu_threads: math-library threads per predictor on CPU.
        gpu_mem_mb: initial GPU memory pool per predictor.
        allow_unverified: load a folder that has no ``SHA256SUMS`` (an explicit user choice).
        concurrency: at most this many native predictors (each with its own weights) serve concurrent calls;
            further callers wait. 1 serialises calls, which suits one GPU or a CPU already using all its threads.
        mkldnn_cache_capacity: oneDNN's per-predictor cache of input shapes (``Config.set_mkldnn_cache_capacity``,
            PaddleOCR sets 10); 0 leaves the role's default. OCR (Paddle 3.3.1): Paddle's (unbounded), and a
            capacity does not bound the detector's and recognizer's memory (bench/README.md); bounding their
            input shapes (the recognizer's ``width_bucket``) does. SER/RE: 0 runs them with
            ``models.kie.KIE_MKLDNN_CACHE_CAPACITY``, which does bound their memory (unbounded, a base-size model
            kept ~0.3 GiB per window shape; README, Benchmarks); any other value is used as given.
        backend: ``"auto"``, ``"paddle"`` or ``"openvino"`` for OCR detection/recognition (``--ocr_backend``);
            SER/RE always run on Paddle. ``auto``: see :mod:`models.backends`.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` (CPU) or ``"fp16"`` (GPU TensorRT) (``--ocr_precision``,
            ``--kie_precision``); what runs is decided on the worker by ``models.backends.resolve_runtime``.
        use_tensorrt: on GPU, fp16 runs through TensorRT where Paddle has it (``--use_tensorrt``).
        trt_cache_dir: worker-local folder for TensorRT engines and shape ranges (default
            ``<tempdir>/kiebeam-trt``).
    """

    device: str = "cpu"
    gpu_id: int = 0
    enable_mkldnn: bool = True
    cpu_threads: int = 2
    gpu_mem_mb: int = 500
    allow_unverified: bool = False
    concurrency: int = 1
    mkldnn_cache_capacity: int = 0
    backend: str = "auto"
    precision: str = "auto"
    use_tensorrt: bool = True
    trt_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"unknown device '{self.device}', expected 'cpu' or 'gpu'")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend '{self.backend}', expected one of {list(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{self.precision}', expected one of {list(PRECISIONS)}")
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.gpu_id < 0:
            raise ValueError(f"gpu_id must be >= 0, got {self.gpu_id}")
        if self.mkldnn_cache_capacity < 0:
            raise ValueError(f"mkldnn_cache_capacity must be >= 0 (0 = Paddle's default), got "
                             f"{self.mkldnn_cache_capacity}")


@dataclass(frozen=True)
class Runtime:
    """How one model runs.

    Attributes:
        backend: ``"paddle"`` or ``"openvino"``.
        device: ``"cpu"`` or ``"gpu"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (what was asked of the backend).
        tensorrt: Paddle Inference runs TensorRT subgraphs (GPU fp16).
        notes: one line per request that could not be followed, and why.
    """

    backend: str = "paddle"
    device: str = "cpu"
    precision: str = "fp32"
    tensorrt: bool = False
    notes: tuple[str, ...] = ()

    def label(self) -> str:
        """A short name for tables: ``openvino/cpu/fp32``, ``paddle/cpu/bf16``, ``paddle/gpu/trt-fp16``."""
        return f"{self.backend}/{self.device}/{'trt-' if self.tensorrt else ''}{self.precision}"


def _program_kind(model_dir: str | Path | None) -> str:
    """``"pdmodel"`` (Paddle 2 program, OpenVINO reads it), ``"pir"`` (Paddle 3 ``inference.json``) or ``""``."""
    if model_dir is None:
        return ""
    folder = Path(model_dir)
    if (folder / "inference.json").is_file():  # find_program prefers it too
        return "pir"
    return "pdmodel" if (folder / "inference.pdmodel").is_file() else ""


def _reads_image(model_dir: str | Path | None) -> bool:
    """Whether a KIE export runs LayoutXLM's convolutional visual backbone (``metadata.json`` ``needs_image``)."""
    if model_dir is None:
        return False
    try:
        import json

        return bool(json.loads((Path(model_dir) / "metadata.json").read_text()).get("needs_image"))
    except (OSError, ValueError, AttributeError):
        return False


def resolve_runtime(options: InferenceOptions, role: str, model_dir: str | Path | None = None,
                    caps: Capabilities | None = None) -> Runtime:
    """Decides backend, device, precision and TensorRT for one model.

    Args:
        options: the requests (``backend``, ``precision``, ``device``, ``use_tensorrt``, ``enable_mkldnn``).
        role: one of :data:`ROLES`.
        model_dir: the model folder (its program kind decides whether OpenVINO can read it).
        caps: the machine's capabilities; None detects them (tests pass their own to force an answer).

    Returns:
        The :class:`Runtime`; ``notes`` explains each request that was not followed.

    >>> from models.paddle_infer import InferenceOptions
    >>> resolve_runtime(InferenceOptions(precision="auto"), "ser", caps=Capabilities(frozenset({"amx_bf16"}))).label()
    'paddle/cpu/bf16'
    >>> resolve_runtime(InferenceOptions(precision="auto"), "ser", caps=Capabilities(frozenset({"avx2"}))).label()
    'paddle/cpu/fp32'
    """
    if role not in ROLES:
        raise ValueError(f"unknown model role '{role}', expected one of {list(ROLES)}")
    caps = caps if caps is not None else detect_capabilities()
    notes: list[str] = []
    device = options.device
    if device == "gpu" and caps.cuda_devices == 0:
        notes.append(f"{role}: no usable GPU ({caps.why_no_gpu or 'none found'}); running on CPU")
        device = "cpu"

    backend = options.backend
    if role not in OCR_ROLES:
        if backend == "openvino":
            notes.append(f"{role}: the OpenVINO backend runs OCR detection and recognition only; running on Paddle")
        backend = "paddle"
    elif backend in ("auto", "openvino"):
        kind = _program_kind(model_dir)
        why = ("OpenVINO runs on CPU only" if device != "cpu" else
               "the openvino package is not installed" if not caps.openvino else
               f"{model_dir} holds a Paddle 3 PIR program (inference.json), which OpenVINO cannot read"
               if kind == "pir" else "")
        if why and backend == "openvino":
            notes.append(f"{role}: --ocr_backend openvino not used: {why}; running on Paddle")
        backend = "paddle" if why else "openvino"

    precision, tensorrt = _precision(options, role, device, backend, caps, notes)
    if precision == "bf16" and _reads_image(model_dir):
        # The DB detector's convolutions fail in Paddle bf16, and bf16 was never run on the ResNeXt-FPN of
        # LayoutXLM (no bf16 CPU here): keep it fp32 until it is measured.
        if options.precision == "bf16":
            notes.append(f"{role}: bf16 not used (not verified on LayoutXLM's convolutional visual backbone); "
                         f"running fp32")
        precision = "fp32"
    return Runtime(backend, device, precision, tensorrt, tuple(notes))


def _precision(options: InferenceOptions, role: str, device: str, backend: str, caps: Capabilities,
               notes: list[str]) -> tuple[str, bool]:
    """``(precision, tensorrt)`` for :func:`resolve_runtime`; appends a note for each request not followed."""
    asked = options.precision
    if device == "gpu":
        trt_ok = options.use_tensorrt and caps.tensorrt and role != "model"
        if asked in ("auto", "fp16"):
            if trt_ok:
                return "fp16", True
            if asked == "fp16" or options.use_tensorrt:
                why = ("--use_tensorrt false" if not options.use_tensorrt else
                       "no TensorRT shape ranges for this model" if role == "model" else
                       f"TensorRT unavailable: {caps.why_no_tensorrt or 'not found'}")
                notes.append(f"{role}: fp16 with TensorRT not used ({why}); running fp32 on GPU")
        elif asked == "bf16":
            notes.append(f"{role}: bf16 is a CPU precision; running fp32 on GPU (fp16 with TensorRT is the GPU's)")
        return "fp32", False
    if asked == "fp16":
        notes.append(f"{role}: fp16 runs with TensorRT on GPU only; running fp32 on CPU")
        return "fp32", False
    if asked == "auto":
        wants_bf16 = role in ("ser", "re") and backend == "paddle" and options.enable_mkldnn
        return ("bf16" if wants_bf16 and caps.bf16 else "fp32"), False
    if asked == "bf16":
        why = (f"the CPU has none of {', '.join(BF16_FLAGS)}" if not caps.bf16 else
               "Paddle bf16 fails on the DB detector (dtype mismatch in elementwise_mul)"
               if role == "det" and backend == "paddle" else
               "Paddle bf16 needs oneDNN (--enable_mkldnn true)" if backend == "paddle" and not options.enable_mkldnn
               else "")
        if why:
            notes.append(f"{role}: bf16 not used ({why}); running fp32")
            return "fp32", False
        return "bf16", False
    return "fp32", False


def log_notes(runtime: Runtime, model_dir: str | Path) -> None:
    """Logs each note of a runtime once, as one warning line naming the model folder."""
    for note in runtime.notes:
        _LOG.warning("%s (%s)", note, Path(model_dir).name)
