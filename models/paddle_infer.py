"""Paddle Inference predictors over exported model folders: verified, configured, thread-safe.

A model folder holds ``inference.json`` (Paddle 3 PIR programs) or ``inference.pdmodel`` (Paddle 2 programs),
plus ``inference.pdiparams``, and a ``SHA256SUMS`` that :func:`models.integrity.verify_model_dir` checks before
anything is loaded. Paddle Inference predictors are not thread-safe and Beam hands one model object to all of
a process's threads, so :class:`PaddlePredictor` keeps a small pool of native predictors and lends one to each
call. (``Predictor.clone()`` is not an option: with oneDNN a clone fails once the original has run, because the
shared weights were re-laid out for oneDNN; measured with Paddle 3.3.1.)

oneDNN predictors are not independent either: Paddle keeps oneDNN state per calling thread, and a pipeline's
threads come and go. With several threads taking turns (one at a time) on an ``OcrPredictor``, one thread sometimes
failed every later call with a bare ``std::exception`` (Paddle 3.3.1: 3 to 5 of 200-300 four-thread rounds on a
loaded 2-core machine, always the same thread of its round; a process-wide lock alone did not help, oneDNN off
and one detector alone never failed). So every oneDNN CPU predictor of a process is built, run and rebuilt on one
long-lived thread (:data:`ONEDNN_THREAD`): oneDNN calls of one process are serial, each on ``cpu_threads``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.backends import OCR_ROLES, InferenceOptions, Runtime, log_notes, resolve_runtime
from models.integrity import sha256_file, verify_model_dir
from models.packed_params import ensure_unpacked

__all__ = ["InferenceOptions", "PaddlePredictor", "find_program", "tune_malloc", "verified_program",
           "paddle_config", "kie_trt_shapes", "ordered_inputs", "LendingPool", "TRT_WORKSPACE_BYTES"]

_LOG = logging.getLogger(__name__)
TRT_WORKSPACE_BYTES = 1 << 30
_TRT_MIN_SUBGRAPH = 3  # PaddleOCR's min_subgraph_size for PP-OCR models

_PROGRAM_FILES = ("inference.json", "inference.pdmodel")
_PARAMS_FILE = "inference.pdiparams"


def find_program(model_dir: str | Path) -> tuple[Path, Path]:
    """Finds the program and parameter files of an exported model folder.

    Args:
        model_dir: a Paddle Inference folder (PaddleOCR's ``*_infer`` folders, or one we exported).

    Returns:
        ``(program file, params file)``; ``inference.json`` is preferred over ``inference.pdmodel``. A folder that
        holds ``inference.pdiparams.packed`` instead of ``inference.pdiparams`` is unpacked first.

    Raises:
        ValueError: the folder is missing or holds no program or no parameters.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist or is not a folder")
    programs = [folder / name for name in _PROGRAM_FILES if (folder / name).is_file()]
    if not programs:
        raise ValueError(f"model folder {folder} has no program file: expected one of {list(_PROGRAM_FILES)} "
                         f"(an exported Paddle Inference model), found {sorted(p.name for p in folder.iterdir())}")
    params = folder / _PARAMS_FILE
    ensure_unpacked(params)  # a bundled folder ships its parameters packed (models.packed_params)
    if not params.is_file():
        raise ValueError(f"model folder {folder} has {programs[0].name} but no {_PARAMS_FILE}")
    return programs[0], params


def tune_malloc() -> bool:
    """Keeps freed memory in the heap so large Paddle forwards stop page-faulting on every call.

    Measured on this project's CPU machine: 0.3-0.5 s per base-size page of page faults removed
    (environment.md). Equivalent to ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296``.
    Process-wide; returns False where glibc's ``mallopt`` is not available.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _trim_heap() -> None:
    """Hands the heap's free memory back to the system (glibc ``malloc_trim``; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def verified_program(model_dir: str | Path, allow_unverified: bool, extra_files: tuple[str, ...] = ()
                     ) -> tuple[Path, Path, str]:
    """Finds a folder's program and checks every file the loader reads against ``SHA256SUMS`` (every backend).

    Args:
        model_dir: the model folder.
        allow_unverified: accept a folder without ``SHA256SUMS`` (the user's explicit choice).
        extra_files: other files of the folder the caller reads.

    Returns:
        ``(program file, params file, version)``; version is ``<folder name>@<first 12 hex of the params sha256>``.
    """
    program, params = find_program(model_dir)
    folder = Path(model_dir)
    sums = verify_model_dir(folder, (program.name, params.name, *extra_files), allow_unverified=allow_unverified)
    params_sha = sums.get(params.name) or sha256_file(params)
    return program, params, f"{folder.name}@{params_sha[:12]}"


