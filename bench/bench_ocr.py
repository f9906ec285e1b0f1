"""Benchmark (not a test): per-page OCR detection and recognition time on CPU over shared XFUND pages.

    .venv/bin/python bench/bench_ocr.py --pages 3 [--threads 2] [--no-mkldnn] [--warmup 1]
        [--rec-width-bucket 160] [--rec-batch 6] [--no-rec-pad-batch] [--mkldnn-cache 0] [--dump texts.json]
    .venv/bin/python bench/bench_ocr.py --widths 40 [--rec-width-bucket 0]   # recognizer only, RSS vs new widths

Prints a markdown table (one row per page, then the mean) with the machine, library versions, command, load
average and the process's peak RSS. ``--widths N`` instead feeds the recognizer N batches of synthetic crops whose
widest ratio differs every time (PaddleOCR's worst case for oneDNN's per-shape kernels) and prints the RSS curve.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_model  # noqa: E402
from models.ocr import OcrConfig, OcrPredictor  # noqa: E402
from models.paddle_infer import InferenceOptions, tune_malloc  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "xfund_zh_train" / "image"))
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-mkldnn", action="store_true")
    parser.add_argument("--no-tune-malloc", action="store_true")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes over the first page")
    parser.add_argument("--rec-width-bucket", type=int, default=OcrConfig.rec_width_bucket)
    parser.add_argument("--rec-batch", type=int, default=OcrConfig.rec_batch_num)
    parser.add_argument("--no-rec-pad-batch", dest="rec_pad_batch", action="store_false")
    parser.add_argument("--mkldnn-cache", type=int, default=0, help="set_mkldnn_cache_capacity (0: Paddle default)")
    parser.add_argument("--dump", default="", help="write every page's recognised lines to this JSON file")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the pages (the table shows the last)")
    parser.add_argument("--widths", type=int, default=0, help="recognizer-only RSS run over this many new widths")
    args = parser.parse_args(argv)

    import cv2
    import paddle

    if not args.no_tune_malloc:
        tune_malloc()
    options = InferenceOptions(enable_mkldnn=not args.no_mkldnn, cpu_threads=args.threads,
                               mkldnn_cache_capacity=args.mkldnn_cache)
    config = OcrConfig(inference=options, rec_width_bucket=args.rec_width_bucket, rec_batch_num=args.rec_batch,
                       rec_pad_batch=args.rec_pad_batch)
    print(f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"load average at start: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}  ")
    if args.widths:
        _widths_run(config, args.widths)
        return
    files = [Path(args.data) / f"zh_train_{i}.jpg" for i in range(args.pages)]
    pages = [np.array(Image.open(f).convert("RGB")) for f in files]
    start = time.perf_counter()
    predictor = OcrPredictor(config)
    load_s = time.perf_counter() - start
    for _ in range(args.warmup):
        predictor(pages[:1])

    pass_means = []
    for _ in range(args.repeat):
        rows, dump = [], {}
        for f, page in zip(files, pages):
            start = time.perf_counter()
            [result] = predictor([page])
            total = time.perf_counter() - start
            rows.append((f.name, f"{page.shape[1]}x{page.shape[0]}", len(result.lines), result.det_ms / 1000,
                         result.rec_ms / 1000, total))
            dump[f.name] = [[line.text, line.score, list(line.box)] for line in result.lines]
        pass_means.append(np.mean([r[3:] for r in rows], axis=0))
    if args.dump:
        Path(args.dump).write_text(json.dumps(dump, ensure_ascii=False), encoding="utf-8")

    print(f"rec: batch {config.rec_batch_num}, width bucket {config.rec_width_bucket}, pad batch "
          f"{config.rec_pad_batch}, mkldnn cache {args.mkldnn_cache}; peak RSS {_peak_rss_gib():.2f} GiB; "
          f"load average at end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}  ")
    for k, (det, rec, total) in enumerate(pass_means, 1):
        print(f"pass {k}: mean det {det:.3f} s, rec {rec:.3f} s, total {total:.3f} s per page  ")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores visible, {args.threads} Paddle threads, "
          f"oneDNN {'off' if args.no_mkldnn else 'on'}, malloc tuned: {not args.no_tune_malloc}  ")
    print(f"python {platform.python_version()}, paddlepaddle {paddle.__version__}, opencv {cv2.__version__}, "
          f"numpy {np.__version__}; models {predictor.version}; load {load_s:.2f} s, warm-up passes {args.warmup}\n")
    print("| page | size | lines | det s | rec s | total s |")
    print("|---|---|---|---|---|---|")
    for name, size, n, det, rec, total in rows:
        print(f"| {name} | {size} | {n} | {det:.3f} | {rec:.3f} | {total:.3f} |")
    mean = np.mean([r[3:] for r in rows], axis=0)
    print(f"| **mean** | | {np.mean([r[2] for r in rows]):.0f} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _widths_run(config: OcrConfig, n: int) -> None:
    """Recognizer only: ``n`` batches of random-noise crops 48 px high whose widest crop is 16 px wider every batch."""
    from models.text_recognizer import TextRecognizer

    rec = TextRecognizer(config.rec_model_dir, config.char_dict_path(), tuple(config.rec_image_shape),
                         config.rec_batch_num, config.use_space_char, config.inference,
                         width_bucket=config.rec_width_bucket, pad_batch=config.rec_pad_batch)
    rng = np.random.default_rng(0)
    seen: set[int] = set()
    print(f"rec: batch {config.rec_batch_num}, width bucket {config.rec_width_bucket}, mkldnn cache "
          f"{config.inference.mkldnn_cache_capacity}; after load RSS {_rss_gib():.2f} GiB\n")
    print("| batches | distinct input widths | RSS GiB | s/batch (last 10) |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    for k in range(n):
        widest = 500 + 16 * k
        crops = [rng.integers(0, 255, (48, int(w), 3), dtype=np.uint8)
                 for w in np.linspace(widest * 0.6, widest, config.rec_batch_num)]
        seen.add(rec.batch_width(widest / 48))
        rec(crops)
        if (k + 1) % 10 == 0:
            print(f"| {k + 1} | {len(seen)} | {_rss_gib():.2f} | {(time.perf_counter() - start) / 10:.3f} |")
            start = time.perf_counter()
    print(f"\npeak RSS {_peak_rss_gib():.2f} GiB; load average at end: "
          f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
