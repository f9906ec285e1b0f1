"""The model stages: OCR and KIE model handlers, and the RunInference step that turns every page into one outcome.

Both handlers take and return :class:`schemas.records.PageOutcome`: :class:`OcrPageHandler` reads its ``image``
and returns it with ``ocr`` (pixels dropped), :class:`KiePageHandler` adds ``kie``. A page that already failed
passes through untouched. Beam's RunInference dead-letter output works per batch (one bad page fails its whole
batch), so the handlers catch a failing batch, retry its elements one by one and give each element that still
fails its ``error``; :class:`RunPageInference` turns the batches that Beam itself gives up on (a timeout) into
failed outcomes too (:func:`failed_batch_to_outcomes`): every page leaves a model stage with exactly one outcome.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, RunInference

from schemas.errors import ErrorInfo, error_info
from schemas.records import PageOutcome

__all__ = ["OcrPageHandler", "KiePageHandler", "RunPageInference", "failed_batch_to_outcomes", "HandlerOptions",
           "localize", "LoadedModel"]

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
        """Runs the predictor on a batch; tuple items are per-item arguments (``(PageOcr, image)`` -> two lists)."""
        if items and isinstance(items[0], tuple):
            return list(self._predictor(*[list(column) for column in zip(*items)]))
        return list(self._predictor(list(items)))

    def version(self) -> str:
        """The predictor's version string."""
        return str(getattr(self._predictor, "version", "unknown"))

    def runtime(self) -> str:
        """Backend/device/precision of the predictor's models (``models.predictors.runtime_label``)."""
        from models.predictors import runtime_label

        return runtime_label(self._predictor)


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


def _predict_pages(model: LoadedModel, batch: Sequence[PageOutcome], stage: str,
                   model_input: Callable[[PageOutcome], Any], with_result: Callable[..., PageOutcome],
                   ) -> list[PageOutcome]:
    """Predicts the batch's pages that have a model input; the others (failed pages) pass through untouched.

    Args:
        model: the loaded predictor.
        batch: the pages.
        stage: ``"ocr"`` or ``"kie"`` (the stage of a page's error).
        model_input: a page's input to the predictor, or None when it has none.
        with_result: ``(page, result or ErrorInfo, model version, model runtime)`` -> the page's new outcome.

    Returns:
        One outcome per page, in order.
    """
    todo = [i for i, p in enumerate(batch) if p.error is None and model_input(p) is not None]
    out = list(batch)
    if todo:
        results = _predict_per_element(model, [model_input(batch[i]) for i in todo], stage)
        version, runtime = model.version(), model.runtime()
        for i, r in zip(todo, results):
            out[i] = with_result(batch[i], r, version, runtime)
    return out


def _pixels(page: PageOutcome) -> Any:  # noqa: ANN401 - np.ndarray or None
    return page.image


def _ocr(page: PageOutcome) -> Any:  # noqa: ANN401 - PageOcr or None
    return page.ocr


def _with_ocr(page: PageOutcome, ocr: Any, version: str, runtime: str) -> PageOutcome:  # noqa: ANN401
    if isinstance(ocr, ErrorInfo):
        return page.with_(image=None, error=ocr, ocr_model=version, ocr_runtime=runtime)
    return page.with_(image=None, width=ocr.width, height=ocr.height, ocr=ocr, ocr_model=version,
                      ocr_runtime=runtime)


def _with_ocr_and_thumbnail(page: PageOutcome, ocr: Any, version: str, runtime: str) -> PageOutcome:  # noqa: ANN401
    """As ``_with_ocr``, keeping the 224x224 image a KIE model with a visual backbone reads."""
    from models.page_image import kie_thumbnail

    out = _with_ocr(page, ocr, version, runtime)
    return out if out.error is not None else out.with_(kie_image=kie_thumbnail(page.image))


def _ocr_and_image(page: PageOutcome) -> Any:  # noqa: ANN401 - (PageOcr, ndarray | None) or None
    return None if page.ocr is None else (page.ocr, page.kie_image)


def _with_kie(page: PageOutcome, kie: Any, version: str, runtime: str) -> PageOutcome:  # noqa: ANN401
    if isinstance(kie, ErrorInfo):
        return page.with_(error=kie, kie_model=version, kie_runtime=runtime, kie_image=None)
    return page.with_(kie=kie, kie_model=version, kie_runtime=runtime, kie_image=None)


