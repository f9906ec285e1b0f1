"""Benchmark (not a test): how fast the extraction pipeline is, where the time goes, and how it scales.

    .venv/bin/python bench/bench_pipeline.py                       # quick: 6 pages, scaling at 100 and 1,000
    .venv/bin/python bench/bench_pipeline.py --pages 6 --scale 100,1000,10000
    .venv/bin/python bench/bench_pipeline.py --only scale --scale 10000
    .venv/bin/python bench/bench_pipeline.py --only mem_order --kie default  # peak RSS by page set (issue 17)

Every measurement runs in a fresh child process (so peak memory and process-wide settings such as the malloc
tuning stay per measurement); the parent samples the RSS of the child and all its descendants with psutil and
prints markdown tables with the machine, versions, load average and the exact command; ``os.wait4`` gives the
child's own exact peak (its largest single process: one worker's peak, the number ``/usr/bin/time -v`` prints).
Ratios are taken between measurements of this one run. Models and pages are built once under ``--work`` (default
/tmp/kiebeam-bench), never in the repository:

* OCR: the bundled PP-OCRv4 det + rec folders.
* KIE (``--kie base``): VI-LayoutXLM base-size SER and RE (12 layers, hidden 768, 512-token windows) with random
  weights, exported with ``models.checkpoint.export_inference``; the vocabulary is that of a sentencepiece model
  trained on the XFUND-zh texts (8,002 ids instead of 250,002: same compute per page, smaller files).
  ``--kie default`` uses ``models/assets/default_kie``; ``--kie tiny`` a 2-layer model.
* Scaling: the pipeline over ``--scale`` inputs that repeat 40 XFUND pages downscaled ``--scale-factor`` times
  (cheap but real OCR) under distinct doc ids, with the tiny KIE model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT,
    PeakRss,
    command_line,
    fmt_ratio,
    fmt_s,
    machine_header,
    machine_info,
    markdown_table,
    page_files,
    prepare_kie,
    small_pages,
    timed,
    write_manifest,
)

# Backend/precision requests (models.backends) of the loop rows; "today" is the pipeline before issue 14.
VARIANTS = {
    "today": {"ocr_backend": "paddle", "ocr_precision": "fp32", "kie_precision": "fp32"},
    "auto": {"ocr_backend": "auto", "ocr_precision": "auto", "kie_precision": "auto"},
    "ocr_openvino": {"ocr_backend": "openvino", "ocr_precision": "fp32", "kie_precision": "fp32"},
    "ocr_openvino_bf16": {"ocr_backend": "openvino", "ocr_precision": "bf16", "kie_precision": "fp32"},
    "ocr_paddle_bf16": {"ocr_backend": "paddle", "ocr_precision": "bf16", "kie_precision": "fp32"},
    "kie_bf16": {"ocr_backend": "paddle", "ocr_precision": "fp32", "kie_precision": "bf16"},
}
_LOOP_VARIANTS = tuple(f"loop_{v}" for v in VARIANTS if v != "today")  # "today" is loop_best
SECTIONS = ("floor", "loop_best", "loop_default", *_LOOP_VARIANTS, "pipe_mem", "pipe_mem_auto", "pipe_mem_tuned",
            "pipe_multi", "mem_order", "scale")
# models.paddle_infer.tune_malloc() as environment: the pipeline's workers never call tune_malloc() themselves.
_MALLOC_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"}
_STAGES = ("read", "decode", "det", "rec", "features", "ser", "re", "write")
_GIB = 2**30


# --- sections (each runs in its own child process) -------------------------------------------------------------

def _inference(best: bool, threads: int = 2, variant: str = "today", part: str = "ocr"):  # noqa: ANN202
    """Inference options of one loop row: oneDNN on (best) or off, and the variant's backend/precision requests."""
    from models.paddle_infer import InferenceOptions

    v = VARIANTS[variant]
    backend, precision = (v["ocr_backend"], v["ocr_precision"]) if part == "ocr" else ("paddle", v["kie_precision"])
    return InferenceOptions(enable_mkldnn=best, cpu_threads=threads, backend=backend, precision=precision)


def _variant_flags(variant: str) -> list[str]:
    """The pipeline flags of a variant's requests."""
    return [x for k, v in VARIANTS[variant].items() for x in (f"--{k}", v)]


