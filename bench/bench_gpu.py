"""Benchmark (not a test): OCR + SER + RE with the models on a GPU, batch-size sweep, pages/s and GPU memory.

    .venv/bin/python bench/bench_gpu.py --pages 16 --batches 1,2,4,8 [--kie base] [--pipeline]
    .venv/bin/python bench/bench_gpu.py --variants fp32,trt_fp16     # the default on a GPU: every variant

Variants (``--variants``): on a GPU ``fp32`` (Paddle Inference on CUDA, ``--use_tensorrt false``) and ``trt_fp16``
(Paddle-TensorRT fp16 for det, rec, SER and RE: the ``auto`` default; engines and shape ranges are built on the
first run into ``--trt-cache``, which the table's first batch size pays for); on CPU ``today`` (Paddle fp32) and
``auto`` (OpenVINO OCR, bf16 SER/RE where the CPU has it). Each row says what each model ran as.

Needs a CUDA build of Paddle (``paddlepaddle-gpu``, the same version that exported the KIE models) and a GPU.
Without one it says so and runs the same sweep on the CPU (``--device cpu`` forces that; expect minutes per
page set there), so the script is always runnable. Per batch size: pages go through ``OcrPredictor`` then
``KiePredictor`` in groups of that many pages (the models batch crops and windows across the group); the
table gives s/page, pages/s, the peak GPU memory in use (``nvidia-smi``, sampled) and the peak RSS of the
process. ``--pipeline`` also runs the Beam pipeline (FnApiRunner in_memory, ``--device gpu``) at the best
batch size. Models and pages are prepared as in ``bench_pipeline.py`` (under ``--work``, never in the repo).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_pipeline import _run_pipeline  # noqa: E402
from bench.common import (  # noqa: E402
    PeakRss,
    command_line,
    fmt_s,
    machine_header,
    machine_info,
    markdown_table,
    page_files,
    prepare_kie,
    write_manifest,
)

_GIB = 2**30


def gpu_available() -> tuple[bool, str]:
    """Whether Paddle can use a CUDA GPU here, and why not when it cannot."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return False, f"paddlepaddle {paddle.__version__} is a CPU build (install paddlepaddle-gpu)"
    try:
        count = paddle.device.cuda.device_count()
    except Exception as e:  # noqa: BLE001
        return False, f"CUDA query failed: {e}"
    return (count > 0, "no CUDA device visible") if count == 0 else (True, f"{count} GPU(s)")


