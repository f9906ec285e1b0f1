"""RunInference model handlers for OCR and KIE, with per-element outcomes.

Beam's RunInference dead-letter output works per batch (one bad page fails its whole batch), so these handlers
catch a failing batch, retry its elements one by one and return an :class:`transforms.refs.ErrorInfo` as the
inference of each element that still fails: every page gets exactly one outcome.

Models load once per worker process through Beam's ``Shared`` (or once per VM with ``model_copies`` /
``large_model``, served through a proxy: that is why the loaded object exposes plain methods, ``predict`` and
``version``, rather than attributes or ``__call__``). Model folders on ``gs://`` (or any non-local Beam
filesystem) are copied once per worker into a local cache and verified against their ``SHA256SUMS`` by the
predictors before loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.refs import ErrorInfo, PageImage, PageOutcome, error_info

__all__ = ["OcrModelHandler", "KieModelHandler", "HandlerOptions", "localize", "LoadedModel"]

_LOG = logging.getLogger(__name__)
_PIXELS_PER_WEIGHT = 10_000_000  # a batch weight unit: up to ~one 2480x3508 page
_LINES_PER_WEIGHT = 256


@dataclasses.dataclass(frozen=True)
class HandlerOptions:
    """Batching and sharing options of a handler.

    Attributes:
        max_batch_size: batch budget in weight units (OCR: one unit per started 10 megapixels; KIE: one unit per
            started 256 lines), passed to ``BatchElements`` with ``element_size_fn``.
        model_copies: load exactly this many copies per machine behind a proxy (None: one per process).
        large_model: one copy per machine (Beam's ``large_model``).
        cache_dir: local folder for model folders copied from remote filesystems (default: the temp folder).
        max_batch_duration_secs: longest a batch waits to fill, in seconds; set, ``BatchElements`` batches across
            bundles (stateful, keyed); None batches within a bundle only (Beam's default).
    """

    max_batch_size: int = 4
    model_copies: int | None = None
    large_model: bool = False
    cache_dir: str | None = None
    max_batch_duration_secs: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.model_copies is not None and self.model_copies < 1:
            raise ValueError(f"model_copies must be >= 1 or None, got {self.model_copies}")
        wait = self.max_batch_duration_secs
        if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int) or wait < 1):
            raise ValueError(f"max_batch_duration_secs must be an int >= 1 or None, got {wait!r}")

    def batching_kwargs(self) -> dict[str, Any]:
        """The ``ModelHandler`` constructor kwargs for batching and sharing (without ``element_size_fn``).

        Returns:
            ``max_batch_size``, ``model_copies``, ``large_model`` and, when set, ``max_batch_duration_secs``.
        """
        kwargs: dict[str, Any] = {"max_batch_size": self.max_batch_size, "model_copies": self.model_copies,
                                  "large_model": self.large_model}
        if self.max_batch_duration_secs is not None:
            kwargs["max_batch_duration_secs"] = self.max_batch_duration_secs
        return kwargs


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def localize(uri: str | os.PathLike | None, cache_dir: str | None = None) -> str | None:
    """Returns a local path for a model folder or file, copying a remote one once into a local cache.

    The copy goes to a temporary sibling and is renamed into place, so concurrent worker processes never see a
    half-copied folder. Integrity is checked later by the loader (``SHA256SUMS``), not here.

    Args:
        uri: local path, or a URI of any Beam filesystem (``gs://bucket/models/ser``); None passes through.
        cache_dir: the cache root (default ``<tempdir>/kiebeam-models``).

    Returns:
        A local path (the input itself when it is already local).
    """
    if uri is None:
        return None
    uri = os.fspath(uri)
    if not _is_remote(uri):
        return uri.removeprefix("file://")
    root = Path(cache_dir or Path(tempfile.gettempdir()) / "kiebeam-models")
    dest = root / hashlib.sha256(uri.encode()).hexdigest()[:20] / posixpath_basename(uri)
    if dest.exists():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".partial-"))
    try:
        matches = FileSystems.match([uri.rstrip("/") + "/*"])[0].metadata_list
        files = [m.path for m in matches if not m.path.endswith("/")]
        if files:  # a folder
            target = tmp / "d"
            target.mkdir()
            for path in files:
                with FileSystems.open(path) as src, open(target / posixpath_basename(path), "wb") as out:
                    shutil.copyfileobj(src, out)
        else:  # a single file
            target = tmp / "f"
            with FileSystems.open(uri) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
        try:
            os.rename(target, dest)
        except OSError:
            if not dest.exists():  # lost a race only if someone else finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def posixpath_basename(uri: str) -> str:
    """The last path component of a URI or path (``gs://b/m/ser/`` -> ``ser``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


class LoadedModel:
    """A loaded predictor behind methods a cross-process proxy can call (``predict``, ``version``)."""

    def __init__(self, predictor: Any) -> None:  # noqa: ANN401 - OcrPredictor or KiePredictor
        self._predictor = predictor

    def predict(self, items: Sequence[Any]) -> list[Any]:
        """Runs the predictor on a batch."""
        return list(self._predictor(list(items)))

    def version(self) -> str:
        """The predictor's version string."""
        return str(getattr(self._predictor, "version", "unknown"))


def _predict_per_element(model: LoadedModel, items: Sequence[Any], stage: str) -> list[Any]:
    """Predicts a batch; on failure retries each element alone and returns ErrorInfo for those that fail."""
    try:
        out = model.predict(items)
        if len(out) != len(items):
            raise RuntimeError(f"{stage} predictor returned {len(out)} results for {len(items)} inputs")
        return out
    except Exception as batch_error:  # noqa: BLE001
        if len(items) == 1:
            return [error_info(stage, batch_error)]
    results: list[Any] = []
    for item in items:
        try:
            results.append(model.predict([item])[0])
        except Exception as e:  # noqa: BLE001 - per element
            results.append(error_info(stage, e))
    return results


def _swap_inference(config: Any, device: str) -> Any:  # noqa: ANN401
    """Returns ``config`` with the device of its InferenceOptions field replaced (GPU -> CPU fallback)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and hasattr(value, "device"):
            return dataclasses.replace(config, **{field.name: dataclasses.replace(value, device=device)})
    return config


def _load_with_fallback(build: Callable[[str | None], Any], device: str) -> LoadedModel:
    try:
        return LoadedModel(build(None))
    except Exception:
        if device != "gpu":
            raise
        _LOG.warning("loading on GPU failed; falling back to CPU", exc_info=True)
        return LoadedModel(build("cpu"))


def _page_weight(page: PageImage) -> int:
    shape = getattr(page.image, "shape", (1, 1))
    return 1 + (int(shape[0]) * int(shape[1]) - 1) // _PIXELS_PER_WEIGHT


def _outcome_weight(outcome: PageOutcome) -> int:
    lines = len(outcome.ocr.lines) if outcome.ocr is not None else 0
    return 1 + max(lines - 1, 0) // _LINES_PER_WEIGHT


class OcrModelHandler(ModelHandler[PageImage, Any, LoadedModel]):
    """PageImage -> ``PredictionResult(example, PageOcr | ErrorInfo, model_id=version)``.

    Pixels cross the process boundary as they are. With ``model_copies`` / ``large_model`` every batch is pickled
    to the one model process (Beam's ``MultiProcessShared`` proxy), and Beam's large-model guide suggests sending
    encoded bytes instead. Measured here (2 shared vCPUs, an XFUND page of 2480x3508 RGB, 26 MB raw, 1.8 MB
    JPEG; best of 3-7 calls through ``MultiProcessShared(always_proxy=True)``, load average ~5):

    - raw pixels through the proxy: 66 ms for one page, ~90 ms a page in a 4-page batch (pickle, socket, unpickle);
    - the original JPEG bytes, decoded in the model process: 76-99 ms, of which decoding is 93 ms;
    - lossless PNG (level 1): 310 ms to encode in the worker, then ~100 ms to send and decode in the model process;
      zlib level 1 on the raw pixels: 127 ms to compress alone.

    Every encoded form costs the model process (the bottleneck when it is shared) at least as much as the raw
    transfer, and the workers more, so the handler sends pixels. The transfer is ~5% of a CPU page (1.6 s) and
    happens only with ``model_copies`` / ``large_model``; the default in-process path passes the array by
    reference. Sending file bytes would also move decoding, and its per-page failures, into the model's batch.
    On a GPU, where a page takes far less, the transfer weighs more; the next step there would be a shared-memory
    handoff, not a codec.

    Args:
        config: the ``models.ocr.OcrConfig`` (model paths may be remote URIs; they are localised on the worker).
        options: batching and sharing.
    """

    def __init__(self, config: Any, options: HandlerOptions = HandlerOptions()) -> None:  # noqa: ANN401
        super().__init__(element_size_fn=_page_weight, env_vars={"FLAGS_allocator_strategy": "auto_growth"},
                         **options.batching_kwargs())
        self._config = config
        self._options = options

    def _device(self) -> str:
        for field in dataclasses.fields(self._config):
            value = getattr(self._config, field.name)
            if hasattr(value, "device"):
                return value.device
        return "cpu"

    def load_model(self) -> LoadedModel:
        """Localises the model files and builds an ``OcrPredictor`` (GPU failure falls back to CPU, logged)."""
        from models.ocr import OcrPredictor

        cache = self._options.cache_dir
        config = dataclasses.replace(
            self._config, det_model_dir=localize(self._config.det_model_dir, cache),
            rec_model_dir=localize(self._config.rec_model_dir, cache),
            rec_char_dict_path=localize(self._config.rec_char_dict_path, cache))
        return _load_with_fallback(
            lambda device: OcrPredictor(config if device is None else _swap_inference(config, device)), self._device())

    def run_inference(self, batch: Sequence[PageImage], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """OCRs a batch of pages; each page gets a PageOcr or an ErrorInfo."""
        results = _predict_per_element(model, [p.image for p in batch], "ocr")
        version = model.version()
        return [PredictionResult(p, r, version) for p, r in zip(batch, results)]

    def get_num_bytes(self, batch: Sequence[PageImage]) -> int:
        """Pixel bytes of the batch (cheap; the default pickles the whole batch)."""
        return sum(int(getattr(p.image, "nbytes", 0)) for p in batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's built-in metrics for this step."""
        return "KiebeamOcr"


class KieModelHandler(ModelHandler[PageOutcome, PageOutcome, LoadedModel]):
    """PageOutcome (with OCR) -> ``PredictionResult(example, PageOutcome with kie or error)``.

    Outcomes that already failed pass through untouched, so they keep their single outcome.

    Args:
        ser_model_dir: SER model folder (local or remote URI).
        re_model_dir: RE model folder, or None for SER only.
        inference: ``models.paddle_infer.InferenceOptions``.
        options: batching and sharing.
    """

    def __init__(self, ser_model_dir: str, re_model_dir: str | None, inference: Any,  # noqa: ANN401
                 options: HandlerOptions = HandlerOptions()) -> None:
        super().__init__(element_size_fn=_outcome_weight, env_vars={"FLAGS_allocator_strategy": "auto_growth"},
                         **options.batching_kwargs())
        self._ser, self._re, self._inference, self._options = ser_model_dir, re_model_dir, inference, options

    def load_model(self) -> LoadedModel:
        """Localises the model folders and builds a ``KiePredictor`` (GPU failure falls back to CPU, logged)."""
        from models.kie import KiePredictor

        ser = localize(self._ser, self._options.cache_dir)
        re_dir = self._re if self._re == "rule" else localize(self._re, self._options.cache_dir)

        def build(device: str | None) -> Any:  # noqa: ANN401
            inference = self._inference if device is None else dataclasses.replace(self._inference, device=device)
            return KiePredictor.from_dirs(ser, re_dir, inference=inference)

        return _load_with_fallback(build, self._inference.device)

    def run_inference(self, batch: Sequence[PageOutcome], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """Runs SER (+ RE) on the pages that have OCR results; failed pages pass through."""
        todo = [i for i, o in enumerate(batch) if o.error is None and o.ocr is not None]
        out: list[PageOutcome] = list(batch)
        version = model.version() if todo else None
        if todo:
            results = _predict_per_element(model, [batch[i].ocr for i in todo], "kie")
            for i, r in zip(todo, results):
                if isinstance(r, ErrorInfo):
                    out[i] = batch[i].with_(error=r, kie_model=version)
                else:
                    out[i] = batch[i].with_(kie=r, kie_model=version)
        return [PredictionResult(o, o, version) for o in out]

    def get_num_bytes(self, batch: Sequence[PageOutcome]) -> int:
        """Approximate bytes: the characters of the batch's OCR text."""
        return sum(sum(len(line.text) for line in o.ocr.lines) for o in batch if o.ocr is not None)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's built-in metrics for this step."""
        return "KiebeamKie"