def resolved_runtimes(variant: str, work: Path, kie: str) -> tuple[str, str, tuple[str, ...]]:
    """``(OCR runtime, KIE runtime, notes)`` that a variant's requests resolve to on this machine."""
    from models import zoo
    from models.backends import resolve_runtime

    ser_dir, re_dir = prepare_kie(work, kie)
    ocr, kie_opts = _inference(True, variant=variant), _inference(True, variant=variant, part="kie")
    picks = [(role, resolve_runtime(ocr, role, folder)) for role, folder in
             (("det", zoo.default_det_dir()), ("rec", zoo.default_rec_dir()))]
    kie_picks = [(role, resolve_runtime(kie_opts, role, folder)) for role, folder in (("ser", ser_dir), ("re", re_dir))]
    label = lambda ps: ";".join(f"{r}={rt.label()}" for r, rt in ps)  # noqa: E731
    return label(picks), label(kie_picks), tuple(n for _, rt in picks + kie_picks for n in rt.notes)


def _time_runs(run, batches: list) -> tuple[float, float]:  # noqa: ANN001
    """``(cold, warm)`` seconds of ``run(batch)`` over all batches: each batch runs twice in a row, and the second
    run is the warm one (oneDNN builds kernels per new input shape; the warm run is the compute floor)."""
    cold = warm = 0.0
    for b in batches:
        start = time.perf_counter()
        run(b)
        mid = time.perf_counter()
        run(b)
        cold, warm = cold + mid - start, warm + time.perf_counter() - mid
    return cold, warm


def _per(cold_warm: tuple[float, float], n: int) -> tuple[float, float]:
    """(warm, cold) per page."""
    return cold_warm[1] / n, cold_warm[0] / n


def _log_rss(what: str) -> None:
    import psutil

    print(f"[floor] {what}: RSS {psutil.Process().memory_info().rss / _GIB:.2f} GiB", file=sys.stderr, flush=True)


def section_floor(args: argparse.Namespace) -> dict:
    """Each model alone, forward only, inputs prepared beforehand, per batch size: seconds per page.

    Every batch size gets a fresh predictor (oneDNN keeps kernels and buffers per input shape, and the
    process would otherwise hold those of every batch size at once).
    """
    import gc

    from models import zoo
    from models.features import MODEL_INPUTS, RE_INPUTS, batch_windows, build_re_inputs, build_windows, tokenize_lines
    from models.kie import KiePredictor
    from models.ocr import OcrConfig, OcrPredictor
    from models.paddle_infer import PaddlePredictor, tune_malloc
    from models.reading_order import order_ppocr_det
    from models.text_detector import det_resize, normalize_image
    from models.text_recognizer import get_rotate_crop_image, resize_norm_img
    from transforms.decode import decode_page

    tune_malloc()
    files = page_files(args.pages)
    pages = [decode_page(f.read_bytes(), 0) for f in files]
    n = len(pages)
    ser_dir, re_dir = prepare_kie(Path(args.work), args.kie)
    out: dict = {"pages": n}

    ocr = OcrPredictor(OcrConfig(inference=_inference(True)))
    ocr_pages = [ocr([page])[0] for page in pages]  # the inputs of SER/RE
    det, rec_shape = ocr.detector, ocr.recognizer.image_shape
    p = det.params
    det_inputs = [normalize_image(det_resize(np.ascontiguousarray(img[:, :, ::-1]), p.limit_side_len,
                                             p.limit_type)[0]) for img in pages]
    out["det"], out["det_cold"] = {}, {}
    for bs in args.det_batches:
        groups = [det_inputs[i:i + bs] for i in range(0, n, bs)]
        if any(len({g.shape for g in grp}) > 1 for grp in groups):
            continue  # pages of different sizes cannot share a batch
        out["det"][bs], out["det_cold"][bs] = _per(_time_runs(det.predictor.run, [[np.stack(g)] for g in groups]), n)
    crops = []
    for img in pages:
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        boxes, _ = det(bgr)
        order = order_ppocr_det([b.tolist() for b in boxes])
        crops.extend(get_rotate_crop_image(bgr, boxes[i]) for i in order)
    del ocr, det
    gc.collect()
    _log_rss("det done")

    _, height, width = rec_shape
    ratio_order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
    out["rec"], out["rec_cold"], out["crops"] = {}, {}, len(crops)
    for bs in args.rec_batches:
        batches = []
        for s in range(0, len(crops), bs):
            members = ratio_order[s:s + bs]
            max_ratio = max([width / height] + [crops[i].shape[1] / crops[i].shape[0] for i in members])
            batches.append([np.stack([resize_norm_img(crops[i], max_ratio, rec_shape) for i in members])])
        rec = PaddlePredictor(zoo.default_rec_dir(), _inference(True), extra_files=("ppocr_keys_v1.txt",))
        out["rec"][bs], out["rec_cold"][bs] = _per(_time_runs(rec.run, batches), n)
        del rec, batches
        gc.collect()
        _log_rss(f"rec batch {bs} done")

    kie = KiePredictor.from_dirs(ser_dir, re_dir, inference=_inference(True))
    kie_pages = kie(ocr_pages)
    windows = []
    for page in ocr_pages:
        texts = [ln.text for ln in page.lines]
        windows.append(build_windows(texts, [ln.box for ln in page.lines], page.width, page.height, None,
                                     max_len=kie.max_len, clip=True, token_ids=tokenize_lines(texts, kie.tokenizer)))
    multiple = kie.multiple  # the token-axis cut the predictor's batches get
    del kie
    gc.collect()
    flat = [w for ws in windows for w in ws if w.line_ids]
    items = []  # (window, its RE inputs) of the windows with candidate pairs
    for ws, pk in zip(windows, kie_pages):
        for w in ws:
            r = build_re_inputs(w, list(pk.line_labels))
            if len(r.pairs):
                items.append((w, r))
    out["ser"], out["ser_cold"], out["windows"] = {}, {}, len(flat)
    out["lines"] = sum(len(pg.lines) for pg in ocr_pages)
    out["re"], out["re_cold"], out["re_windows"], out["pairs"] = {}, {}, len(items), sum(len(r.pairs) for _, r in items)
    for bs in args.kie_batches:
        kie = KiePredictor.from_dirs(ser_dir, re_dir, inference=_inference(True))
        # The predictor's own batching function, so the floor runs the inputs the pipeline runs.
        batches = [[b[k] for k in MODEL_INPUTS]
                   for b in (batch_windows(flat[s:s + bs], multiple=multiple) for s in range(0, len(flat), bs))]
        out["ser"][bs], out["ser_cold"][bs] = _per(_time_runs(kie.ser.run, batches), n)
        batches = []
        for s in range(0, len(items), bs):
            b = batch_windows([w for w, _ in items[s:s + bs]], re=[r for _, r in items[s:s + bs]], multiple=multiple)
            batches.append([b[k] for k in MODEL_INPUTS + RE_INPUTS])
        if batches:
            out["re"][bs], out["re_cold"][bs] = _per(_time_runs(kie.re.run, batches), n)
        del kie, batches
        gc.collect()
        _log_rss(f"SER/RE batch {bs} done")
    return out


