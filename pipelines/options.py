"""Command-line options of the extraction pipeline, turned once into frozen configs on the launcher.

Beam's own flags (``--runner``, ``--project``, ``--region``, ``--temp_location``, ``--setup_file``,
``--sdk_container_image``, ``--direct_running_mode``, ``--direct_num_workers``, ...) pass through untouched.
Model defaults come from :mod:`models.zoo` and are resolved here, on the launcher: for Dataflow, either run the
launcher with ``KIEBEAM_MODEL_HOME=/opt/kiebeam/models`` (the worker image's model home) or pass the folders.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from models import zoo
from models.backends import BACKENDS, PRECISIONS, InferenceOptions
from models.integrity import verify_model_dir
from models.ocr import OcrConfig
from transforms.decode import DecodeLimits
from transforms.inference import HandlerOptions
from transforms.inputs import is_glob, list_pattern, read_manifest_rows, split_patterns

__all__ = ["ExtractOptions", "ExtractConfig", "KieSettings", "to_config", "probe_io", "default_kie_dirs",
           "DEMO_OUTPUT"]

_PIPELINES = Path(__file__).resolve().parent
DEMO_OUTPUT = "./out/demo"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LOCAL_RUNNERS = {None, "DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
_LIMIT_FLAGS = ("max_bytes", "max_pixels", "min_side", "max_pages", "pdf_dpi")


def _bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got '{value}'")


class ExtractOptions(PipelineOptions):
    """Flags of ``python -m pipelines.extract`` / ``kiebeam extract`` (PaddleOCR names for the OCR models)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam's argparse wrapper
        g = parser.add_argument_group("kiebeam extract")
        g.add_argument("--input", action="append", default=None,
                       help="file pattern(s), local or gs://; repeatable or comma-separated")
        g.add_argument("--manifest", default=None,
                       help="text (a URI per line), CSV or Parquet manifest: 'uri' (+ optional 'doc_id') column")
        g.add_argument("--output", default=None, help="output folder or gs:// prefix")
        g.add_argument("--allow_empty_inputs", action="store_true",
                       help="run even when an --input wildcard matches no files (default: refuse, exit 2)")
        g.add_argument("--io_probe_timeout_secs", type=float, default=20.0,
                       help="the launcher lists the inputs and writes a probe to the output before the run; give up "
                            "(exit 2) when that takes longer (no network or credentials)")
        g.add_argument("--run_id", default=None, help="partition value of this run (default: UTC timestamp)")
        g.add_argument("--det_model_dir", default=None, help="PP-OCR detection inference folder")
        g.add_argument("--rec_model_dir", default=None, help="PP-OCR recognition inference folder")
        g.add_argument("--rec_char_dict_path", default=None, help="recognition character dictionary")
        g.add_argument("--ser_model_dir", default=None, help="SER model folder (local or gs://); 'none' = OCR only")
        g.add_argument("--re_model_dir", default=None,
                       help="RE model folder (local or gs://); 'rule' = link answers to questions by the geometric "
                            "rule (models.linker), no RE model; 'none' = no pairs")
        g.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
        g.add_argument("--enable_mkldnn", type=_bool, default=True, help="oneDNN on CPU (true/false)")
        g.add_argument("--cpu_threads", type=int, default=2)
        g.add_argument("--ocr_backend", default="auto", choices=list(BACKENDS),
                       help="OCR detection/recognition backend; auto = OpenVINO on CPU for PaddleOCR inference.pdmodel "
                            "folders (Paddle for inference.json folders and on GPU)")
        g.add_argument("--ocr_precision", default="auto", choices=list(PRECISIONS),
                       help="OCR precision; auto = fp16 with TensorRT on GPU, else fp32 (bf16: CPUs with "
                            "avx512_bf16/AMX, never the detector on Paddle)")
        g.add_argument("--kie_precision", default="auto", choices=list(PRECISIONS),
                       help="SER/RE precision; auto = bf16 on CPUs with avx512_bf16/AMX, fp16 with TensorRT on GPU, "
                            "else fp32")
        g.add_argument("--use_tensorrt", type=_bool, default=True,
                       help="on GPU, run fp16 through Paddle-TensorRT where Paddle has it (true/false)")
        g.add_argument("--trt_cache_dir", default=None,
                       help="worker-local folder for TensorRT engines and shape ranges (default <tmp>/kiebeam-trt)")
        g.add_argument("--ocr_batch_size", type=int, default=2, help="pages per OCR batch (one per 10 megapixels)")
        g.add_argument("--kie_batch_size", type=int, default=8, help="pages per KIE batch (one per 256 lines)")
        g.add_argument("--model_copies", type=int, default=None, help="model copies per machine (behind a proxy)")
        g.add_argument("--large_model", action="store_true", help="one model copy per machine")
        g.add_argument("--max_batch_duration_secs", type=int, default=None,
                       help="longest a model batch waits to fill, across bundles (default: within a bundle)")
        g.add_argument("--model_cache_dir", default=None, help="worker-local cache for remote model folders")
        g.add_argument("--allow_unverified_models", action="store_true",
                       help="load model folders that have no SHA256SUMS")
        g.add_argument("--det_db_max_candidates", type=int, default=None,
                       help="per-page cap on detected text boxes that are recognised (bounds OCR time and the lines "
                            "of a page; default 1000, PaddleOCR's)")
        g.add_argument("--inference_timeout_secs", type=float, default=None,
                       help="fail an OCR/KIE batch (its pages get error_type 'timeout') that takes longer; the model "
                            "then loads lazily within this budget too. In-process: the stuck call keeps its thread")
        g.add_argument("--progress_interval_secs", type=float, default=None,
                       help="seconds between progress lines (pages done, rate, ETA); default 30 on local runners, "
                            "off (0) on remote ones")
        for name in _LIMIT_FLAGS:
            g.add_argument(f"--{name}", type=int, default=None, help=f"decode limit {name} (DecodeLimits)")
        g.add_argument("--demo", action="store_true",
                       help="run the bundled example pages with the default models into ./out/demo")