class GpuMemory:
    """Samples ``nvidia-smi``'s used memory (MiB) of one GPU in a thread; keeps the baseline and the peak."""

    def __init__(self, gpu_id: int = 0, interval_s: float = 0.2) -> None:
        self.gpu_id, self.interval_s = gpu_id, interval_s
        self.enabled = shutil.which("nvidia-smi") is not None
        self.baseline = self.peak = self._read() if self.enabled else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> int:
        try:
            out = subprocess.run(["nvidia-smi", "-i", str(self.gpu_id), "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
            return int(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuMemory:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()


VARIANTS = {  # name -> InferenceOptions requests
    "fp32": {"backend": "paddle", "precision": "fp32", "use_tensorrt": False},
    "trt_fp16": {"backend": "auto", "precision": "auto", "use_tensorrt": True},
    "today": {"backend": "paddle", "precision": "fp32"},
    "auto": {"backend": "auto", "precision": "auto"},
}


def sweep(args: argparse.Namespace, device: str, variant: str) -> list[tuple]:
    """Rows ``(variant, ran as, batch, s/page, pages/s, lines, peak GPU MiB over baseline, peak RSS GiB)``."""
    from models.kie import KiePredictor
    from models.ocr import OcrConfig, OcrPredictor
    from models.paddle_infer import InferenceOptions, tune_malloc
    from models.predictors import runtime_label
    from transforms.decode import decode_page

    tune_malloc()
    ser, re_dir = prepare_kie(Path(args.work), args.kie)
    pages = [decode_page(f.read_bytes(), 0) for f in page_files(args.pages)]
    rows = []
    with GpuMemory(args.gpu_id) as gmem, PeakRss() as rss:
        requests = dict(VARIANTS[variant])
        options = InferenceOptions(device=device, gpu_id=args.gpu_id, cpu_threads=args.cpu_threads,
                                   trt_cache_dir=args.trt_cache, **requests)
        kie_options = InferenceOptions(device=device, gpu_id=args.gpu_id, cpu_threads=args.cpu_threads,
                                       trt_cache_dir=args.trt_cache, **{**requests, "backend": "paddle"})
        start = time.perf_counter()
        ocr = OcrPredictor(OcrConfig(inference=options, rec_batch_num=args.rec_batch))
        kie = KiePredictor.from_dirs(ser, re_dir, inference=kie_options, batch_size=args.kie_batch)
        ran_as = f"{ocr.runtime};{runtime_label(kie)}"
        print(f"[bench_gpu] {variant}: models loaded on {device} in {time.perf_counter() - start:.1f} s as {ran_as}",
              file=sys.stderr)
        ocr(pages[:1])  # warm-up (CUDA context, cuDNN algorithm choice)
        for bs in args.batches:
            lines = 0
            start = time.perf_counter()
            for i in range(0, len(pages), bs):
                results = ocr(pages[i:i + bs])
                kie(results)
                lines += sum(len(r.lines) for r in results)
            spent = time.perf_counter() - start
            rows.append((variant, ran_as, bs, fmt_s(spent / len(pages)), f"{len(pages) / spent:.2f}", lines,
                         (gmem.peak - gmem.baseline) if gmem.enabled else "-", f"{rss.peak / _GIB:.2f}"))
            print(f"[bench_gpu] {variant} batch {bs}: {spent / len(pages):.3f} s/page", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None, help="XFUND pages (default 16 on GPU, 2 on CPU)")
    parser.add_argument("--batches", default=None, help="pages per call (default 1,2,4,8 on GPU, 1,2 on CPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--rec-batch", type=int, default=32, help="crops per recognition forward")
    parser.add_argument("--kie-batch", type=int, default=8, help="512-token windows per SER/RE forward")
    parser.add_argument("--kie", default="base", help="base | tiny | default (see bench_pipeline.py)")
    parser.add_argument("--pipeline", action="store_true", help="also run the Beam pipeline at the best batch")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated of {','.join(VARIANTS)} (default: fp32,trt_fp16 on GPU, today,auto "
                             f"on CPU)")
    parser.add_argument("--trt-cache", default="/tmp/kiebeam-bench/trt", help="TensorRT engine cache folder")
    parser.add_argument("--work", default="/tmp/kiebeam-bench")
    args = parser.parse_args(argv)

    has_gpu, why = gpu_available()
    device = args.device
    if device == "gpu" and not has_gpu:
        raise SystemExit(f"--device gpu: no usable GPU ({why})")
    if device == "auto":
        device = "gpu" if has_gpu else "cpu"
        if not has_gpu:
            print(f"[bench_gpu] no usable GPU: {why}. Running the CPU path of the same sweep instead; "
                  f"its numbers are CPU numbers.", file=sys.stderr)
    on_gpu = device == "gpu"
    args.pages = args.pages or (16 if on_gpu else 2)
    args.batches = [int(x) for x in (args.batches or ("1,2,4,8" if on_gpu else "1,2")).split(",") if x]
    Path(args.work).mkdir(parents=True, exist_ok=True)

    variants = (args.variants or ("fp32,trt_fp16" if on_gpu else "today,auto")).split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}, expected some of {list(VARIANTS)}")
    info = machine_info()
    rows = [row for variant in variants for row in sweep(args, device, variant)]
    print(machine_header(info, command_line(), [
        f"device: {device} ({why}); {args.pages} XFUND zh pages; KIE {args.kie} (random weights); "
        f"rec batch {args.rec_batch}, KIE batch {args.kie_batch}; one warm-up page before the sweep"]))
    print()
    print(markdown_table(["variant", "ran as", "pages per call", "s/page", "pages/s", "lines",
                          "peak GPU MiB (over baseline)", "peak RSS GiB"], rows))
    if args.pipeline:
        best = min(rows, key=lambda r: float(r[3]))[2]
        ser, re_dir = prepare_kie(Path(args.work), args.kie)
        out = Path(args.work) / "out" / f"gpu_pipeline_{device}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        manifest = write_manifest(out / "manifest.csv", page_files(args.pages), args.pages)
        argv = ["--manifest", str(manifest), "--output", str(out / "tables"), "--run_id", "bench", "--runner",
                "FnApiRunner", "--ser_model_dir", str(ser), "--re_model_dir", str(re_dir), "--device", device,
                "--ocr_batch_size", str(best), "--kie_batch_size", str(best), "--direct_running_mode", "in_memory"]
        wall, data = _run_pipeline(argv)
        pp = (wall - (data["load_s"] or 0.0)) / args.pages
        print(f"\npipeline (FnApiRunner in_memory, {device}, batch {best}): wall {wall:.1f} s, model load "
              f"{data['load_s']:.1f} s, {pp:.3f} s/page (wall - load), {data['ok']}/{data['documents']} ok")


if __name__ == "__main__":
    main()