def section_loop(args: argparse.Namespace, best: bool, variant: str = "today") -> dict:
    """PaddleOCR's KIE predictor loop: load once, then per page read, decode, OCR (+ sort), SER, RE; write.

    ``variant`` names the backend/precision requests (:data:`VARIANTS`); the result carries the runtimes they
    resolved to and every page's lines, labels and pairs (the accuracy guard's input).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.kie import KiePredictor
    from models.ocr import OcrConfig, OcrPredictor
    from models.paddle_infer import tune_malloc
    from models.predictors import runtime_label
    from transforms.decode import decode_page

    if best:
        tune_malloc()
    files = page_files(args.pages)
    ser_dir, re_dir = prepare_kie(Path(args.work), args.kie)
    t: dict[str, float] = {}
    start = time.perf_counter()
    ocr = OcrPredictor(OcrConfig(inference=_inference(best, variant=variant),
                                 rec_batch_num=args.rec_batch if best else 6))
    kie = KiePredictor.from_dirs(ser_dir, re_dir, inference=_inference(best, variant=variant, part="kie"),
                                 batch_size=8 if best else 1)
    load_s = time.perf_counter() - start
    rows, quality_pages = [], []
    loop_start = time.perf_counter()
    for f in files:
        with timed(t, "read"):
            data = f.read_bytes()
        with timed(t, "decode"):
            image = decode_page(data, 0)
        with timed(t, "ocr"):
            [page] = ocr([image])
        with timed(t, "kie"):
            [result] = kie([page])
        t["det"] = t.get("det", 0.0) + page.det_ms / 1000
        t["rec"] = t.get("rec", 0.0) + page.rec_ms / 1000
        t["ser"] = t.get("ser", 0.0) + result.ser_ms / 1000
        t["re"] = t.get("re", 0.0) + result.re_ms / 1000
        rows.extend({"doc_id": f.stem, "line_id": i, "text": ln.text, "label": lab, "x0": ln.box[0],
                     "y0": ln.box[1], "x1": ln.box[2], "y1": ln.box[3]}
                    for i, (ln, lab) in enumerate(zip(page.lines, result.line_labels)))
        line_of = {e.entity_id: e.line_ids[0] for e in result.entities}
        quality_pages.append({"name": f.stem, "lines": [[ln.text, list(ln.box), lab] for ln, lab in
                                                         zip(page.lines, result.line_labels)],
                              "pairs": [[line_of[p.question_id], line_of[p.answer_id]] for p in result.pairs]})
    with timed(t, "write"):
        name = f"loop_{variant if best else 'default'}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), Path(args.out_dir) / name)
    t["features"] = t.pop("kie") - t["ser"] - t["re"]
    t["det"] += t.pop("ocr") - t["det"] - t["rec"]  # + RGB->BGR copy and the tb-yx sort (a few ms)
    return {"load_s": load_s, "loop_s": time.perf_counter() - loop_start, "pages": len(files), "stages": t,
            "lines": len(rows), "ocr_runtime": ocr.runtime, "kie_runtime": runtime_label(kie),
            "quality_pages": quality_pages}


def _pipeline_argv(manifest: Path, out: Path, ser: Path, re_dir: Path, mode: str, workers: int,
                   threads: int, variant: str = "today") -> list[str]:
    argv = ["--manifest", str(manifest), "--output", str(out), "--run_id", "bench", "--runner", "FnApiRunner",
            "--ser_model_dir", str(ser), "--re_model_dir", str(re_dir), "--cpu_threads", str(threads),
            "--direct_running_mode", mode, *([] if variant == "auto" else _variant_flags(variant))]
    if mode == "multi_processing":
        argv += ["--direct_num_workers", str(workers)]
    return argv


def _run_pipeline(argv: list[str]) -> tuple[float, dict]:
    import pyarrow.parquet as pq

    from pipelines.extract import run

    start = time.perf_counter()
    result = run(argv)
    wall = time.perf_counter() - start
    load_ms = 0.0
    try:
        for dist in result.metrics().query()["distributions"]:
            if dist.key.metric.name.endswith("load_model_latency_milli_secs"):
                load_ms += dist.committed.sum
    except Exception:  # noqa: BLE001 - metrics are optional on some runners
        load_ms = float("nan")
    out = Path(argv[argv.index("--output") + 1])
    docs = pq.read_table(out / "documents").to_pylist() if (out / "documents").exists() else []
    stages = {s: sum((d.get(f"{s}_ms") or 0.0) for d in docs) / 1000 for s in ("read", "decode", "det", "rec",
                                                                                 "ser", "re")}
    ok = sum(d["status"] == "ok" for d in docs)
    runtimes = {k: next((d[k] for d in docs if d.get(k)), None) for k in ("ocr_runtime", "kie_runtime")}
    return wall, {"stages": stages, "documents": len(docs), "ok": ok, "state": str(result.state),
                  "load_s": load_ms / 1000, "lines": sum(d.get("lines") or 0 for d in docs), **runtimes}


def section_pipeline(args: argparse.Namespace, mode: str, variant: str = "today") -> dict:
    """The Beam pipeline (FnApiRunner) over the same pages, with a variant's backend/precision flags."""
    work = Path(args.work)
    ser, re_dir = prepare_kie(work, args.kie)
    manifest = write_manifest(Path(args.out_dir) / f"manifest_{mode}.csv", page_files(args.pages), args.pages)
    threads = 2 if mode == "in_memory" else args.multi_threads
    out = Path(args.out_dir) / f"pipe_{mode}"
    wall, info = _run_pipeline(_pipeline_argv(manifest, out, ser, re_dir, mode, args.workers, threads, variant))
    return {"wall_s": wall, "pages": args.pages, "threads": threads, **info}


