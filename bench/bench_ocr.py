"""Benchmark (not a test): per-page OCR detection and recognition time on CPU over shared XFUND pages.

    .venv/bin/python bench/bench_ocr.py --pages 3 [--threads 2] [--no-mkldnn] [--warmup 1]

Prints a markdown table (one row per page, then the mean) with the machine, library versions and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.ocr import OcrConfig, OcrPredictor  # noqa: E402
from models.paddle_infer import InferenceOptions, tune_malloc  # noqa: E402


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xfund_zh_train" / "image"))
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-mkldnn", action="store_true")
    parser.add_argument("--no-tune-malloc", action="store_true")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes over the first page")
    args = parser.parse_args(argv)

    import cv2
    import paddle

    if not args.no_tune_malloc:
        tune_malloc()
    files = [Path(args.data) / f"zh_train_{i}.jpg" for i in range(args.pages)]
    pages = [np.array(Image.open(f).convert("RGB")) for f in files]
    options = InferenceOptions(enable_mkldnn=not args.no_mkldnn, cpu_threads=args.threads)
    start = time.perf_counter()
    predictor = OcrPredictor(OcrConfig(inference=options))
    load_s = time.perf_counter() - start
    for _ in range(args.warmup):
        predictor(pages[:1])

    rows = []
    for f, page in zip(files, pages):
        start = time.perf_counter()
        [result] = predictor([page])
        total = time.perf_counter() - start
        rows.append((f.name, f"{page.shape[1]}x{page.shape[0]}", len(result.lines), result.det_ms / 1000,
                     result.rec_ms / 1000, total))

    print(f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores visible, {args.threads} Paddle threads, "
          f"oneDNN {'off' if args.no_mkldnn else 'on'}, malloc tuned: {not args.no_tune_malloc}  ")
    print(f"python {platform.python_version()}, paddlepaddle {paddle.__version__}, opencv {cv2.__version__}, "
          f"numpy {np.__version__}; models {predictor.version}; load {load_s:.2f} s, warm-up passes {args.warmup}\n")
    print("| page | size | lines | det s | rec s | total s |")
    print("|---|---|---|---|---|---|")
    for name, size, n, det, rec, total in rows:
        print(f"| {name} | {size} | {n} | {det:.3f} | {rec:.3f} | {total:.3f} |")
    mean = np.mean([r[3:] for r in rows], axis=0)
    print(f"| **mean** | | {np.mean([r[2] for r in rows]):.0f} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")


if __name__ == "__main__":
    main()