def kie_trt_shapes(model_dir: str | Path, batch: int = 8) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """TensorRT shape ranges ``{input: (min, opt, max)}`` of an exported SER/RE folder, from its ``metadata.json``.

    Windows are 64..``max_len`` tokens for programs exported with ``dynamic_length`` (else exactly ``max_len``),
    1..``batch`` windows a call; RE candidates up to ``max_len`` entities and 4096 pairs a window; a LayoutXLM
    program's ``image`` is ``(windows, 3, 224, 224)``. Shapes outside the ranges still run (engines are rebuilt at
    run time).
    """
    folder = Path(model_dir)
    meta = json.loads((folder / "metadata.json").read_text())
    length = int(meta.get("max_len", 512))
    t_min, t_opt = (min(64, length), min(256, length)) if meta.get("dynamic_length") else (length, length)
    b = (1, max(1, batch // 2), batch)

    def dims(*tail: tuple[int, int, int]) -> tuple[list[int], list[int], list[int]]:
        return tuple([b[k], *[t[k] for t in tail]] for k in range(3))  # type: ignore[return-value]

    t, e, p = (t_min, t_opt, length), (1, 64, length), (1, 512, 4096)
    shapes = {}
    for name in meta.get("input_names", []):
        if name in ("input_ids", "attention_mask", "token_type_ids"):
            shapes[name] = dims(t)
        elif name == "bbox":
            shapes[name] = dims(t, (4, 4, 4))
        elif name == "hidden":
            hidden = int(json.loads((folder / "config.json").read_text())["hidden_size"])
            shapes[name] = dims(t, (hidden,) * 3)
        elif name == "entities":
            shapes[name] = dims(e, (3, 3, 3))
        elif name == "pairs":
            shapes[name] = dims(p, (2, 2, 2))
        elif name == "pair_features":
            width = len(meta.get("pair_features", []))
            shapes[name] = dims(p, (width,) * 3)
        elif name == "image":  # LayoutXLM's page image: one per window, always 3 x 224 x 224
            shapes[name] = dims((3, 3, 3), (224, 224, 224), (224, 224, 224))
    return shapes


def paddle_config(program: Path, params: Path, options: InferenceOptions, runtime: Runtime,
                  trt_shape_file: Path | None = None) -> Any:  # noqa: ANN401 - paddle.inference.Config
    """The Paddle Inference config of one model: device, threads, oneDNN (+ bf16), TensorRT fp16, memory reuse.

    Args:
        program: the program file. params: the parameters file.
        options: threads, GPU memory, oneDNN, the TensorRT engine cache folder.
        runtime: what :func:`models.backends.resolve_runtime` decided (device, precision, TensorRT).
        trt_shape_file: the tuned shape ranges (``collect_shape_range_info`` output) TensorRT builds engines for.

    Returns:
        The ``paddle.inference.Config``.

    Raises:
        RuntimeError: Paddle refuses TensorRT (a build without it: "please compile with TENSORRT first").
    """
    import paddle.inference as pi

    config = pi.Config(str(program), str(params))
    if runtime.device == "gpu":
        config.enable_use_gpu(options.gpu_mem_mb, options.gpu_id)
        if runtime.tensorrt and program.suffix != ".json":  # a PIR program arrives converted (_pir_trt_program)
            config.enable_tensorrt_engine(workspace_size=TRT_WORKSPACE_BYTES, max_batch_size=1,
                                          min_subgraph_size=_TRT_MIN_SUBGRAPH, precision_mode=pi.PrecisionType.Half,
                                          use_static=True, use_calib_mode=False)
            config.set_optim_cache_dir(str(trt_shape_file.parent if trt_shape_file else _trt_root(options)))
            if trt_shape_file is not None:
                config.enable_tuned_tensorrt_dynamic_shape(str(trt_shape_file), True)  # True: rebuild out of range
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(options.cpu_threads)
        if options.enable_mkldnn:
            config.enable_mkldnn()
            if options.mkldnn_cache_capacity:
                config.set_mkldnn_cache_capacity(options.mkldnn_cache_capacity)
            if runtime.precision == "bf16":
                with _without_native_notice(_BF16_NOTICE):
                    config.enable_onednn_bfloat16()
        else:
            config.disable_mkldnn()
    if program.suffix == ".json":
        # Paddle 3 PIR programs: without the new IR and executor, enable_memory_optim() fails to load them
        # ("Not find predictor_id 0 and pass_name memory_optimize_pass", Paddle 3.3.1).
        config.enable_new_ir(True)
        config.enable_new_executor(True)
    config.switch_ir_optim(True)
    config.enable_memory_optim()
    config.disable_glog_info()
    config.switch_use_feed_fetch_ops(False)
    return config


_BF16_NOTICE = b"Hardware support for BFLOAT16 is enabled"  # glog INFO from Config.enable_onednn_bfloat16()


@contextmanager
def _without_native_notice(notice: bytes) -> Iterator[None]:
    """Runs a native call with its stderr (fd 2) captured; every captured line but ``notice`` is written back.

    Paddle's C++ code logs some notices through glog before ``disable_glog_info`` can apply (the bf16 one on every
    SER/RE predictor of a bf16 CPU); nothing a user can act on, so only that line is dropped."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [ln for ln in captured.read().splitlines(keepends=True) if notice not in ln]
            if kept:
                os.write(2, b"".join(kept))


def _trt_root(options: InferenceOptions) -> Path:
    return Path(options.trt_cache_dir or Path(tempfile.gettempdir()) / "kiebeam-trt")


def _folder_role(folder: Path) -> str:
    """``"ser"``/``"re"`` for a kiebeam KIE export (its ``metadata.json`` ``task``), else ``"model"``."""
    try:
        task = json.loads((folder / "metadata.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return "model"
    return task if task in ("ser", "re") else "model"


class _OneThread:
    """Runs functions on one long-lived thread of this process (started on first use, again after a fork)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._ident = 0

    def call(self, fn: Callable[[], Any]) -> Any:  # noqa: ANN401 - whatever fn returns
        """``fn()`` on the thread (directly when already on it), its exception raised here."""
        if threading.get_ident() == self._ident and os.getpid() == self._pid:
            return fn()
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name, initializer=self._mark)
                self._pid = os.getpid()
            executor = self._executor
        return executor.submit(fn).result()

    def _mark(self) -> None:
        self._ident = threading.get_ident()


ONEDNN_THREAD = _OneThread("kiebeam-onednn")
"""The thread every oneDNN CPU predictor of this process is built, run and rebuilt on."""

_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


class LendingPool:
    """Native objects that are not thread-safe (predictors, infer requests), each lent to one caller at a time.

    Args:
        create: makes one more object (called at most ``limit`` times, on demand; the first one at once).
        limit: at most this many objects; further callers wait for one to come back.
    """

    def __init__(self, create: Callable[[], Any], limit: int) -> None:
        self._create, self._limit = create, limit
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._idle.put(create())
        self._created = 1
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[Any]:
        """Lends an idle object (or a new one while under the limit, else waits), and takes it back after."""
        try:
            item = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._created < self._limit
                if grow:
                    self._created += 1
            item = self._create() if grow else self._idle.get()
        try:
            yield item
        finally:
            self._idle.put(item)


class _Native:
    """One native predictor of a :class:`PaddlePredictor`'s pool and the largest size of each input dimension it ran."""

    __slots__ = ("predictor", "largest")

    def __init__(self, predictor: Any) -> None:  # noqa: ANN401 - a native paddle.inference.Predictor
        self.predictor = predictor
        self.largest: list[tuple[int, ...]] | None = None

    def outgrown_by(self, shapes: Sequence[tuple[int, ...]]) -> bool:
        """Whether these input shapes are larger in some dimension than every input it has run (never, if none)."""
        return self.largest is not None and any(
            d > m for shape, most in zip(shapes, self.largest) for d, m in zip(shape, most))

    def record(self, shapes: Sequence[tuple[int, ...]]) -> None:
        """Remembers the per-dimension largest input sizes run so far."""
        self.largest = list(shapes) if self.largest is None else [
            tuple(max(d, m) for d, m in zip(shape, most)) for shape, most in zip(shapes, self.largest)]


class PaddlePredictor:
    """A verified Paddle Inference predictor, safe to call from several threads.

    Args:
        model_dir: exported model folder.
        options: device and CPU settings, precision request (default ``InferenceOptions()``).
        extra_files: other files of the folder the caller reads (e.g. a dictionary); they must be listed in
            ``SHA256SUMS`` too.
        role: the model's role (``models.backends.ROLES``): what ``precision="auto"`` means, and the DB detector is
            never run in bf16. ``"model"`` reads the role of a KIE export from its ``metadata.json`` (``task``).
        trt_shapes: TensorRT shape ranges ``{input: (min, opt, max)}`` (GPU fp16); SER/RE folders default to
            :func:`kie_trt_shapes`.
        runtime: an already resolved runtime (``models.backends.create_predictor``); None resolves it here.
    """

    def __init__(self, model_dir: str | Path, options: InferenceOptions | None = None,
                 extra_files: tuple[str, ...] = (), role: str = "model",
                 trt_shapes: Mapping[str, Sequence[Sequence[int]]] | None = None, runtime: Runtime | None = None
                 ) -> None:
        options = options or InferenceOptions()
        program, params, version = verified_program(model_dir, options.allow_unverified, extra_files)
        self.model_dir = Path(model_dir)
        self.options = options
        self.version = version
        role = _folder_role(self.model_dir) if role == "model" else role
        if runtime is None:
            runtime = resolve_runtime(replace(options, backend="paddle"), role, self.model_dir)
        if runtime.tensorrt and trt_shapes is None and role in ("ser", "re"):
            trt_shapes = kie_trt_shapes(self.model_dir)
        if runtime.tensorrt and not trt_shapes:
            runtime = replace(runtime, precision="fp32", tensorrt=False,
                              notes=(*runtime.notes, f"{role}: no TensorRT shape ranges; running fp32 on GPU"))
        self._program, self._params = program, params
        self._trt_shapes = trt_shapes
        self._trt_shape_file: Path | None = None
        self.runtime = runtime
        log_notes(runtime, self.model_dir)
        # Paddle Inference on CPU keeps the buffers of every input size a native predictor has outgrown (measured
        # with Paddle 3.3.1; oneDNN on or off, any mkldnn_cache_capacity, either allocator strategy): the PP-OCRv4
        # recognizer at batch widths 320, 480, 960, 1600, 1920 (6 crops) held 2.17 GiB of Paddle allocations and
        # peaked at 3.18 GiB RSS, the same widths widest first at 0.74 GiB (0.18 GiB allocated); the detector at
        # 5 growing page sizes 1.09 GiB, widest first 0.67 GiB. So a run's peak depended on which pages came first
        # (issue 17: pages 11-21 of XFUND zh 4.33 GiB with --ocr_backend paddle). An OCR predictor given an input
        # larger in some dimension than all it has run is therefore rebuilt first (~1.5 s, once per new largest
        # size): narrow to wide then peaked at 0.64 GiB (recognizer) and 0.90 GiB (detector), pages 11-21 at
        # 1.48 GiB, and outputs are bit-identical (tests/test_memory_bound.py; bench_pipeline.py --only mem_order).
        self._rebuild_on_growth = role in OCR_ROLES and runtime.device == "cpu"
        self._on_onednn_thread = runtime.device == "cpu" and options.enable_mkldnn
        self._pool = LendingPool(lambda: _Native(self._create()), options.concurrency)
        with self._pool.lend() as first:
            self.input_names: list[str] = list(first.predictor.get_input_names())
            self.output_names: list[str] = list(first.predictor.get_output_names())
        self.rebuilds = 0  # native predictors rebuilt because an input outgrew them

    def _call(self, fn: Callable[[], Any]) -> Any:  # noqa: ANN401 - whatever fn returns
        """``fn()``, on :data:`ONEDNN_THREAD` when this predictor runs oneDNN."""
        return ONEDNN_THREAD.call(fn) if self._on_onednn_thread else fn()

    def _create(self):  # noqa: ANN202 - a native paddle.inference.Predictor
        return self._call(self._create_native)

    def _create_native(self):  # noqa: ANN202 - a native paddle.inference.Predictor
        import paddle.inference as pi

        if self.runtime.tensorrt:
            try:
                if self._program.suffix == ".json":
                    program, params = self._pir_trt_program()
                    return pi.create_predictor(paddle_config(program, params, self.options, self.runtime))
                return pi.create_predictor(paddle_config(self._program, self._params, self.options, self.runtime,
                                                         self._tuned_shapes()))
            except Exception as e:  # noqa: BLE001 - Paddle raises bare RuntimeErrors; fall back as documented
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                _LOG.warning("TensorRT could not be used for %s (%s); running fp32 on GPU", self.model_dir.name,
                             reason)
                self.runtime = replace(self.runtime, precision="fp32", tensorrt=False)
        try:
            return pi.create_predictor(paddle_config(self._program, self._params, self.options, self.runtime))
        except Exception as e:  # Paddle raises a bare RuntimeError/ValueError with a C++ trace
            raise ValueError(f"Paddle could not load the model in {self.model_dir}: {e}") from e

    def _pir_trt_program(self) -> tuple[Path, Path]:
        """A Paddle 3 PIR program converted once for TensorRT fp16 (``paddle.tensorrt.convert``) into the cache.

        PIR programs do not take the subgraph TensorRT of ``enable_tensorrt_engine``: Paddle 3 converts them offline
        into a program with TensorRT nodes for the given input ranges, which then loads as a plain GPU program.
        """
        folder = _trt_root(self.options) / f"{self.version}-{self.runtime.precision}-pir"
        done = folder / ".converted"
        if not done.is_file():
            import paddle.tensorrt as ptrt  # only in CUDA builds with TensorRT

            floats = ("hidden", "pair_features", "x")
            inputs = []
            for name, (low, opt, high) in self._trt_shapes.items():
                spec = ptrt.Input(min_input_shape=tuple(low), optim_input_shape=tuple(opt),
                                  max_input_shape=tuple(high), name=name)
                spec.input_data_type = "float32" if name in floats else "int64"
                if name in ("entities", "pairs"):
                    spec.input_range = (0, 1)  # indices that exist at every shape in the range
                inputs.append(spec)
            config = ptrt.TensorRTConfig(inputs=inputs)
            config.precision_mode = ptrt.PrecisionMode.FP16
            config.save_model_dir = str(folder)
            ptrt.convert(str(self._program.with_suffix("")), config)
            done.write_text("ok\n")
        program = next(iter(sorted(folder.glob("*.json"))), None)
        params = program.with_suffix(".pdiparams") if program else None
        if program is None or not params.is_file():
            raise ValueError(f"paddle.tensorrt.convert left no program in {folder}")
        return program, params

    def _tuned_shapes(self) -> Path:
        """The TensorRT shape-range file of this model, collected once per cache folder.

        Paddle-TensorRT needs the shape ranges of every tensor entering a TensorRT subgraph, not only of the inputs,
        so (as PaddleOCR does) a plain GPU predictor first runs the model at the min, opt and max input shapes
        with ``collect_shape_range_info``, and the TensorRT predictor reads that file
        (``enable_tuned_tensorrt_dynamic_shape``).
        """
        if self._trt_shape_file is not None:
            return self._trt_shape_file
        import paddle.inference as pi

        folder = _trt_root(self.options) / f"{self.version}-{self.runtime.precision}"
        shape_file = folder / "shape_range_info.pbtxt"
        if not shape_file.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            config = paddle_config(self._program, self._params, self.options, replace(self.runtime, tensorrt=False))
            config.collect_shape_range_info(str(shape_file))
            tuner = pi.create_predictor(config)
            names = list(tuner.get_input_names())
            missing = [n for n in names if n not in self._trt_shapes]
            if missing:
                raise ValueError(f"no TensorRT shape range for inputs {missing} of {self.model_dir}")
            for k in range(3):  # min, opt, max
                for name in names:
                    handle = tuner.get_input_handle(name)
                    dtype = _NP_TYPES.get(str(handle.type()).rsplit(".", 1)[-1], np.float32)
                    shape = [int(v) for v in self._trt_shapes[name][k]]
                    handle.reshape(shape)
                    handle.copy_from_cpu(np.zeros(shape, dtype=dtype))
                tuner.run()
            del tuner
        self._trt_shape_file = shape_file
        return shape_file

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Runs the model once.

        Args:
            inputs: arrays in ``input_names`` order, or a mapping by input name.

        Returns:
            The outputs, in ``output_names`` order, as numpy arrays owned by the caller.
        """
        arrays = ordered_inputs(inputs, self.input_names, self.version)
        shapes = [tuple(a.shape) for a in arrays]
        with self._pool.lend() as native:
            return self._call(lambda: self._run_native(native, arrays, shapes))

    def _run_native(self, native: _Native, arrays: Sequence[np.ndarray], shapes: list[tuple[int, ...]]
                    ) -> list[np.ndarray]:
        if native.predictor is None or (self._rebuild_on_growth and native.outgrown_by(shapes)):
            native.predictor = None  # frees its buffers first (and stays None if the rebuild fails)
            _trim_heap()  # ... back to the system, so the new predictor does not add to the peak
            native.predictor = self._create()
            self.rebuilds += 1
        native.record(shapes)
        predictor = native.predictor
        for name, array in zip(self.input_names, arrays):
            handle = predictor.get_input_handle(name)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(np.ascontiguousarray(array))
        predictor.run()
        return [predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]


def ordered_inputs(inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], names: Sequence[str], version: str
                   ) -> list[np.ndarray]:
    """The arrays of one call in input order (a mapping by name, or a sequence), checked against the model's inputs."""
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing} for model {version}; it takes {list(names)}")
        return [inputs[n] for n in names]
    arrays = list(inputs)
    if len(arrays) != len(names):
        raise ValueError(f"model {version} takes {len(names)} inputs {list(names)}, got {len(arrays)}")
    return arrays
