"""What this machine can run fast: CPU instruction sets, CUDA, TensorRT, OpenVINO. Detected once, at run time.

Dataflow workers and the launcher are different machines, and machine families differ in what they have
(environment.md: a 2-core AMD EPYC with AVX2 only; an Intel Xeon with ``avx512_bf16`` and ``amx_bf16``), so the
predictors ask :func:`detect_capabilities` on the machine that loads them, never on the launcher, and never
assume a vendor. Tests force the answer by passing a :class:`Capabilities` of their own
(``models.backends.resolve_runtime(..., caps=...)``) or a cpuinfo text (``detect_capabilities(cpuinfo=...)``).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Capabilities", "detect_capabilities", "read_cpu_flags", "mkl_cpu_type", "use_fast_mkl", "ISA_FLAGS",
           "BF16_FLAGS"]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""``/proc/cpuinfo`` flags that make bf16 matmuls fast (oneDNN and OpenVINO use them)."""

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")
"""The flags that matter for inference speed, in the order the benchmarks print them."""


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers to the inference backends.

    Attributes:
        cpu_flags: the CPU's feature flags (``/proc/cpuinfo``), lower case.
        cuda_devices: CUDA GPUs Paddle can use (0 on a CPU build of Paddle or without a GPU).
        tensorrt: Paddle was built with TensorRT and finds its runtime library.
        openvino: the ``openvino`` package is importable.
        why_no_gpu: why ``cuda_devices`` is 0 (empty when there is a GPU).
        why_no_tensorrt: why ``tensorrt`` is False (empty when it is True).
    """

    cpu_flags: frozenset[str] = frozenset()
    cuda_devices: int = 0
    tensorrt: bool = False
    openvino: bool = False
    why_no_gpu: str = ""
    why_no_tensorrt: str = ""

    @property
    def bf16(self) -> bool:
        """The CPU computes bf16 natively (``avx512_bf16`` or AMX)."""
        return any(flag in self.cpu_flags for flag in BF16_FLAGS)

    def isa(self) -> str:
        """The speed-relevant flags present, e.g. ``"avx2 fma"`` (``"none of ..."`` when none is)."""
        present = [flag for flag in ISA_FLAGS if flag in self.cpu_flags]
        return " ".join(present) if present else f"none of {' '.join(ISA_FLAGS)}"


def read_cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU flags of ``/proc/cpuinfo`` (first processor; all cores of a VM report the same).

    Args:
        cpuinfo: the file's text; None reads ``/proc/cpuinfo`` (empty where it does not exist).

    Returns:
        The flags, lower case.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return frozenset(value.lower().split())
    return frozenset()


def _gpu_and_tensorrt() -> tuple[int, str, bool, str]:
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        reason = f"paddlepaddle {paddle.__version__} is a CPU build"
        return 0, reason, False, reason
    try:
        count = int(paddle.device.cuda.device_count())
    except Exception as e:  # noqa: BLE001 - a driver problem is a reason, not a crash
        return 0, f"CUDA query failed: {e}", False, "no GPU"
    if count == 0:
        return 0, "no CUDA device visible", False, "no GPU"
    import paddle.inference as pi

    compiled, runtime = tuple(pi.get_trt_compile_version()), tuple(pi.get_trt_runtime_version())
    if not any(compiled):
        return count, "", False, "Paddle was built without TensorRT"
    if not any(runtime):
        return count, "", False, f"Paddle was built with TensorRT {'.'.join(map(str, compiled))} but its runtime " \
                                 f"library is not found"
    return count, "", True, ""


@functools.cache
def _detected() -> Capabilities:
    cuda, why_gpu, trt, why_trt = _gpu_and_tensorrt()
    return Capabilities(cpu_flags=read_cpu_flags(), cuda_devices=cuda, tensorrt=trt,
                        openvino=importlib.util.find_spec("openvino") is not None, why_no_gpu=why_gpu,
                        why_no_tensorrt=why_trt)


def detect_capabilities(cpuinfo: str | None = None) -> Capabilities:
    """The capabilities of this machine (cached per process).

    Args:
        cpuinfo: a ``/proc/cpuinfo`` text to read the CPU flags from instead of the machine's (tests).

    Returns:
        The :class:`Capabilities`.

    >>> detect_capabilities("flags : fpu avx2 amx_bf16").bf16
    True
    """
    caps = _detected()
    if cpuinfo is None:
        return caps
    return Capabilities(read_cpu_flags(cpuinfo), caps.cuda_devices, caps.tensorrt, caps.openvino, caps.why_no_gpu,
                        caps.why_no_tensorrt)


MKL_CPU_TYPE_VAR = "MKL_DEBUG_CPU_TYPE"


def mkl_cpu_type(cpuinfo: str | None = None) -> str | None:
    """The ``MKL_DEBUG_CPU_TYPE`` that gives Paddle's MKL its AVX2 kernels on this CPU, or None where not needed.

    Paddle's dynamic-graph matmuls (training) call MKL (``libmklml``), which takes its generic code path on a CPU
    whose vendor is not Intel; ``5`` selects the AVX2 path. Measured on the 2-vCPU AMD EPYC (AVX2), twenty
    (4096 x 384) @ (384 x 1536) products: 4.4 s unset, 1.5 s with 5 (numpy's OpenBLAS 1.2 s). Exported programs run
    through oneDNN, which picks its kernels by instruction set whatever the vendor, so inference is unchanged.

    Args:
        cpuinfo: a ``/proc/cpuinfo`` text (tests); None reads the machine's.

    >>> mkl_cpu_type("vendor_id : AuthenticAMD\\nflags : fpu avx2 fma")
    '5'
    >>> mkl_cpu_type("vendor_id : GenuineIntel\\nflags : fpu avx2 fma") is None
    True
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    vendor = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                   if line.partition(":")[0].strip() == "vendor_id"), "")
    return "5" if vendor == "AuthenticAMD" and "avx2" in read_cpu_flags(cpuinfo) else None


def use_fast_mkl() -> None:
    """Gives training's MKL its fast settings where the user has not set them, before MKL's first call reads them
    (training entry points call this first): ``MKL_DEBUG_CPU_TYPE`` where :func:`mkl_cpu_type` says so, and
    ``OMP_NUM_THREADS`` = the CPUs this process may use (MKL runs one thread otherwise: on the 2-vCPU AMD EPYC a
    hidden-384 SER step took 7.9 s with one, 6.4 s with two; ``bench/bench_train_step.py --child``)."""
    import os

    value = mkl_cpu_type()
    if value and MKL_CPU_TYPE_VAR not in os.environ:
        os.environ[MKL_CPU_TYPE_VAR] = value
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