def section_mem_order(args: argparse.Namespace) -> dict:
    """The pipeline (in_memory) over one XFUND page range (``--mem-range 11-21``) with one variant's flags.

    Peak memory must not depend on which pages come first (issue 17): Paddle Inference on CPU kept the buffers of
    every input size a predictor outgrew, so pages 11-21 alone peaked higher than pages 0-21.
    """
    work = Path(args.work)
    ser, re_dir = prepare_kie(work, args.kie)
    first, last = (int(x) for x in args.mem_range.split("-"))
    files = page_files(last + 1)[first:]
    manifest = write_manifest(Path(args.out_dir) / "manifest_mem_order.csv", files, len(files))
    wall, info = _run_pipeline(_pipeline_argv(manifest, Path(args.out_dir) / "pipe", ser, re_dir, "in_memory",
                                              args.workers, 2, args.mem_variant))
    return {"wall_s": wall, "pages": len(files), "range": args.mem_range, "variant": args.mem_variant, **info}


def section_scale(args: argparse.Namespace) -> dict:
    """The pipeline over ``args.n`` inputs (downscaled pages under distinct ids, tiny KIE)."""
    work = Path(args.work)
    ser, re_dir = prepare_kie(work, "tiny")
    manifest = write_manifest(Path(args.out_dir) / f"manifest_scale_{args.n}.csv",
                              small_pages(work, args.scale_factor), args.n)
    out = Path(args.out_dir) / f"scale_{args.n}"
    wall, info = _run_pipeline(_pipeline_argv(manifest, out, ser, re_dir, args.scale_mode, args.workers,
                                              2 if args.scale_mode == "in_memory" else args.multi_threads))
    return {"wall_s": wall, "n": args.n, "factor": args.scale_factor, "mode": args.scale_mode, **info}


