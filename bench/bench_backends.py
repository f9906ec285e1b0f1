"""Benchmark (not a test): PP-OCRv4 detection and recognition on each CPU backend and precision, same inputs.

    .venv/bin/python bench/bench_backends.py --pages 3 [--threads 2] [--variants paddle/fp32,openvino/fp32,...]

Every variant (``backend/precision``, resolved on this machine by ``models.backends``: a bf16 request on a CPU
without bf16 runs fp32 and the table says so) loads the bundled det and rec folders. The inputs are those the
pipeline feeds on the shared XFUND pages: the detector's resized page, and the recognizer's batches of real crops
(ratio-sorted, bucketed widths, padded batches). Variants are **interleaved** input by input, so a machine whose
load changes during the run (other jobs) slows all of them alike; each input runs twice per variant and the second
(warm) run counts. Then each variant reads the pages end to end (``OcrPredictor``) and the table compares the
recognised lines with Paddle fp32's (identical lines, character accuracy against the XFUND labels).
All variants stay loaded at once: 3 pages peaked at 9.1 GiB RSS with two variants (Paddle's per-shape oneDNN
buffers), so keep ``--pages`` small on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    PeakRss,
    command_line,
    fmt_ratio,
    fmt_s,
    machine_header,
    machine_info,
    markdown_table,
    page_files,
    page_quality,
    xfund_labels,
)


def _inputs(pages: list[np.ndarray], ocr) -> tuple[list[np.ndarray], list[np.ndarray]]:  # noqa: ANN001
    """The detector's inputs and the recognizer's batches of one reference OCR predictor, as the pipeline makes them."""
    from models.reading_order import order_ppocr_det
    from models.text_detector import det_resize, normalize_image
    from models.text_recognizer import get_rotate_crop_image, resize_norm_img

    det, rec, p = ocr.detector, ocr.recognizer, ocr.detector.params
    det_inputs, crops = [], []
    for img in pages:
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        det_inputs.append(normalize_image(det_resize(bgr, p.limit_side_len, p.limit_type)[0])[np.newaxis])
        boxes, _ = det(bgr)
        crops += [get_rotate_crop_image(bgr, boxes[i]) for i in order_ppocr_det([b.tolist() for b in boxes])]
    _, height, width = rec.image_shape
    order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
    batches = []
    for s in range(0, len(crops), rec.batch_num):
        members = order[s:s + rec.batch_num]
        ratio = max([width / height] + [crops[i].shape[1] / crops[i].shape[0] for i in members])
        batch = np.stack([resize_norm_img(crops[i], ratio, rec.image_shape, rec.batch_width(ratio)) for i in members])
        if rec.pad_batch and len(members) < rec.batch_num:
            batch = np.concatenate([batch, np.zeros((rec.batch_num - len(members), *batch.shape[1:]), np.float32)])
        batches.append(batch)
    return det_inputs, batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="paddle/fp32,openvino/fp32,openvino/bf16,paddle/bf16",
                        help="comma-separated backend/precision; the first is the reference")
    args = parser.parse_args(argv)

    from models.ocr import OcrConfig, OcrPredictor
    from models.paddle_infer import InferenceOptions, tune_malloc
    from transforms.decode import decode_page

    tune_malloc()
    info = machine_info()
    files = page_files(args.pages)
    pages = [decode_page(f.read_bytes(), 0) for f in files]
    predictors, seen = {}, {}
    with PeakRss() as rss:
        for variant in args.variants.split(","):
            backend, precision = variant.split("/")
            ocr = OcrPredictor(OcrConfig(inference=InferenceOptions(backend=backend, precision=precision,
                                                                    cpu_threads=args.threads)))
            if ocr.runtime in seen:
                print(f"[bench_backends] {variant} runs as {seen[ocr.runtime]} here ({ocr.runtime}); skipped",
                      file=sys.stderr)
                continue
            seen[ocr.runtime] = variant
            predictors[variant] = ocr
        reference = next(iter(predictors.values()))
        det_inputs, batches = _inputs(pages, reference)
        timing = {v: {"det": [0.0, 0.0], "rec": [0.0, 0.0]} for v in predictors}  # [cold, warm]
        diffs = {v: {"det": 0.0, "rec": 0.0, "rows": 0, "same_rows": 0} for v in predictors}
        for model, inputs in (("det", det_inputs), ("rec", batches)):
            for x in inputs:
                outs = {}
                for v, ocr in predictors.items():
                    run = (ocr.detector if model == "det" else ocr.recognizer).predictor.run
                    for k in range(2):
                        start = time.perf_counter()
                        outs[v] = run([x])[-1]
                        timing[v][model][k] += time.perf_counter() - start
                ref = outs[next(iter(predictors))]
                for v, out in outs.items():
                    diffs[v][model] = max(diffs[v][model], float(np.abs(out - ref).max()))
                    if model == "rec":
                        diffs[v]["rows"] += out.shape[0]
                        diffs[v]["same_rows"] += int((out.argmax(-1) == ref.argmax(-1)).all(axis=1).sum())
        read = {v: ocr(pages) for v, ocr in predictors.items()}
    n = len(pages)
    labels = xfund_labels([f.stem for f in files])
    base = next(iter(predictors))
    quality = {v: page_quality([{"name": f.stem, "lines": [[ln.text, list(ln.box), None] for ln in page.lines],
                                 "pairs": []} for f, page in zip(files, read[v])], labels) for v in predictors}
    rows = []
    for v, ocr in predictors.items():
        same = sum(a.text == b.text and a.box == b.box for pa, pb in zip(read[v], read[base])
                   for a, b in zip(pa.lines, pb.lines))
        total = sum(len(p.lines) for p in read[base])
        d_char = (quality[v]["char_acc"] - quality[base]["char_acc"]) * 100
        for model in ("det", "rec"):
            warm, cold = timing[v][model][1] / n, timing[v][model][0] / n
            ref_warm = timing[base][model][1] / n
            extra = (f"{diffs[v]['same_rows']}/{diffs[v]['rows']}" if model == "rec" else "-")
            rows.append((v, ocr.runtime.split(";")[0 if model == "det" else 1], model, fmt_s(warm), fmt_s(cold),
                         fmt_ratio(ref_warm / warm), f"{diffs[v][model]:.1e}", extra,
                         f"{same}/{total}" if model == "rec" else "", f"{quality[v]['char_acc'] * 100:.2f} "
                         f"({d_char:+.2f})" if model == "rec" else ""))
    print(machine_header(info, command_line(), [
        f"{n} XFUND zh pages (2480x3508), bundled PP-OCRv4; {len(batches)} recognition batches of "
        f"{reference.recognizer.batch_num} ({sum(len(p.lines) for p in read[base])} lines kept); "
        f"{args.threads} threads; variants interleaved input by input; peak RSS of all variants together "
        f"{rss.peak / 2**30:.2f} GiB"]))
    print()
    print(markdown_table(["variant", "ran as", "model", "s/page warm", "s/page first run", f"speed-up vs {base}",
                          f"max abs diff vs {base}", "rec rows with identical argmax", "identical lines (text+box)",
                          "OCR char acc % (vs reference)"], rows))


if __name__ == "__main__":
    main()