def kie_needs_image(ser_model_dir: str | None, re_model_dir: str | None = None) -> bool:
    """Whether a KIE folder pair reads the page image (``metadata.json`` ``needs_image``: the ``layoutxlm`` family).

    Read once on the launcher through Beam's filesystems (local or ``gs://``), so OCR keeps a 224x224 image per
    page for KIE only when a model needs it; a folder without the key (VI, or exported before it) needs none.
    """
    import json

    from apache_beam.io.filesystems import FileSystems

    for folder in (ser_model_dir, re_model_dir):
        if not folder or folder == "rule":
            continue
        path = FileSystems.join(folder.rstrip("/"), "metadata.json")
        try:
            with FileSystems.open(path) as f:
                meta = json.loads(f.read().decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - a missing or broken folder is refused later, with its own message
            _LOG.debug("cannot read %s: %s", path, e)
            continue
        if isinstance(meta, dict) and meta.get("needs_image"):
            return True
    return False


def _page_weight(page: PageOutcome) -> int:
    shape = getattr(page.image, "shape", (1, 1))
    return 1 + (int(shape[0]) * int(shape[1]) - 1) // _PIXELS_PER_WEIGHT


def _outcome_weight(outcome: PageOutcome) -> int:
    lines = len(outcome.ocr.lines) if outcome.ocr is not None else 0
    return 1 + max(lines - 1, 0) // _LINES_PER_WEIGHT


class OcrPageHandler(ModelHandler[PageOutcome, PageOutcome, LoadedModel]):
    """PageOutcome with ``image`` -> the same page with ``ocr``, page size and ``ocr_model`` (or ``error``), no pixels.

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

    With ``keep_kie_image`` (a KIE model with a visual backbone follows), each OCRed page keeps its image resized
    to 224x224 (``PageOutcome.kie_image``, 147 KB instead of the page's pixels) for the KIE stage.

    Args:
        config: the ``models.ocr.OcrConfig`` (model paths may be remote URIs; they are localised on the worker).
        options: batching and sharing.
        keep_kie_image: keep the KIE thumbnail (see :func:`kie_needs_image`).
    """

    stage = "ocr"  # the stage of its pages' errors

    def __init__(self, config: Any, options: HandlerOptions = HandlerOptions(),  # noqa: ANN401
                 keep_kie_image: bool = False) -> None:
        super().__init__(element_size_fn=_page_weight, env_vars={"FLAGS_allocator_strategy": "auto_growth"},
                         **options.batching_kwargs())
        self._config = config
        self._options = options
        self._with_result = _with_ocr_and_thumbnail if keep_kie_image else _with_ocr

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

    def run_inference(self, batch: Sequence[PageOutcome], model: LoadedModel,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PageOutcome]:
        """OCRs the pages that have pixels; each gets its ``PageOcr`` or its ``error``, and drops the pixels."""
        return _predict_pages(model, batch, self.stage, _pixels, self._with_result)

    def get_num_bytes(self, batch: Sequence[PageOutcome]) -> int:
        """Pixel bytes of the batch (cheap; the default pickles the whole batch)."""
        return sum(int(getattr(p.image, "nbytes", 0)) for p in batch)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's built-in metrics for this step."""
        return "KiebeamOcr"


class KiePageHandler(ModelHandler[PageOutcome, PageOutcome, LoadedModel]):
    """PageOutcome with ``ocr`` -> the same page with ``kie`` and ``kie_model`` (or ``error``).

    Outcomes that already failed pass through untouched, so they keep their single outcome. A model folder of the
    ``layoutxlm`` family also reads each page's ``kie_image`` (kept by :class:`OcrPageHandler` when
    :func:`kie_needs_image`); a page that reaches it without one fails with the predictor's clear error.

    Args:
        ser_model_dir: SER model folder (local or remote URI).
        re_model_dir: RE model folder, or None for SER only.
        inference: ``models.paddle_infer.InferenceOptions``.
        options: batching and sharing.
    """

    stage = "kie"  # the stage of its pages' errors

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
                      inference_args: dict[str, Any] | None = None) -> Iterable[PageOutcome]:
        """Runs SER (+ RE) on the pages that have OCR results; failed pages pass through."""
        return _predict_pages(model, batch, self.stage, _ocr_and_image, _with_kie)

    def get_num_bytes(self, batch: Sequence[PageOutcome]) -> int:
        """Approximate bytes: the characters of the batch's OCR text."""
        return sum(sum(len(line.text) for line in o.ocr.lines) for o in batch if o.ocr is not None)

    def get_metrics_namespace(self) -> str:
        """Namespace of RunInference's built-in metrics for this step."""
        return "KiebeamKie"


class RunPageInference(beam.PTransform):
    """PageOutcome -> PageOutcome through a page handler's ``RunInference``, one outcome per page whatever happens.

    The handlers fail pages one by one themselves; what is left is a batch Beam gives up on as a whole: one that
    runs past ``timeout_s`` (its pages fail with ``error_type='timeout'``), or an error outside the per-element
    retry. Those batches come out of Beam's dead-letter output and join the results as failed outcomes, so the
    graph is the same with or without a timeout.

    Measured (FnApiRunner, PP-OCRv4, 2 cores): a batch past the limit goes to ``failed_inferences`` and the pipeline
    goes on, but the call itself cannot be interrupted in-process: its thread keeps the CPU until Paddle returns.

    Args:
        handler: an :class:`OcrPageHandler` or :class:`KiePageHandler` (its ``stage`` names the failed pages' stage).
        timeout_s: the longest a batch (model loading included) may take, in seconds; None: no limit.
    """

    def __init__(self, handler: OcrPageHandler | KiePageHandler, timeout_s: float | None = None) -> None:
        super().__init__()
        self._handler = handler
        self._timeout_s = timeout_s

    def expand(self, pages: beam.PCollection) -> beam.PCollection:
        """Applies RunInference and flattens its results with the pages of its failed batches."""
        results, dead = pages | "RunInference" >> RunInference(self._handler).with_exception_handling(
            timeout=self._timeout_s)
        failed = dead.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch_to_outcomes,
                                                                          self._handler.stage)
        return (results, failed) | "Outcomes" >> beam.Flatten()


def failed_batch_to_outcomes(failure: tuple[Any, Any], stage: str) -> Iterator[PageOutcome]:
    """Turns one element of RunInference's ``failed_inferences`` (a whole batch) into failed page outcomes.

    Args:
        failure: ``(batch, (exception type, repr, traceback lines))`` as Beam emits it.
        stage: ``"ocr"`` or ``"kie"``.

    Returns:
        One failed outcome per page of the batch, without pixels (``error_type``: ``timeout`` for a batch past
        the limit, else the exception's class name).
    """
    batch, (exc_type, exc_repr, _) = failure
    kind = "timeout" if isinstance(exc_type, type) and issubclass(exc_type, TimeoutError) else getattr(
        exc_type, "__name__", str(exc_type))
    error = ErrorInfo(stage, kind, f"{stage} batch of {len(batch)} page(s) failed: {exc_repr}"[:2000])
    for page in batch:
        yield page.with_(image=None, kie_image=None, error=error)