@dataclass(frozen=True)
class KieSettings:
    """SER/RE model folders (local or remote) and how to run them."""

    ser_model_dir: str
    re_model_dir: str | None
    inference: InferenceOptions


@dataclass(frozen=True)
class ExtractConfig:
    """Everything ``run()`` needs, validated.

    Attributes:
        inputs: file patterns. manifest: manifest URI or None. output: output folder / prefix.
        run_id: the run's partition value. launch_id: unique per launch (staging folder name).
        ocr: OCR config. kie: KIE settings, None for OCR only. limits: decode limits.
        ocr_handler / kie_handler: batching and sharing of the two RunInference steps.
        local_runner: the runner runs on this machine (the summary is printed).
        inference_timeout_s: per-batch OCR/KIE time limit in seconds (None: no limit).
        progress_interval_s: seconds between progress lines of a worker process (0: none).
        allow_empty_inputs: a wildcard that matches nothing is a warning, not an error.
        io_probe_timeout_s: bound of the launcher's file-system probe (:func:`probe_io`).
        input_count: inputs found by :func:`probe_io` (None: not probed).
    """

    inputs: tuple[str, ...]
    manifest: str | None
    output: str
    run_id: str
    launch_id: str
    ocr: OcrConfig
    kie: KieSettings | None
    limits: DecodeLimits
    ocr_handler: HandlerOptions
    kie_handler: HandlerOptions
    local_runner: bool
    inference_timeout_s: float | None = None
    progress_interval_s: float = 0.0
    allow_empty_inputs: bool = False
    io_probe_timeout_s: float = 20.0
    input_count: int | None = None


