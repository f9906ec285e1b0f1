"""Paddle Inference predictors over exported model folders: verified, configured, thread-safe.

A model folder holds ``inference.json`` (Paddle 3 PIR programs) or ``inference.pdmodel`` (Paddle 2 programs),
plus ``inference.pdiparams``, and a ``SHA256SUMS`` that :func:`models.integrity.verify_model_dir` checks before
anything is loaded. Paddle Inference predictors are not thread-safe and Beam hands one model object to all of
a process's threads, so :class:`PaddlePredictor` keeps a small pool of native predictors and lends one to each
call. (``Predictor.clone()`` is not an option: with oneDNN a clone fails once the original has run, because the
shared weights were re-laid out for oneDNN; measured with Paddle 3.3.1.)
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.integrity import sha256_file, verify_model_dir

__all__ = ["InferenceOptions", "PaddlePredictor", "find_program", "tune_malloc"]

_PROGRAM_FILES = ("inference.json", "inference.pdmodel")
_PARAMS_FILE = "inference.pdiparams"


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
            PaddleOCR sets 10); 0 leaves Paddle's default (unbounded). Measured with Paddle 3.3.1 it does not bound
            memory (bench/README.md); bounding the input shapes (the recognizer's ``width_bucket``) does.
    """

    device: str = "cpu"
    gpu_id: int = 0
    enable_mkldnn: bool = True
    cpu_threads: int = 2
    gpu_mem_mb: int = 500
    allow_unverified: bool = False
    concurrency: int = 1
    mkldnn_cache_capacity: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"unknown device '{self.device}', expected 'cpu' or 'gpu'")
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.gpu_id < 0:
            raise ValueError(f"gpu_id must be >= 0, got {self.gpu_id}")
        if self.mkldnn_cache_capacity < 0:
            raise ValueError(f"mkldnn_cache_capacity must be >= 0 (0 = Paddle's default), got "
                             f"{self.mkldnn_cache_capacity}")


def find_program(model_dir: str | Path) -> tuple[Path, Path]:
    """Finds the program and parameter files of an exported model folder.

    Args:
        model_dir: a Paddle Inference folder (PaddleOCR's ``*_infer`` folders, or one we exported).

    Returns:
        ``(program file, params file)``; ``inference.json`` is preferred over ``inference.pdmodel``.

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


class PaddlePredictor:
    """A verified Paddle Inference predictor, safe to call from several threads.

    Args:
        model_dir: exported model folder.
        options: device and CPU settings.
        extra_files: other files of the folder the caller reads (e.g. a dictionary); they must be listed in
            ``SHA256SUMS`` too.
    """

    def __init__(self, model_dir: str | Path, options: InferenceOptions = InferenceOptions(),
                 extra_files: tuple[str, ...] = ()) -> None:
        program, params = find_program(model_dir)
        self.model_dir = Path(model_dir)
        self.options = options
        sums = verify_model_dir(self.model_dir, (program.name, params.name, *extra_files),
                                allow_unverified=options.allow_unverified)
        params_sha = sums.get(params.name) or sha256_file(params)
        self.version = f"{self.model_dir.name}@{params_sha[:12]}"

        self._program, self._params = program, params
        self._root = self._create()
        self.input_names: list[str] = list(self._root.get_input_names())
        self.output_names: list[str] = list(self._root.get_output_names())
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._pool.put(self._root)
        self._created = 1
        self._pool_lock = threading.Lock()

    def _create(self):  # noqa: ANN202 - a native paddle.inference.Predictor
        import paddle.inference as pi

        options = self.options
        config = pi.Config(str(self._program), str(self._params))
        if options.device == "gpu":
            config.enable_use_gpu(options.gpu_mem_mb, options.gpu_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(options.cpu_threads)
            if options.enable_mkldnn:
                config.enable_mkldnn()
                if options.mkldnn_cache_capacity:
                    config.set_mkldnn_cache_capacity(options.mkldnn_cache_capacity)
            else:
                config.disable_mkldnn()
        if self._program.suffix == ".json":
            # Paddle 3 PIR programs: without the new IR and executor, enable_memory_optim() fails to load them
            # ("Not find predictor_id 0 and pass_name memory_optimize_pass", Paddle 3.3.1).
            config.enable_new_ir(True)
            config.enable_new_executor(True)
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        config.disable_glog_info()
        config.switch_use_feed_fetch_ops(False)
        try:
            return pi.create_predictor(config)
        except Exception as e:  # Paddle raises a bare RuntimeError/ValueError with a C++ trace
            raise ValueError(f"Paddle could not load the model in {self.model_dir}: {e}") from e

    def _borrow(self):  # noqa: ANN202
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._pool_lock:
            grow = self._created < self.options.concurrency
            if grow:
                self._created += 1
        return self._create() if grow else self._pool.get()

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Runs the model once.

        Args:
            inputs: arrays in ``input_names`` order, or a mapping by input name.

        Returns:
            The outputs, in ``output_names`` order, as numpy arrays owned by the caller.
        """
        if isinstance(inputs, Mapping):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise ValueError(f"missing inputs {missing} for model {self.version}; it takes {self.input_names}")
            arrays = [inputs[n] for n in self.input_names]
        else:
            arrays = list(inputs)
            if len(arrays) != len(self.input_names):
                raise ValueError(f"model {self.version} takes {len(self.input_names)} inputs {self.input_names}, "
                                 f"got {len(arrays)}")
        predictor = self._borrow()
        try:
            for name, array in zip(self.input_names, arrays):
                handle = predictor.get_input_handle(name)
                handle.reshape(list(array.shape))
                handle.copy_from_cpu(np.ascontiguousarray(array))
            predictor.run()
            return [predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]
        finally:
            self._pool.put(predictor)
