"""LayoutXLM-base (visual backbone) vs VI-LayoutXLM-base: KIE seconds per page and peak memory on the same pages.

Both models are base size (12 layers, 768 hidden; LayoutXLM adds the ResNeXt-101 FPN and 49 visual tokens) with
random weights and an 8000-piece tokenizer (the word table is the only part smaller than the published models:
it does not change the compute). They are exported to Paddle Inference and run through ``models.kie.KiePredictor``
(SER + RE) on XFUND pages with their gold OCR lines, so OCR is not in the numbers; the LayoutXLM run also pays the
page image's resize + normalisation. Each family runs in its own process (peak RSS of that process, models
loaded), one warm-up page first, then every page timed once.

    nice -n 19 .venv/bin/python bench/bench_layoutxlm.py --pages 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    XFUND_IMAGES,
    PeakRss,
    command_line,
    fmt_s,
    machine_header,
    machine_info,
    markdown_table,
)

FAMILIES = ("vi-layoutxlm", "layoutxlm")
LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


def _prepare(work: Path) -> dict[str, tuple[Path, Path]]:
    """Exports (once) base-size random SER + RE folders of both families under ``work``."""
    out = {f: (work / f / "ser", work / f / "re") for f in FAMILIES}
    if all((d / "SHA256SUMS").is_file() for pair in out.values() for d in pair):
        return out
    import paddle

    from bench.common import _xfund_texts
    from models.checkpoint import export_inference
    from models.layoutxlm import LayoutXLMConfig, ReModel, SerModel
    from models.tokenizer import train_tokenizer

    tok = train_tokenizer(_xfund_texts(), work / "tokenizer", vocab_size=8000)
    for family, (ser_dir, re_dir) in out.items():
        cfg = LayoutXLMConfig(vocab_size=8002, use_visual_backbone=family == "layoutxlm")
        paddle.seed(2022)
        ser = SerModel(cfg, num_labels=7)
        with paddle.no_grad():  # QUESTION lines as often as HEADER ones, so RE sees pairs (bench.common.prepare_kie)
            ser.classifier.weight[:, 1:3] = ser.classifier.weight[:, 5:7]
            ser.classifier.bias[1:3] = ser.classifier.bias[5:7]
        export_inference(ser, ser_dir, tokenizer_dir=tok)
        del ser
        export_inference(ReModel(cfg), re_dir, tokenizer_dir=tok)
    return out


def _worker(ser_dir: str, re_dir: str, pages: int) -> dict:
    """Loads one family and times SER + RE per page (runs in its own process)."""
    import numpy as np
    from PIL import Image

    from models.kie import KiePredictor
    from models.paddle_infer import tune_malloc
    from models.predictors import runtime_label
    from schemas.records import OcrLine, PageOcr
    from training.shards import read_shard

    tune_malloc()
    with PeakRss() as peak:
        docs, _ = read_shard(str(XFUND_IMAGES.parent / "train.json"), LABELS, image_dir=str(XFUND_IMAGES))
        docs = docs[:pages + 1]
        ocr = [PageOcr(d.width, d.height, tuple(OcrLine(ln.text, 1.0, ln.points, ln.box) for ln in d.lines))
               for d in docs]
        images = [np.asarray(Image.open(XFUND_IMAGES / d.name).convert("RGB")) for d in docs]
        t0 = time.perf_counter()
        kie = KiePredictor.from_dirs(ser_dir, re_dir)
        load_s = time.perf_counter() - t0
        kie(ocr[:1], images[:1])  # warm-up (oneDNN kernels, allocator)
        times, ser_ms, re_ms, pairs, windows = [], [], [], 0, 0
        for page, image in zip(ocr[1:], images[1:]):
            t = time.perf_counter()
            (res,) = kie([page], [image])
            times.append(time.perf_counter() - t)
            ser_ms.append(res.ser_ms)
            re_ms.append(res.re_ms)
            pairs += len(res.pairs)
            windows += res.windows
    return {"s_per_page": sum(times) / len(times), "ser_s": sum(ser_ms) / len(ser_ms) / 1000,
            "re_s": sum(re_ms) / len(re_ms) / 1000, "load_s": load_s, "peak_rss": peak.peak, "pages": len(times),
            "lines": sum(len(p.lines) for p in ocr[1:]), "windows": windows, "pairs": pairs,
            "needs_image": kie.needs_image, "runtime": runtime_label(kie)}


def main(argv: list[str] | None = None) -> int:
    """Prepares the models, runs each family in a child process and prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=3, help="timed pages (one more is the warm-up)")
    ap.add_argument("--work", default="/tmp/kiebeam-bench-layoutxlm", help="model cache folder")
    ap.add_argument("--worker", nargs=2, metavar=("SER", "RE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.pages)))
        return 0
    dirs = _prepare(Path(args.work))
    rows = []
    for family in FAMILIES:
        ser_dir, re_dir = dirs[family]
        proc = subprocess.run([sys.executable, __file__, "--pages", str(args.pages), "--worker", str(ser_dir),
                               str(re_dir)], capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append([family, "yes" if r["needs_image"] else "no", r["pages"], r["lines"], r["windows"],
                     fmt_s(r["s_per_page"]), fmt_s(r["ser_s"]), fmt_s(r["re_s"]), r["pairs"],
                     f"{r['peak_rss'] / 2**30:.2f}", fmt_s(r["load_s"], 1), r["runtime"]])
    print(machine_header(machine_info(), command_line(), ["KIE only (gold OCR lines), SER + RE, base size, random "
                                                          "weights, Paddle Inference CPU defaults"]))
    print(markdown_table(["family", "page image", "pages", "lines", "windows", "s/page", "SER s/page",
                          "RE s/page", "pairs", "peak RSS GiB", "load s", "runtime"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