def default_kie_dirs() -> tuple[Path, Path] | None:
    """The default ``(ser, re)`` folders, or None if absent: the model home's ``kie/default/`` when it holds a SER
    folder (a user's override, as the README says), else the bundled ``models/assets/default_kie``."""
    for base in (zoo.default_kie_dir(), _PIPELINES.parent / "models" / "assets" / "default_kie"):
        if (base / "ser").is_dir():
            return base / "ser", base / "re"
    return None


def _local_path(value: str) -> str:
    return value if "://" in value else str(Path(value).expanduser().resolve())


def _check_exists(path: str | None, what: str, local_runner: bool) -> None:
    if path is not None and local_runner and "://" not in path and not Path(path).exists():
        raise ValueError(f"{what} '{path}' does not exist")


def _verify_local_models(dirs: tuple[str | None, ...], allow_unverified: bool) -> None:
    """Checks local model folders against their SHA256SUMS on the launcher, before any worker starts.

    Workers verify again before loading (remote folders are only verified there); this makes an unverified or
    tampered local folder a config error at launch instead of a failure after the first stages ran.
    """
    for path in dirs:
        if path is not None and "://" not in path and Path(path).is_dir():
            verify_model_dir(path, allow_unverified=allow_unverified)


def to_config(options: PipelineOptions) -> ExtractConfig:
    """Reads :class:`ExtractOptions` once and returns the frozen config.

    Args:
        options: the pipeline options (any view).

    Returns:
        The validated config.

    Raises:
        ValueError: missing inputs or output, a bad run id, a bad number, a local model path that is missing, or a
            local model folder that fails its SHA256SUMS check (or has none, without ``--allow_unverified_models``).
    """
    o = options.view_as(ExtractOptions)
    runner = options.view_as(StandardOptions).runner
    local_runner = runner in _LOCAL_RUNNERS
    inputs = split_patterns(o.input)
    output = o.output
    if o.demo:
        inputs = inputs or [str(_PIPELINES / "examples" / "*.jpg")]
        output = output or DEMO_OUTPUT
    if not inputs and not o.manifest:
        raise ValueError("no input: pass --input PATTERN (repeatable, comma-separated), --manifest FILE or --demo")
    if not output:
        raise ValueError("no output: pass --output FOLDER_OR_GS_PREFIX")
    run_id = o.run_id or ("demo" if o.demo else datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    if not _RUN_ID.match(run_id):
        raise ValueError(f"bad run_id '{run_id}': use letters, digits, '_', '.', '-' (at most 128)")
    if not o.io_probe_timeout_secs > 0:
        raise ValueError(f"--io_probe_timeout_secs must be > 0, got {o.io_probe_timeout_secs}")
    if o.inference_timeout_secs is not None and not o.inference_timeout_secs > 0:
        raise ValueError(f"--inference_timeout_secs must be > 0, got {o.inference_timeout_secs}")
    progress = o.progress_interval_secs if o.progress_interval_secs is not None else (30.0 if local_runner else 0.0)
    if progress < 0:
        raise ValueError(f"--progress_interval_secs must be >= 0, got {progress}")
    for name in ("cpu_threads", "ocr_batch_size", "kie_batch_size"):
        if getattr(o, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(o, name)}")
    inference = InferenceOptions(device=o.device, enable_mkldnn=o.enable_mkldnn, cpu_threads=o.cpu_threads,
                                 backend=o.ocr_backend, precision=o.ocr_precision, use_tensorrt=o.use_tensorrt,
                                 trt_cache_dir=o.trt_cache_dir, allow_unverified=o.allow_unverified_models)
    # backend and precision are requests: the worker that loads a model resolves them (models.backends)
    kie_inference = replace(inference, backend="paddle", precision=o.kie_precision)
    det = _local_path(o.det_model_dir or str(zoo.default_det_dir()))
    rec = _local_path(o.rec_model_dir or str(zoo.default_rec_dir()))
    dic = _local_path(o.rec_char_dict_path) if o.rec_char_dict_path else None
    for path, what in ((det, "--det_model_dir"), (rec, "--rec_model_dir"), (dic, "--rec_char_dict_path")):
        _check_exists(path, what, local_runner)
    caps = {"det_db_max_candidates": o.det_db_max_candidates} if o.det_db_max_candidates is not None else {}
    if o.det_db_max_candidates is not None and o.det_db_max_candidates < 1:
        raise ValueError(f"--det_db_max_candidates must be >= 1, got {o.det_db_max_candidates}")
    ocr = OcrConfig(det_model_dir=det, rec_model_dir=rec, rec_char_dict_path=dic, inference=inference, **caps)
    _verify_local_models((det, rec), o.allow_unverified_models)

    kie = None
    ser_flag = (o.ser_model_dir or "").strip()
    if ser_flag.lower() != "none":
        if ser_flag:
            ser, re_dir = _local_path(ser_flag), o.re_model_dir
        else:
            defaults = default_kie_dirs()
            ser, re_dir = (str(defaults[0]), o.re_model_dir or str(defaults[1])) if defaults else (None, None)
        if re_dir is not None and re_dir.strip().lower() == "none":
            re_dir = None
        if re_dir is not None and re_dir.strip().lower() == "rule":
            re_dir = "rule"  # the geometric rule (models.linker), no RE model
        if ser is not None and re_dir == "rule":
            _check_exists(ser, "--ser_model_dir", local_runner)
            _verify_local_models((ser,), o.allow_unverified_models)
            kie = KieSettings(ser, re_dir, kie_inference)
        elif ser is not None:
            re_dir = _local_path(re_dir) if re_dir else None
            if re_dir is not None and not ser_flag and not Path(re_dir).exists():
                re_dir = None  # the default KIE folder may ship SER only
            _check_exists(ser, "--ser_model_dir", local_runner)
            _check_exists(re_dir, "--re_model_dir", local_runner)
            _verify_local_models((ser, re_dir), o.allow_unverified_models)
            kie = KieSettings(ser, re_dir, kie_inference)

    limits = DecodeLimits(**{k: getattr(o, k) for k in _LIMIT_FLAGS if getattr(o, k) is not None})
    sharing = {"model_copies": o.model_copies, "large_model": o.large_model, "cache_dir": o.model_cache_dir,
               "max_batch_duration_secs": o.max_batch_duration_secs}
    return ExtractConfig(
        inputs=tuple(_local_path(p) for p in inputs), manifest=_local_path(o.manifest) if o.manifest else None,
        output=output if "://" in output else str(Path(output).resolve()), run_id=run_id,
        launch_id=uuid.uuid4().hex[:12], ocr=ocr, kie=kie, limits=limits,
        ocr_handler=HandlerOptions(max_batch_size=o.ocr_batch_size, **sharing),
        kie_handler=HandlerOptions(max_batch_size=o.kie_batch_size, **sharing), local_runner=local_runner,
        inference_timeout_s=o.inference_timeout_secs, progress_interval_s=progress,
        allow_empty_inputs=o.allow_empty_inputs, io_probe_timeout_s=o.io_probe_timeout_secs)


def _within(deadline: float, what: str, fn: Callable[[], object]) -> object:
    """Runs ``fn`` in a daemon thread until ``deadline``: a call stuck in retries cannot hold the launcher."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below, in the launcher's thread
            text = str(e).splitlines()[0][:300] if str(e) else ""
            box["error"] = f"{type(e).__name__}: {text}"

    thread = threading.Thread(target=target, name="kiebeam-io-probe", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise ValueError(f"could not {what}: no answer within the --io_probe_timeout_secs bound (no network, no "
                         f"credentials, or the service is unreachable)")
    if "error" in box:
        raise ValueError(f"could not {what}: {box['error']}")
    return box.get("value")


def _gcs_credentials_or_anonymous() -> None:
    """Looks for Google credentials once, without Beam's ~20 s of retries; without any, Beam connects anonymously.

    Beam's GCS client retries ``google.auth.default()`` with backoff (``_get_credentials_with_retrys``) before
    falling back to anonymous access; the outcome is the same, so the launcher settles it at once.
    """
    import google.auth
    from apache_beam.internal.gcp import auth

    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        creds = auth._Credentials  # noqa: SLF001 - Beam's process-wide credentials cache
        with creds._credentials_lock:  # noqa: SLF001
            creds._credentials, creds._credentials_init = None, True  # noqa: SLF001 - what Beam ends with
        if not os.environ.get("STORAGE_EMULATOR_HOST"):
            import logging

            logging.getLogger(__name__).warning("no Google Cloud credentials found: gs:// is accessed anonymously")


def probe_io(cfg: ExtractConfig) -> int:
    """Checks on the launcher, within ``cfg.io_probe_timeout_s`` in all, that the run can read and write.

    Every ``--input`` pattern is listed: one that cannot be listed (missing bucket, no permission, no network or
    credentials, no answer in time) is an error, and a wildcard that matched nothing is one too unless
    ``--allow_empty_inputs``; the manifest is opened and its rows counted; a probe object is written to and deleted
    from the output (``<output>/_staging/``). So a run that cannot work fails in seconds, before any OCR, instead of
    publishing an empty run or failing after all the work.

    Args:
        cfg: the run's config.

    Returns:
        How many inputs the patterns and the manifest hold (the progress lines' total).

    Raises:
        ValueError: one line naming the pattern, manifest or output and what is wrong.
    """
    from apache_beam.io.filesystems import FileSystems

    from schemas.errors import redact

    deadline = time.monotonic() + cfg.io_probe_timeout_s
    paths = [*cfg.inputs, *([cfg.manifest] if cfg.manifest else []), cfg.output]
    if any(p.startswith("gs://") for p in paths):
        _within(deadline, "look up Google Cloud credentials", _gcs_credentials_or_anonymous)
    total = 0
    for pattern in cfg.inputs:
        uris = _within(deadline, f"list input pattern {redact(pattern)}", lambda p=pattern: list_pattern(p))
        if not uris and is_glob(pattern) and not cfg.allow_empty_inputs:
            raise ValueError(f"input pattern {redact(pattern)} matched no files (pass --allow_empty_inputs to run "
                             f"anyway)")
        total += len(uris) or (not is_glob(pattern))  # a missing literal still becomes a (failed) row
    if cfg.manifest:
        manifest = cfg.manifest
        if not _within(deadline, f"open manifest {redact(manifest)}", lambda: FileSystems.exists(manifest)):
            raise ValueError(f"manifest {redact(manifest)} does not exist")
        total += _within(deadline, f"read manifest {redact(manifest)}",
                         lambda: sum(1 for _ in read_manifest_rows(manifest)))

    def write_probe() -> None:
        probe = FileSystems.join(cfg.output.rstrip("/"), "_staging", f"_probe-{cfg.launch_id}")
        if "://" not in cfg.output:
            os.makedirs(os.path.dirname(probe), exist_ok=True)
        f = FileSystems.create(probe)
        try:
            f.write(b"kiebeam launcher probe\n")
            f.close()
        except BaseException:
            # A GCS BlobWriter whose upload failed stays open, and its finalizer retries the upload wherever the
            # garbage collector happens to run (the launcher's thread, for minutes, against a dead endpoint).
            buffer = getattr(f, "_buffer", None)
            if buffer is not None:
                buffer.close()
            raise
        FileSystems.delete([probe])
        if "://" not in cfg.output:
            try:
                os.rmdir(os.path.dirname(probe))  # only if this probe made it (empty)
            except OSError:
                pass

    _within(deadline, f"write to output {redact(cfg.output)}", write_probe)
    return int(total)