# --- the parent: run sections in children, sample memory, print tables -----------------------------------------

def _child(args: argparse.Namespace, section: str, extra: list[str], env: dict | None = None) -> dict:
    out_dir = Path(args.work) / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = out_dir / f"{section}{'_' + '_'.join(extra[1::2]) if extra else ''}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--section", section, "--result", str(result), "--work", args.work,
           "--pages", str(args.pages), "--kie", args.kie, "--rec-batch", str(args.rec_batch),
           "--workers", str(args.workers), "--multi-threads", str(args.multi_threads),
           "--scale-factor", str(args.scale_factor), "--scale-mode", args.scale_mode, *extra]
    print(f"[bench] {section} {' '.join(extra)} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    load0 = os.getloadavg()[0]
    log = (out_dir / f"{result.stem}.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    with PeakRss(proc.pid, 0.25) as peak:
        _, status, usage = os.wait4(proc.pid, 0)  # usage: the child's own peak (ru_maxrss, exact, KiB on Linux)
    rc = proc.returncode = os.waitstatus_to_exitcode(status)
    process_peak = usage.ru_maxrss * 1024  # the largest single process of the tree: the peak of one worker
    log.close()
    wall = time.perf_counter() - start
    if rc != 0 or not result.is_file():
        tail = (out_dir / f"{result.stem}.log").read_text()[-3000:]
        print(f"[bench] {section} failed (rc {rc}); log tail:\n{tail}", file=sys.stderr)
        return {"failed": True, "rc": rc, "child_wall_s": wall, "peak_rss": peak.peak,
                "process_peak_rss": process_peak}
    data = json.loads(result.read_text())
    data.update(child_wall_s=wall, peak_rss=peak.peak, process_peak_rss=process_peak,
                load1=(load0, os.getloadavg()[0]))
    print(f"[bench] {section} done in {wall:.1f} s, peak RSS {peak.peak / _GIB:.2f} GiB (all processes, sampled), "
          f"{process_peak / _GIB:.2f} GiB (largest process, exact)", file=sys.stderr)
    return data


def _per_page(d: dict) -> float | None:
    """Steady time per page: wall minus model loading, over pages (the same definition for loops and pipelines)."""
    if not d or d.get("failed"):
        return None
    if "loop_s" in d:
        return d["loop_s"] / d["pages"]
    load = d.get("load_s") or 0.0
    load = 0.0 if load != load else load  # NaN when metrics were unavailable
    return (d["wall_s"] - load) / d["pages"]


def _process_peak(d: dict) -> str:
    """The largest single process's peak RSS (GiB) of a run: one worker's peak (``-`` for older results)."""
    return f"{d['process_peak_rss'] / _GIB:.2f}" if d.get("process_peak_rss") else "-"


def _load(d: dict) -> str:
    load = d.get("load1")
    return f"{load[0]:.1f}, {load[1]:.1f}" if load else "-"


def _variants_report(results: dict, args: argparse.Namespace) -> list[str]:
    """The backends-and-precisions table: each variant beside today's settings, with the accuracy guard."""
    from bench.common import accuracy_guard, page_quality, xfund_labels

    keys = [k for k in ("loop_best", *_LOOP_VARIANTS, "pipe_mem", "pipe_mem_auto") if results.get(k)]
    if not keys:
        return []
    base = results.get("loop_best", {})
    names = [p["name"] for p in base.get("quality_pages", [])]
    labels = xfund_labels(names) if names else {}
    base_q = page_quality(base["quality_pages"], labels) if names else None
    rows = []
    for key in keys:
        d = results[key]
        variant = "today" if key in ("loop_best", "pipe_mem") else key.split("_", 1)[1].removeprefix("mem_")
        req = VARIANTS[variant]
        request = f"OCR {req['ocr_backend']}/{req['ocr_precision']}, KIE {req['kie_precision']}"
        if d.get("skipped"):
            rows.append((key, request, d["skipped"], "", "", "", "", "", "", "", ""))
            continue
        pp = _per_page(d)
        ref = _per_page(results.get("pipe_mem" if key.startswith("pipe") else "loop_best", {}))
        if pp is None:
            rows.append((key, request, "failed", "", "", "", "", "", "", "", ""))
            continue
        q = page_quality(d["quality_pages"], labels) if d.get("quality_pages") and labels else None
        faster = ref is not None and pp < ref and key not in ("loop_best", "pipe_mem")
        if q is not None and base_q is not None and key != "loop_best":
            holds, text = accuracy_guard(base_q, q)
            guard = (f"**{'holds' if holds else 'FAILS'}** ({text})" if faster else f"(not faster; {text})")
        else:
            guard = "-" if key == "loop_best" else "(pipeline: as its loop row)" if key.startswith("pipe") else "-"
        scores = [f"{q[k] * 100:.2f}" if q else "-" for k in ("char_acc", "ser_hmean", "re_hmean")]
        rows.append((key, request, f"{d.get('ocr_runtime') or '-'}; {d.get('kie_runtime') or '-'}", fmt_s(pp),
                     fmt_ratio(ref / pp if ref else None), f"{d['peak_rss'] / _GIB:.2f}", *scores, guard, _load(d)))
    out = [f"\n### Backends and precisions ({args.pages} pages; loops: best settings, page by page; pipelines: "
           f"in_memory; speed-up against today's settings of the same kind)\n",
           markdown_table(["run", "requested", "ran as (OCR; KIE)", "s/page", "vs today", "peak RSS GiB",
                           "OCR char acc %", "SER line Hmean %", "RE pair Hmean %",
                           "accuracy guard vs today (points)", "load avg 1 min (start, end)"], rows)]
    if base_q is not None:
        out.append(f"\n(quality against the XFUND labels of the same pages, {base_q['gold_lines']} labelled lines; "
                   f"guard: OCR char accuracy at most 0.2 and SER/RE Hmean at most 0.5 points below today's; "
                   f"SER/RE Hmean only means something with a trained model, `--kie default`)")
    return out


def report(results: dict, args: argparse.Namespace, info: dict) -> str:
    """All tables, as markdown."""
    parts = [machine_header(info, command_line(), [
        f"pages: {args.pages} XFUND zh pages (2480x3508); KIE: {args.kie} (random weights); OCR: bundled PP-OCRv4",
        f"load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"])]
    floor = results.get("floor")
    floor_pp, floor_rows = None, []
    if floor and not floor.get("failed"):
        floor_pp = 0.0
        for model in ("det", "rec", "ser", "re"):
            by_bs = {int(k): v for k, v in floor.get(model, {}).items()}
            if not by_bs:
                continue
            bs = min(by_bs, key=by_bs.get)
            floor_pp += by_bs[bs]
            cold = {int(k): v for k, v in floor.get(f"{model}_cold", {}).items()}
            floor_rows.append((model, bs, fmt_s(by_bs[bs]),
                               ", ".join(f"{k}: {fmt_s(v)} / {fmt_s(cold.get(k))}" for k, v in by_bs.items())))
        parts.append(f"\n### Model-compute floor (forward only, inputs ready, each batch run twice: warm = 2nd run; "
                     f"per page; {floor['pages']} pages, "
                     f"{floor['lines']} lines, {floor['crops']} crops, {floor['windows']} SER windows, "
                     f"{floor['re_windows']} RE windows, {floor['pairs']} candidate pairs)\n")
        parts.append(markdown_table(["model", "best batch", "s/page (warm)",
                                     "by batch size: warm / first run of each shape"],
                                    floor_rows + [("**sum**", "", f"**{fmt_s(floor_pp)}**", "")]))

    names = {"loop_default": "baseline (b): PaddleOCR defaults loop (oneDNN off, rec batch 6, page by page)",
             "loop_best": f"baseline (a): our predictors, best settings, page by page (rec batch {args.rec_batch})",
             "pipe_mem": "pipeline, FnApiRunner in_memory (2 threads), today's settings (Paddle fp32)",
             "pipe_mem_auto": "pipeline, FnApiRunner in_memory (2 threads), defaults (auto backend/precision)",
             "pipe_mem_tuned": "pipeline, FnApiRunner in_memory (2 threads), malloc tuned (GLIBC_TUNABLES)",
             "pipe_multi": f"pipeline, FnApiRunner multi_processing, {args.workers} workers "
                           f"({args.multi_threads} thread each)"}
    a, b = _per_page(results.get("loop_best", {})), _per_page(results.get("loop_default", {}))
    rows, stage_rows = [], []
    for key, label in names.items():
        d = results.get(key)
        if not d:
            continue
        pp = _per_page(d)
        if pp is None:
            rows.append((label, "failed", "", "", "", "", "", "", "", "", ""))
            continue
        wall = d.get("wall_s", (d.get("loop_s") or 0) + (d.get("load_s") or 0))
        rows.append((label, fmt_s(d.get("load_s"), 1), fmt_s(wall, 1), fmt_s(pp), f"{1 / pp:.3f}",
                     fmt_ratio(a / pp if a else None), fmt_ratio(b / pp if b else None),
                     fmt_ratio(pp / floor_pp if floor_pp else None), f"{d['peak_rss'] / _GIB:.2f}",
                     _process_peak(d), _load(d)))
        st = d["stages"]
        known = sum(st.get(s, 0.0) for s in _STAGES) / d["pages"]
        stage_rows.append((label.split(":")[0].split(",")[0] + ("" if ":" in label else f" {key[5:]}"),
                           *(fmt_s(st[s] / d["pages"]) if s in st else "-" for s in _STAGES),
                           fmt_s(pp - known) if key != "pipe_multi" else "- (parallel)", fmt_s(pp)))
    if rows:
        parts.append(f"\n### End to end, {args.pages} pages, same pages and models\n")
        parts.append(markdown_table(["run", "model load s", "wall s", "s/page (wall - load)", "pages/s",
                                     "speed-up vs (a)", "speed-up vs (b)", "over floor", "peak RSS GiB",
                                     "largest process GiB", "load avg 1 min (start, end)"], rows))
        parts.append("\n### Per-stage time per page (s)\n")
        parts.append(markdown_table(["run", *_STAGES, "other (overhead)", "total"], stage_rows))
        parts.append("\n(pipeline: read/decode/det/rec/SER/RE from the `documents` table's *_ms columns; features "
                     "and the Parquet write are not timed separately inside Beam and fall in 'other'; with "
                     "multi_processing the stage times are summed over workers that run at the same time, so they "
                     "add up to more than the wall time.)")

    parts += _variants_report(results, args)
    parts += _mem_order_report(results, args)
    scale = [results[k] for k in sorted(results, key=lambda k: results[k].get("n", 0)) if k.startswith("scale_")]
    if scale:
        ref = next((s for s in scale if s.get("n") == 1000 and not s.get("failed")), None)
        srows = []
        for s in scale:
            if s.get("failed"):
                srows.append((s.get("n", "?"), "failed", "", "", "", "", ""))
                continue
            srows.append((f"{s['n']:,}", f"{s['ok']:,}", fmt_s(s["wall_s"], 1), f"{s['n'] / s['wall_s']:.1f}",
                          f"{s['peak_rss'] / _GIB:.2f}", fmt_ratio(s['peak_rss'] / ref['peak_rss'] if ref else None),
                          _load(s)))
        parts.append(f"\n### Scaling: pipeline ({scale[0].get('mode', args.scale_mode)}) over N inputs (40 XFUND "
                     f"pages downscaled {scale[0].get('factor', args.scale_factor)}x, repeated under distinct ids; "
                     f"tiny 2-layer SER/RE)\n")
        parts.append(markdown_table(["inputs", "ok", "wall s", "inputs/s", "peak RSS GiB (all processes)",
                                     "peak vs 1,000", "load avg 1 min (start, end)"], srows))
    return "\n".join(parts)


def _mem_order_report(results: dict, args: argparse.Namespace) -> list[str]:
    """The peak-memory-by-page-set table (``mem_order`` runs), one group of rows per variant."""
    runs = [results[k] for k in results if k.startswith("mem_order_")]
    if not runs:
        return []
    rows = []
    for variant in dict.fromkeys(r.get("variant", "?") for r in runs):
        group = [r for r in runs if r.get("variant", "?") == variant]
        low = min((r["peak_rss"] for r in group if not r.get("failed")), default=None)
        for r in group:
            pp = _per_page(r)
            rows.append((variant, r.get("range", "?"), r.get("pages", "?"), r.get("ocr_runtime") or "-",
                         r.get("kie_runtime") or "-", "failed" if pp is None else f"{r['peak_rss'] / _GIB:.2f}",
                         fmt_ratio(r["peak_rss"] / low if low and pp is not None else None), fmt_s(pp), _load(r)))
    return [f"\n### Peak memory by page set (pipeline in_memory, 2 threads, KIE {args.kie}; goal: the highest peak "
            f"of a variant at most 1.2x its lowest, whichever pages come first)\n",
            markdown_table(["variant", "XFUND pages", "pages", "OCR runtime", "KIE runtime", "peak RSS GiB",
                            "vs lowest", "s/page (wall - load)", "load avg 1 min (start, end)"], rows)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6, help="XFUND pages for the end-to-end comparison")
    parser.add_argument("--kie", default="base", help="base | tiny | default (models/assets/default_kie)")
    parser.add_argument("--scale", default="100,1000", help="comma-separated input counts ('' = no scaling)")
    parser.add_argument("--scale-factor", type=int, default=32, help="downscale of the scaling pages")
    parser.add_argument("--scale-mode", default="in_memory", choices=["in_memory", "multi_processing"])
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--rec-batch", type=int, default=6, help="rec batch of baseline (a)")
    parser.add_argument("--workers", type=int, default=2, help="multi_processing workers")
    parser.add_argument("--multi-threads", type=int, default=1, help="Paddle threads per multi_processing worker")
    parser.add_argument("--det-batches", default="1")
    parser.add_argument("--rec-batches", default="6,12")
    parser.add_argument("--kie-batches", default="1,4")
    parser.add_argument("--work", default="/tmp/kiebeam-bench", help="models, pages and outputs (outside the repo)")
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mem-orders", default="11-21,0-21",
                        help="XFUND page ranges of the mem_order rows (first-last, comma-separated)")
    parser.add_argument("--mem-variants", default="today,auto",
                        help=f"variants of the mem_order rows (some of {','.join(VARIANTS)})")
    parser.add_argument("--mem-range", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mem-variant", default="today", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--reuse", default=None,
                        help="comma-separated --json files of earlier runs: their sections fill in what this run skips")
    args = parser.parse_args(argv)
    for name in ("det_batches", "rec_batches", "kie_batches"):
        setattr(args, name, [int(x) for x in getattr(args, name).split(",") if x])
    Path(args.work).mkdir(parents=True, exist_ok=True)

    if args.section:  # child
        import shutil

        args.out_dir = str(Path(args.work) / "out" / f"{args.section}_{args.n}")
        shutil.rmtree(args.out_dir, ignore_errors=True)
        Path(args.out_dir).mkdir(parents=True)
        fn = {"floor": section_floor, "loop_best": lambda a: section_loop(a, True),
              **{f"loop_{v}": lambda a, v=v: section_loop(a, True, v) for v in VARIANTS if v != "today"},
              "pipe_mem_auto": lambda a: section_pipeline(a, "in_memory", "auto"),
              "loop_default": lambda a: section_loop(a, False), "pipe_mem": lambda a: section_pipeline(a, "in_memory"),
              "pipe_mem_tuned": lambda a: section_pipeline(a, "in_memory"),
              "pipe_multi": lambda a: section_pipeline(a, "multi_processing"), "scale": section_scale,
              "mem_order": section_mem_order}[args.section]
        Path(args.result).write_text(json.dumps(fn(args), default=str))
        return

    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS) - {"report"}  # "report": only re-print the --reuse results
    if unknown:
        raise SystemExit(f"unknown --only sections {sorted(unknown)}, expected some of {list(SECTIONS)}")
    info = machine_info()
    if only != {"report"}:
        print(f"[bench] preparing models under {args.work} ...", file=sys.stderr, flush=True)
        prepare_kie(Path(args.work), args.kie)
        prepare_kie(Path(args.work), "tiny")
    results: dict = {}
    for old in (args.reuse or "").split(","):
        if old:
            results.update(json.loads(Path(old).read_text())["results"])
    seen: dict[tuple[str, str], str] = {}  # resolved (OCR, KIE) runtimes -> the loop section that ran them
    for section in SECTIONS[:-2]:  # mem_order and scale run one child per setting, below
        if section not in only:
            continue
        if section == "loop_best" or section in _LOOP_VARIANTS:
            ocr_rt, kie_rt, notes = resolved_runtimes(section.split("_", 1)[1].replace("best", "today"),
                                                      Path(args.work), args.kie)
            if (ocr_rt, kie_rt) in seen:  # e.g. bf16 requests on a CPU without bf16: nothing new to measure
                results[section] = {"skipped": f"not run: runs as {seen[(ocr_rt, kie_rt)]} on this machine "
                                               f"({'; '.join(notes) or 'same runtimes'})"}
                continue
            seen[(ocr_rt, kie_rt)] = section
        results[section] = _child(args, section, [], _MALLOC_ENV if section == "pipe_mem_tuned" else None)
    if "mem_order" in only:
        for variant in [v for v in args.mem_variants.split(",") if v]:
            for pages in [r for r in args.mem_orders.split(",") if r]:
                results[f"mem_order_{pages}_{variant}"] = _child(args, "mem_order", ["--mem-range", pages,
                                                                                     "--mem-variant", variant])
    if "scale" in only:
        for n in [int(x) for x in args.scale.split(",") if x]:
            results[f"scale_{n}"] = _child(args, "scale", ["--n", str(n)])
    text = report(results, args, info)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
