"""SER/RE speed and peak RSS by oneDNN cache capacity (issue 14), KIE alone over a pipeline run's OCR lines.

Each (capacity, repetition) runs in a fresh child process, the capacities alternating in order between rounds; a
child loads ``KiePredictor`` with ``mkldnn_cache_capacity=N`` (``unbounded``: Paddle's default, no capacity set) and
runs the pages twice, one page per call: pass 1 meets every window shape for the first time, pass 2 again.

    nice -n 19 .venv/bin/python bench/bench_kie_cache.py --ocr-out /tmp/kiebeam-bench/runs/.../pipe --kie base
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pages(ocr_out: str) -> list:
    """The pages of a pipeline output folder (its ``pages`` and ``lines`` tables), in ``doc_key`` order."""
    import pyarrow.parquet as pq

    from schemas.records import OcrLine, PageOcr

    def table(name: str) -> list[dict]:
        return [r for f in sorted(glob.glob(f"{ocr_out}/{name}/**/*.parquet", recursive=True))
                for r in pq.read_table(f).to_pylist()]

    lines: dict[str, list[dict]] = {}
    for r in table("lines"):
        lines.setdefault(r["doc_key"], []).append(r)
    return [PageOcr(width=p["width"], height=p["height"], lines=tuple(
        OcrLine(text=r["text"], score=r["score"], polygon=tuple(tuple(pt) for pt in r["polygon"]),
                box=(r["x0"], r["y0"], r["x1"], r["y1"]), det_score=r["det_score"])
        for r in sorted(lines.get(p["doc_key"], []), key=lambda r: r["line_id"])))
        for p in sorted(table("pages"), key=lambda p: p["doc_key"])]


def child(args: argparse.Namespace) -> dict:
    import psutil

    import models.kie
    from bench.common import prepare_kie
    from models.kie import KiePredictor
    from models.paddle_infer import InferenceOptions

    rss = lambda: psutil.Process().memory_info().rss / 2**30  # noqa: E731
    pages = _pages(args.ocr_out)
    ser, re_dir = prepare_kie(Path(args.work), args.kie)
    cap = 0 if args.child == "unbounded" else int(args.child)
    options = InferenceOptions(backend="paddle", precision=args.precision, mkldnn_cache_capacity=cap)
    if cap == 0:  # from_dirs gives an unset capacity this default; 0 leaves Paddle's own (unbounded)
        models.kie.KIE_MKLDNN_CACHE_CAPACITY = 0
    kie = KiePredictor.from_dirs(ser, re_dir, inference=options)
    assert kie.ser.options.mkldnn_cache_capacity == cap
    out = {"capacity": args.child, "runtime": kie.runtime, "pages": len(pages), "rss_load": round(rss(), 3)}
    digest = hashlib.sha256()
    for i in (1, 2):
        t, c = time.perf_counter(), time.process_time()
        for page in pages:
            [k] = kie([page])
            if i == 1:
                digest.update(repr((k.line_labels, k.line_scores, k.entities, k.pairs)).encode())
        out[f"ms_{i}"] = (time.perf_counter() - t) * 1000 / len(pages)
        out[f"cpu_ms_{i}"] = (time.process_time() - c) * 1000 / len(pages)
    out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["digest"] = digest.hexdigest()[:16]
    out["load"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ocr-out", required=True, help="a kiebeam extract output folder (its pages and lines)")
    parser.add_argument("--kie", default="base", help="KIE kind (bench.common.prepare_kie): base, tiny, default")
    parser.add_argument("--work", default="/tmp/kiebeam-bench")
    parser.add_argument("--precision", default="auto", help="SER/RE precision request")
    parser.add_argument("--capacities", default="1,4,16,unbounded")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    caps = args.capacities.split(",")
    rows = []
    for rep in range(args.reps):
        for cap in caps if rep % 2 == 0 else caps[::-1]:
            cmd = [sys.executable, __file__, "--child", cap, *sys.argv[1:]]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"KIE {rows[0]['runtime']}, {rows[0]['pages']} pages of {args.ocr_out}, medians of {args.reps} runs\n")
    print("| capacity | ms/page pass 1 | ms/page pass 2 | CPU ms/page pass 1 | pass 2 | peak RSS GiB | predictions |")
    print("|---|---|---|---|---|---|---|")
    for cap in caps:
        mine = [r for r in rows if r["capacity"] == cap]
        med = {k: statistics.median(r[k] for r in mine) for k in ("ms_1", "ms_2", "cpu_ms_1", "cpu_ms_2", "peak_gib")}
        same = "same" if {r["digest"] for r in rows} == {mine[0]["digest"]} else "DIFFER"
        print(f"| {cap} | {med['ms_1']:.0f} | {med['ms_2']:.0f} | {med['cpu_ms_1']:.0f} | {med['cpu_ms_2']:.0f} "
              f"| {med['peak_gib']:.2f} | {same} |")


if __name__ == "__main__":
    main()
