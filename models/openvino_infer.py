"""OpenVINO on CPU for PaddleOCR's detection and recognition folders, read as they are (``inference.pdmodel``).

OpenVINO's Paddle frontend reads Paddle 2 programs (``inference.pdmodel`` + ``inference.pdiparams``) directly; it
has no reader for Paddle 3 PIR programs (``inference.json``), so :mod:`models.backends` sends those to Paddle.
The folder is verified against its ``SHA256SUMS`` exactly as for Paddle (:func:`models.paddle_infer.verified_program`)
before OpenVINO opens it. Measured on PP-OCRv4 (README, Benchmarks): the same recognised text as Paddle Inference +
oneDNN, and faster on both CPU kinds this project has seen.

Threads and pooling follow :class:`models.paddle_infer.PaddlePredictor`: ``cpu_threads`` per concurrent call and
at most ``concurrency`` calls at once, each on its own infer request (one compiled model, one stream per call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.backends import Runtime, log_notes
from models.paddle_infer import InferenceOptions, LendingPool, ordered_inputs, verified_program

__all__ = ["OpenVinoPredictor", "openvino_config"]


def openvino_config(options: InferenceOptions, runtime: Runtime) -> dict[str, object]:
    """The CPU plugin properties of one model: threads, streams, precision, no core pinning.

    Args:
        options: ``cpu_threads`` (per concurrent call) and ``concurrency``.
        runtime: ``precision`` ``"bf16"`` asks for bf16 (the plugin keeps f32 where the CPU lacks bf16).

    Returns:
        Properties for ``openvino.Core.compile_model``.
    """
    return {
        "INFERENCE_NUM_THREADS": options.cpu_threads * options.concurrency,
        "NUM_STREAMS": options.concurrency,
        "INFERENCE_PRECISION_HINT": "bf16" if runtime.precision == "bf16" else "f32",
        # Beam workers share the machine's cores; pinning would put every process's threads on the same cores.
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoPredictor:
    """A verified OpenVINO CPU predictor over a PaddleOCR inference folder, safe to call from several threads.

    Args:
        model_dir: the folder (``inference.pdmodel`` + ``inference.pdiparams`` + ``SHA256SUMS``).
        options: threads, concurrency, ``allow_unverified``.
        extra_files: other files of the folder the caller reads (verified too).
        runtime: the resolved runtime (``models.backends.create_predictor``); default OpenVINO fp32 on CPU.

    Raises:
        ValueError: the folder fails verification, holds no ``inference.pdmodel``, or OpenVINO cannot read it.
    """

    def __init__(self, model_dir: str | Path, options: InferenceOptions | None = None,
                 extra_files: tuple[str, ...] = (), runtime: Runtime | None = None) -> None:
        options = options or InferenceOptions()
        program, _, version = verified_program(model_dir, options.allow_unverified, extra_files)
        self.model_dir = Path(model_dir)
        self.options = options
        self.version = version
        if program.suffix != ".pdmodel":
            raise ValueError(f"OpenVINO reads Paddle 2 programs (inference.pdmodel); {self.model_dir} holds "
                             f"{program.name}")
        import openvino as ov

        runtime = runtime or Runtime(backend="openvino")
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(program)), "CPU",
                                                openvino_config(options, runtime))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with a C++ trace
            raise ValueError(f"OpenVINO could not load the model in {self.model_dir}: {e}") from e
        got = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.runtime = replace(runtime, backend="openvino", device="cpu",
                               precision="bf16" if "bf16" in got else "fp32")
        log_notes(self.runtime, self.model_dir)
        self.input_names: list[str] = [port.get_any_name() for port in self._compiled.inputs]
        self.output_names: list[str] = [port.get_any_name() for port in self._compiled.outputs]
        self._pool = LendingPool(self._compiled.create_infer_request, options.concurrency)

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Runs the model once: the same inputs and outputs as :meth:`models.paddle_infer.PaddlePredictor.run`."""
        arrays = ordered_inputs(inputs, self.input_names, self.version)
        with self._pool.lend() as request:
            try:
                request.infer({i: np.ascontiguousarray(a) for i, a in enumerate(arrays)})
                return [request.get_output_tensor(i).data.copy() for i in range(len(self.output_names))]
            except RuntimeError as e:
                raise ValueError(f"OpenVINO failed on model {self.version} with input shapes "
                                 f"{[a.shape for a in arrays]}: {e}") from e
